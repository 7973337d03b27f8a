"""Make real audio files for tests: numpy signals encoded by PyAV into every supported format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class Encoding:
    """How one file format is written: FFmpeg muxer, encoder, and the rate it needs."""

    container: str
    codec: str
    rate: int | None = None
    options: tuple[tuple[str, str], ...] = ()


ENCODINGS: dict[str, Encoding] = {
    "mp3": Encoding("mp3", "libmp3lame"),
    "flac": Encoding("flac", "flac"),
    "m4a": Encoding("ipod", "aac"),
    "ogg": Encoding("ogg", "vorbis", options=(("strict", "experimental"),)),
    "opus": Encoding("ogg", "libopus", rate=48000),
    "wav": Encoding("wav", "pcm_s16le"),
    "aiff": Encoding("aiff", "pcm_s16be"),
}

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def music(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0,
          tempo: float = 120.0, root: float = 220.0) -> np.ndarray:
    """A music-like signal [channels, samples] in [-1, 1]: chords, bass and noise-burst drums."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    beat = 60.0 / tempo
    chord_roots = root * np.array([1.0, 4 / 3, 3 / 2, 9 / 8])
    bar = np.floor(t / (4 * beat)).astype(int) % 4
    f0 = chord_roots[bar]
    signal = np.zeros_like(t)
    for ratio in (1.0, 5 / 4, 3 / 2):  # a major triad
        for harmonic in (1, 2, 3):
            signal += 0.07 / harmonic * np.sin(2 * np.pi * f0 * ratio * harmonic * t)
    signal += 0.15 * np.sin(2 * np.pi * f0 / 4 * t)  # bass
    hit = (t % beat) < 0.04
    signal += hit * rng.normal(0.0, 0.35, size=t.shape)  # drums
    signal = np.clip(signal, -1.0, 1.0).astype(np.float32)
    spread = [0.9 + 0.1 * np.cos(2 * np.pi * c / max(channels, 1)) for c in range(channels)]
    return np.stack([signal * s for s in spread])


def write(path: Path, samples: np.ndarray, rate: int = 44100, fmt: str | None = None,
          codec: str | None = None, sample_format: str | None = None) -> Path:
    """Encode samples [channels, n] (float in [-1, 1]) to ``path``; format from the suffix."""
    enc = ENCODINGS[fmt or path.suffix.lstrip(".").lower()]
    channels = samples.shape[0]
    out_rate = enc.rate or rate
    if out_rate != rate:
        # Resample by linear interpolation: good enough for test material.
        n_out = int(samples.shape[1] * out_rate / rate)
        x_old = np.linspace(0.0, 1.0, samples.shape[1], endpoint=False)
        x_new = np.linspace(0.0, 1.0, n_out, endpoint=False)
        samples = np.stack([np.interp(x_new, x_old, ch) for ch in samples]).astype(np.float32)
    with av.open(str(path), "w", format=enc.container) as container:
        stream = container.add_stream(codec or enc.codec, rate=out_rate)
        stream.layout = LAYOUTS[channels]
        if sample_format:
            stream.format = sample_format
        if enc.options:
            stream.codec_context.options = dict(enc.options)
        step = 4096
        data = np.ascontiguousarray(samples, dtype=np.float32)
        for start in range(0, data.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, start : start + step]), format="fltp",
                layout=LAYOUTS[channels],
            )
            frame.sample_rate = out_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def pcm_digest(path: Path, skip_damaged: bool = False) -> str:
    """SHA-256 of every decoded sample: equal digests mean the audio is untouched.

    ``skip_damaged`` decodes packet by packet and skips (and counts into the digest) the ones
    the decoder refuses, as a player does: a damaged file still gets a digest.
    """
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        if not skip_damaged:
            for frame in container.decode(audio=0):
                digest.update(frame.to_ndarray().tobytes())
            return digest.hexdigest()
        for packet in container.demux(container.streams.audio[0]):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                digest.update(b"damaged packet")
                continue
            for frame in frames:
                digest.update(frame.to_ndarray().tobytes())
    return digest.hexdigest()


def set_genre(path: Path, genres: list[str]) -> Path:
    """Give a file a genre tag the way a user's tagger would (mutagen, any format)."""
    import mutagen

    audio = mutagen.File(path, easy=True)
    audio["genre"] = genres
    audio.save()
    return path
