"""Latency and throughput of the ``libtagger watch`` daemon, from landing a file to its tag.

Run from the repository root (about a minute on a 2-core machine, plus about 1.5 minutes of
encoding the 24 source tracks unless ``--cache-dir`` already holds them):

    python bench/watch.py --cache-dir /tmp/lt-bench
    python bench/watch.py --cache-dir /tmp/lt-bench --quiet 10 --json   # the shipped setting

The real daemon runs as a subprocess on an empty temporary library, with a config file that
sets ``[watch] quiet_seconds`` to ``--quiet`` (default 2 for a quick run; 10 as shipped) and
opens the write gate (``[tags] min_confidence = 0``, ``min_score = 0``) so that every track
gets a genre tag, which is the moment measured:

    python -m libtagger --config CFG --db DB watch [--jobs N] ROOT

Every track lands atomically, as a downloader or ``mv`` does it: copied to a folder outside the
library (same file system), its mtime set to now, then ``os.rename``-d into the library. The
sources are ``--sources`` synthetic 4-minute tracks (the synthesiser and encoder of
``bench/throughput.py``: mp3, flac, m4a in turn; ``--cache-dir`` keeps and reuses them), used
in turn under distinct names (the daemon classifies every path; it matches audio by identity
only to follow a file that vanished).

1. **landing-to-tag latency**: ``--latency-tracks`` tracks (default 8) land one at a time, at
   most one every ``--every`` s and each only once the previous one is tagged, so each meets
   an idle daemon (at a random moment of its 0.5 s queue poll). For each, the time from its
   rename to the moment ``libtagger.library.tags.read_genres`` first sees a genre in the file (polled
   every 50 ms), and the same minus the quiet period (the processing delay), split up with the
   timestamps the daemon stored (job recorded, job due, tag write planned, tag write done).
2. **sustained stream**: ``--stream-tracks`` more tracks (default 48) land one every
   ``--stream-interval`` s (default 0.1), faster than the daemon tags them. Tracks/min from the
   first landing to the last tag written, and from the first tag to the last (the daemon's
   steady rate). Completion is read from the database (``tag_writes.written_at``, WAL reads)
   rather than by polling 48 files, whose opens would each be an inotify event for the daemon;
   every file's tag is then checked with ``read_genres``. Also the CPU time the daemon and
   its workers used meanwhile (``/proc/PID/stat``), and that of the whole machine
   (``/proc/stat``): on a shared machine, other work slows the stream.
3. The peak memory of the daemon and its worker processes, from ``/proc/PID/status`` (VmHWM
   of each process; the sum of VmRSS across the tree), sampled every 0.5 s from start to stop.
4. **stop**: SIGTERM, the time until the daemon has exited, its exit code, and whether any
   worker outlived it.

Afterwards the database and the daemon's log are checked for events missed or handled twice
(jobs per landed file, classifications and tag writes per track, log lines per file,
warnings, leftover jobs or temp files). Progress goes to stderr, the report to stdout. Every
wait is bounded (``--timeout``, default 120 s); the temp folder is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import FORMATS, TRACK_SECONDS, _rounded, log, make_tracks, table  # noqa: E402

SHIPPED_QUIET = 10.0  # [watch] quiet_seconds as shipped (libtagger.config.WatchConfig)
TAG_POLL = 0.05  # seconds between read_genres polls of a landed file
DB_POLL = 0.25  # seconds between database polls during the stream
SAMPLE_EVERY = 0.5  # seconds between /proc samples of the daemon's process tree
STOP_TIMEOUT = 30.0  # after SIGTERM, seconds before the daemon is killed and reported stuck
READY_MARK = re.compile(r"INFO libtagger\.service\.watch: watching ")
RECONCILED_MARK = re.compile(r"INFO libtagger\.service\.watch: reconciled: ")
PROCESSED_LINE = re.compile(r"INFO libtagger\.service\.watch: (?P<path>/[^\n]+?): ",
                            re.MULTILINE)
CONFIG = """\
[watch]
quiet_seconds = {quiet}

