"""Decode any audio file to 16 kHz mono, cut it into windows, and compute log-mel patches.

Decoding uses PyAV (FFmpeg) for every format. Each channel is resampled to the model's rate
and the channels are then averaged, as librosa does when musicnn's training data was made
(libswresample's own downmix is about 3 dB louder and shifts the model's outputs).

A *window* is the audio one CNN patch sees: ``patch_frames`` STFT frames, computed without
centring, so a window needs ``(patch_frames - 1) * hop + n_fft`` samples and consecutive
windows start ``patch_frames * hop`` samples apart (3 s at 16 kHz for musicnn).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import av
import numpy as np

from libtagger.config import LimitsConfig
from libtagger.errors import TRANSIENT_ERRNOS, DecodeError

# File name endings treated as audio when walking a folder.
AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".alac", ".wav",
     ".wave", ".aif", ".aiff", ".aifc", ".wma", ".ape", ".wv", ".mpc", ".dsf", ".webm", ".mka"}
)


# Audio quieter than this (RMS, dBFS) is treated as silence and does not vote.
SILENCE_DBFS = -60.0
# Seconds decoded and dropped before a seek target, so the decoder and resampler settle.
SEEK_PREROLL = 0.3
# Demuxer errors after which the rest of a damaged file is given up.
MAX_DEMUX_RESTARTS = 100


@dataclass(frozen=True)
class FrontEnd:
    """The log-mel parameters a model was trained with (from its sidecar)."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    patch_frames: int = 187

    @property
    def window_samples(self) -> int:
        """Samples one patch needs with an un-centred STFT."""
        return (self.patch_frames - 1) * self.hop_length + self.n_fft

    @property
    def window_stride(self) -> int:
        """Samples between the starts of two consecutive, non-overlapping windows."""
        return self.patch_frames * self.hop_length

    @property
    def window_seconds(self) -> float:
        """Duration of audio one window covers, in seconds."""
        return self.window_stride / self.sample_rate

    @cached_property
    def mel_basis(self) -> np.ndarray:
        """Slaney-style mel filterbank (librosa's defaults), [n_mels, 1 + n_fft // 2]."""
        return slaney_mel_bank(self.sample_rate, self.n_fft, self.n_mels)

    @cached_property
    def hann(self) -> np.ndarray:
        """The periodic Hann window of the STFT (as librosa and scipy's fftbins=True)."""
        n = np.arange(self.n_fft)
        return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.n_fft)).astype(np.float32)

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        """Log-compressed mel patches [n, patch_frames, n_mels] from windows [n, window_samples].

        An un-centred STFT (n_fft 512, hop 256, periodic Hann), power, the mel bank; the mel
        power is rounded to float16 first, as in training, and the log is taken in float32:
        ``10000 * mel`` in float16 overflows to inf for loud audio. numpy and scipy only:
        librosa's STFT costs seconds of numba compilation on a worker's first track.
        """
        import scipy.fft

        windows = np.atleast_2d(np.asarray(windows, dtype=np.float32))
        frames = np.lib.stride_tricks.sliding_window_view(windows, self.n_fft, axis=1)
        frames = frames[:, :: self.hop_length]
        spectrum = scipy.fft.rfft(frames * self.hann, axis=-1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        mel = np.matmul(power, self.mel_basis.T)
        mel = mel.astype(np.float16).astype(np.float32)
        return np.log10(10000.0 * mel + 1.0)


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3.0)
    log_part = hz >= 1000.0
    return np.where(log_part, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0),
                    mel)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)),
                    mel * (200.0 / 3.0))


