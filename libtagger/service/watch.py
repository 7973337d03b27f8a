"""``libtagger watch``: the daemon that tags files as they land in the library.

Three kinds of thread, one writer:

* watchdog observers (one per root) only filter events and record them as jobs;
* APScheduler runs the reconcile scan (at start and then periodically), the slow retry of
  parked jobs, and the check for roots that vanished (an unmounted share) or came back;
* the main thread claims due jobs, decides what each needs from the database, hands audio
  work to a pool of worker processes (models loaded once per worker), and stores each result
  in one transaction with its job. It alone writes tags.

SIGTERM/SIGINT stop it cleanly (jobs in hand are finished or put back), SIGHUP reloads the
configuration. Under systemd it speaks the notify protocol (READY, STATUS, WATCHDOG, STOPPING).

The observers live in ``libtagger.service.observe``, the worker processes in
``libtagger.pipeline.runner`` (their tasks in ``libtagger.pipeline.worker``), what becomes of a
job whose file could not be classified in ``libtagger.service.queue``, and what a deleted or
moved file does to the database in ``libtagger.library.moves``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from sqlalchemy.exc import OperationalError

from libtagger.config import Config, WatchConfig, load_config
from libtagger.library.db import Library, Run, utcnow
from libtagger.errors import LibtaggerError, display_path
from libtagger.library.moves import mark_missing, move_tracks
from libtagger.service.observe import RootWatch
from libtagger.library.guards import inside_roots
from libtagger.pipeline import worker
from libtagger.pipeline.runner import WorkerDied
from libtagger.pipeline.track import Analysis, describe, record, write_outcome
from libtagger.pipeline.track import reconcile_planned_writes
from libtagger.service.queue import (
    ClaimedJob,
    claim,
    enqueue,
    enqueue_many,
    fail,
    finish,
    mark_done,
    postpone,
    prune_done,
    queue_stats,
    requeue_claimed,
    retry_failed,
)
from libtagger.pipeline.scan import ScanSummary, identify_with, make_runner, plan_scan
from libtagger.service.systemd import Notifier

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What the daemon has done since it started (shown by ``status`` and in STATUS=)."""

    processed: int = 0
    failed: int = 0
    moved: int = 0
    missing: int = 0
    started: float = field(default_factory=time.monotonic)


