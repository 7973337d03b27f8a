"""Faults for issue 12: SIGKILLs of ``scan`` and ``watch`` at random moments, a database
locked by another writer, a library folder that vanishes mid-scan; then the promises checked.

Run from the repository root (the defaults, 20 kills of scan and 6 of watch: a few minutes on
a 2-core machine; the issue's campaign is 200 or more):

    python bench/chaos.py --kills 20
    python bench/chaos.py --kills 200 --policy append --seed 3

The library: ``--tracks`` short generated tracks (default 16, 6 s each) in every format
(``tests/audiogen``), in two album folders, a third of them already carrying a genre. Each
*round* gets a fresh copy of it and a fresh database, and the config opens the write gate
(every classified track gets a tag; ``max_genres = 2``, so ``append`` adds two).

1. **scan**: ``libtagger --db DB scan --jobs 2 ROOT`` is started and SIGKILLed after a random
   delay (uniform up to the time a whole scan takes here, measured first), up to 4 times a
   round, then run once more to the end; where the kill landed (start-up, planning,
   classification, tag writes) is read from the database just before it.
2. **watch**: the daemon on an empty root, the tracks copied in, killed likewise
   (``--watch-kills``, default 6), restarted each time; finally left to drain its queue and
   stopped with SIGTERM.

After every round: each file decodes to the same PCM as before (``audiogen.pcm_digest``), no
file holds a genre twice (ignoring case and punctuation), no ``*.libtagger-tmp`` is left,
``PRAGMA integrity_check`` is ok, no track is ``pending`` and no tag write ``planned``, the
final run exited 0, and a file got at most one write of ours per round.

3. **locked**: while a scan runs, another connection holds ``BEGIN EXCLUSIVE`` for 30 s
   (libtagger's busy timeout). The scan must finish or end with one line saying the database
   is locked (no traceback), the files intact; a rescan then completes.
4. **vanished**: mid-scan an album folder is renamed away and back 2 s later. After a rescan
   none of its tracks may be left ``failed`` (``No such file``) or pending.

Prints the counts and every broken promise; exits 1 if there was one. ``--keep`` keeps the
temp folder.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))
import audiogen  # noqa: E402
from watch import Database, WatchDaemon  # noqa: E402

from libtagger.analysis.vote import normalise_genre  # noqa: E402
from libtagger.library.safewrite import TEMP_SUFFIX  # noqa: E402
from libtagger.library.tags import read_genres  # noqa: E402

FORMATS = ("mp3", "flac", "m4a", "ogg", "opus", "wav", "aiff")
CONFIG = """\
[library]
settle_seconds = 0.0

[watch]
quiet_seconds = 1.0