def slaney_mel_bank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters equally spaced on Slaney's mel scale from 0 Hz to Nyquist, each
    scaled to unit area ("slaney" norm): the filterbank musicnn's features were made with."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    edges = _slaney_mel_to_hz(np.linspace(0.0, _hz_to_slaney_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file's audio before decoding it."""

    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    container: str = ""

    @property
    def format(self) -> str:
        """A short format name as users say it: mp3, flac, ogg, opus, aac, alac, wav, aiff."""
        if self.codec.startswith("pcm_") or not self.codec:
            return self.container
        return _FORMAT_NAMES.get(self.codec, self.codec)


# Decoder names that differ from what users call the format.
_FORMAT_NAMES = {"mp3float": "mp3", "mp3": "mp3", "vorbis": "ogg", "libvorbis": "ogg"}


@dataclass(frozen=True)
class Window:
    """One window of 16 kHz mono audio, ``start`` seconds into the track."""

    start: float
    samples: np.ndarray

    @property
    def rms_dbfs(self) -> float:
        """Loudness of the window as RMS in dB relative to full scale."""
        rms = float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))
        return 20.0 * np.log10(max(rms, 1e-10))

    @property
    def silent(self) -> bool:
        """True when the window is too quiet to say anything about genre."""
        return self.rms_dbfs < SILENCE_DBFS


class AudioFile:
    """An open audio file: probe it, then read sampled windows or stream all of them.

    Opened through a Python file object so that any file name works, including ones that are
    not valid UTF-8. Use as a context manager.

    Raises:
        DecodeError: the file cannot be opened, is empty, or holds no decodable audio.
    """

    def __init__(self, path: str | os.PathLike[str], frontend: FrontEnd,
                 limits: LimitsConfig | None = None) -> None:
        self.path = os.fspath(path)
        self.frontend = frontend
        self.decode_errors = 0
        self.decoded_seconds = 0.0
        """Seconds of audio :meth:`iter_windows` decoded (the true length of a full read)."""
        self._first_error: str | None = None
        self._file: io.BufferedReader = open_regular(self.path)
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                raise DecodeError(path, "empty file (0 bytes)")
            refusal = check_tags(self._file, size, limits or LimitsConfig())
            if refusal:
                raise DecodeError(path, f"refused unread: {refusal}")
            self._file.seek(0)
            try:
                self._container = av.open(self._file, mode="r", metadata_errors="ignore")
            except (av.FFmpegError, ValueError, OSError) as exc:
                raise DecodeError(path, f"not a readable audio file ({_reason(exc)})") from exc
            if not self._container.streams.audio:
                self._container.close()
                raise DecodeError(path, "contains no audio stream")
        except BaseException:
            self._file.close()
            raise
        self._stream = self._container.streams.audio[0]

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the container and the underlying file."""
        try:
            self._container.close()
        finally:
            self._file.close()

    @property
    def info(self) -> AudioInfo:
        """Codec, rate, channels and duration as the container reports them."""
        stream = self._stream
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        return AudioInfo(
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            duration=duration if duration and duration > 0 else None,
            container=self._container.format.name.split(",")[0],
        )

    def stream_hash(self) -> str:
        """SHA-1 of the compressed audio packets: the file's identity, blind to its tags.

        Tags live outside the audio packets in every container we read, so renaming a file or
        rewriting its tags keeps the hash; re-encoding or editing the audio changes it.

        Raises:
            DecodeError: the file cannot be demuxed.
        """
        digest = hashlib.sha1(usedforsecurity=False)
        info = self.info
        digest.update(f"{info.codec}|{info.sample_rate}|{info.channels}|".encode())
        packets = 0
        try:
            self._container.seek(0, stream=self._stream)
        except (av.FFmpegError, OSError):
            pass  # already at the start of a file that cannot seek
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:
                    digest.update(memoryview(packet))
                    packets += 1
        except (av.FFmpegError, OSError) as exc:
            if not packets:
                raise DecodeError(self.path, f"cannot read audio packets ({_reason(exc)})") from exc
        if not packets:
            raise DecodeError(self.path, "contains no audio packets")
        return digest.hexdigest()

    def _frames(self) -> Iterator[av.AudioFrame]:
        """Decoded frames from the current position, skipping data that fails to decode.

        Like a player, it decodes past damage: a bad packet is counted and skipped, and a
        demuxer error restarts demuxing from where it stopped (up to a limit, so a file that
        is damaged to the end cannot loop forever).
        """
        restarts = 0
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as exc:
                self.decode_errors += 1
                self._first_error = self._first_error or _reason(exc)
                restarts += 1
                if restarts > MAX_DEMUX_RESTARTS:
                    return
                packets = self._container.demux(self._stream)
                continue
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as exc:
                self.decode_errors += 1
                self._first_error = self._first_error or _reason(exc)
                continue
            yield from frames

    def _mono(self, start_hint: float) -> Iterator[tuple[float, np.ndarray]]:
        """(start seconds, 16 kHz mono float32 samples) chunks from the current position.

        A new resampler is made whenever the decoded format changes mid-stream (concatenated
        files, or a damaged header that still decodes).
        """
        rate = self.frontend.sample_rate
        resampler: av.AudioResampler | None = None
        source: tuple[str, str, int] | None = None
        position: float | None = None

        def drain(frames: list[av.AudioFrame]) -> Iterator[tuple[float, np.ndarray]]:
            nonlocal position
            for out in frames:
                chunk = out.to_ndarray().mean(axis=0, dtype=np.float32)
                yield position, chunk
                position += len(chunk) / rate

        for frame in self._frames():
            if position is None:
                position = frame.time if frame.time is not None else start_hint
            shape = (frame.format.name, frame.layout.name, frame.sample_rate)
            if shape != source:
                if resampler is not None:
                    yield from drain(resampler.resample(None))
                resampler = av.AudioResampler(format="fltp", rate=rate)
                source = shape
            try:
                converted = resampler.resample(frame)
            except (av.FFmpegError, ValueError) as exc:
                self.decode_errors += 1
                self._first_error = self._first_error or _reason(exc)
                continue
            yield from drain(converted)
        if resampler is not None:
            yield from drain(resampler.resample(None))

    def iter_windows(self) -> Iterator[Window]:
        """Every non-overlapping window of the whole file, in order, streaming.

        Memory stays at a few windows however long the file is. The last, partial window is
        kept when it holds at least a third of a window; audio shorter than one window is
        repeat-padded to a full window (as in training).
        """
        fe = self.frontend
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0  # samples consumed before buffer[0]
        emitted = 0
        total = 0
        for _, chunk in self._mono(0.0):
            total += len(chunk)
            self.decoded_seconds = total / fe.sample_rate
            buffer = np.concatenate([buffer, chunk])
            while len(buffer) >= fe.window_samples:
                yield Window(offset / fe.sample_rate, buffer[: fe.window_samples].copy())
                emitted += 1
                buffer = buffer[fe.window_stride :]
                offset += fe.window_stride
        if emitted == 0 and len(buffer) == 0:
            kind = self._container.format.name.split(",")[0]
            reason = f"no decodable audio in what looks like a {kind} file"
            if self._first_error:
                reason += f" ({self._first_error})"
            raise DecodeError(self.path, reason)
        if len(buffer) and (emitted == 0 or len(buffer) >= fe.window_samples // 3):
            yield Window(offset / fe.sample_rate, _repeat_pad(buffer, fe.window_samples))

    def read_windows_at(self, starts: Sequence[float]) -> list[Window]:
        """Seek to each start (seconds) and decode just one window there.

        Windows that cannot be read (a seek past the real end of a truncated file) are left
        out; the caller falls back to :meth:`iter_windows` when none could be read.
        """
        fe = self.frontend
        stream = self._stream
        windows: list[Window] = []
        for start in starts:
            target = max(0.0, start - SEEK_PREROLL)
            try:
                self._container.seek(int(target / stream.time_base), stream=stream)
            except (av.FFmpegError, OSError):
                continue
            pieces: list[np.ndarray] = []
            have = 0
            actual_start: float | None = None
            for position, chunk in self._mono(target):
                if actual_start is None:
                    skip = int(round((start - position) * fe.sample_rate))
                    if skip >= len(chunk):
                        continue
                    skip = max(skip, 0)
                    actual_start = position + skip / fe.sample_rate
                    chunk = chunk[skip:]
                pieces.append(chunk)
                have += len(chunk)
                if have >= fe.window_samples:
                    break
            if actual_start is not None and have >= fe.window_samples:
                samples = np.concatenate(pieces)[: fe.window_samples]
                windows.append(Window(actual_start, samples))
        return windows


def open_regular(path: str | os.PathLike[str]) -> io.BufferedReader:
    """Open a file for reading only if it is a regular file: a FIFO or device never blocks us.

    Raises:
        DecodeError: not a regular file, or it cannot be opened (``transient`` when the cause
            may go away: permissions, a vanished folder).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except IsADirectoryError:
        raise DecodeError(path, "is a directory, not an audio file") from None
    except OSError as exc:
        raise DecodeError(path, f"cannot open: {exc.strerror or exc}",
                          transient=exc.errno in TRANSIENT_ERRNOS) from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "directory" if stat.S_ISDIR(mode) else "FIFO, socket or device"
        raise DecodeError(path, f"is a {kind}, not an audio file")
    file = os.fdopen(fd, "rb")
    file.raw.name = os.fspath(path)  # FFmpeg takes the name as a hint when probing the format
    return file


def check_tags(file: io.BufferedReader, size: int, limits: LimitsConfig) -> str | None:
    """Why a file's tags are too big or too many to hand to FFmpeg or mutagen, if they are."""
    from libtagger.analysis.precheck import TagLimits, check_file

    tag_limits = TagLimits(max_tag_bytes=limits.max_tag_mb * 1024 * 1024,
                           max_frames=limits.max_tag_items, max_atoms=limits.max_tag_items,
                           max_inflated_bytes=limits.max_tag_mb * 1024 * 1024)
    return check_file(file, size, tag_limits)


def _repeat_pad(samples: np.ndarray, length: int) -> np.ndarray:
    """Tile short audio until it fills ``length`` samples."""
    reps = -(-length // len(samples))
    return np.tile(samples, reps)[:length]


def _reason(exc: BaseException) -> str:
    """A short, human reason from an FFmpeg or OS error."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '", 1)[0].strip() or type(exc).__name__


def find_audio(root: str | os.PathLike[str],
               onerror: Callable[[OSError], None] | None = None) -> Iterator[str]:
    """Audio files under ``root`` by extension, sorted, hidden files and folders skipped.

    A folder that cannot be listed is passed to ``onerror`` (default: skipped silently).
    """
    for folder, dirs, files in os.walk(root, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                yield os.path.join(folder, name)
