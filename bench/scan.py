"""Cost of ``libtagger scan``: a first scan, a no-op rescan, and a no-op rescan of 100k paths.

Run from the repository root (about 30 s on a 2-core machine, plus about 1.5 minutes of
encoding the 24 tracks unless ``--cache-dir`` already holds them):

    python bench/scan.py
    python bench/scan.py --tracks 24 --cache-dir /tmp/lt-bench --json
    python bench/scan.py --paths 20000 --keep      # a smaller big library; keep the temp folder

Every scan is the real command, ``python -m libtagger --db DB scan ROOT``, run as a subprocess
and timed end to end (wall time includes Python start-up, imports and loading the models), with
the built-in default configuration except ``library.settle_seconds = 0`` (``$LIBTAGGER_CONFIG``
points at a config that says only that: the copies are complete when the scan starts):

1. **first scan**: ``--tracks`` synthetic 4-minute tracks (the synthesiser and encoder of
   ``bench/throughput.py``: mp3, flac, m4a in turn; ``--cache-dir`` keeps and reuses them) are
   copied into a fresh library of artist/album folders and scanned into a fresh database with
   the default jobs (one worker per core). Reported: tracks/min, CPU seconds, the peak RSS of
   the largest process of the run (the scan or one of its workers: ``ru_maxrss`` from
   ``wait4``, which covers the process and every descendant it reaped), and the genre tags
   written (``tag_writes`` rows in state ``written``).
2. **no-op rescan**: the same command again on the unchanged library; all start-up.
3. **no-op rescan of ``--paths`` paths** (default 100000): five short real tracks (mp3, flac,
   m4a) are scanned with ``--no-write`` (a tag write replaces a file by a rename, which would
   break the hard links made next), then hard-linked into artist/album/track folders (100
   tracks per album, 10 albums per artist), which costs a directory entry per path and no
   audio. The database is filled as if every path had been scanned: a ``tracks`` row per path
   with the size and mtime of its ``os.stat`` and its source's identity, and a copy of its
   source's classification and genre rows, bulk-inserted with SQLAlchemy Core. Then
   ``libtagger scan --jobs 2 ROOT`` is timed and its summary checked (every path unchanged,
   nothing classified), and ``walk_library``, the database load and ``plan_scan`` are timed
   in this process to show where the time goes.

Progress goes to stderr, the report to stdout. The temp folder is removed at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import FORMATS, TRACK_SECONDS, _rounded, log, make_tracks, table  # noqa: E402

TRACKS_PER_ALBUM = 4  # the first-scan library: 4 tracks per album, 2 albums per artist
ALBUMS_PER_ARTIST = 2
BIG_TRACKS_PER_ALBUM = 100  # the big library: 100 tracks per album, 10 albums per artist
BIG_ALBUMS_PER_ARTIST = 10
SOURCE_COUNT = 5  # real short tracks behind the big library's hard links
SOURCE_SECONDS = 8.0
INSERT_CHUNK = 10_000  # tracks per bulk insert while filling the big database
SUMMARY_FOUND = re.compile(
    r"(?P<found>\d+) files: (?P<new>\d+) new, (?P<changed>\d+) changed, (?P<moved>\d+) moved, "
    r"(?P<missing>\d+) missing, (?P<unchanged>\d+) unchanged"
)
SUMMARY_DONE = re.compile(
    r"classified (?P<classified>\d+), wrote (?P<written>\d+) tags, (?P<skipped>\d+) not written"
    r".*?, (?P<failed>\d+) failed"
)


@dataclass
class ScanRun:
    """One ``libtagger scan`` subprocess: what it cost and what it said."""

    command: list[str]
    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    """User + system time of the scan and of every worker it reaped."""
    peak_rss_mib: float
    """Largest resident set of any single process of the run."""
    summary: dict[str, int]
    output: str


def run_scan(db: Path, root: Path, *options: str, env: dict[str, str]) -> ScanRun:
    """Run ``libtagger --db DB scan [OPTIONS] ROOT`` as a subprocess and measure it.

    ``os.wait4`` rather than ``subprocess.run``: its rusage is that of the scan process and
    its reaped descendants only (this process's own ``RUSAGE_CHILDREN`` would also count the
    encoder workers started earlier).
    """
    command = [sys.executable, "-m", "libtagger", "--db", str(db), "scan", *options, str(root)]
    log("running " + " ".join(command[1:]) + " ...")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"scan failed with exit code {process.returncode}:\n{stdout}{stderr}")
    summary: dict[str, int] = {}
    for pattern in (SUMMARY_FOUND, SUMMARY_DONE):
        match = pattern.search(stdout)
        if match is None:
            raise SystemExit(f"unexpected scan output:\n{stdout}{stderr}")
        summary.update({k: int(v) for k, v in match.groupdict().items()})
    return ScanRun(
        command=command,
        exit_code=process.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,  # Linux reports KiB
        summary=summary,
        output=stdout.strip(),
    )


def copy_library(files: list[Path], root: Path) -> list[Path]:
    """Copy ``files`` into ``root/Artist NN/Album N/NN Track III.ext``."""
    copies = []
    for i, source in enumerate(files):
        album = i // TRACKS_PER_ALBUM
        artist = f"Artist {album // ALBUMS_PER_ARTIST + 1:02d}"
        folder = root / artist / f"Album {album % ALBUMS_PER_ARTIST + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / f"{i % TRACKS_PER_ALBUM + 1:02d} Track {i + 1:03d}{source.suffix}"
        shutil.copyfile(source, copy)
        copies.append(copy)
    return copies


def link_library(sources: list[Path], root: Path, count: int) -> list[str]:
    """``count`` hard links to ``sources`` (in turn) in artist/album folders under ``root``."""
    paths = []
    for i in range(count):
        album = i // BIG_TRACKS_PER_ALBUM
        folder = os.path.join(root, f"Artist {album // BIG_ALBUMS_PER_ARTIST + 1:03d}",
                              f"Album {album % BIG_ALBUMS_PER_ARTIST + 1:02d}")
        if i % BIG_TRACKS_PER_ALBUM == 0:
            os.makedirs(folder, exist_ok=True)
        source = sources[i % len(sources)]
        path = os.path.join(folder, f"{i % BIG_TRACKS_PER_ALBUM + 1:03d} Track{source.suffix}")
        os.link(source, path)
        paths.append(path)
    return paths


def fill_database(db: Path, sources: list[Path], paths: list[str]) -> None:
    """Add a scanned-looking row per path (path ``i`` is a link to ``sources[i % n]``).

    Each track gets its own stat and a copy of its source's track, classification and genre
    rows, as a real scan would have stored them; ids are assigned here so that the three
    tables can be inserted in bulk without reading anything back.
    """
    from sqlalchemy import func, insert, select

    from libtagger.library.db import Classification, GenreRow, Library, Track

    tracks, classifications, genres = Track.__table__, Classification.__table__, GenreRow.__table__
    library = Library(db)
    try:
        with library.engine.begin() as connection:
            by_path = {r["path"]: dict(r) for r in connection.execute(select(tracks)).mappings()}
            seeds = []
            for source in sources:
                track = by_path[os.path.realpath(source)]
                if track["status"] != "done":
                    raise SystemExit(f"the seed scan did not classify {source}")
                classification = dict(connection.execute(
                    select(classifications).where(classifications.c.track_id == track["id"])
                ).mappings().one())
                genre_rows = [dict(g) for g in connection.execute(
                    select(genres).where(genres.c.classification_id == classification["id"])
                ).mappings()]
                seeds.append((track, classification, genre_rows))
            next_track, next_classification, next_genre = (
                (connection.execute(select(func.max(t.c.id))).scalar_one() or 0) + 1
                for t in (tracks, classifications, genres)
            )
            for start in range(0, len(paths), INSERT_CHUNK):
                track_rows, classification_rows, genre_rows = [], [], []
                for i in range(start, min(start + INSERT_CHUNK, len(paths))):
                    track, classification, seed_genres = seeds[i % len(seeds)]
                    st = os.stat(paths[i])
                    track_rows.append({**track, "id": next_track, "path": paths[i],
                                       "size": st.st_size, "mtime_ns": st.st_mtime_ns})
                    classification_rows.append({**classification, "id": next_classification,
                                                "track_id": next_track})
                    for genre in seed_genres:
                        genre_rows.append({**genre, "id": next_genre,
                                           "classification_id": next_classification})
                        next_genre += 1
                    next_track += 1
                    next_classification += 1
                connection.execute(insert(tracks), track_rows)
                connection.execute(insert(classifications), classification_rows)
                connection.execute(insert(genres), genre_rows)
    finally:
        library.close()


def count_written_tags(db: Path) -> int:
    """``tag_writes`` rows in state ``written``."""
    from sqlalchemy import func, select

    from libtagger.library.db import Library, TagWrite

    with Library(db) as library, library.session() as session:
        return session.scalar(
            select(func.count()).select_from(TagWrite).where(TagWrite.state == "written")
        ) or 0


def where_time_goes(db: Path, root: Path, count: int) -> dict[str, Any]:
    """Time the parts of a no-op rescan in this process: walk, database load, whole plan."""
    from sqlalchemy import select

    from libtagger.library.db import Library, Track
    from libtagger.pipeline.scan import ScanSummary, plan_scan, walk_library

    real_root = os.path.realpath(root)
    started = time.perf_counter()
    found = sum(1 for _ in walk_library([real_root]))
    walk = time.perf_counter() - started

    started = time.perf_counter()
    library = Library(db)
    open_db = time.perf_counter() - started
    try:
        started = time.perf_counter()
        with library.session() as session:  # the query plan_scan makes
            rows = session.execute(
                select(Track.id, Track.path, Track.size, Track.mtime_ns, Track.status,
                       Track.identity)
            ).all()
        load = time.perf_counter() - started

        summary = ScanSummary()
        started = time.perf_counter()
        # An unchanged library needs no audio hash: an identify that is never called.
        todo = plan_scan(library, [real_root], False, summary, identify=lambda paths: {})
        plan = time.perf_counter() - started
    finally:
        library.close()
    if found != count or summary.unchanged != count or todo:
        log(f"WARNING: in-process plan found {found}, {summary.unchanged} unchanged, "
            f"{len(todo)} to do (expected {count} unchanged, none to do)")
    return {"walk_library_seconds": walk, "walk_library_found": found,
            "open_database_seconds": open_db, "load_tracks_seconds": load,
            "load_tracks_rows": len(rows), "plan_scan_seconds": plan,
            "plan_scan_unchanged": summary.unchanged, "plan_scan_todo": len(todo)}


def bench_first_scans(files: list[Path], work: Path, jobs: int | None,
                      env: dict[str, str]) -> dict[str, Any]:
    """Sections 1 and 2: a first scan of a fresh library, then the same scan again."""
    root, db = work / "library", work / "library.db"
    copy_library(files, root)
    options = ["--jobs", str(jobs)] if jobs else []
    first = run_scan(db, root, *options, env=env)
    written = count_written_tags(db)
    again = run_scan(db, root, *options, env=env)
    counts = {ext: sum(p.suffix == f".{ext}" for p in files) for ext in FORMATS}
    return {
        "tracks": len(files),
        "formats": counts,
        "jobs": jobs or f"default ({os.cpu_count()} cores)",
        "first_scan": {**asdict(first),
                       "tracks_per_minute": 60.0 * first.summary["classified"] / first.wall_seconds,
                       "tag_writes_written": written},
        "rescan": asdict(again),
    }


def bench_big_rescan(sources: list[Path], work: Path, count: int,
                     env: dict[str, str]) -> dict[str, Any]:
    """Section 3: a no-op rescan of ``count`` hard-linked paths with a filled database."""
    source_dir, root, db = work / "sources", work / "big-library", work / "big-library.db"
    source_dir.mkdir()
    copies = []
    for source in sources:
        copies.append(source_dir / source.name)
        shutil.copyfile(source, copies[-1])
    seed = run_scan(db, source_dir, "--no-write", env=env)

    log(f"hard-linking {count} paths...")
    started = time.perf_counter()
    paths = link_library(copies, root, count)
    link_seconds = time.perf_counter() - started

    log(f"filling the database with {count} tracks...")
    started = time.perf_counter()
    fill_database(db, copies, paths)
    fill_seconds = time.perf_counter() - started

    rescan = run_scan(db, root, "--jobs", "2", env=env)
    s = rescan.summary
    check_ok = (s["found"] == count and s["unchanged"] == count and s["classified"] == 0
                and s["new"] == s["changed"] == s["moved"] == s["missing"] == 0)
    log("timing walk_library, the database load and plan_scan in this process...")
    parts = where_time_goes(db, root, count)
    return {
        "paths": count,
        "sources": [p.name for p in sources],
        "seed_scan": asdict(seed),
        "link_seconds": link_seconds,
        "fill_database_seconds": fill_seconds,
        "database_mib": db.stat().st_size / 2**20,
        "rescan": asdict(rescan),
        "check_ok": check_ok,
        "in_process": parts,
    }


def report(results: dict[str, Any]) -> str:
    """The human-readable summary."""
    first, big = results["first"], results["big"]
    mix = ", ".join(f"{n} {ext}" for ext, n in first["formats"].items() if n)
    f, r, b = first["first_scan"], first["rescan"], big["rescan"]
    lines = [
        f"libtagger scan, built-in default config (settle_seconds = 0), jobs={first['jobs']}; "
        f"{first['tracks']} synthetic tracks x {results['track_seconds'] / 60:g} min ({mix})",
        "",
    ]
    rows = [["run", "paths", "wall s", "tracks/min", "CPU s", "peak RSS"],
            ["first scan", str(f["summary"]["found"]), f"{f['wall_seconds']:.1f}",
             f"{f['tracks_per_minute']:.1f}", f"{f['cpu_seconds']:.1f}",
             f"{f['peak_rss_mib']:.0f} MiB"],
            ["no-op rescan", str(r["summary"]["found"]), f"{r['wall_seconds']:.2f}", "-",
             f"{r['cpu_seconds']:.1f}", f"{r['peak_rss_mib']:.0f} MiB"],
            [f"no-op rescan, {big['paths']} paths (--jobs 2)", str(b["summary"]["found"]),
             f"{b['wall_seconds']:.2f}", "-", f"{b['cpu_seconds']:.1f}",
             f"{b['peak_rss_mib']:.0f} MiB"]]
    lines.append(table(rows))
    lines += [
        "",
        f"first scan: {f['tag_writes_written']} genre tags written (tag_writes rows 'written'); "
        f"wall time includes start-up and loading the models",
        "  " + f["output"].replace("\n", "\n  "),
        "no-op rescan:",
        "  " + r["output"].replace("\n", "\n  "),
        f"no-op rescan, {big['paths']} paths: "
        + ("summary checked: all unchanged, none classified" if big["check_ok"]
           else "UNEXPECTED SUMMARY (expected all unchanged, none classified)"),
        "  " + b["output"].replace("\n", "\n  "),
    ]
    p = big["in_process"]
    rows = [["part (in this process, warm cache)", "s"],
            [f"walk_library ({p['walk_library_found']} files)", f"{p['walk_library_seconds']:.2f}"],
            ["open the database (Library)", f"{p['open_database_seconds']:.2f}"],
            [f"load the tracks table ({p['load_tracks_rows']} rows)",
             f"{p['load_tracks_seconds']:.2f}"],
            ["plan_scan (walk + load + compare)", f"{p['plan_scan_seconds']:.2f}"]]
    lines += ["", table(rows), "",
              f"big library: {len(big['sources'])} real {SOURCE_SECONDS:g} s tracks hard-linked "
              f"{big['paths']} times in {big['link_seconds']:.1f} s; database filled in "
              f"{big['fill_database_seconds']:.1f} s ({big['database_mib']:.0f} MiB)",
              "peak RSS: the largest single process of the run (the scan or one of its workers), "
              "ru_maxrss from wait4."]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the three measurements, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=24,
                        help="synthetic tracks for the first scan (default 24)")
    parser.add_argument("--seconds", type=float, default=TRACK_SECONDS,
                        help="length of each of those tracks (default 240)")
    parser.add_argument("--jobs", type=int,
                        help="worker processes for the first scan (default: the scan's own, "
                        "one per core)")
    parser.add_argument("--paths", type=int, default=100_000,
                        help="paths in the big library (default 100000)")
    parser.add_argument("--cache-dir", type=Path,
                        help="keep the encoded tracks here and reuse them (default: a temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (libraries and databases) and say where")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="libtagger-scan-bench-"))
    cache = args.cache_dir or work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # The built-in defaults, whatever the user's own config says; the copies made below are
    # complete, so they need not wait out the settle time.
    config = work / "config.toml"
    config.write_text("[library]\nsettle_seconds = 0\n")
    env = {**os.environ, "LIBTAGGER_CONFIG": str(config)}
    encode_jobs = args.jobs or os.cpu_count() or 1
    try:
        files = make_tracks(cache, args.tracks, args.seconds, encode_jobs)
        sources = make_tracks(cache, SOURCE_COUNT, SOURCE_SECONDS, encode_jobs)
        results = {
            "track_seconds": args.seconds,
            "first": bench_first_scans(files, work, args.jobs, env),
            "big": bench_big_rescan(sources, work, args.paths, env),
        }
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            log(f"removing {work}...")
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(_rounded(results), indent=2))
    else:
        print(report(results))


if __name__ == "__main__":
    main()
