"""A label's catalogue: libtagger's database at 100,000 and 1,000,000 tracks, SQLite and PostgreSQL.

Run from the repository root (PostgreSQL's server binaries and psycopg are needed for the
PostgreSQL half; it is skipped, saying why, without them):

    python bench/catalogue.py                                   # 100k and 1M, both backends
    python bench/catalogue.py --tracks 100000 --backend sqlite --cache-dir /tmp/lt-catalogue

For each size, a library of hard links is made once (``--cache-dir`` keeps it: a directory
entry per path, no audio; bench/scan.py's layout of 100 tracks per album, 10 albums per
artist) to five short real tracks, which the real ``libtagger scan --no-write`` classifies into
each backend's fresh database; the database is then filled as if every path had been scanned
(bench/scan.py's ``fill_database``: each path its own stat, a copy of its source's
classification, genre rows and embeddings). Then, on each backend:

* **no-op rescan**: ``python -m libtagger --db DB scan --jobs 2 ROOT``, the real command, timed
  end to end; it must find every path unchanged;
* **query**: ``select_tracks`` (what ``libtagger query`` runs) for typical queries, a page of
  100 rows each, median of 5 warm runs;
* **stats**: ``library_stats`` (``libtagger stats``), median of 3;
* **similar**: ``similar_tracks`` for one track, median of 3;
* **size** of the database on disk (the SQLite file; ``pg_database_size`` on PostgreSQL).

PostgreSQL runs as a throw-away cluster in a temporary folder on a Unix socket (tests/pg.py,
the one the tests use), with PostgreSQL's default settings (fsync on, unlike the tests').
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from scan import (  # noqa: E402
    SOURCE_COUNT,
    SOURCE_SECONDS,
    fill_database,
    link_library,
    run_scan,
)
from throughput import _rounded, log, make_tracks, table  # noqa: E402

QUERIES = (
    "genre:electronic score:>0.3",
    'path:"{root}/Artist 042"',
    "changed:7d..",
    "status:failed",
)
PAGE = 100
LINKS_PER_SOURCE = 40_000  # and the 100k library of a shared --cache-dir holds 20,000 more


def median_seconds(action: Callable[[], Any], runs: int) -> float:
    """The median wall time of ``runs`` calls, after one warm-up call."""
    action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(db: str, root: Path, count: int, env: dict[str, str]) -> dict[str, Any]:
    """Rescan, query, stats, similar and size for one filled database."""
    from libtagger.library.db import Library
    from libtagger.library.similar import similar_tracks
    from libtagger.query.language import select_tracks
    from libtagger.query.listing import track_rows
    from libtagger.query.report import library_stats

    rescan = run_scan(db, root, "--jobs", "2", env=env)  # type: ignore[arg-type]
    s = rescan.summary
    if s["found"] != count or s["unchanged"] != count or s["classified"]:
        raise SystemExit(f"the no-op rescan was not one:\n{rescan.output}")
    out: dict[str, Any] = {"rescan_seconds": rescan.wall_seconds,
                           "rescan_peak_rss_mib": rescan.peak_rss_mib, "queries": {}}
    real_root = os.path.realpath(root)
    library = Library(db)
    try:
        for text in QUERIES:
            query = text.format(root=real_root)

            def run(query: str = query) -> int:
                with library.reader() as session:
                    return len(track_rows(select_tracks(session, query, order_by="path",
                                                        limit=PAGE)))
            rows = run()
            out["queries"][text] = {"ms": 1000 * median_seconds(run, 5), "rows": rows}
        out["stats_ms"] = 1000 * median_seconds(lambda: library_stats(library), 3)
        some_track = os.path.join(real_root, "Artist 001", "Album 01", "001 Track.mp3")
        if not os.path.exists(some_track):
            some_track = next(str(p) for p in Path(real_root).rglob("*.*"))
        out["similar_ms"] = 1000 * median_seconds(
            lambda: similar_tracks(library, some_track, n=20), 3)
        out["size_mib"] = _size(library, db) / 2**20
    finally:
        library.close()
    return out


def _size(library: Any, db: str) -> int:
    if "://" not in db:
        return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
    from sqlalchemy import text

    with library.engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_database_size(current_database())"))
                   .scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"],
                        choices=["sqlite", "postgres"])
    parser.add_argument("--cache-dir", type=Path, help="keep and reuse the linked libraries here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lt-catalogue-"))
    cache = args.cache_dir or work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    config = work / "config.toml"
    config.write_text("[library]\nsettle_seconds = 0\n")
    env = dict(os.environ, LIBTAGGER_CONFIG=str(config))
    server = None
    results: dict[str, Any] = {"runs": []}
    try:
        sources_dir = cache / "sources"
        if not sources_dir.is_dir():
            (work / "encoded").mkdir()
            made = make_tracks(work / "encoded", SOURCE_COUNT, SOURCE_SECONDS, os.cpu_count() or 1)
            sources_dir.mkdir()
            for path in made:
                shutil.copyfile(path, sources_dir / path.name)
        # ext4 allows 65,000 links to one file: enough copies (each its own inode) that no
        # source holds more than LINKS_PER_SOURCE of the library's paths.
        originals = sorted(p for p in sources_dir.iterdir() if "-copy" not in p.stem)
        copies_each = -(-max(args.tracks) // (LINKS_PER_SOURCE * len(originals)))
        for k in range(1, copies_each):
            for original in originals:
                copy = original.with_name(f"{original.stem}-copy{k}{original.suffix}")
                if not copy.exists():
                    shutil.copyfile(original, copy)
        sources = sorted(sources_dir.iterdir())
        if "postgres" in args.backend:
            server = _postgres()
            if server is None:
                args.backend.remove("postgres")
        for count in args.tracks:
            root = cache / f"library-{count}"
            if not root.is_dir():
                log(f"hard-linking {count} paths ...")
                paths = link_library(sources, root, count)
            else:
                paths = None
            for backend in args.backend:
                if backend == "sqlite":
                    db = str(work / f"{count}.db")
                else:
                    db = server.url(server.new_database())
                log(f"{backend}, {count} tracks: seed scan and fill ...")
                run_scan(db, sources_dir, "--no-write", env=env)  # type: ignore[arg-type]
                if paths is None:
                    paths = _linked(root, sources)
                started = time.perf_counter()
                fill_database(db, sources, paths)  # type: ignore[arg-type]
                fill = time.perf_counter() - started
                log(f"{backend}, {count} tracks: measuring ...")
                figures = measure(db, root, count, env)
                results["runs"].append({"backend": backend, "tracks": count,
                                        "fill_seconds": fill, **figures})
                if backend == "sqlite":
                    os.remove(db)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(_rounded(results), indent=2))
        return
    header = ["backend", "tracks", "rescan s", "rescan RSS MiB",
              *[q.split(":")[0] + (" " + q.split()[1] if " " in q and "path" not in q else "")
                + " ms" for q in QUERIES], "stats ms", "similar ms", "DB MiB"]
    rows = [header]
    for r in results["runs"]:
        rows.append([r["backend"], f"{r['tracks']:,}", f"{r['rescan_seconds']:.1f}",
                     f"{r['rescan_peak_rss_mib']:.0f}",
                     *[f"{r['queries'][q]['ms']:.1f}" for q in QUERIES],
                     f"{r['stats_ms']:.0f}", f"{r['similar_ms']:.0f}", f"{r['size_mib']:.0f}"])
    print("queries (a page of 100 rows, median of 5): " + "; ".join(QUERIES))
    print(table(rows))


def _linked(root: Path, sources: list[Path]) -> list[str]:
    """The links under a cached ``root``, ordered as fill_database wants: path ``i`` is a link
    to ``sources[i % n]`` (told apart by inode)."""
    by_inode: dict[int, list[str]] = {os.stat(s).st_ino: [] for s in sources}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            by_inode[os.stat(path).st_ino].append(path)
    groups = [sorted(by_inode[os.stat(s).st_ino]) for s in sources]
    return [groups[i % len(groups)][i // len(groups)] for i in range(sum(map(len, groups)))]


def _postgres() -> Any:
    """A throw-away PostgreSQL server, or None (and why) when there is none here."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        log("PostgreSQL skipped: pip install 'libtagger[postgres]'")
        return None
    from tests import pg

    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        log("PostgreSQL skipped: no initdb (apt-get install postgresql)")
        return None
    return pg.PostgresServer(bin_dir).start(durable=True)


if __name__ == "__main__":
    main()
