"""The hostile campaign of issue 12: generated bad files through ``classify``, ``scan`` and
``watch``, and what each command made of them.

Run from the repository root (``--count 1 --fast``: about two minutes on a 2-core machine;
``--count 3``, the full-size floods, several minutes more):

    python bench/hostile.py --count 1 --fast
    python bench/hostile.py --count 3 --seed 7 --json

``tests/hostile/generate.py`` writes every hostile class (``--count`` variants of each
randomised one; ``--fast`` floods with 20,000 rather than 100,000 frames) into a pristine
folder, which is never handed to libtagger. Each command gets its own copy (sparse holes, FIFOs,
sockets and modes kept) and runs as the real command line, a subprocess with the repository's
``libtagger`` and a config that opens the write gate (every classified file gets a tag):

1. ``libtagger classify --json --jobs J <every file>``;
2. ``libtagger --db FRESH scan --jobs J ROOT`` (``settle_seconds = 0``);
3. ``libtagger --db FRESH watch --jobs J ROOT`` on an empty root; the files are copied in, and
   once the daemon's queue has been empty for a few polls it gets SIGTERM.

For each it reports:

- **tried**: the files handed to it;
- **tracebacks**: ``Traceback (most recent call last)`` in anything it printed or logged;
- **hangs**: the command (or the daemon's queue) past ``--timeout``; also a daemon that did
  not exit within 30 s of SIGTERM;
- **crashes survived**: files whose reason says their worker crashed, was killed, ran out of
  time or memory (``crashed``, ``killed``, ``took longer``, ``needed more than``): each such
  file cost only itself, which is what is wanted; reported as information;
- **peak RSS**: the largest single process of the command's tree (VmHWM read from /proc every
  0.2 s, and ``ru_maxrss`` of the reaped children, whichever is larger) and the largest sum of
  RSS over the tree at one moment;
- **changed**: files that are different from their pristine copy although they should not be:
  a file that got no tag must be byte-identical (classify never writes, so every file there);
  a file that got one must decode to exactly the same PCM (``tests/audiogen.pcm_digest``, in
  a subprocess with a time limit); any file gone, or left over (a ``*.libtagger-tmp``), counts;
- **pending** (scan and watch): tracks the database still has as ``pending`` afterwards.

Every figure but "tried" and "crashes survived" should be 0; the details of anything that is not
are printed under the table. Progress goes to stderr, the report to stdout; the temp folder is
removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))
from hostile.generate import Case, _make_socket, generate_all  # noqa: E402
from watch import Database, ProcessTree, WatchDaemon  # noqa: E402

TRACEBACK = "Traceback (most recent call last)"
CRASHED = re.compile(r"crashed|killed|took longer|needed more than")
CONFIG = """\
[library]
settle_seconds = 0.0

[watch]
quiet_seconds = {quiet}

[tags]
# Open the write gate: every classified file gets a tag, so the PCM check sees many writes.
min_confidence = 0.0
min_score = 0.0
"""
SAMPLE_EVERY = 0.2
DIGEST_TIMEOUT = 120.0


def log(message: str) -> None:
    print(f"[hostile] {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    """What one command made of the hostile set."""

    command: str
    tried: int = 0
    tracebacks: int = 0
    hangs: int = 0
    crashes_survived: int = 0
    peak_rss_mib: float = 0.0
    peak_tree_rss_mib: float = 0.0
    changed: int = 0
    pending: int | None = None
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


# --- copies of the pristine set --------------------------------------------------------------


def _readable(path: Path):
    """Open ``path`` for reading even if its mode is 000 (then put the mode back)."""
    mode = path.lstat().st_mode
    if os.access(path, os.R_OK):
        return open(path, "rb"), None
    path.chmod(0o600)
    return open(path, "rb"), stat.S_IMODE(mode)


def file_digest(path: Path) -> str:
    """SHA-256 of a regular file's bytes."""
    handle, mode = _readable(path)
    digest = hashlib.sha256()
    with handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if mode is not None:
        path.chmod(mode)
    return digest.hexdigest()


