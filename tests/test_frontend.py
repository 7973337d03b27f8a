"""The log-mel front-end reproduces musicnn's training features."""

from __future__ import annotations

import librosa
import numpy as np
from conftest import DATA

from libtagger.analysis.audio import FrontEnd

FE = FrontEnd()


def test_window_geometry_matches_musicnn_patches():
    assert FE.window_samples == 186 * 256 + 512
    assert FE.window_stride == 187 * 256
    assert abs(FE.window_seconds - 2.992) < 1e-9


def test_mel_bank_equals_librosas():
    expected = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)
    np.testing.assert_allclose(FE.mel_basis, expected, rtol=1e-5, atol=1e-7)


def test_patches_match_reference_librosa_features():
    golden = np.load(DATA / "golden_audio.npz")
    audio = golden["audio_int16"].astype(np.float32) / 32767
    windows = audio.reshape(len(golden["patches"]), FE.window_samples)
    patches = FE.log_mel(windows)
    assert patches.shape == golden["patches"].shape == (2, 187, 96)
    # float16 rounding of the mel power is part of the recipe; allow one float16 step.
    np.testing.assert_allclose(patches, golden["patches"], rtol=0, atol=2e-3)


def test_uncentred_window_equals_interior_of_centred_full_track():
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 0.1, FE.window_samples * 3).astype(np.float32)
    full = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=512, hop_length=256, n_mels=96).T
    full = np.log10(10000 * full.astype(np.float16).astype(np.float32) + 1)
    start = FE.window_stride  # the second window
    patch = FE.log_mel(audio[start : start + FE.window_samples][None])[0]
    # Frame j of the window is centred at start + 256 + 256 j, i.e. full-track frame j + 188.
    np.testing.assert_allclose(patch, full[188 : 188 + 187], atol=2e-3)


def test_loud_audio_stays_finite():
    # Full-scale square wave: 10000 * mel overflows float16, the log must be taken in float32.
    t = np.arange(FE.window_samples) / 16000
    square = np.sign(np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    patch = FE.log_mel(square[None])
    assert np.isfinite(patch).all()
    assert patch.max() > 4.8  # log10(10000 * mel) of a loud tone is well above float16's limit


def test_silence_is_zero():
    assert not FE.log_mel(np.zeros((1, FE.window_samples), np.float32)).any()
