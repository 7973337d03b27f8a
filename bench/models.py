"""Compare model options on the labelled development set: accuracy and speed.

Run from the repository root (all six options at the configured 8 windows: about 2 minutes):

    python bench/models.py
    python bench/models.py --windows 0 4 8 16     # 0: every window (the naive baseline)
    python bench/models.py --options msd_musicnn msd_vgg+mtt_vgg --music DIR

The development set is ``../shared/music`` next to the repository (``<genre>/<file>``; read in
place, never copied). Accuracy is scored by ``libtagger.analysis.evaluate``: top-1 is the best genre
matching the folder name, top-3 the folder name among the three best. Speed is measured in
one process (jobs=1): the CPU time of each ``Classifier.classify`` call (decode, log-mel, CNNs,
vote), models loaded beforehand and one untimed warm-up call first. Tracks/min for N workers
is ``N * 60 / mean CPU seconds per track``, what N busy cores would sustain.
The result is a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from libtagger.analysis.classify import Classifier, Failure, TrackResult, classify_or_fail
from libtagger.config import Config
from libtagger.analysis.evaluate import evaluate, labelled_files
from libtagger.analysis.model import shipped_models
from libtagger.analysis.vote import normalise_genre

OPTIONS = (
    "msd_musicnn",
    "mtt_musicnn",
    "msd_vgg",
    "msd_musicnn+mtt_musicnn",
    "msd_vgg+mtt_vgg",
    "msd_musicnn+mtt_vgg",
)
DEFAULT_MUSIC = Path(__file__).resolve().parents[2] / "shared" / "music"


@dataclass(frozen=True)
class Row:
    """One option at one window count."""

    option: str
    windows: int
    tracks: int
    failed: int
    reachable: int
    """Tracks whose folder genre this option can output at all."""
    top1: float
    top3: float
    cpu_per_track: float
    wall_per_track: float


def configure(base: Config, option: str, windows: int) -> Config:
    """``base`` with the option's models ('+'-separated) and the window count."""
    models = tuple(option.split("+"))
    return dataclasses.replace(
        base, classifier=dataclasses.replace(base.classifier, models=models, windows=windows)
    )


def run(option: str, windows: int, labelled: list[tuple[str, str]], base: Config) -> Row:
    """Classify every labelled file with one option, timing each call."""
    classifier = Classifier(configure(base, option, max(windows, 1)))
    every_window = windows == 0  # the naive baseline: decode all, classify every window
    classify_or_fail(classifier, labelled[0][0])  # warm-up: TFLite allocates on the first call
    results: list[TrackResult | Failure] = []
    cpu: list[float] = []
    wall: list[float] = []
    for path, _ in labelled:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        results.append(classify_or_fail(classifier, path, timeline=every_window))
        cpu.append(time.process_time() - cpu0)
        wall.append(time.perf_counter() - wall0)
    scored = evaluate(labelled, results)
    producible = {normalise_genre(g) for g in classifier.vocabulary.genres}
    producible -= {normalise_genre(g) for g in classifier.vocabulary.unmapped()}
    return Row(
        option=classifier.name,
        windows=windows,
        tracks=len(scored.files),
        failed=len(scored.failures),
        reachable=sum(normalise_genre(label) in producible for _, label in labelled),
        top1=scored.accuracy,
        top3=scored.top3_accuracy,
        cpu_per_track=sum(cpu) / len(cpu),
        wall_per_track=sum(wall) / len(wall),
    )


def markdown(rows: list[Row], workers: int) -> str:
    """The README table."""
    lines = [
        ("| Models | Windows | Top-1 | Top-3 | Reachable | CPU s/track "
         f"| Tracks/min ({workers} workers) |"),
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        n = r.tracks
        lines.append(
            f"| {r.option} | {r.windows or 'all'} | {r.top1:.0%} ({round(r.top1 * n)}/{n}) "
            f"| {r.top3:.0%} ({round(r.top3 * n)}/{n}) | {r.reachable}/{n + r.failed} "
            f"| {r.cpu_per_track:.3f} | {workers * 60 / r.cpu_per_track:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run every option at every window count, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--music", type=Path, default=DEFAULT_MUSIC,
                        help=f"labelled folder tree <genre>/<file> (default {DEFAULT_MUSIC})")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), metavar="MODELS",
                        help="model options, '+' joins models (default: the six compared)")
    parser.add_argument("--windows", nargs="+", type=int, metavar="N",
                        help="windows per track to try; 0 = every window, the naive baseline "
                             "(default: the configured 8)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes assumed for tracks/min (default 2)")
    args = parser.parse_args()

    known = set(shipped_models())
    for option in args.options:
        unknown = [m for m in option.split("+") if m not in known]
        if unknown:
            parser.error(f"unknown model {unknown[0]!r}; shipped: {', '.join(sorted(known))}")
    if args.windows and min(args.windows) < 0:
        parser.error("--windows counts must be 0 (every window) or more")
    labelled = labelled_files(args.music)
    if not labelled:
        parser.error(f"no labelled audio under {args.music} (expected <genre>/<file>)")
    base = Config()
    window_counts = args.windows or [base.classifier.windows]

    rows: list[Row] = []
    started = time.perf_counter()
    for windows in window_counts:
        for option in args.options:
            print(f"{option}, {windows} windows...", file=sys.stderr, flush=True)
            rows.append(run(option, windows, labelled, base))
    genres = sorted({label for _, label in labelled})
    print(f"Development set: {len(labelled)} tracks in {len(genres)} genre folders "
          f"({', '.join(genres)}); measured in {time.perf_counter() - started:.0f} s.\n")
    print(markdown(rows, args.workers))
    print(
        "\nTop-1/Top-3: folder genre is the best / among the three best genres. Reachable: "
        "tracks whose folder genre the option's vocabulary can output at all. CPU s/track: "
        "mean process CPU time of one classify call (single process, decode included). "
        f"Tracks/min: {args.workers} x 60 / CPU s/track."
    )
    failed = sum(r.failed for r in rows)
    if failed:
        print(f"\n{failed} classification(s) failed; see `libtagger evaluate` for details.")


if __name__ == "__main__":
    main()