def copy_entry(source: Path, dest: Path) -> None:
    """Copy one file of the set: regular files sparse, with their mode and mtime; FIFOs and
    sockets made anew (opening a FIFO to copy it would block)."""
    info = source.lstat()
    if stat.S_ISFIFO(info.st_mode):
        os.mkfifo(dest)
        return
    if stat.S_ISSOCK(info.st_mode):
        _make_socket(dest)
        return
    handle, mode = _readable(source)
    with handle, open(dest, "wb") as out:
        for block in iter(lambda: handle.read(1 << 20), b""):
            if block.count(0) == len(block):
                out.seek(len(block), os.SEEK_CUR)  # keep the holes: 20 MB pictures stay cheap
            else:
                out.write(block)
        out.truncate()
    if mode is not None:
        source.chmod(mode)
    os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))
    dest.chmod(stat.S_IMODE(info.st_mode))


def copy_set(cases: list[Case], pristine: Path, dest: Path) -> dict[Path, Path]:
    """Copy every case under ``dest`` (same relative paths); pristine path -> copy."""
    copies = {}
    for case in cases:
        target = dest / case.path.relative_to(pristine)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_entry(case.path, target)
        copies[case.path] = target
    return copies


def all_names(folder: Path) -> set[str]:
    """Every entry under ``folder``, relative, as raw text (surrogate escapes kept)."""
    found = set()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def pcm_digest(path: Path) -> str | None:
    """``audiogen.pcm_digest`` in a subprocess (a hostile file must not hang the bench),
    skipping damaged packets as libtagger's decoder does (a bit flip leaves some)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import audiogen; "
            "print(audiogen.pcm_digest(sys.argv[2], skip_damaged=True))")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(REPO / "tests"), str(path)],
                              capture_output=True, text=True, timeout=DIGEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def check_files(cases: list[Case], pristine: Path, root: Path, copies: dict[Path, Path],
                tagged: set[str], outcome: Outcome) -> None:
    """Count the copies (under ``root``) that differ from their pristine file although they
    should not, and the files gone or left over."""
    before, after = all_names(pristine), all_names(root)
    for name in sorted(after - before):
        outcome.changed += 1
        outcome.details.append(f"left over: {name!r}")
    for name in sorted(before - after):
        outcome.changed += 1
        outcome.details.append(f"gone: {name!r}")
    for case in cases:
        copy = copies[case.path]
        if not copy.exists() or not stat.S_ISREG(case.path.lstat().st_mode):
            continue
        if os.path.realpath(copy) in tagged:
            same = pcm_digest(case.path)
            if same is None or same != pcm_digest(copy):
                outcome.changed += 1
                outcome.details.append(f"audio changed by a tag write: {case.name}: {copy}")
        elif file_digest(case.path) != file_digest(copy):
            outcome.changed += 1
            outcome.details.append(f"bytes changed without a tag ({case.expect}): "
                                   f"{case.name}: {copy}")


# --- running the commands --------------------------------------------------------------------


def _environment() -> dict[str, str]:
    """This environment, with the repository first on the path and no systemd sockets."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _children_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_command(args: list[str], timeout: float, outcome: Outcome, log_path: Path) -> str:
    """Run ``python -m libtagger ARGS``, sampling its tree; returns what it printed."""
    command = [sys.executable, "-m", "libtagger", *args]
    log(f"{outcome.command}: {' '.join(a if len(a) < 60 else a[:57] + '...' for a in args[:8])}"
        + (" ..." if len(args) > 8 else ""))
    started = time.perf_counter()
    maxrss_before = _children_maxrss_mib()
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=_environment())
        tree = ProcessTree(process.pid, every=SAMPLE_EVERY).start()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            outcome.hangs += 1
            outcome.details.append(f"{outcome.command} still running after {timeout:g} s: killed")
            process.kill()
            process.wait()
        tree.stop()
    outcome.seconds = time.perf_counter() - started
    _memory(outcome, tree, maxrss_before)
    text = log_path.read_text(errors="replace")
    outcome.tracebacks += text.count(TRACEBACK)
    if process.returncode not in (0, 1):
        outcome.details.append(f"{outcome.command} exited with {process.returncode}; ends:\n"
                               + "\n".join("    " + line for line in text.splitlines()[-8:]))
    return text