[tags]
policy = "{policy}"
max_genres = 2
min_confidence = 0.0
min_score = 0.0
"""
KILLS_PER_ROUND = 4
RUN_TIMEOUT = 300.0
TRACEBACK = "Traceback (most recent call last)"


def log(message: str) -> None:
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


@dataclass
class Tally:
    kills: Counter = field(default_factory=Counter)
    rounds: int = 0
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        log("PROBLEM: " + text)
        self.problems.append(text)


# --- the library -----------------------------------------------------------------------------


def make_library(folder: Path, tracks: int, seconds: float) -> dict[str, str]:
    """The pristine library; relative path -> PCM digest."""
    digests = {}
    for i in range(tracks):
        fmt = FORMATS[i % len(FORMATS)]
        relative = f"album{i % 2}/t{i:02d}.{fmt}"
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        audiogen.write(path, audiogen.music(seconds, seed=200 + i, tempo=90 + 7 * i))
        if i % 3 == 0 and fmt not in ("wav", "aiff"):  # mutagen's easy tags: no ID3 chunks
            audiogen.set_genre(path, ["Jazz"] if i % 2 else ["rock", "Pop"])
        digests[relative] = audiogen.pcm_digest(path)
    return digests


def fresh_round(pristine: Path, work: Path, name: str) -> tuple[Path, Path]:
    """A copy of the library (old mtimes kept) and the path of a new database."""
    folder = work / name
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(pristine, folder / "library")
    return folder / "library", folder / "library.db"


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def libtagger(config: Path, db: Path, *args: str, log_path: Path) -> subprocess.Popen:
    out = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "libtagger", "--config", str(config),
                                 "--db", str(db), *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_environment())
    finally:
        out.close()


def phase(db: Path) -> str:
    """Where a scan is, judged from its database (read without waiting for it)."""
    if not db.exists():
        return "start-up"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            runs = conn.execute("SELECT count(*) FROM runs WHERE finished_at IS NULL").fetchone()[0]
            if not runs:
                return "start-up"
            tracks = conn.execute("SELECT count(*), sum(status = 'pending') FROM tracks").fetchone()
            writes = conn.execute("SELECT count(*) FROM tag_writes").fetchone()[0]
    except sqlite3.Error:
        return "start-up"
    if not tracks[0]:
        return "planning"
    return "tag writes" if writes else "classification"


# --- the checks ------------------------------------------------------------------------------


def check_round(root: Path, db: Path, digests: dict[str, str], tally: Tally, what: str,
                vanish_ok: bool = False) -> None:
    """Every promise, after a round's final clean run."""
    for relative, digest in digests.items():
        path = root / relative
        tally.files_checked += 1
        if not path.exists():
            tally.problem(f"{what}: {relative} is gone")
            continue
        if audiogen.pcm_digest(path) != digest:
            tally.problem(f"{what}: the audio of {relative} changed")
        genres = [normalise_genre(g) for g in read_genres(path)]
        if len(set(genres)) != len(genres):
            tally.problem(f"{what}: {relative} holds a genre twice: {read_genres(path)}")
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(TEMP_SUFFIX):
                tally.problem(f"{what}: temporary file left: {os.path.join(folder, name)}")
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            tally.problem(f"{what}: integrity_check says {integrity}")
        for path, status, error in conn.execute(
                "SELECT path, status, last_error FROM tracks WHERE status != 'done'"):
            tally.problem(f"{what}: track {os.fsdecode(path)} is {status} ({error})")
        for path, state in conn.execute(
                "SELECT path, state FROM tag_writes WHERE state = 'planned'"):
            tally.problem(f"{what}: tag write to {os.fsdecode(path)} still planned")
        for path, count in conn.execute(
                "SELECT path, count(*) FROM tag_writes WHERE state = 'written' AND kind = 'write'"
                " GROUP BY path HAVING count(*) > 1"):
            tally.problem(f"{what}: {os.fsdecode(path)} was written {count} times")


def run_to_end(config: Path, db: Path, root: Path, log_path: Path, tally: Tally,
               what: str) -> None:
    """A scan left alone; it must exit 0 without a traceback."""
    process = libtagger(config, db, "scan", "--jobs", "2", str(root), log_path=log_path)
    try:
        code = process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        tally.problem(f"{what}: the final scan hung")
        return
    if code != 0:
        tally.problem(f"{what}: the final scan exited {code}: {_tail(log_path)}")


def _tail(log_path: Path, lines: int = 4) -> str:
    return " | ".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _tracebacks(log_path: Path, tally: Tally, what: str) -> None:
    text = log_path.read_text(errors="replace")
    if TRACEBACK in text:
        tally.problem(f"{what}: a traceback in the output: {text[text.index(TRACEBACK):][:400]}")


# --- 1. scan kills ---------------------------------------------------------------------------


def measure_scan(config: Path, pristine: Path, work: Path) -> float:
    root, db = fresh_round(pristine, work, "measure")
    started = time.perf_counter()
    process = libtagger(config, db, "scan", "--jobs", "2", str(root),
                        log_path=work / "measure.log")
    process.wait(timeout=RUN_TIMEOUT)
    return time.perf_counter() - started


