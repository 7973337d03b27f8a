"""Throughput of libtagger's sampled-window pipeline against a decode-everything baseline.

Run from the repository root (takes a few minutes on a 2-core machine):

    python bench/throughput.py
    python bench/throughput.py --tracks 24 --cache-dir /tmp/lt-bench --json

It synthesises ``--tracks`` music-like 4-minute tracks (44.1 kHz stereo, mp3 / flac / m4a in
turn) with numpy, encodes them with PyAV into a temporary folder (or ``--cache-dir``, reused on
the next run), then times, on the same files and with the same number of worker processes:

* **pipeline**: ``classify_many(paths, Config(), jobs=N)``, which seeks to 8 windows per track;
* **baseline**: ``classify_many(paths, Config(), jobs=N, timeline=True)``, which decodes each
  track in full and classifies every non-overlapping 3 s window with the same models.

Each variant runs in a fresh subprocess of this script (``--variant``), so that
``RUSAGE_CHILDREN`` there covers exactly that variant's worker processes. Encoding is not timed.
The wall time includes what every ``classify_many`` call pays once: starting the pool, loading
the models, and each worker's first model call (TFLite sets up its tensors then, ~1.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATE = 44100
TRACK_SECONDS = 240.0
SYNTH_VERSION = 1  # bump when the synthesiser changes, so cached files are not reused
# File extension -> (FFmpeg muxer, encoder, bit rate or None for lossless).
FORMATS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", 192_000),
    "flac": ("flac", "flac", None),
    "m4a": ("ipod", "aac", 192_000),
}
VARIANTS = ("pipeline", "baseline")

# --------------------------------------------------------------------------------------------
# Synthesis: a small, seeded "band" playing a song form, rendered bar by bar.
# --------------------------------------------------------------------------------------------

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = ((0, 5, 3, 4), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3), (0, 6, 5, 4), (0, 2, 3, 4))
# Section name -> instrument levels (pad, bass, melody, kick, snare, hat).
SECTIONS: dict[str, tuple[float, float, float, float, float, float]] = {
    "intro": (0.8, 0.0, 0.0, 0.0, 0.0, 0.5),
    "verse": (0.7, 1.0, 0.3, 1.0, 0.8, 0.8),
    "chorus": (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "break": (0.3, 1.0, 0.0, 1.0, 0.0, 1.0),
    "outro": (0.8, 0.6, 0.0, 0.5, 0.0, 0.4),
}
TAIL = RATE  # samples a bar's notes may ring into the next bar


@dataclass(frozen=True)
class Style:
    """What makes one synthetic track sound different from the next."""

    tempo: float
    root: int  # MIDI note of the key's tonic in the bass register
    scale: tuple[int, ...]
    progression: tuple[int, ...]
    brightness: float  # harmonic roll-off of the chords, 0-1
    sevenths: bool
    stabs: bool  # chords as off-beat stabs instead of held pads
    four_on_floor: bool
    hat_steps: int  # hi-hat hits per beat
    bass_pattern: tuple[int, ...]  # eighth-note grid, 1 = play

    @classmethod
    def random(cls, rng: np.random.Generator) -> Style:
        """A random style."""
        return cls(
            tempo=float(rng.uniform(84.0, 150.0)),
            root=int(rng.integers(36, 48)),
            scale=MAJOR if rng.random() < 0.6 else MINOR,
            progression=PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))],
            brightness=float(rng.uniform(0.35, 0.8)),
            sevenths=bool(rng.random() < 0.4),
            stabs=bool(rng.random() < 0.35),
            four_on_floor=bool(rng.random() < 0.4),
            hat_steps=int(rng.choice([2, 4])),
            bass_pattern=(1, *(int(b) for b in rng.random(7) < 0.6)),
        )


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _note(scale: tuple[int, ...], degree: int) -> int:
    """Semitones above the tonic of a scale degree (degrees past 6 go up an octave)."""
    octave, step = divmod(degree, len(scale))
    return 12 * octave + scale[step]


def _tone(freq: float, n: int, harmonics: int, rolloff: float, odd_only: bool,
          attack: float, decay: float) -> np.ndarray:
    """An additive-synthesis note with an attack and exponential decay."""
    t = np.arange(n, dtype=np.float32) / RATE
    out = np.zeros(n, dtype=np.float32)
    for k in range(1, harmonics + 1):
        if (odd_only and k % 2 == 0) or freq * k > 0.45 * RATE:
            continue
        out += np.float32(rolloff ** (k - 1) / k) * np.sin(np.float32(2 * np.pi * freq * k) * t)
    return out * np.minimum(1.0, t / attack) * np.exp(-t / decay)


def _noise(rng: np.random.Generator, n: int, decay: float, highpass: int) -> np.ndarray:
    """A decaying noise burst, brightened by ``highpass`` first differences."""
    burst = rng.standard_normal(n + highpass).astype(np.float32)
    for _ in range(highpass):
        burst = np.diff(burst) * 0.5
    return burst[:n] * np.exp(-np.arange(n, dtype=np.float32) / (decay * RATE))


def _kick(n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / RATE
    freq = 45.0 + 90.0 * np.exp(-t / 0.03)
    return np.sin(2 * np.pi * np.cumsum(freq) / RATE).astype(np.float32) * np.exp(-t / 0.12)


def _add(buf: np.ndarray, sound: np.ndarray, at: int, gain: float, pan: float) -> None:
    """Mix a mono sound into a stereo buffer at sample ``at`` (pan -1 left .. 1 right)."""
    end = min(buf.shape[1], at + len(sound))
    if end <= at:
        return
    angle = (pan + 1.0) * np.pi / 4
    piece = sound[: end - at]
    buf[0, at:end] += gain * np.cos(angle) * piece
    buf[1, at:end] += gain * np.sin(angle) * piece


def _song_form(bars_total: int, rng: np.random.Generator) -> list[str]:
    """One section name per bar: intro, verse/chorus cycles with a break, outro."""
    form = ["intro"] * 4
    cycle = ["verse", "chorus", "verse", "chorus", "break", "chorus"]
    i = 0
    while len(form) < bars_total - 4:
        form += [cycle[i % len(cycle)]] * int(rng.choice([4, 8, 8]))
        i += 1
    return (form[: bars_total - 4] + ["outro"] * 4)[:bars_total]


def synthesise(index: int, seconds: float) -> Iterator[np.ndarray]:
    """Stereo float32 blocks [2, n], one bar each, of synthetic track number ``index``."""
    rng = np.random.default_rng(1000 + index)
    style = Style.random(rng)
    bar = round(4 * 60.0 / style.tempo * RATE)
    beat, eighth = bar // 4, bar // 8
    total = int(seconds * RATE)
    bars_total = -(-total // bar)
    form = _song_form(bars_total, rng)
    kick = _kick(int(0.35 * RATE))
    carry = np.zeros((2, TAIL), dtype=np.float32)
    melody_degree = 7
    done = 0
    for b in range(bars_total):
        section = form[b]
        pad_lv, bass_lv, mel_lv, kick_lv, snare_lv, hat_lv = SECTIONS[section]
        # A key change up a whole tone for the second half keeps late windows distinct.
        tonic = style.root + (2 if b >= bars_total // 2 else 0)
        degree = style.progression[b % len(style.progression)]
        buf = np.zeros((2, bar + TAIL), dtype=np.float32)
        buf[:, :TAIL] += carry
        bar_gain = float(rng.uniform(0.85, 1.1))

        chord = [degree, degree + 2, degree + 4] + ([degree + 6] if style.sevenths else [])
        bright = style.brightness * (1.15 if section == "chorus" else 1.0)
        for v, d in enumerate(chord):
            freq = _hz(tonic + 24 + _note(style.scale, d))
            pan = -0.6 + 1.2 * v / max(1, len(chord) - 1)
            if style.stabs:
                stab = _tone(freq, eighth * 2, 8, bright, False, 0.005, 0.12)
                for k in (1, 3, 5, 7):
                    _add(buf, stab, k * eighth, 0.10 * pad_lv, pan)
            else:
                pad = _tone(freq, bar + TAIL // 4, 8, bright, False, 0.06, 1.6)
                _add(buf, pad, 0, 0.09 * pad_lv, pan)

        if bass_lv:
            root_hz = _hz(tonic + _note(style.scale, degree))
            for k, on in enumerate(style.bass_pattern):
                if on:
                    freq = root_hz * (1.5 if k == 6 and rng.random() < 0.3 else 1.0)
                    _add(buf, _tone(freq, eighth * 2, 4, 0.5, False, 0.005, 0.25),
                         k * eighth, 0.35 * bass_lv, 0.0)

        if mel_lv:
            for k in range(8):
                if rng.random() < 0.55:
                    melody_degree = int(np.clip(melody_degree + rng.integers(-2, 3), 4, 14))
                    freq = _hz(tonic + 36 + _note(style.scale, melody_degree))
                    _add(buf, _tone(freq, eighth * 3, 7, 0.8, True, 0.01, 0.3),
                         k * eighth, 0.08 * mel_lv * float(rng.uniform(0.7, 1.0)), 0.3)

        if kick_lv:
            for k in range(4) if style.four_on_floor else (0, 2):
                _add(buf, kick, k * beat, 0.6 * kick_lv, 0.0)
        if snare_lv:
            for k in (1, 3):
                snare = _noise(rng, int(0.2 * RATE), 0.07, 1)
                snare += _tone(190.0, len(snare), 1, 1.0, False, 0.001, 0.05)
                _add(buf, snare, k * beat, 0.35 * snare_lv, 0.1)
            if b + 1 < bars_total and form[b + 1] != section:  # a fill into the next section
                for k in range(12, 16):
                    _add(buf, _noise(rng, int(0.1 * RATE), 0.05, 1), k * bar // 16,
                         0.12 * (k - 10), -0.1)
        if hat_lv:
            steps = 4 * style.hat_steps
            for k in range(steps):
                accent = 1.0 if k % 2 == 0 else float(rng.uniform(0.4, 0.7))
                _add(buf, _noise(rng, int(0.06 * RATE), 0.015, 2), k * bar // steps,
                     0.25 * hat_lv * accent, 0.4)
        if b > 0 and section != form[b - 1]:  # a crash at each new section
            _add(buf, _noise(rng, int(1.5 * RATE), 0.5, 2), 0, 0.3, -0.3)

        out, carry = buf[:, :bar], buf[:, bar:].copy()
        out = np.tanh(1.3 * bar_gain * out) * 0.8
        n = min(bar, total - done)
        t = (done + np.arange(n)) / RATE
        fade = np.minimum(1.0, np.minimum(t / 1.5, (seconds - t) / 4.0)).astype(np.float32)
        yield np.ascontiguousarray(out[:, :n] * fade, dtype=np.float32)
        done += n


def encode(path: Path, index: int, seconds: float) -> None:
    """Synthesise track ``index`` and encode it to ``path`` (format from its suffix)."""
    import av

    muxer, codec, bit_rate = FORMATS[path.suffix.lstrip(".")]
    partial = path.with_name(f".{path.name}.partial")
    with av.open(str(partial), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=RATE, layout="stereo")
        assert isinstance(stream, av.audio.stream.AudioStream)
        if bit_rate:
            stream.bit_rate = bit_rate
        for block in synthesise(index, seconds):
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(partial, path)


def _encode_job(job: tuple[str, int, float]) -> None:
    encode(Path(job[0]), job[1], job[2])


def make_tracks(folder: Path, count: int, seconds: float, jobs: int) -> list[Path]:
    """The benchmark files in ``folder``, encoding those not already there."""
    exts = list(FORMATS)
    paths = [folder / f"track{i:02d}-v{SYNTH_VERSION}-{seconds:g}s.{exts[i % len(exts)]}"
             for i in range(count)]
    todo = [(str(p), i, seconds) for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as pool:
            list(pool.map(_encode_job, todo))
        log(f"encoded {len(todo)} track(s) into {folder} in {time.perf_counter() - started:.1f} s "
            "(not part of the measurement)")
    if len(todo) < len(paths):
        log(f"reused {len(paths) - len(todo)} cached track(s) from {folder}")
    return paths


# --------------------------------------------------------------------------------------------
# Measurement: one variant, in this (fresh) process.
# --------------------------------------------------------------------------------------------


def run_variant(variant: str, files: list[str], jobs: int) -> dict[str, Any]:
    """Classify ``files`` the way ``variant`` does and return timings and peak memory."""
    from libtagger.analysis.audio import AudioFile
    from libtagger.analysis.classify import Classifier, Failure, TrackResult
    from libtagger.pipeline.batch import classify_many
    from libtagger.config import Config

    config = Config()
    timeline = variant == "baseline"
    cpu0 = os.times()
    started = time.perf_counter()
    results = list(classify_many(files, config, jobs=jobs, timeline=timeline))
    wall = time.perf_counter() - started
    cpu1 = os.times()
    # The pool has been shut down and its workers reaped, so RUSAGE_CHILDREN includes them.
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    ok = [r for r in results if isinstance(r, TrackResult)]
    failures = [{"path": r.path, "reason": r.reason} for r in results if isinstance(r, Failure)]

    # Per-format breakdown, after the timed run: decoding is the only format-dependent cost,
    # so time just that, single-process, the same way the variant decodes.
    classifier = Classifier(config)
    by_format: dict[str, dict[str, float]] = {}
    for result in ok:
        ext = Path(result.path).suffix.lstrip(".")
        t0 = time.perf_counter()
        with AudioFile(result.path, classifier.frontend) as audio:
            if timeline:
                sum(1 for _ in audio.iter_windows())
            else:
                audio.read_windows_at(classifier.window_starts(result.duration or 0.0))
        entry = by_format.setdefault(ext, {"tracks": 0, "audio_seconds": 0.0, "windows": 0,
                                           "decode_seconds": 0.0, "bytes": 0})
        entry["tracks"] += 1
        entry["audio_seconds"] += result.duration or 0.0
        entry["windows"] += result.windows
        entry["decode_seconds"] += time.perf_counter() - t0
        entry["bytes"] += os.path.getsize(result.path)

    return {
        "variant": variant,
        "models": classifier.name,
        "jobs": jobs,
        "workers": min(jobs, len(files)) if jobs > 1 and len(files) > 1 else 0,
        "tracks": len(ok),
        "failures": failures,
        "audio_seconds": sum(r.duration or 0.0 for r in ok),
        "windows": sum(r.windows for r in ok),
        "wall_seconds": wall,
        "cpu_seconds_main": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "cpu_seconds_workers": (cpu1.children_user - cpu0.children_user)
        + (cpu1.children_system - cpu0.children_system),
        "peak_rss_main_mib": rss_self / 1024,  # Linux reports ru_maxrss in KiB
        "peak_rss_worker_mib": rss_children / 1024,
        "by_format": by_format,
    }


def measure(variant: str, files: list[Path], jobs: int) -> dict[str, Any]:
    """Run one variant in a fresh subprocess of this script and return its figures."""
    log(f"running {variant} on {len(files)} track(s) with {jobs} job(s)...")
    command = [sys.executable, os.path.abspath(__file__), "--variant", variant,
               "--jobs", str(jobs), "--files", *map(str, files)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    wall, audio, n = figures["wall_seconds"], figures["audio_seconds"], figures["tracks"]
    figures["tracks_per_minute"] = 60.0 * n / wall
    figures["audio_seconds_per_wall_second"] = audio / wall
    figures["wall_per_audio"] = wall / audio if audio else None
    figures["cpu_seconds_per_track"] = (
        (figures["cpu_seconds_main"] + figures["cpu_seconds_workers"]) / n if n else None
    )
    return figures


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


def table(rows: list[list[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def report(results: list[dict[str, Any]], files: list[Path], seconds: float) -> str:
    """The human-readable summary."""
    counts = {ext: sum(p.suffix == f".{ext}" for p in files) for ext in FORMATS}
    mix = ", ".join(f"{n} {ext}" for ext, n in counts.items() if n)
    first = results[0]
    workers = first["workers"] or "no (in-process)"
    lines = [
        (f"{len(files)} synthetic tracks x {seconds / 60:g} min ({mix}), 44.1 kHz stereo; "
         f"models {first['models']}; jobs={first['jobs']} (worker processes: {workers})"),
        "",
    ]
    rows = [["variant", "windows", "wall s", "tracks/min", "audio s/wall s", "wall/audio",
             "CPU s/track", "peak RSS main", "peak RSS worker"]]
    for r in results:
        rows.append([
            r["variant"], str(r["windows"]), f"{r['wall_seconds']:.1f}",
            f"{r['tracks_per_minute']:.1f}", f"{r['audio_seconds_per_wall_second']:.1f}",
            f"{r['wall_per_audio']:.4f}", f"{r['cpu_seconds_per_track']:.2f}",
            f"{r['peak_rss_main_mib']:.0f} MiB",
            f"{r['peak_rss_worker_mib']:.0f} MiB" if r["workers"] else "-",
        ])
    lines.append(table(rows))
    by_name = {r["variant"]: r for r in results}
    if "pipeline" in by_name and "baseline" in by_name:
        speedup = by_name["baseline"]["wall_seconds"] / by_name["pipeline"]["wall_seconds"]
        lines.append(f"\npipeline is {speedup:.1f}x faster than the baseline (wall time)")
    for r in results:
        for failure in r["failures"]:
            lines.append(f"FAILED ({r['variant']}): {failure['path']}: {failure['reason']}")

    rows = [["format", "tracks", "MB/track"]
            + [f"{r['variant']} decode s/track" for r in results]]
    for ext in FORMATS:
        cells = [r["by_format"].get(ext) for r in results]
        if not any(cells):
            continue
        some = next(c for c in cells if c)
        rows.append([ext, str(int(some["tracks"])), f"{some['bytes'] / some['tracks'] / 1e6:.1f}"]
                    + [f"{c['decode_seconds'] / c['tracks']:.3f}" if c else "-" for c in cells])
    lines += ["", ("decoding only, per format (single process, timed after each run; the models' "
                   "cost is the same for every format):"), table(rows)]
    lines.append("\npeak RSS: max resident set of the main process (RUSAGE_SELF) and of the "
                 "largest worker (RUSAGE_CHILDREN); forked workers share pages with the main one.")
    return "\n".join(lines)


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to 4 decimals, for readable JSON."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main() -> None:
    """Parse arguments; either run one variant (internal) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=12, help="synthetic tracks (default 12)")
    parser.add_argument("--seconds", type=float, default=TRACK_SECONDS,
                        help="length of each track (default 240)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.add_argument("--cache-dir", type=Path,
                        help="keep the encoded tracks here and reuse them (default: a temp dir)")
    parser.add_argument("--only", choices=VARIANTS, action="append",
                        help="measure just this variant (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # internal: one measured variant in this fresh process
        json.dump(run_variant(args.variant, args.files, args.jobs), sys.stdout)
        return

    folder = args.cache_dir or Path(tempfile.mkdtemp(prefix="libtagger-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files = make_tracks(folder, args.tracks, args.seconds, args.jobs)
        results = [measure(v, files, args.jobs) for v in args.only or VARIANTS]
    finally:
        if args.cache_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        out = {"tracks": len(files), "track_seconds": args.seconds,
               "formats": {ext: sum(p.suffix == f".{ext}" for p in files) for ext in FORMATS},
               "results": results}
        print(json.dumps(_rounded(out), indent=2))
    else:
        print(report(results, files, args.seconds))


if __name__ == "__main__":
    main()
