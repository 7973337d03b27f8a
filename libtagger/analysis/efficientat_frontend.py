"""EfficientAT's log-mel front-end in numpy: the input the ``mn04_as`` network was trained on.

It reproduces, in eval mode (no masking, no random band edges), the PyTorch front-end the
EfficientAT models were trained with: pre-emphasis, a centred STFT with a symmetric Hann window
shorter than the FFT, power, a Kaldi-style mel filterbank, ``log(x + 1e-5)`` and a fixed
``(x + 4.5) / 5`` normalisation. The golden test checks it against PyTorch's output.

Geometry: pre-emphasis drops one sample, so a 10-s window at 32 kHz (320,000 samples) becomes
319,999 samples and the centred STFT (hop 320) yields ``1 + 319999 // 320 = 1000`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.fft  # librosa's own dependency; its float32 FFT is ~3x numpy's here


def kaldi_mel(freq: np.ndarray | float) -> np.ndarray:
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)``, in float64."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_bank(
    n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float
) -> np.ndarray:
    """Kaldi-style triangular mel filters over the FFT bins, [n_mels, n_fft // 2 + 1] float32.

    Kaldi's filters cover only the first ``n_fft // 2`` bins; the Nyquist bin gets a zero
    column so the bank multiplies a full one-sided power spectrum. Evaluated in float64:
    torchaudio's float32 version differs by up to ~1.3e-5 (one float32 step of a bin's mel
    value over a filter slope ~18 mel wide), a few 1e-6 after the log.
    """
    nyquist = sample_rate / 2
    if fmax <= 0:  # Kaldi counts a non-positive upper edge back from Nyquist
        fmax += nyquist
    if not 0 <= fmin < fmax <= nyquist:
        raise ValueError(f"bad mel band edges {fmin}..{fmax} Hz for {sample_rate} Hz audio")
    low, high = kaldi_mel(fmin), kaldi_mel(fmax)
    # n_mels + 2 equally spaced mel points: filter i rises from point i to i+1, falls to i+2.
    points = low + np.arange(n_mels + 2) * (high - low) / (n_mels + 1)
    left, centre, right = points[:-2, None], points[1:-1, None], points[2:, None]
    bin_mel = kaldi_mel(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(bank, ((0, 0), (0, 1))).astype(np.float32)


@dataclass(frozen=True)
class EfficientATFrontEnd:
    """Log-mel patches for EfficientAT models from 32 kHz mono windows."""

    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 15000.0
    preemphasis: float = 0.97
    log_offset: float = 1e-5
    norm_shift: float = 4.5
    norm_scale: float = 5.0
    window_seconds: float = 10.0

    @property
    def window_samples(self) -> int:
        """Samples in one model window (320,000 for 10 s at 32 kHz)."""
        return round(self.window_seconds * self.sample_rate)

    @property
    def window_stride(self) -> int:
        """Samples between consecutive windows of a full read: they do not overlap."""
        return self.window_samples

    def frames(self, samples: int) -> int:
        """STFT frames for a window of ``samples`` samples (1000 for a full window)."""
        return 1 + (samples - 1) // self.hop_length

    @cached_property
    def mel_bank(self) -> np.ndarray:
        """The Kaldi mel filterbank, [n_mels, n_fft // 2 + 1] float32."""
        return kaldi_mel_bank(self.n_mels, self.n_fft, self.sample_rate, self.fmin, self.fmax)

    @cached_property
    def fft_window(self) -> np.ndarray:
        """Symmetric Hann window of ``win_length``, zero-padded to ``n_fft`` around the centre."""
        n = np.arange(self.win_length)
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (self.win_length - 1))
        left = (self.n_fft - self.win_length) // 2
        padded = np.zeros(self.n_fft)
        padded[left : left + self.win_length] = hann
        return padded.astype(np.float32)

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        """Normalised log-mel patches [n, 1, n_mels, frames] from windows [n, samples].

        Raises:
            ValueError: ``windows`` is not two-dimensional or too short to reflect-pad.
        """
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"expected windows [n, samples], got shape {x.shape}")
        emphasised = x[:, 1:] - np.float32(self.preemphasis) * x[:, :-1]
        half = self.n_fft // 2
        if emphasised.shape[1] <= half:
            raise ValueError(f"windows of {x.shape[1]} samples are too short for the STFT")
        # Centred frames with reflected edges, as torch.stft(center=True) pads by default.
        padded = np.pad(emphasised, ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=1)
        frames = frames[:, :: self.hop_length]
        spectrum = scipy.fft.rfft(frames * self.fft_window, axis=-1, overwrite_x=True)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        mel = np.matmul(self.mel_bank, power.transpose(0, 2, 1))
        patches = (np.log(mel + np.float32(self.log_offset)) + self.norm_shift) / self.norm_scale
        return patches[:, None].astype(np.float32)