def scan_kills(args, config: Path, pristine: Path, digests: dict[str, str], work: Path,
               tally: Tally, rng: random.Random) -> None:
    whole = measure_scan(config, pristine, work)
    log(f"a whole scan takes {whole:.1f} s; killing at random moments up to that")
    done = 0
    while done < args.kills:
        tally.rounds += 1
        root, db = fresh_round(pristine, work, "scan-round")
        log_path = root.parent / "scan.log"
        for _ in range(min(KILLS_PER_ROUND, args.kills - done)):
            process = libtagger(config, db, "scan", "--jobs", "2", str(root), log_path=log_path)
            deadline = time.monotonic() + rng.uniform(0.3, whole)
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.01)
            if process.poll() is not None:  # it finished first: this round is complete
                break
            where = phase(db)
            process.send_signal(signal.SIGKILL)
            process.wait()
            tally.kills["scan: " + where] += 1
            done += 1
        run_to_end(config, db, root, log_path, tally, f"scan round {tally.rounds}")
        _tracebacks(log_path, tally, f"scan round {tally.rounds}")
        check_round(root, db, digests, tally, f"scan round {tally.rounds}")
        log(f"scan: {done}/{args.kills} kills, {len(tally.problems)} problems")


# --- 2. watch kills --------------------------------------------------------------------------


def watch_kills(args, config: Path, pristine: Path, digests: dict[str, str], work: Path,
                tally: Tally, rng: random.Random) -> None:
    done = 0
    while done < args.watch_kills:
        tally.rounds += 1
        what = f"watch round {tally.rounds}"
        folder = work / "watch-round"
        if folder.exists():
            shutil.rmtree(folder)
        root = folder / "library"
        root.mkdir(parents=True)
        db = folder / "library.db"
        log_path = folder / "daemon.log"
        landed = False
        for _ in range(min(KILLS_PER_ROUND, args.watch_kills - done)):
            process = libtagger(config, db, "watch", "--jobs", "2", str(root), log_path=log_path)
            if not landed:  # the files land while the daemon starts up
                time.sleep(rng.uniform(0.0, 3.0))
                shutil.copytree(pristine, root, dirs_exist_ok=True)
                landed = True
            time.sleep(rng.uniform(0.2, 8.0))
            if process.poll() is not None:
                tally.problem(f"{what}: the daemon exited by itself: {_tail(log_path)}")
                break
            process.send_signal(signal.SIGKILL)
            process.wait()
            tally.kills["watch"] += 1
            done += 1
        daemon = WatchDaemon(config, db, root, log_path, 2)
        try:
            daemon.start(timeout=120)
            database = Database(db)
            try:
                if not _drained(database, daemon):
                    tally.problem(f"{what}: the queue did not drain")
            finally:
                database.close()
            stop = daemon.stop()
            if stop["exit_code"] != 0 or stop["workers_left_running"]:
                tally.problem(f"{what}: after SIGTERM: {stop}")
        except Exception as exc:  # noqa: BLE001 - a bench reports, it does not stop
            tally.problem(f"{what}: {exc}")
        finally:
            daemon.cleanup()
        _tracebacks(log_path, tally, what)
        check_round(root, db, digests, tally, what)
        log(f"watch: {done}/{args.watch_kills} kills, {len(tally.problems)} problems")