def _memory(outcome: Outcome, tree: ProcessTree, maxrss_before: float) -> None:
    figures = tree.figures()
    largest = max(figures["daemon_peak_rss_mib"], figures["largest_worker_peak_rss_mib"])
    reaped = _children_maxrss_mib()
    if reaped > maxrss_before:  # ru_maxrss is the maximum over every child reaped so far
        largest = max(largest, reaped)
    outcome.peak_rss_mib = max(outcome.peak_rss_mib, largest)
    outcome.peak_tree_rss_mib = max(outcome.peak_tree_rss_mib, figures["peak_total_rss_mib"])


def database_state(db: Path) -> tuple[set[str], list[tuple[str, str, str | None]]]:
    """Paths with a written tag, and (path, status, error) of every track."""
    from sqlalchemy import select

    from libtagger.library.db import Library, TagWrite, Track

    library = Library(db, migrate=False)
    with library.reader() as session:
        tagged = set(session.scalars(select(TagWrite.path).where(TagWrite.state == "written")))
        tracks = [tuple(row) for row in
                  session.execute(select(Track.path, Track.status, Track.last_error))]
    library.close()
    return tagged, tracks  # type: ignore[return-value]


def _database_figures(db: Path, outcome: Outcome) -> set[str]:
    tagged, tracks = database_state(db)
    outcome.crashes_survived = sum(bool(error and CRASHED.search(error))
                                   for _p, _s, error in tracks)
    pending = [path for path, status, _e in tracks if status == "pending"]
    outcome.pending = len(pending)
    outcome.details += [f"pending: {path!r}" for path in pending]
    return tagged


def bench_classify(cases: list[Case], pristine: Path, work: Path, args) -> Outcome:
    outcome = Outcome("classify", tried=len(cases))
    root = work / "classify" / "library"
    copies = copy_set(cases, pristine, root)
    text = run_command(["--config", str(work / "config.toml"), "classify", "--json",
                        "--jobs", str(args.jobs), *map(str, copies.values())],
                       args.timeout, outcome, work / "classify" / "output.log")
    outcome.crashes_survived = sum(bool(CRASHED.search(line)) for line in text.splitlines()
                                   if line.startswith("error: "))
    check_files(cases, pristine, root, copies, set(), outcome)
    return outcome


def bench_scan(cases: list[Case], pristine: Path, work: Path, args) -> Outcome:
    outcome = Outcome("scan", tried=len(cases))
    root = work / "scan" / "library"
    copies = copy_set(cases, pristine, root)
    db = work / "scan" / "library.db"
    run_command(["--config", str(work / "config.toml"), "--db", str(db), "scan",
                 "--jobs", str(args.jobs), str(root)],
                args.timeout, outcome, work / "scan" / "output.log")
    tagged = _database_figures(db, outcome)
    check_files(cases, pristine, root, copies, tagged, outcome)
    return outcome


def bench_watch(cases: list[Case], pristine: Path, work: Path, args) -> Outcome:
    outcome = Outcome("watch", tried=len(cases))
    root = work / "watch" / "library"
    root.mkdir(parents=True)
    db = work / "watch" / "library.db"
    log_path = work / "watch" / "daemon.log"
    started = time.perf_counter()
    maxrss_before = _children_maxrss_mib()
    daemon = WatchDaemon(work / "config.toml", db, root, log_path, args.jobs)
    try:
        daemon.start(timeout=120)
        assert daemon.tree is not None
        daemon.tree.every = SAMPLE_EVERY
        log(f"watch: copying {len(cases)} files into the watched folder...")
        copies = copy_set(cases, pristine, root)
        database = Database(db)
        try:
            if not _wait_until_drained(database, daemon, args):
                outcome.hangs += 1
                outcome.details.append(f"the daemon's queue was not empty {args.timeout:g} s "
                                       "after the files landed")
        finally:
            database.close()
        stop = daemon.stop()
        if stop["timed_out"] or stop["workers_left_running"]:
            outcome.hangs += 1
            outcome.details.append(f"after SIGTERM: {stop}")
        elif stop["exit_code"] != 0:
            outcome.details.append(f"the daemon exited with {stop['exit_code']}")
    finally:
        daemon.cleanup()
    outcome.seconds = time.perf_counter() - started
    assert daemon.tree is not None
    _memory(outcome, daemon.tree, maxrss_before)
    outcome.tracebacks = daemon.log_text().count(TRACEBACK)
    tagged = _database_figures(db, outcome)
    check_files(cases, pristine, root, copies, tagged, outcome)
    return outcome


