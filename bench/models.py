"""Compare model options on the labelled development set: accuracy, what is written, speed.

Run from the repository root (the three options below: about a minute):

    python bench/models.py
    python bench/models.py --options msd_musicnn msd_vgg+mtt_vgg --music DIR

Options: the old default (musicnn's msd_vgg+mtt_vgg, 8 windows of 3 s), EfficientAT alone, and
the new default (both networks, 4 stretches of 10 s). Besides top-1/top-3 it reports what users
see in their files: **coverage** (share of tracks that get a genre written, at the default
gates) and **precision** (share of written genres that are right: the folder's genre, or the
broad genre of a folder that names a style). The folder "ragtime" counts as Jazz. Sixteen songs
are a smoke test, not a target: no rule or constant is tuned to them.

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

OPTIONS = ("msd_vgg+mtt_vgg", "mn04_as", "msd_vgg+mtt_vgg+mn04_as")
# Folder names of the development set that are no node of the tree, and the node they mean.
FOLDER_GENRES = {"ragtime": "Jazz"}
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
    written: int
    """Tracks that get a genre written at the default gates."""
    right: int
    """Of those, written genres that are right."""
    cpu_per_track: float
    wall_per_track: float


def default_windows(option: str) -> int:
    """8 windows of 3 s for musicnn alone (the old default), else 4 stretches of 10 s."""
    return 4 if "mn04_as" in option.split("+") else 8


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
    producible = {normalise_genre(g) for g in classifier.tree.names}
    producible -= {normalise_genre(g) for g in classifier.tree.unmapped()}
    parents = {n.name: n.parent for n in classifier.tree.nodes}
    written = right = 0
    for (_, label), result in zip(labelled, results, strict=True):
        decision = getattr(result, "decision", None)
        if decision is None or not decision.genres:
            continue
        written += 1
        truth = normalise_genre(FOLDER_GENRES.get(label, label))
        genre = decision.genres[0]
        ok = {normalise_genre(genre)}
        right += truth in ok or normalise_genre(parents.get(genre) or "") == truth or any(
            normalise_genre(p or "") == normalise_genre(genre) and normalise_genre(n) == truth
            for n, p in parents.items())
    return Row(
        option=classifier.name,
        windows=windows,
        tracks=len(scored.files),
        failed=len(scored.failures),
        reachable=sum(normalise_genre(FOLDER_GENRES.get(label, label)) in producible
                      for _, label in labelled),
        top1=scored.accuracy,
        top3=scored.top3_accuracy,
        written=written,
        right=right,
        cpu_per_track=sum(cpu) / len(cpu),
        wall_per_track=sum(wall) / len(wall),
    )


def markdown(rows: list[Row], workers: int) -> str:
    """The README table."""
    lines = [
        ("| Models | Windows | Top-1 | Top-3 | Written (coverage) | Right of written "
         f"(precision) | Reachable | CPU s/track | Tracks/min ({workers} workers) |"),
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        n = r.tracks
        lines.append(
            f"| {r.option} | {r.windows or 'all'} | {r.top1:.0%} ({round(r.top1 * n)}/{n}) "
            f"| {r.top3:.0%} ({round(r.top3 * n)}/{n}) "
            f"| {r.written / max(n, 1):.0%} ({r.written}/{n}) "
            f"| {r.right / max(r.written, 1):.0%} ({r.right}/{r.written}) "
            f"| {r.reachable}/{n + r.failed} "
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
                             "(default: 8 for musicnn alone, 4 stretches with EfficientAT)")
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
    rows: list[Row] = []
    started = time.perf_counter()
    for option in args.options:
        for windows in args.windows or [default_windows(option)]:
            print(f"{option}, {windows} windows...", file=sys.stderr, flush=True)
            rows.append(run(option, windows, labelled, base))
    genres = sorted({label for _, label in labelled})
    print(f"Development set: {len(labelled)} tracks in {len(genres)} genre folders "
          f"({', '.join(genres)}); measured in {time.perf_counter() - started:.0f} s.\n")
    print(markdown(rows, args.workers))
    print(
        "\nTop-1/Top-3: folder genre is the best / among the three best genres. Written: "
        "tracks the default gates let a genre into the file; Right: written genre is the "
        "folder's (or the broad genre of the folder's style). Reachable: "
        "tracks whose folder genre the option's vocabulary can output at all. CPU s/track: "
        "mean process CPU time of one classify call (single process, decode included). "
        f"Tracks/min: {args.workers} x 60 / CPU s/track."
    )
    failed = sum(r.failed for r in rows)
    if failed:
        print(f"\n{failed} classification(s) failed; see `libtagger evaluate` for details.")


if __name__ == "__main__":
    main()