[tags]
# Open the write gate: every classified track gets a tag, the moment this bench measures.
min_confidence = 0.0
min_score = 0.0
"""


class BenchError(Exception):
    """The daemon did not do what the bench waits for; the message says what and where."""


# --------------------------------------------------------------------------------------------
# The daemon's process tree, seen through /proc.
# --------------------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(start time in clock ticks since boot, CPU seconds used) of a live ``pid``, else None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid`` in KiB; empty once it has exited."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0])
    except OSError:
        return {}
    return values


class ProcessTree:
    """Samples the memory and CPU time of a process and its descendants until stopped."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY) -> None:
        self.pid = pid
        self.every = every
        self.hwm_kib: dict[int, int] = {}
        """Per process seen: the highest VmHWM read (VmHWM never decreases while it lives)."""
        self.started: dict[int, int] = {}
        self.cpu_seconds: dict[int, float] = {}
        """Per process seen: CPU seconds (user + system) at its last sample."""
        self.peak_total_rss_kib = 0
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-tree", daemon=True)

    def start(self) -> ProcessTree:
        """Start sampling on a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop sampling."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)
            self.sample()

    def tree(self) -> list[int]:
        """The process and all its descendants, now."""
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo += children(pid)
        return pids

    def sample(self) -> dict[int, float]:
        """Read every process of the tree once; returns the CPU seconds of each, so far."""
        with self._lock:
            total = 0
            for pid in self.tree():
                values, stat = memory_kib(pid), proc_stat(pid)
                if not values or stat is None:
                    continue
                self.started.setdefault(pid, stat[0])
                self.cpu_seconds[pid] = stat[1]
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), values.get("VmHWM", 0))
                total += values.get("VmRSS", 0)
            self.peak_total_rss_kib = max(self.peak_total_rss_kib, total)
            self.samples += 1
            return dict(self.cpu_seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def survivors(self) -> list[int]:
        """Processes of the tree (other than the root) that are still running."""
        return [pid for pid, started in self.started.items()
                if pid != self.pid and (proc_stat(pid) or (None,))[0] == started]

    def cpu_between(self, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
        """CPU seconds of the daemon process and of its workers between two samples."""
        used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
        return {"daemon": used.get(self.pid, 0.0),
                "workers": sum(v for pid, v in used.items() if pid != self.pid)}

    def figures(self) -> dict[str, Any]:
        """Peak memory in MiB: the daemon, its largest worker, the whole tree at once."""
        workers = {pid: kib for pid, kib in self.hwm_kib.items() if pid != self.pid}
        return {
            "daemon_peak_rss_mib": self.hwm_kib.get(self.pid, 0) / 1024,
            "worker_processes_seen": len(workers),
            "largest_worker_peak_rss_mib": max(workers.values(), default=0) / 1024,
            "sum_of_peaks_mib": sum(self.hwm_kib.values()) / 1024,
            "peak_total_rss_mib": self.peak_total_rss_kib / 1024,
            "samples": self.samples,
            "cpu_seconds": self.cpu_between({}, self.cpu_seconds),
        }


# --------------------------------------------------------------------------------------------
# The daemon.
# --------------------------------------------------------------------------------------------


class WatchDaemon:
    """``libtagger watch`` as a subprocess, its stderr in a log file."""

    def __init__(self, config: Path, db: Path, root: Path, log_path: Path,
                 jobs: int | None) -> None:
        self.command = [sys.executable, "-m", "libtagger", "--config", str(config), "--db",
                        str(db), "watch", *(["--jobs", str(jobs)] if jobs else []), str(root)]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: ProcessTree | None = None

    def start(self, timeout: float) -> tuple[float, float]:
        """Start the daemon; wait until it is watching and its start-up reconcile is done.

        Returns the seconds to each. Files landing before the reconcile has walked the library
        would be found by it as well as by their events.

        Raises:
            BenchError: it exited, or did not get there within ``timeout``.
        """
        # Not under this shell's systemd or journald: the daemon would notify the wrong socket.
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
        log("starting " + " ".join(self.command[1:]) + " ...")
        started = time.perf_counter()
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)
        self.tree = ProcessTree(self.process.pid).start()
        deadline = started + timeout
        times = []
        for mark, what in ((READY_MARK, "it was watching"), (RECONCILED_MARK, "it reconciled")):
            while not mark.search(self.log_text()):
                self.check_alive()
                if time.perf_counter() > deadline:
                    raise BenchError(f"the daemon did not say {what} within {timeout:g} s; "
                                     f"its log ends:\n{self.log_tail()}")
                time.sleep(0.05)
            times.append(time.perf_counter() - started)
        return times[0], times[1]

    def log_text(self) -> str:
        """Everything the daemon has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemon's log, indented."""
        return "\n".join("  " + line for line in self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raises BenchError if the daemon has exited."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"the daemon exited with code {code}; its log ends:\n"
                             f"{self.log_tail()}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then wait for the exit; the time it took, the exit code, leftover workers."""
        assert self.process is not None and self.tree is not None
        self.tree.stop()
        log("stopping the daemon with SIGTERM...")
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.perf_counter() - started
        if code is None:
            log(f"the daemon had not exited {STOP_TIMEOUT:g} s after SIGTERM; killing it")
            self.process.kill()
            self.process.wait(timeout=10)
        time.sleep(0.2)  # orphaned workers are reparented and reaped by init
        survivors = self.tree.survivors()
        return {"seconds": seconds, "exit_code": code, "timed_out": code is None,
                "workers_left_running": survivors}

    def cleanup(self) -> None:
        """Whatever happened: the daemon stopped, and any of its workers still running killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.tree is not None:
            self.tree.stop()
            for pid in self.tree.survivors():
                log(f"killing worker {pid}, left running by the daemon")
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Landing files and waiting for their tags.
# --------------------------------------------------------------------------------------------


@dataclass
class Landing:
    """One file landed in the library, and when things happened to it."""

    path: str
    source: str
    landed_wall: float = 0.0
    """time.time() right after the rename (comparable with the daemon's timestamps)."""
    landed: float = 0.0
    """time.perf_counter() right after the rename."""
    tagged: float | None = None
    """time.perf_counter() when read_genres first saw a genre (latency phase only)."""
    genres: list[str] = field(default_factory=list)
    daemon: dict[str, float | None] = field(default_factory=dict)
    """The daemon's own timestamps (epoch seconds), read from the database afterwards."""

    @property
    def latency(self) -> float | None:
        return None if self.tagged is None else self.tagged - self.landed


def stage(source: Path, staging: Path, name: str) -> Path:
    """Copy ``source`` into the staging folder (outside the library) under ``name``."""
    staged = staging / name
    shutil.copyfile(source, staged)
    return staged


def land(staged: Path, dest: Path, source: Path) -> Landing:
    """Give the staged copy a fresh mtime and rename it into the library: an atomic landing."""
    os.utime(staged)  # as if it had just been downloaded
    os.rename(staged, dest)
    return Landing(str(dest), source.name, time.time(), time.perf_counter())


def epoch(moment: datetime | None) -> float | None:
    """A naive UTC timestamp from the database as epoch seconds."""
    return None if moment is None else moment.replace(tzinfo=UTC).timestamp()


class Database:
    """Read-only looks at the daemon's database while it runs (WAL: readers never block it)."""

    def __init__(self, db: Path) -> None:
        from libtagger.library.db import Library

        self.library = Library(db, migrate=False)

    def close(self) -> None:
        self.library.close()

    def written(self, paths: list[str]) -> dict[str, float]:
        """Path -> when its tag write was done (epoch s), for the paths written so far."""
        from sqlalchemy import select

        from libtagger.library.db import TagWrite

        with self.library.session() as session:
            rows = session.execute(
                select(TagWrite.path, TagWrite.written_at)
                .where(TagWrite.state == "written", TagWrite.path.in_(paths))
            ).all()
        found: dict[str, float] = {}
        for path, written_at in rows:
            when = epoch(written_at)
            if when is not None:
                found[path] = min(found.get(path, when), when)
        return found

    def busy_jobs(self) -> int:
        """Jobs queued (due or not) or claimed."""
        from libtagger.service.queue import queue_stats

        stats = queue_stats(self.library)
        return stats.queued + stats.claimed

    def no_tag_coming(self, path: str) -> str | None:
        """Why no tag will come for ``path`` (classified or failed without a tag write)."""
        from sqlalchemy import select

        from libtagger.library.db import Job, TagWrite, Track

        with self.library.session() as session:
            track = session.scalars(select(Track).where(Track.path == path)).first()
            failed_job = session.scalars(
                select(Job).where(Job.path == path, Job.state == "failed")).first()
            if failed_job is not None:
                return f"its job failed: {failed_job.last_error}"
            if track is None or track.status not in ("done", "failed"):
                return None
            if track.status == "failed":
                return f"the daemon could not classify it: {track.last_error}"
            writes = session.scalars(select(TagWrite).where(TagWrite.track_id == track.id)).all()
            if not writes:
                return "the daemon classified it but planned no tag write"
            bad = [w for w in writes if w.state in ("failed", "skipped")]
            if bad and len(bad) == len(writes):
                return f"its tag write {bad[0].state}: {bad[0].error}"
        return None


def wait_for_tag(landing: Landing, daemon: WatchDaemon, database: Database,
                 timeout: float) -> None:
    """Poll the file every 50 ms until it holds a genre; set ``landing.tagged``.

    Raises:
        BenchError: the daemon died, said no tag is coming, or none came within ``timeout``.
    """
    from libtagger.errors import LibtaggerError
    from libtagger.library.tags import read_genres

    deadline = landing.landed + timeout
    polls = 0
    while True:
        try:
            genres = read_genres(landing.path)
        except LibtaggerError:
            genres = []  # not expected (the tag write is an atomic rename); keep polling
        now = time.perf_counter()
        if genres:
            landing.tagged, landing.genres = now, genres
            return
        polls += 1
        if polls % 10 == 0:
            daemon.check_alive()
            reason = database.no_tag_coming(landing.path)
            if reason:
                raise BenchError(f"{landing.path}: {reason}")
        if now > deadline:
            raise BenchError(f"no genre tag in {landing.path} {timeout:g} s after it landed; "
                             f"the daemon's log ends:\n{daemon.log_tail()}")
        time.sleep(TAG_POLL)


def landing_name(index: int, source: Path) -> str:
    """A distinct file name in the library for landing ``index`` of ``source``."""
    return f"{index + 1:03d} {source.stem}{source.suffix}"


# --------------------------------------------------------------------------------------------
# The measurements.
# --------------------------------------------------------------------------------------------


def bench_latency(sources: list[Path], count: int, every: float, folder: Path,
                  staging: Path, daemon: WatchDaemon, database: Database,
                  timeout: float) -> list[Landing]:
    """Section 1: land ``count`` tracks one at a time and time each until its tag is readable."""
    landings: list[Landing] = []
    jitter = random.Random(0)
    next_at = time.perf_counter()
    for i in range(count):
        source = sources[i % len(sources)]
        name = landing_name(i, source)
        staged = stage(source, staging, name)
        time.sleep(max(0.0, next_at - time.perf_counter()))
        landing = land(staged, folder / name, source)
        landings.append(landing)
        wait_for_tag(landing, daemon, database, timeout)
        assert landing.latency is not None
        log(f"  {name}: tagged {landing.latency:.2f} s after landing ({landing.genres[0]})")
        # The next one lands on an idle daemon, not sooner than ``every`` after this one, and
        # at a random moment of the daemon's idle queue poll (every 0.5 s), not in step with it.
        next_at = max(landing.landed + every, time.perf_counter() + 0.5) + jitter.uniform(0, 1)
    return landings


def bench_stream(sources: list[Path], first_index: int, count: int, interval: float,
                 folder: Path, staging: Path, daemon: WatchDaemon, database: Database,
                 timeout: float) -> tuple[list[Landing], dict[str, float]]:
    """Section 2: land ``count`` tracks one every ``interval`` s; wait for every tag.

    Returns the landings, and the CPU seconds the daemon and its workers used meanwhile.
    """
    from libtagger.errors import LibtaggerError
    from libtagger.library.tags import read_genres

    staged = []
    for i in range(first_index, first_index + count):
        source = sources[i % len(sources)]
        staged.append((stage(source, staging, landing_name(i, source)), source))
    log(f"landing {count} tracks, one every {interval:g} s...")
    landings: list[Landing] = []
    assert daemon.tree is not None
    cpu_before, machine_before = daemon.tree.sample(), machine_cpu_seconds()
    bench_before = time.process_time()
    start = time.perf_counter()
    for i, (path, source) in enumerate(staged):
        time.sleep(max(0.0, start + i * interval - time.perf_counter()))
        landings.append(land(path, folder / path.name, source))

    paths = [landing.path for landing in landings]
    written: dict[str, float] = {}
    progress_at = logged_at = time.perf_counter()
    while len(written) < len(paths):
        daemon.check_alive()
        now_written = database.written(paths)
        if len(now_written) > len(written):
            progress_at = time.perf_counter()
            if progress_at - logged_at > 2.0 or len(now_written) == len(paths):
                logged_at = progress_at
                log(f"  {len(now_written)}/{len(paths)} tagged")
        written = now_written
        if time.perf_counter() - progress_at > timeout:
            missing = [p for p in paths if p not in written]
            reasons = [f"  {p}: {database.no_tag_coming(p) or 'no tag yet'}" for p in missing]
            raise BenchError(f"no new tag written for {timeout:g} s; {len(missing)} of "
                             f"{len(paths)} still untagged:\n" + "\n".join(reasons[:10])
                             + f"\nthe daemon's log ends:\n{daemon.log_tail()}")
        time.sleep(DB_POLL)
    machine_after = machine_cpu_seconds()
    cpu = {**daemon.tree.cpu_between(cpu_before, daemon.tree.sample()),
           "wall": time.perf_counter() - start,
           "bench": time.process_time() - bench_before,
           "machine_busy": machine_after[0] - machine_before[0],
           "machine_total": machine_after[1] - machine_before[1]}
    for landing in landings:
        try:
            landing.genres = read_genres(landing.path)
        except LibtaggerError as exc:
            raise BenchError(f"{landing.path}: cannot read its tags: {exc}") from exc
        if not landing.genres:
            raise BenchError(f"{landing.path}: the database says its tag was written, but the "
                             "file holds no genre")
    return landings, cpu


def wait_until_idle(daemon: WatchDaemon, database: Database, timeout: float) -> float:
    """Wait until the daemon's queue is empty (nothing queued or claimed); returns the seconds.

    Raises:
        BenchError: the daemon died, or jobs were still waiting after ``timeout``.
    """
    started = time.perf_counter()
    while (busy := database.busy_jobs()) > 0:
        daemon.check_alive()
        if time.perf_counter() - started > timeout:
            raise BenchError(f"{busy} job(s) still queued or claimed {timeout:g} s after the "
                             f"last tag; the daemon's log ends:\n{daemon.log_tail()}")
        time.sleep(DB_POLL)
    return time.perf_counter() - started


def spread(values: list[float]) -> dict[str, float]:
    """Min, median and max."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def gap(a: float | None, b: float | None) -> float | None:
    """``b - a``, or None if either is unknown."""
    return None if a is None or b is None else b - a


def latency_figures(landings: list[Landing], quiet: float) -> dict[str, Any]:
    """Section 1's figures: the spread of latencies, and each landing's timeline."""
    latencies = [landing.latency for landing in landings if landing.latency is not None]
    tracks = []
    for landing in landings:
        d = landing.daemon
        tagged_wall = landing.landed_wall + (landing.latency or 0.0)
        tracks.append({
            "file": os.path.basename(landing.path),
            "genre": landing.genres[0] if landing.genres else None,
            "latency_seconds": landing.latency,
            # rename -> job row (watchdog's delivery), job row -> due (the quiet period),
            # due -> tag write planned (claim poll, plan, analysis in a worker, store),
            # planned -> written (the copy-and-rename), written -> seen here (our 50 ms poll).
            "event_seconds": gap(landing.landed_wall, d.get("job_created")),
            "quiet_seconds": gap(d.get("job_created"), d.get("job_due")),
            "analyse_seconds": gap(d.get("job_due"), d.get("write_planned")),
            "write_seconds": gap(d.get("write_planned"), d.get("write_done")),
            "seen_seconds": gap(d.get("write_done"), tagged_wall),
        })
    return {
        "tracks": len(landings),
        "latency_seconds": spread(latencies),
        "processing_delay_seconds": spread([x - quiet for x in latencies]),
        "per_track": tracks,
    }


def stream_figures(landings: list[Landing], interval: float) -> dict[str, Any]:
    """Section 2's figures: rates, and how long tracks waited."""
    first_landing = min(landing.landed_wall for landing in landings)
    last_landing = max(landing.landed_wall for landing in landings)
    written = sorted(landing.daemon["write_done"] for landing in landings
                     if landing.daemon.get("write_done") is not None)
    n = len(landings)
    span = written[-1] - first_landing
    steady = written[-1] - written[0]
    landing_rate = 60.0 * (n - 1) / (last_landing - first_landing) if n > 1 else None
    steady_rate = 60.0 * (n - 1) / steady if n > 1 and steady > 0 else None
    waits = [landing.daemon["write_done"] - landing.landed_wall for landing in landings
             if landing.daemon.get("write_done") is not None]
    return {
        "tracks": n,
        "interval_seconds": interval,
        "landing_seconds": last_landing - first_landing,
        "landing_rate_per_minute": landing_rate,
        "first_landing_to_last_tag_seconds": span,
        "tracks_per_minute": 60.0 * n / span,
        "first_tag_to_last_tag_seconds": steady,
        "steady_tracks_per_minute": steady_rate,
        "kept_up": landing_rate is not None and steady_rate is not None
        and steady_rate >= landing_rate,
        "landing_to_tag_seconds": spread(waits),
    }


# --------------------------------------------------------------------------------------------
# Afterwards: the daemon's timestamps, and what it did twice or not at all.
# --------------------------------------------------------------------------------------------


def fill_daemon_times(db: Path, landings: list[Landing]) -> None:
    """Each landing's job and tag-write timestamps, from the (stopped) daemon's database."""
    from sqlalchemy import select

    from libtagger.library.db import Job, Library, TagWrite, Track

    with Library(db, migrate=False) as library, library.session() as session:
        for landing in landings:
            job = session.scalars(select(Job).where(Job.path == landing.path, Job.kind == "file")
                                  .order_by(Job.id)).first()
            track = session.scalars(select(Track).where(Track.path == landing.path)).first()
            write = None if track is None else session.scalars(
                select(TagWrite).where(TagWrite.track_id == track.id, TagWrite.state == "written")
                .order_by(TagWrite.id)).first()
            landing.daemon = {
                "job_created": epoch(job.created_at) if job else None,
                "job_due": epoch(job.not_before) if job else None,
                "job_done": epoch(job.finished_at) if job else None,
                "write_planned": epoch(write.created_at) if write else None,
                "write_done": epoch(write.written_at) if write else None,
            }


def check_daemon(db: Path, root: Path, log_text: str, landings: list[Landing]) -> dict[str, Any]:
    """Missed or doubled work: jobs, classifications and tag writes per landed file, the log."""
    from sqlalchemy import func, select

    from libtagger.library.db import Classification, Job, Library, Run, TagWrite, Track
    from libtagger.library.safewrite import is_temp_file

    landed = {landing.path: landing for landing in landings}
    with Library(db, migrate=False) as library, library.session() as session:
        jobs = [(j.path, j.kind, j.state, j.attempts, epoch(j.created_at))
                for j in session.scalars(select(Job).order_by(Job.id))]
        tracks = {t.path: t for t in session.scalars(select(Track))}
        writes = dict(session.execute(
            select(TagWrite.track_id, func.count()).group_by(TagWrite.track_id)).all())
        classifications = session.scalar(select(func.count()).select_from(Classification)) or 0
        run = session.scalars(select(Run).where(Run.kind == "watch")).first()
        run_counts = dict(run.counts) if run else {}
        run_status = run.status if run else None

    file_jobs: dict[str, list[float | None]] = {path: [] for path in landed}
    for path, kind, _, _, created in jobs:
        if kind == "file" and path in landed:
            file_jobs[path].append(created)
    # An extra job recorded within 0.5 s of the daemon's own tag write on that file was
    # caused by that write (the event arrives before written_at is stored, hence abs()).
    extra = [(path, created) for path, created_list in file_jobs.items()
             for created in created_list[1:]]
    after_own_write = [
        path for path, created in extra
        if created is not None and landed[path].daemon.get("write_done") is not None
        and abs(created - landed[path].daemon["write_done"]) <= 0.5
    ]
    processed_lines: dict[str, int] = {}  # the daemon logs "PATH: genres (tag written)"
    for match in PROCESSED_LINE.finditer(log_text):
        processed_lines[match["path"]] = processed_lines.get(match["path"], 0) + 1
    return {
        "landed": len(landed),
        "tracks_in_database": len(tracks),
        "classification_rows": classifications,
        "processed_lines_in_log": sum(processed_lines.values()),
        "run_counts": run_counts,
        "run_status": run_status,
        "jobs": len(jobs),
        "file_jobs_per_landed_file": {
            str(n): sum(len(c) == n for c in file_jobs.values())
            for n in sorted({len(c) for c in file_jobs.values()})
        },
        "extra_file_jobs": len(extra),
        "extra_file_jobs_at_own_tag_write": len(after_own_write),
        "files_without_a_track": [p for p in landed if p not in tracks],
        "other_jobs": [f"{kind} {state}: {path}" for path, kind, state, _, _ in jobs
                       if kind != "file" or path not in landed],
        "jobs_not_done": [f"{kind} {state}: {path}" for path, kind, state, _, _ in jobs
                          if state != "done"],
        "jobs_attempted_more_than_once": [f"{kind} x{attempts}: {path}"
                                          for path, kind, _, attempts, _ in jobs
                                          if attempts > 1],
        "tracks_classified_more_than_once": [f"x{t.attempts}: {p}" for p, t in tracks.items()
                                             if t.attempts > 1],
        "tracks_not_done": [f"{t.status}: {p}" for p, t in tracks.items()
                            if t.status != "done"],
        "tracks_with_several_tag_writes": [f"x{writes[t.id]}: {p}" for p, t in tracks.items()
                                           if writes.get(t.id, 0) > 1],
        "files_logged_more_than_once": [f"x{n}: {p}" for p, n in processed_lines.items()
                                        if n > 1],
        "warnings_and_errors_in_log": [line for line in log_text.splitlines()
                                       if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback",
                                                    line)],
        "temp_files_left": [str(p) for p in root.rglob("*") if is_temp_file(p)],
    }


LISTED_CHECKS = ("files_without_a_track", "other_jobs", "jobs_not_done",
                 "jobs_attempted_more_than_once", "tracks_classified_more_than_once",
                 "tracks_not_done", "tracks_with_several_tag_writes",
                 "files_logged_more_than_once", "warnings_and_errors_in_log", "temp_files_left")


def findings(check: dict[str, Any], stop: dict[str, Any]) -> list[str]:
    """One line per thing that was not as it should be (empty: all as expected)."""
    out = []
    if check["extra_file_jobs"]:
        out.append(f"{check['extra_file_jobs']} extra 'file' jobs for {check['landed']} landed "
                   f"files (jobs per file: {check['file_jobs_per_landed_file']}); "
                   f"{check['extra_file_jobs_at_own_tag_write']} of them recorded within 0.5 s "
                   "of the daemon's own tag write on that file")
    for key in LISTED_CHECKS:
        if check[key]:
            more = f" (and {len(check[key]) - 3} more)" if len(check[key]) > 3 else ""
            out.append(f"{key.replace('_', ' ')}: " + "; ".join(check[key][:3]) + more)
    if check["tracks_in_database"] != check["landed"]:
        out.append(f"{check['tracks_in_database']} tracks in the database for "
                   f"{check['landed']} files landed")
    processed = check["run_counts"].get("processed")
    if processed != check["landed"]:
        out.append(f"the daemon counted {processed} processed for {check['landed']} landed")
    if check["run_status"] != "done":
        out.append(f"its watch run ended as {check['run_status']!r}, not 'done'")
    if stop["timed_out"] or stop["exit_code"] != 0:
        out.append(f"stop: exit code {stop['exit_code']}"
                   + (f", still running {STOP_TIMEOUT:g} s after SIGTERM" if stop["timed_out"]
                      else ""))
    if stop["workers_left_running"]:
        out.append(f"workers left running after the daemon exited: {stop['workers_left_running']}")
    return out


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict[str, Any]) -> str:
    """The human-readable summary."""
    setup, lat, stream = results["setup"], results["latency"], results["stream"]
    memory, stop = results["memory"], results["stop"]
    quiet = setup["quiet_seconds"]
    mix = ", ".join(f"{n} {ext}" for ext, n in setup["formats"].items() if n)
    lines = [
        f"libtagger watch, quiet_seconds = {quiet:g} (shipped default {SHIPPED_QUIET:g}; "
        f"latency is dominated by it), jobs = {setup['jobs']}, write gate open",
        f"{setup['sources']} synthetic {setup['track_seconds'] / 60:g}-minute tracks "
        f"({mix}) landed by atomic rename; the daemon was watching {setup['ready_seconds']:.1f} s "
        f"after start, its start-up reconcile done at {setup['reconciled_seconds']:.1f} s",
        f"code {setup['code']}; machine: {setup['cpu_count']} cores, 1-minute load average "
        f"{setup['load_average_1min']['before']:.2f} before, "
        f"{setup['load_average_1min']['after']:.2f} after (other work slows every figure)",
        "",
        f"1. landing-to-tag latency, {lat['tracks']} tracks one at a time (rename -> genre "
        "readable in the file, polled every 50 ms):",
    ]
    a, b = lat["latency_seconds"], lat["processing_delay_seconds"]
    lines.append(table([
        ["", "min s", "median s", "max s"],
        ["landing to tag", _s(a["min"]), _s(a["median"]), _s(a["max"])],
        [f"minus quiet period ({quiet:g} s)", _s(b["min"]), _s(b["median"]), _s(b["max"])],
    ]))
    rows = [["file", "genre", "latency", "event", "quiet", "due->planned", "write", "seen"]]
    for t in lat["per_track"]:
        rows.append([t["file"], t["genre"] or "-", _s(t["latency_seconds"]),
                     _s(t["event_seconds"]), _s(t["quiet_seconds"]), _s(t["analyse_seconds"]),
                     _s(t["write_seconds"], 3), _s(t["seen_seconds"], 3)])
    lines += ["", "   per track, seconds (event: rename -> job row; quiet: job row -> due; "
              "due->planned: claim poll + plan + analysis + store; write: tag write; "
              "seen: -> our poll, a few ms below 0 when the daemon stamped the write after "
              "we saw it):", table(rows), ""]
    w, cpu = stream["landing_to_tag_seconds"], stream["cpu_seconds"]
    lines += [
        f"2. sustained stream: {stream['tracks']} tracks landed one every "
        f"{stream['interval_seconds']:g} s (over {stream['landing_seconds']:.1f} s, "
        f"{_s(stream['landing_rate_per_minute'], 0)}/min):",
        table([
            ["", "s", "tracks/min"],
            ["first landing -> last tag", _s(stream["first_landing_to_last_tag_seconds"], 1),
             _s(stream["tracks_per_minute"], 1)],
            ["first tag -> last tag (steady rate)",
             _s(stream["first_tag_to_last_tag_seconds"], 1),
             _s(stream["steady_tracks_per_minute"], 1)],
        ]),
        f"   landing -> tag written: min {w['min']:.1f} s, median {w['median']:.1f} s, "
        f"max {w['max']:.1f} s" + ("   (NOTE: the daemon kept up with the landings; the rate "
                                   "above is the landing rate, not its capacity)"
                                   if stream["kept_up"] else ""),
        f"   queue empty {stream['last_tag_to_empty_queue_seconds']:.1f} s after the last tag "
        "was seen",
        f"   CPU from the first landing until every tag was seen ({cpu['wall']:.1f} s): daemon "
        f"process {cpu['daemon']:.1f} s ({100 * cpu['daemon'] / cpu['wall']:.0f}% of a core), "
        f"workers {cpu['workers']:.1f} s ({100 * cpu['workers'] / cpu['wall']:.0f}% of a core; "
        f"{cpu['workers'] / stream['tracks']:.2f} s per track);",
        f"   the whole machine was busy {100 * cpu['machine_busy'] / cpu['machine_total']:.0f}% "
        "of its "
        f"{results['setup']['cpu_count']} cores: {cpu['machine_busy']:.1f} CPU s, of which "
        f"{cpu['bench']:.1f} s this bench's and "
        f"{cpu['machine_busy'] - cpu['daemon'] - cpu['workers'] - cpu['bench']:.1f} s other "
        "processes'",
        "",
        f"3. memory (VmHWM from /proc, sampled every {SAMPLE_EVERY:g} s, {memory['samples']} "
        "samples): "
        f"daemon {memory['daemon_peak_rss_mib']:.0f} MiB, largest of "
        f"{memory['worker_processes_seen']} worker(s) "
        f"{memory['largest_worker_peak_rss_mib']:.0f} MiB, whole tree at once "
        f"{memory['peak_total_rss_mib']:.0f} MiB (sum of VmRSS; forked workers share pages "
        "with the daemon, so this overcounts)",
        "",
        f"4. stop: SIGTERM -> exited in {stop['seconds']:.2f} s, exit code {stop['exit_code']}"
        + (f", {len(stop['workers_left_running'])} worker(s) left running"
           if stop["workers_left_running"] else ", no worker left running"),
        "",
    ]
    check = results["check"]
    lines.append(f"checks: {check['landed']} files landed, {check['tracks_in_database']} tracks "
                 f"in the database, {check['classification_rows']} classifications, "
                 f"{check['processed_lines_in_log']} 'processed' lines in the daemon's log, "
                 f"daemon's counts {check['run_counts'].get('processed')} processed / "
                 f"{check['run_counts'].get('failed')} failed")
    problems = results["findings"]
    if problems:
        lines += ["UNEXPECTED:"] + [f"  {p}" for p in problems]
    else:
        lines.append("  every landed file: one job, classified once, one tag write; no warnings "
                     "or errors in the daemon's log; no temp files left")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def code_version() -> str | None:
    """``git describe --always --dirty`` of the checkout this runs from, if it is one."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def run(args: argparse.Namespace, work: Path, cache: Path) -> dict[str, Any]:
    """Set up the library, run the daemon through the sections, and gather the figures."""
    sources = make_tracks(cache, args.sources, args.seconds, args.jobs or os.cpu_count() or 1)
    work = Path(os.path.realpath(work))  # the daemon stores real paths
    root, staging = work / "library", work / "staging"
    # The landing folders exist before the daemon starts: only file events are measured.
    for folder in (root / "Latency", root / "Stream", staging):
        folder.mkdir(parents=True)
    config, db = work / "config.toml", work / "library.db"
    config.write_text(CONFIG.format(quiet=float(args.quiet)))
    load_before = os.getloadavg()[0]  # other work on the machine shows in every figure
    daemon = WatchDaemon(config, db, root, work / "daemon.log", args.jobs)
    database: Database | None = None
    try:
        ready, reconciled = daemon.start(args.timeout)
        log(f"daemon watching after {ready:.1f} s, start-up reconcile done after "
            f"{reconciled:.1f} s")
        database = Database(db)
        log(f"landing {args.latency_tracks} tracks one at a time...")
        latency = bench_latency(sources, args.latency_tracks, args.every, root / "Latency",
                                staging, daemon, database, args.timeout)
        stream, stream_cpu = bench_stream(sources, args.latency_tracks, args.stream_tracks,
                              args.stream_interval, root / "Stream", staging, daemon, database,
                              args.timeout)
        log("waiting until the daemon's queue is empty...")
        idle = wait_until_idle(daemon, database, args.timeout)
        assert daemon.tree is not None
        stop = daemon.stop()
        memory = daemon.tree.figures()
    finally:
        if database is not None:
            database.close()
        daemon.cleanup()
    fill_daemon_times(db, latency + stream)
    check = check_daemon(db, root, daemon.log_text(), latency + stream)
    used = [landing.source for landing in latency + stream]
    return {
        "setup": {
            "command": daemon.command,
            "code": code_version(),
            "quiet_seconds": float(args.quiet),
            "jobs": args.jobs or f"default ({os.cpu_count()} cores)",
            "sources": len(sources),
            "track_seconds": args.seconds,
            "formats": {ext: sum(s.endswith(f".{ext}") for s in used) for ext in FORMATS},
            "ready_seconds": ready,
            "reconciled_seconds": reconciled,
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "cpu_count": os.cpu_count(),
        },
        "latency": latency_figures(latency, float(args.quiet)),
        "stream": {**stream_figures(stream, args.stream_interval),
                   "last_tag_to_empty_queue_seconds": idle, "cpu_seconds": stream_cpu},
        "memory": memory,
        "stop": stop,
        "check": check,
        "findings": findings(check, stop),
        "landings": [asdict(landing) for landing in latency + stream],
    }


def main() -> None:
    """Parse arguments, run the benchmark, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", type=float, default=2.0,
                        help=f"[watch] quiet_seconds for the daemon (default 2; shipped "
                        f"{SHIPPED_QUIET:g})")
    parser.add_argument("--latency-tracks", type=int, default=8,
                        help="tracks landed one at a time (default 8)")
    parser.add_argument("--every", type=float, default=3.0,
                        help="at most one latency landing every this many seconds (default 3)")
    parser.add_argument("--stream-tracks", type=int, default=48,
                        help="tracks in the steady stream (default 48)")
    parser.add_argument("--stream-interval", type=float, default=0.1,
                        help="seconds between the stream's landings (default 0.1)")
    parser.add_argument("--sources", type=int, default=24,
                        help="distinct synthetic tracks, landed in turn (default 24)")
    parser.add_argument("--seconds", type=float, default=TRACK_SECONDS,
                        help="length of each track (default 240)")
    parser.add_argument("--jobs", type=int,
                        help="the daemon's worker processes (default: its own, one per core)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="longest wait for the daemon to get ready, for a tag, or for "
                        "progress in the stream (default 120 s)")
    parser.add_argument("--cache-dir", type=Path,
                        help="keep the encoded tracks here and reuse them (default: a temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (library, database, daemon log) and say where")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args()
    if min(args.latency_tracks, args.stream_tracks, args.sources) < 1:
        parser.error("--latency-tracks, --stream-tracks and --sources must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="libtagger-watch-bench-"))
    cache = args.cache_dir or work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, work, cache)
    except BenchError as exc:
        raise SystemExit(f"bench/watch.py: {exc}") from None
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