def _wait_until_drained(database: Database, daemon: WatchDaemon, args) -> bool:
    """Wait until the quiet period has passed and the queue stays empty for 2 s."""
    deadline = time.monotonic() + args.timeout
    time.sleep(args.quiet + 0.5)
    empty_since = None
    while time.monotonic() < deadline:
        daemon.check_alive()
        if database.busy_jobs() == 0:
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= 2.0:
                return True
        else:
            empty_since = None
        time.sleep(0.25)
    return False


# --- the report ------------------------------------------------------------------------------

COLUMNS = (("tried", "tried"), ("tracebacks", "tracebacks"), ("hangs", "hangs"),
           ("crashes_survived", "crashes survived"), ("peak_rss_mib", "peak RSS MiB"),
           ("peak_tree_rss_mib", "tree RSS MiB"), ("changed", "changed"),
           ("pending", "pending"), ("seconds", "wall s"))


def report(outcomes: list[Outcome], summary: dict[str, Any]) -> str:
    lines = [f"{summary['files']} hostile files in {summary['classes']} classes "
             f"({summary['by_expect']}); seed {summary['seed']}, count {summary['count']}, "
             f"fast={summary['fast']}, jobs={summary['jobs']}", ""]
    widths = [max(len(title), 8) for _key, title in COLUMNS]
    lines.append(f"{'command':<9}" + "  ".join(t.rjust(w) for (_k, t), w in zip(COLUMNS, widths)))
    for o in outcomes:
        cells = []
        for (key, _title), width in zip(COLUMNS, widths):
            value = getattr(o, key)
            text = "-" if value is None else str(value)
            if isinstance(value, float):
                text = f"{value:.0f}"
            cells.append(text.rjust(width))
        lines.append(f"{o.command:<9}" + "  ".join(cells))
    bad = [o for o in outcomes if o.tracebacks or o.hangs or o.changed or o.pending]
    lines += ["", "all failure counts 0" if not bad else
              "NOT all zero: " + ", ".join(o.command for o in bad)]
    for o in outcomes:
        for detail in o.details:
            lines.append(f"  {o.command}: {detail}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1, help="variants per randomised class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="20,000-frame floods, not 100,000")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds a command (or the daemon's queue) may take: a hang")
    parser.add_argument("--quiet", type=float, default=1.0, help="[watch] quiet_seconds")
    parser.add_argument("--only", nargs="+", choices=("classify", "scan", "watch"),
                        default=["classify", "scan", "watch"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lt-hostile-"))
    try:
        (work / "config.toml").write_text(CONFIG.format(quiet=args.quiet))
        pristine = work / "pristine"
        log(f"generating the hostile set into {pristine} ...")
        cases = generate_all(pristine, seed=args.seed, count=args.count, fast=args.fast)
        summary = {
            "files": len(cases), "classes": len({c.name for c in cases}), "seed": args.seed,
            "count": args.count, "fast": args.fast, "jobs": args.jobs,
            "by_expect": ", ".join(f"{sum(c.expect == e for c in cases)} {e}"
                                   for e in ("refuse-precheck", "ok", "any")),
        }
        benches = {"classify": bench_classify, "scan": bench_scan, "watch": bench_watch}
        outcomes = [benches[name](cases, pristine, work, args) for name in args.only]
        if args.json:
            print(json.dumps({"summary": summary, "outcomes": [asdict(o) for o in outcomes]},
                             indent=2))
        else:
            print(report(outcomes, summary))
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            _remove(work)


def _remove(folder: Path) -> None:
    """Remove the temp folder, mode-000 files and folders included."""
    for root, dirs, _files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