def _drained(database: Database, daemon: WatchDaemon, timeout: float = RUN_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    time.sleep(2.0)
    empty_since = None
    while time.monotonic() < deadline:
        daemon.check_alive()
        if database.busy_jobs() == 0:
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= 3.0:
                return True
        else:
            empty_since = None
        time.sleep(0.25)
    return False


# --- 3. a locked database --------------------------------------------------------------------


def locked_database(args, config: Path, pristine: Path, digests: dict[str, str], work: Path,
                    tally: Tally) -> str:
    what = "locked database"
    root, db = fresh_round(pristine, work, "locked")
    log_path = root.parent / "scan.log"
    process = libtagger(config, db, "scan", "--jobs", "2", str(root), log_path=log_path)
    while phase(db) in ("start-up", "planning") and process.poll() is None:
        time.sleep(0.05)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    log(f"{what}: holding BEGIN EXCLUSIVE for {args.lock_seconds:g} s during the scan")
    released = threading.Timer(args.lock_seconds, lambda: holder.execute("ROLLBACK"))
    released.start()
    try:
        code = process.wait(timeout=RUN_TIMEOUT)
    finally:
        released.join()
        holder.close()
    text = log_path.read_text(errors="replace")
    _tracebacks(log_path, tally, what)
    lines = [line for line in text.splitlines() if line.startswith("libtagger: error:")]
    if code == 2 and (len(lines) != 1 or "is locked by another program" not in lines[0]):
        tally.problem(f"{what}: exit 2 without the one-line message: {_tail(log_path)}")
    elif code not in (0, 2):
        tally.problem(f"{what}: the scan exited {code}: {_tail(log_path)}")
    outcome = f"exit {code}" + (f": {lines[0]}" if lines else "")
    for relative, digest in digests.items():
        if audiogen.pcm_digest(root / relative) != digest:
            tally.problem(f"{what}: the audio of {relative} changed")
    run_to_end(config, db, root, log_path, tally, what)
    check_round(root, db, digests, tally, what)
    return outcome


# --- 4. a folder that vanishes ---------------------------------------------------------------


def vanished_folder(config: Path, pristine: Path, digests: dict[str, str], work: Path,
                    tally: Tally) -> str:
    what = "vanished folder"
    root, db = fresh_round(pristine, work, "vanish")
    log_path = root.parent / "scan.log"
    album, away = root / "album1", root.parent / "album1-away"
    process = libtagger(config, db, "scan", "--jobs", "2", str(root), log_path=log_path)
    while phase(db) != "classification" and process.poll() is None:
        time.sleep(0.02)
    album.rename(away)
    time.sleep(2.0)
    away.rename(album)
    code = process.wait(timeout=RUN_TIMEOUT)
    first = _statuses(db)
    run_to_end(config, db, root, log_path, tally, what)
    _tracebacks(log_path, tally, what)
    check_round(root, db, digests, tally, what)
    return f"first scan exit {code}, tracks {dict(first)}; after the rescan {dict(_statuses(db))}"


def _statuses(db: Path) -> Counter:
    with sqlite3.connect(db) as conn:
        return Counter(dict(conn.execute("SELECT status, count(*) FROM tracks GROUP BY status")))


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of scan")
    parser.add_argument("--watch-kills", type=int, default=6, help="SIGKILLs of watch")
    parser.add_argument("--policy", choices=("fill_empty", "append", "replace"),
                        default="fill_empty")
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each track")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lock-seconds", type=float, default=30.0)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=("scan", "watch", "locked", "vanished"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lt-chaos-"))
    tally = Tally()
    started = time.perf_counter()
    extra: dict[str, str] = {}
    try:
        config = work / "config.toml"
        config.write_text(CONFIG.format(policy=args.policy))
        pristine = work / "pristine"
        log(f"making {args.tracks} tracks in {pristine} ...")
        digests = make_library(pristine, args.tracks, args.seconds)
        if "scan" not in args.skip:
            scan_kills(args, config, pristine, digests, work, tally, rng)
        if "watch" not in args.skip:
            watch_kills(args, config, pristine, digests, work, tally, rng)
        if "locked" not in args.skip:
            extra["locked database"] = locked_database(args, config, pristine, digests, work,
                                                       tally)
        if "vanished" not in args.skip:
            extra["vanished folder"] = vanished_folder(config, pristine, digests, work, tally)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.tracks} tracks x {args.seconds:g} s ({', '.join(FORMATS)}), policy "
          f"{args.policy}, seed {args.seed}; {time.perf_counter() - started:.0f} s")
    print(f"kills: {sum(tally.kills.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(tally.kills.items()))})")
    print(f"rounds: {tally.rounds}, file checks: {tally.files_checked}")
    for name, outcome in extra.items():
        print(f"{name}: {outcome}")
    counts = Counter(re.sub(r" round \d+", "", p).split(":")[0] for p in tally.problems)
    print(f"problems: {len(tally.problems)}" + (f" ({dict(counts)})" if counts else ""))
    for problem in tally.problems:
        print(f"  {problem}")
    sys.exit(1 if tally.problems else 0)


if __name__ == "__main__":
    main()
