"""A scan on this machine's own workers against the same scan on a Dask LocalCluster.

Run from the repository root (a few minutes on a 2-core machine, plus encoding the tracks
unless ``--cache-dir`` already holds them; needs ``pip install 'libtagger[cluster]'``):

    python bench/cluster.py
    python bench/cluster.py --tracks 12 --cache-dir /tmp/lt-bench --json

``--tracks`` synthetic 4-minute tracks (bench/throughput.py's synthesiser: mp3, flac, m4a in
turn) are copied into a fresh library per variant and scanned into a fresh database by the real
command, ``python -m libtagger --db DB scan ROOT`` (timed end to end, start-up and model loading
included, like bench/scan.py), with ``library.settle_seconds = 0``:

* **local**: ``scan --jobs 2`` — two worker processes of this machine;
* **dask 1×2**: ``scan --scheduler local --jobs 2`` with ``cluster.local_workers = 1`` — one
  Dask worker process running two analysis processes;
* **dask 2×1**: the same with ``cluster.local_workers = 2`` and ``--jobs 1``.

Each variant must classify every track; the report says whether its genres are the local
scan's and how many tags it wrote (tracks below the gate get none).
Then the **per-task overhead** of Dask alone: round trips of a task that does nothing, on a
LocalCluster of one worker with two threads, with the scan's limit of four tasks in flight.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan import copy_library, run_scan  # noqa: E402
from throughput import TRACK_SECONDS, _rounded, log, make_tracks, table  # noqa: E402

VARIANTS: dict[str, tuple[list[str], int]] = {
    # name: (scan options, cluster.local_workers)
    "local": (["--jobs", "2"], 1),
    "dask 1x2": (["--scheduler", "local", "--jobs", "2"], 1),
    "dask 2x1": (["--scheduler", "local", "--jobs", "1"], 2),
}
ROUND_TRIPS = 2000


def genres(db: Path, root: Path) -> dict[str, list[str]]:
    """Each track's decided genres (relative path -> genre names by rank)."""
    out: dict[str, list[str]] = {}
    with contextlib.closing(sqlite3.connect(db)) as con:
        for path, genre in con.execute(
                "SELECT t.path, g.genre FROM tracks t JOIN classifications c ON c.track_id = t.id "
                "JOIN genres g ON g.classification_id = c.id ORDER BY t.path, g.rank"):
            out.setdefault(os.path.relpath(os.fsdecode(path), root), []).append(genre)
    return out


def _nothing(x: int) -> int:
    return x


def task_overhead() -> dict[str, float]:
    """Seconds per round trip of a task that does nothing, four in flight, as the scan keeps."""
    import logging

    from distributed import Client, LocalCluster, as_completed

    logging.getLogger("distributed").setLevel(logging.WARNING)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.submit(_nothing, 0, pure=False).result()
        started = time.perf_counter()
        futures = as_completed()
        submitted = 0
        for _ in range(4):
            futures.add(client.submit(_nothing, submitted, pure=False))
            submitted += 1
        for future in futures:
            future.result()
            if submitted < ROUND_TRIPS:
                futures.add(client.submit(_nothing, submitted, pure=False))
                submitted += 1
        wall = time.perf_counter() - started
    return {"round_trips": ROUND_TRIPS, "ms_per_task": 1000 * wall / ROUND_TRIPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--cache-dir", type=Path, help="keep and reuse the encoded tracks here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lt-cluster-"))
    try:
        cache = args.cache_dir or work / "tracks"
        cache.mkdir(parents=True, exist_ok=True)
        files = make_tracks(cache, args.tracks, TRACK_SECONDS, os.cpu_count() or 1)
        results: dict[str, Any] = {"tracks": len(files), "cores": os.cpu_count(), "variants": {}}
        reference: dict[str, list[str]] | None = None
        for name, (options, local_workers) in VARIANTS.items():
            folder = work / name.replace(" ", "-")
            root = folder / "Music"
            copy_library(files, root)
            config = folder / "config.toml"
            config.write_text("[library]\nsettle_seconds = 0\n"
                              f"[cluster]\nlocal_workers = {local_workers}\n")
            env = dict(os.environ, LIBTAGGER_CONFIG=str(config))
            run = run_scan(folder / "lib.db", root, *options, env=env)
            if run.summary["classified"] != len(files):
                raise SystemExit(f"{name}: not every track was classified:\n{run.output}")
            found = genres(folder / "lib.db", root)
            reference = reference or found
            results["variants"][name] = {
                "wall_seconds": run.wall_seconds,
                "tracks_per_min": 60 * len(files) / run.wall_seconds,
                "cpu_seconds": run.cpu_seconds,
                "peak_rss_mib": run.peak_rss_mib,
                "tags_written": run.summary["written"],
                "same_genres_as_local": found == reference,
            }
        log("timing Dask round trips ...")
        results["task_overhead"] = task_overhead()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(_rounded(results), indent=2))
        return
    rows = [["variant", "wall s", "tracks/min", "CPU s", "peak RSS MiB", "tags", "same genres"]]
    for name, v in results["variants"].items():
        rows.append([name, f"{v['wall_seconds']:.1f}", f"{v['tracks_per_min']:.1f}",
                     f"{v['cpu_seconds']:.1f}", f"{v['peak_rss_mib']:.0f}",
                     str(v["tags_written"]), "yes" if v["same_genres_as_local"] else "NO"])
    print(f"{results['tracks']} tracks of {TRACK_SECONDS / 60:.0f} min, "
          f"{results['cores']} cores")
    print(table(rows))
    overhead = results["task_overhead"]
    print(f"Dask round trip of an empty task: {overhead['ms_per_task']:.2f} ms "
          f"({overhead['round_trips']} tasks, 4 in flight)")


if __name__ == "__main__":
    main()