class Daemon:
    """The watch service. ``run()`` blocks until stopped and returns the exit code.

    Raises:
        LibtaggerError: another daemon holds the database, or the models cannot load.
    """

    def __init__(self, config: Config, library: Library, roots: list[str], jobs: int,
                 polling: bool = False, config_path: str | None = None,
                 roots_from_config: bool = False) -> None:
        self.config = _daemon_config(config)
        self.config_path = config_path
        self.library = library
        self.jobs = max(1, jobs)
        self.polling = polling
        self.roots_from_config = roots_from_config
        """The roots are library.roots (none on the command line): a reload applies them."""
        self.roots = [self._root_watch(path, config) for path in _real_roots(roots)]
        self._head_id: int | None = None
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self.notifier = Notifier()
        self.counters = Counters()
        self.in_flight: dict[int, tuple[ClaimedJob, int, Any]] = {}
        self._pool: Any = None
        self._scheduler: Any = None
        self._run_id: int | None = None
        self._lock_file: Any = None
        self._tasks: SimpleQueue[Callable[[], None]] = SimpleQueue()

    # --- life cycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, serve until SIGTERM/SIGINT, stop cleanly."""
        self._take_lock()
        try:
            self._install_signals()
            self._start_pool()
            settled = reconcile_planned_writes(self.library, self._pool,
                                               [r.path for r in self.roots])
            requeued = requeue_claimed(self.library)
            if requeued or any(settled.values()):
                log.info("resumed: %d jobs back in the queue, interrupted writes %s",
                         requeued, settled)
            with self.library.session() as session:
                run = Run(kind="watch", roots=[r.path for r in self.roots], counts={})
                session.add(run)
                session.flush()
                self._run_id = run.id
            for root in self.roots:
                root.start(self.library, self.config.watch)
            self._start_scheduler()
            self.notifier.notify("READY=1", f"STATUS=watching {len(self.roots)} folder(s)")
            log.info("watching %s with %d worker(s)",
                     ", ".join(f"{r.path} ({r.mode or 'not there yet'})" for r in self.roots),
                     self.jobs)
            self._serve()
        finally:
            self._shutdown()  # also after a failed start: no worker, thread or lock is left
        return 0

    def _take_lock(self) -> None:
        """One daemon per database: a second one would claim the same jobs."""
        url = self.library.url
        lock_path = (url[len("sqlite:///"):] if url.startswith("sqlite:///") else
                     str(Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "libtagger")) + ".watch.lock"
        self._lock_file = open(lock_path, "a+")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LibtaggerError(
                f"another libtagger watch is already running on {url}"
            ) from None

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        def reload(_signum: int, _frame: Any) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _start_pool(self) -> None:
        """Isolated workers with the models (and the active personal head) loaded."""
        from libtagger.library.personal import active_head

        head = None
        self._head_id = self._active_head_id()
        if self.config.personal.mode != "off":
            head = active_head(self.library, "+".join(self.config.classifier.models))
        self._pool = make_runner(self.config, self.jobs, head)
        # Load the models before saying READY: a round trip through every worker.
        for _ in self._pool.run(range(self.jobs), task=worker.warm_up):
            pass

    def _stop_pool(self) -> None:
        """Stop the workers now; work they had in hand is already back in the queue."""
        if self._pool is None:
            return
        self._pool.close(now=True)
        self._pool = None

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        watch = self.config.watch
        # The scheduler only decides *when*; the work runs in the main thread, between jobs,
        # so that one thread decides about tracks and no two decisions race.
        scheduler = BackgroundScheduler(daemon=True)
        for job_id, (task, interval) in self._schedule(watch).items():
            first = {"next_run_time": utcnow_local()} if job_id == "reconcile" else {}
            scheduler.add_job(self._in_main, "interval", args=[task], id=job_id, coalesce=True,
                              **first, **interval)
        scheduler.start()
        self._scheduler = scheduler

    def _schedule(self, watch: WatchConfig) -> dict[str, tuple[Callable[[], None],
                                                              dict[str, float]]]:
        """The scheduled tasks and their intervals, by job id."""
        return {
            "reconcile": (self.reconcile, {"minutes": watch.reconcile_minutes}),
            "retry-failed": (self._retry_failed, {"hours": watch.retry_failed_hours}),
            "roots": (self._check_roots, {"seconds": watch.root_check_seconds}),
            "leases": (self._requeue_expired, {"minutes": 1}),
        }

    def _in_main(self, task: Callable[[], None]) -> None:
        """Hand a scheduled task to the main loop (called in the scheduler's thread)."""
        self._tasks.put(task)

    def _requeue_expired(self) -> None:
        requeue_claimed(self.library, only_expired=True)

    def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        for root in self.roots:
            root.stop()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
        deadline = time.monotonic() + self.config.watch.stop_grace_seconds
        while self.in_flight and time.monotonic() < deadline:
            self._collect(timeout=0.1)
        if self.in_flight:
            log.info("putting %d unfinished job(s) back in the queue", len(self.in_flight))
            for job, _, _ in self.in_flight.values():
                postpone(self.library, job.id, 0)  # its track stays pending
            self.in_flight.clear()
        self._stop_pool()
        if self._run_id is not None:
            self._save_counts(finished=True)
        if self._lock_file is not None:
            self._lock_file.close()
        log.info("stopped")

    # --- the main loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        last_status = 0.0
        watchdog_every = self.notifier.watchdog_interval()
        while not self.stop_event.is_set():
            try:
                jobs = self._serve_once()
            except OperationalError as exc:
                # Another writer held the database past the busy timeout: nothing was half
                # stored (each step is one transaction); wait and carry on.
                log.warning("database busy, retrying: %s", getattr(exc, "orig", exc))
                jobs = []
                self.stop_event.wait(1.0)
            now = time.monotonic()
            if now - last_status >= min(5.0, watchdog_every or 5.0):
                last_status = now
                try:
                    self._report_status()
                except OperationalError:
                    self.notifier.notify("WATCHDOG=1")
            if not jobs:
                self.stop_event.wait(self.config.watch.poll_seconds if not self.in_flight else 0.05)

    def _serve_once(self) -> list[ClaimedJob]:
        """One turn of the main loop: reload, scheduled work, results, new jobs."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self._reload()
        while not self._tasks.empty():
            self._tasks.get_nowait()()
        self._collect(timeout=0.0)
        room = 2 * self.jobs - len(self.in_flight)
        jobs = claim(self.library, room, self.config.watch.lease_seconds) if room > 0 else []
        for job in jobs:
            self._handle(job)
        return jobs

    def _report_status(self) -> None:
        stats = queue_stats(self.library)
        status = (f"STATUS=queue {stats.queued}, working {len(self.in_flight)}, "
                  f"done {self.counters.processed}, failed {self.counters.failed}")
        self.notifier.notify(status, "WATCHDOG=1")
        self._save_counts()

    def _save_counts(self, finished: bool = False) -> None:
        with self.library.session() as session:
            run = session.get(Run, self._run_id)
            if run is None:
                return
            run.counts = {
                "processed": self.counters.processed, "failed": self.counters.failed,
                "moved": self.counters.moved, "missing": self.counters.missing,
                "heartbeat": int(time.time()), "pid": os.getpid(),
            }
            if finished:
                run.finished_at = utcnow()
                run.status = "done"

    def _collect(self, timeout: float) -> None:
        """Store the results of finished audio work: result, job, tag write."""
        if timeout and self.in_flight:
            wait([f for _, _, f in self.in_flight.values()], timeout=timeout,
                 return_when=FIRST_COMPLETED)
        for job_id, (job, ref, future) in list(self.in_flight.items()):
            if not future.done():
                continue
            del self.in_flight[job_id]
            analysis = self._pool.outcome(future)
            if isinstance(analysis, WorkerDied):
                # The worker died on this file (a crash, a timeout, out of memory): it costs
                # this file and this job only (each job has its own task); pebble has already
                # replaced the worker. The death is the file's fault, so it is not transient.
                analysis = Analysis(ref.path, ref.snapshot, error=analysis.reason)
            if analysis.transient:
                # Not the file's fault: the track stays pending with its error. A file still
                # being written is waited for (not an attempt); anything else (a permission,
                # a vanished file, an I/O error) is retried with backoff, then parked.
                record(self.library, ref, analysis, self.config, self._run_id)
                if analysis.busy:
                    postpone(self.library, job.id, max(self.config.watch.quiet_seconds, 1.0))
                    log.info("%s: %s", display_path(ref.path), analysis.error)
                else:
                    state = fail(self.library, job.id, analysis.error or "transient error",
                                 self.config.watch.max_attempts,
                                 self.config.watch.backoff_seconds)
                    log.warning("%s: %s (%s)", display_path(ref.path), analysis.error,
                                "parked" if state == "failed" else "will retry")
                continue
            outcome, plan = record(self.library, ref, analysis, self.config, self._run_id,
                                   on_commit=lambda session, j=job.id: mark_done(session, j))
            write_outcome(self.library, self._pool, outcome, plan)
            if outcome.status == "done":
                self.counters.processed += 1
                # What really happened to the file, as the scan logs it.
                log.info("%s: %s", display_path(outcome.path), describe(outcome))
            else:
                self.counters.failed += 1
                log.warning("%s: %s", display_path(outcome.path), outcome.error)

    # --- jobs -------------------------------------------------------------------------------

    def _handle(self, job: ClaimedJob) -> None:
        """Decide what a job needs; audio work goes to the pool, the rest is done here."""
        try:
            root = self._root_of(job.dest or job.path)
            if root is not None and not (root.available and os.path.isdir(root.path)):
                # The whole root is gone (an unmounted share): its files are not deleted.
                postpone(self.library, job.id, self.config.watch.root_check_seconds)
                return
            if job.kind == "file":
                self._file_job(job)
            elif job.kind == "folder":
                if not self._outside(job):
                    self._plan(job, [job.path])
            elif job.kind == "gone":
                self._gone(job)
            elif job.kind == "move":
                self._move_job(job)
        except LibtaggerError as exc:
            fail(self.library, job.id, str(exc), self.config.watch.max_attempts,
                 self.config.watch.backoff_seconds)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the daemon
            log.exception("job %d (%s %s) failed", job.id, job.kind, display_path(job.path))
            fail(self.library, job.id, f"{type(exc).__name__}: {exc}",
                 self.config.watch.max_attempts, self.config.watch.backoff_seconds)

    def _gone(self, job: ClaimedJob) -> None:
        """A file or folder deleted from the library: its tracks are kept, marked missing."""
        missing = mark_missing(self.library, job.path)
        self.counters.missing += missing
        if missing:
            log.info("deleted: %s (%d track%s marked missing, history kept)",
                     display_path(job.path), missing, "s"[:missing != 1])
        finish(self.library, job.id)

    def _outside(self, job: ClaimedJob) -> bool:
        """Refuse a path outside the roots or reached through a symlink; finish its job."""
        refusal = inside_roots(job.path, [r.path for r in self.roots])
        if refusal is None:
            return False
        log.info("%s: ignored, %s", display_path(job.path), refusal)
        finish(self.library, job.id)
        return True

    def _file_job(self, job: ClaimedJob) -> None:
        if self._outside(job):
            return
        try:
            stat = os.lstat(job.path)
        except FileNotFoundError:
            self._gone(job)
            return
        # Settled? A file still being copied keeps changing its mtime.
        age = time.time() - stat.st_mtime
        quiet = self.config.watch.quiet_seconds
        if age < quiet:
            postpone(self.library, job.id, quiet - age + 0.1)
            return
        self._plan(job, [job.path])

    def _plan(self, job: ClaimedJob, paths: list[str]) -> None:
        """Compare disk and database for ``paths`` like a scan; classify what needs it."""
        summary = ScanSummary()
        refs = plan_scan(self.library, paths, False, summary, identify_with(self._pool),
                         always_hash=True)
        self.counters.moved += summary.moved
        self.counters.missing += summary.missing
        if job.kind == "file" and len(refs) == 1:
            ref = refs[0]
            if any(other.track_id == ref.track_id for _, other, _ in self.in_flight.values()):
                # Already being classified (an event and the reconcile both saw it): look
                # again once that is stored; by then it is unchanged and nothing is done.
                postpone(self.library, job.id, 1.0)
                return
            self.in_flight[job.id] = (job, ref, self._pool.submit(ref))
            return
        enqueue_many(self.library, "file", [ref.path for ref in refs],
                     between=lambda _done, _total: self.notifier.notify("WATCHDOG=1"))
        finish(self.library, job.id)

    def _move_job(self, job: ClaimedJob) -> None:
        assert job.dest is not None
        refusal = inside_roots(job.dest, [r.path for r in self.roots])
        if refusal is not None:
            # Moved out of the library, or a symlink renamed into it: what was at the source
            # is gone from the library; nothing is followed through the link.
            log.info("%s: ignored, %s", display_path(job.dest), refusal)
            self.counters.missing += mark_missing(self.library, job.path)
            finish(self.library, job.id)
            return
        moved = move_tracks(self.library, job.path, job.dest)
        self.counters.moved += moved
        if moved:
            log.info("moved: %s -> %s (%d track%s, genres and history kept)",
                     display_path(job.path), display_path(job.dest), moved, "s"[:moved != 1])
        else:  # moved in from outside the library (or unknown): new to us
            kind = "folder" if os.path.isdir(job.dest) else "file"
            enqueue(self.library, kind, job.dest)
        finish(self.library, job.id)

    # --- scheduled ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Catch what events missed: compare every available root with the database."""
        roots = [r.path for r in self.roots if r.available and os.path.isdir(r.path)]
        if not roots:
            return
        started = utcnow()
        summary = ScanSummary()
        def alive(_phase: str, _done: int, _total: int) -> None:
            self.notifier.notify("WATCHDOG=1")  # a long walk is not a hang

        try:
            # Tag writes deferred since (a read-only file, a locked one, a full disk) are
            # tried again, without classifying again; at start-up this also settles writes
            # a kill interrupted.
            settled = reconcile_planned_writes(self.library, self._pool)
            if any(settled.values()):
                log.info("deferred tag writes tried again: %s", settled)
            refs = plan_scan(self.library, roots, False, summary, identify_with(self._pool),
                             progress=alive)
            paths = [ref.path for ref in refs]

            def queued(done: int, total: int) -> None:
                # One transaction per chunk: progress is committed, and systemd hears from
                # us between chunks however many files there are.
                self.notifier.notify(f"STATUS=reconcile: queued {done} of {total}",
                                     "WATCHDOG=1")

            enqueue_many(self.library, "file", paths, between=queued)
            prune_done(self.library)
        except Exception:  # noqa: BLE001 - the next run tries again
            log.exception("reconcile failed")
            return
        with self.library.session() as session:
            session.add(Run(kind="reconcile", roots=roots, started_at=started,
                            finished_at=utcnow(), status="done", counts=summary.counts()))
        log.info("reconciled: %d new, %d changed, %d moved, %d missing; %d queued",
                 summary.new, summary.changed, summary.moved, summary.missing, len(paths))

    def _retry_failed(self) -> None:
        count = retry_failed(self.library)
        if count:
            log.info("retrying %d failed job(s)", count)

    def _check_roots(self) -> None:
        """Stop watching a root that vanished (unmounted share); rescan it when it is back."""
        for root in self.roots:
            present = os.path.isdir(root.path)
            if root.available and not present:
                log.warning("%s is gone (unmounted?); its tracks are kept, retrying",
                            root.path)
                root.stop()
                root.available = False
            elif not root.available and present:
                if root.start(self.library, self.config.watch):
                    enqueue(self.library, "folder", root.path)

    # --- roots and configuration ------------------------------------------------------------

    def _root_of(self, path: str) -> RootWatch | None:
        for root in self.roots:
            if path == root.path or path.startswith(root.path.rstrip(os.sep) + os.sep):
                return root
        return None

    def _reload(self) -> None:
        """SIGHUP: read the configuration again and apply all of it.

        Roots (when they come from library.roots) are started or stopped, the quiet period
        and the scheduler's intervals take effect, and the workers are restarted when
        anything they use changed: models, genres, tags, limits, the settle time (the quiet
        period), [personal] or a newly learned head.
        """
        from libtagger.analysis.model import check_models

        try:
            new = _daemon_config(load_config(self.config_path))
            check_models(new)  # here, before the workers are stopped for models they lack
        except LibtaggerError as exc:
            log.error("config not reloaded: %s", exc)
            return
        old = self.config
        restart = (replace(new, watch=old.watch, library=replace(new.library, roots=(),
                                                                 database="", jobs=0))
                   != replace(old, library=replace(old.library, roots=(), database="", jobs=0))
                   or self._active_head_id(new) != self._head_id)
        self.config = new
        if restart:
            while self.in_flight:
                self._collect(timeout=0.1)
            self._stop_pool()
            self._start_pool()
        self._apply_roots(old, new)
        if self._scheduler is not None and new.watch != old.watch:
            for job_id, (_task, interval) in self._schedule(new.watch).items():
                self._scheduler.reschedule_job(job_id, trigger="interval", **interval)
        log.info("configuration reloaded%s", " (workers restarted)" if restart else "")

    def _apply_roots(self, old: Config, new: Config) -> None:
        """Start and stop roots as the new configuration says; give observers the new quiet
        period (restarting them when their polling settings changed)."""
        wanted = (_real_roots(new.library.roots) if self.roots_from_config and new.library.roots
                  else [r.path for r in self.roots])
        kept = []
        for root in self.roots:
            if root.path not in wanted:
                root.stop()
                log.info("%s: no longer watched", root.path)
            else:
                kept.append(root)
        observing = ("polling", "polling_roots", "polling_seconds")
        restart = any(getattr(old.watch, k) != getattr(new.watch, k) for k in observing)
        for i, root in enumerate(kept):
            if restart:
                root.stop()
                kept[i] = root = self._root_watch(root.path, new)
                if root.start(self.library, new.watch):
                    enqueue(self.library, "folder", root.path)  # what it missed meanwhile
            else:
                root.set_quiet(new.watch.quiet_seconds)
        known = {r.path for r in kept}
        for path in wanted:
            if path not in known:
                root = self._root_watch(path, new)
                kept.append(root)
                if root.start(self.library, new.watch):
                    enqueue(self.library, "folder", root.path)  # its files, found now
                log.info("%s: watched (%s)", path, root.mode or "not there yet")
        self.roots = kept

    def _root_watch(self, path: str, config: Config) -> RootWatch:
        polled = set(_real_roots(config.watch.polling_roots))
        return RootWatch(path, self.polling or config.watch.polling or path in polled)

    def _active_head_id(self, config: Config | None = None) -> int | None:
        from libtagger.library.personal import active_head_id

        config = config or self.config
        if config.personal.mode == "off":
            return None
        return active_head_id(self.library, "+".join(config.classifier.models))


def _real_roots(roots: Iterable[str]) -> list[str]:
    return [os.path.realpath(os.path.expanduser(r)) for r in roots]


def _daemon_config(config: Config) -> Config:
    """The daemon's settle time is its quiet period: one rule for "still being written"."""
    return replace(config, library=replace(config.library,
                                           settle_seconds=config.watch.quiet_seconds))


def utcnow_local():  # APScheduler wants an aware or local "now" for next_run_time
    """Now, as APScheduler's default (local) timezone sees it."""
    from datetime import datetime

    return datetime.now().astimezone()


def replace_watch(config: Config, **changes: Any) -> Config:
    """``config`` with some [watch] settings changed (command-line overrides)."""
    return replace(config, watch=replace(config.watch, **changes))


def run_daemon(config: Config, library: Library, roots: list[str], jobs: int,
               polling: bool = False, config_path: str | None = None,
               roots_from_config: bool = False) -> int:
    """Run the watch daemon until it is stopped; returns the exit code."""
    return Daemon(config, library, roots, jobs, polling, config_path, roots_from_config).run()

