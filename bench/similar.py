"""Cost of ``libtagger similar``: one query against a library of 100,000 tracks, cold and warm.

Run from the repository root (about a minute on a 2-core machine, most of it filling the
database):

    python bench/similar.py
    python bench/similar.py --tracks 20000 --queries 50 --json
    python bench/similar.py --windows 0      # classification rows holding only the vector

1. **fill**: a fresh database (the real schema, via ``Library``) gets ``--tracks`` tracks with
   status ``done``, bulk-inserted with SQLAlchemy Core. Each classification is shaped like a
   real one from the default models (``msd_vgg+mtt_vgg+mn04_as``): a random L2-normalised
   ``--dim`` (896) float16 vector, ``--windows`` (4, the default stretches) per-stretch float16
   embeddings ahead of it in the row, the model tags as JSON, and three genre rows. The embeddings
   matter: SQLite stores a row's columns in order, so reading the vector means stepping over
   the embedding blob's overflow pages.
2. **query**: a fresh Python process opens the database and calls
   ``libtagger.library.similar.similar_tracks(library, path, n)`` for random tracks: the first call is
   **cold** (new process and connection, empty SQLite page cache; the OS file cache is warm
   from the fill), then ``--queries`` **warm** calls. Reported: ms per query (cold; warm median,
   min and max), where a warm query's time goes (medians of 5: the candidate select with the
   products, and the bare select alone; ``argpartition``; paths and genres of the winners), and the
   query process's peak RSS (``VmHWM``) against its RSS just before the first query.

Progress goes to stderr, the report to stdout. The temp folder is removed at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import _rounded, log, table  # noqa: E402

MODEL = "msd_vgg+mtt_vgg"  # the default model set; its tags are these two models' labels
BREAKDOWN_REPEATS = 5
INSERT_CHUNK = 5_000  # tracks per bulk insert (the embeddings of a chunk are ~40 MB)
GENRES = ("Rock", "Electronic", "Jazz", "Hip-Hop", "Pop", "Metal", "Folk", "Classical")


def track_path(i: int) -> str:
    """The path of track ``i``: 100 tracks per album, 10 albums per artist."""
    return f"/music/artist{i // 1000:04d}/album{i // 100 % 10}/track{i % 100:02d}.flac"


def model_tags() -> list[str]:
    """The shipped labels of the default model set (what a classification's ``tags`` holds)."""
    folder = Path(__file__).resolve().parent.parent / "libtagger" / "models"
    labels: list[str] = []
    for name in MODEL.split("+"):
        labels += json.loads((folder / f"{name}.json").read_text())["labels"]
    return labels


def fill_database(db: Path, count: int, dim: int, windows: int, seed: int) -> None:
    """``count`` classified tracks with random vectors; ids assigned here, no read-back."""
    import numpy as np
    from sqlalchemy import insert

    from libtagger.library.db import Classification, GenreRow, Library, Track, utcnow

    rng = np.random.default_rng(seed)
    labels = model_tags()
    now = utcnow()
    tracks, classifications, genres = Track.__table__, Classification.__table__, GenreRow.__table__
    library = Library(db)
    try:
        with library.engine.begin() as connection:
            next_genre = 1
            for start in range(0, count, INSERT_CHUNK):
                size = min(INSERT_CHUNK, count - start)
                vectors = rng.standard_normal((size, dim), dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                blobs = vectors.astype(np.float16)
                per_window = (rng.standard_normal((size, windows, dim), dtype=np.float32)
                              .astype(np.float16) if windows else None)
                picks = rng.integers(0, len(GENRES), size=(size, 3))
                track_rows, classification_rows, genre_rows = [], [], []
                for j in range(size):
                    i = start + j
                    track_rows.append({
                        "id": i + 1, "path": track_path(i), "size": 8_000_000,
                        "mtime_ns": 1_700_000_000_000_000_000 + i, "identity": f"{i:040x}",
                        "format": "flac", "duration": 240.0, "status": "done", "attempts": 1,
                        "added_at": now, "updated_at": now,
                    })
                    classification_rows.append({
                        "id": i + 1, "track_id": i + 1, "model": MODEL, "windows": windows,
                        "voting_windows": windows, "duration": 240.0, "created_at": now,
                        "tags": {label: round(float(v), 6) for label, v in
                                 zip(labels, rng.random(len(labels)), strict=True)},
                        "embeddings": None if per_window is None else per_window[j].tobytes(),
                        "embedding_dim": dim, "vector": blobs[j].tobytes(),
                    })
                    for rank, g in enumerate(dict.fromkeys(picks[j]), start=1):
                        genre_rows.append({
                            "id": next_genre, "classification_id": i + 1,
                            "rank": rank, "genre": GENRES[g], "score": 0.9 / rank,
                            "confidence": 0.8 / rank,
                        })
                        next_genre += 1
                connection.execute(insert(tracks), track_rows)
                connection.execute(insert(classifications), classification_rows)
                connection.execute(insert(genres), genre_rows)
                log(f"  {start + size} / {count} tracks")
    finally:
        library.close()


def memory_mib() -> dict[str, float]:
    """This process's resident set now and at its peak (``VmRSS``, ``VmHWM``), in MiB.

    Not ``ru_maxrss``: Linux carries it across ``exec``, so a child started from the big
    filling process would report the parent's peak.
    """
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields


def measure(db: Path, count: int, queries: int, n: int, seed: int) -> dict[str, Any]:
    """In this (fresh) process: the cold query, the warm ones, a breakdown, and peak RSS."""
    import numpy as np

    from libtagger.library.db import Library
    from libtagger.library.similar import (
        PARTITION,
        _best,
        _candidate_vectors,
        _neighbours,
        _query_track,
        _scores,
        similar_tracks,
    )

    rng = np.random.default_rng(seed + 1)
    picks = [track_path(int(i)) for i in rng.integers(0, count, size=queries + 1)]
    library = Library(db)
    try:
        before = memory_mib()
        started = time.perf_counter()
        found = similar_tracks(library, picks[0], n)
        cold = time.perf_counter() - started
        warm = []
        for path in picks[1:]:
            started = time.perf_counter()
            found = similar_tracks(library, path, n)
            warm.append(time.perf_counter() - started)
        after = memory_mib()
        if len(found) != min(n, count - 1):
            raise SystemExit(f"expected {min(n, count - 1)} neighbours, got {len(found)}")

        # Where a warm query's time goes: the steps of similar_tracks one by one, and the bare
        # database read inside the first step (medians of BREAKDOWN_REPEATS).
        steps: dict[str, list[float]] = {"read": [], "score": [], "rank": [], "winners": []}
        with library.engine.connect() as connection:
            for path in picks[:BREAKDOWN_REPEATS]:
                query = _query_track(connection, path)
                started = time.perf_counter()
                result = connection.execution_options(yield_per=PARTITION).execute(
                    _candidate_vectors(query))
                candidates = sum(len(rows) for rows in result.partitions())
                steps["read"].append(time.perf_counter() - started)
                started = time.perf_counter()
                ids, scores = _scores(connection, query)
                scored = time.perf_counter()
                top = _best(ids, scores, n)
                ranked = time.perf_counter()
                _neighbours(connection, ids[top].tolist(), scores[top].tolist())
                finished = time.perf_counter()
                steps["score"].append(scored - started)
                steps["rank"].append(ranked - scored)
                steps["winners"].append(finished - ranked)
    finally:
        library.close()
    return {
        "candidates": candidates,
        "cold_ms": cold * 1000,
        "warm_ms_median": statistics.median(warm) * 1000,
        "warm_ms_min": min(warm) * 1000,
        "warm_ms_max": max(warm) * 1000,
        **{f"{step}_ms": statistics.median(times) * 1000 for step, times in steps.items()},
        "rss_before_mib": before["VmRSS"],
        "rss_after_mib": after["VmRSS"],
        "peak_rss_mib": after["VmHWM"],
    }


def report(results: dict[str, Any]) -> str:
    """The human-readable summary."""
    q = results["query"]
    rows = [
        ["", "ms"],
        ["cold query (first in a fresh process)", f"{q['cold_ms']:.0f}"],
        [f"warm query, median of {results['queries']}", f"{q['warm_ms_median']:.0f}"],
        ["warm query, min / max", f"{q['warm_ms_min']:.0f} / {q['warm_ms_max']:.0f}"],
        ["  score: candidate select, vectors @ query", f"{q['score_ms']:.0f}"],
        ["    of which the bare select (rows only)", f"{q['read_ms']:.0f}"],
        ["  rank: argpartition, sort the best", f"{q['rank_ms']:.1f}"],
        ["  winners: paths and genres", f"{q['winners_ms']:.1f}"],
    ]
    return "\n".join([
        f"similar tracks: {results['tracks']} tracks, {results['dim']}-d float16 vectors, "
        f"{results['windows']} embedding windows per row, n={results['n']}; database "
        f"{results['database_mib']:.0f} MiB, filled in {results['fill_seconds']:.1f} s",
        "",
        table(rows),
        "",
        f"query process RSS: {q['rss_before_mib']:.0f} MiB before the first query, peak "
        f"{q['peak_rss_mib']:.0f} MiB (VmHWM), {q['rss_after_mib']:.0f} MiB after the last",
    ])


def main() -> None:
    """Parse arguments; fill a database, then measure queries in a fresh process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=100_000,
                        help="tracks in the library (default 100000)")
    parser.add_argument("--dim", type=int, default=896,
                        help="vector dimension (default 896: musicnn 512 + EfficientAT 384)")
    parser.add_argument("--windows", type=int, default=4,
                        help="per-stretch embeddings stored in each row (default 4; 0: none)")
    parser.add_argument("--queries", type=int, default=20,
                        help="warm queries after the cold one (default 20)")
    parser.add_argument("-n", type=int, default=20, help="neighbours per query (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder and say where")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child
    args = parser.parse_args()
    if args.tracks < 2 or args.queries < 1 or args.n < 1:
        parser.error("need --tracks >= 2, --queries >= 1 and -n >= 1")

    if args.measure:
        print(json.dumps(measure(args.measure, args.tracks, args.queries, args.n, args.seed)))
        return

    work = Path(tempfile.mkdtemp(prefix="libtagger-similar-bench-"))
    db = work / "library.db"
    try:
        log(f"filling {db} with {args.tracks} tracks...")
        started = time.perf_counter()
        fill_database(db, args.tracks, args.dim, args.windows, args.seed)
        fill_seconds = time.perf_counter() - started
        log("querying in a fresh process...")
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(db), "--tracks", str(args.tracks),
             "--queries", str(args.queries), "-n", str(args.n), "--seed", str(args.seed)],
            check=True, capture_output=True, text=True,
        )
        results = {
            "tracks": args.tracks, "dim": args.dim, "windows": args.windows, "n": args.n,
            "queries": args.queries, "fill_seconds": fill_seconds,
            "database_mib": db.stat().st_size / 2**20,
            "query": json.loads(child.stdout),
        }
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"the query process failed:\n{exc.stderr}") from exc
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(_rounded(results), indent=2))
    else:
        print(report(results))


if __name__ == "__main__":
    main()
