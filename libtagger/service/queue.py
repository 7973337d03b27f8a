"""The crash-safe job queue of the watch daemon: a table in the genre database.

A job is *queued* until its ``not_before`` (the settle period, or a retry backoff), then
*claimed* with a lease, then *done* in the same transaction as its result, or *failed* and
retried with a growing delay until it is parked after ``max_attempts``. Events for a path that
already has a queued job collapse into it (its ``not_before`` moves on). A daemon killed with
jobs in hand leaves them *claimed*; :func:`requeue_claimed` puts them back on the next start.

What the daemon does with a job whose file could not be classified depends on whose fault it
is (``Daemon._collect`` applies this rule):

* **the file is bad** (it does not decode, is not audio, is truncated, or its worker crashed,
  ran out of time or memory on it): the track is stored as failed with the reason and the job
  is done (:func:`mark_done`, in the same transaction). It is not retried until the file
  changes: a later event or reconcile sees a new size or mtime and queues it again;
* **the file is still being written** (modified within the quiet period, open for writing by
  another process, or changed while it was read): the job is put back with :func:`postpone`
  after the quiet period; that is not an attempt and never parks it;
* **the cause lies outside the file and may pass** (permission denied, the file or its folder
  vanished, an I/O error, an unexpected error in the daemon): :func:`fail` counts an attempt
  and retries after ``backoff · 2^(attempts-1)`` s, parking the job after ``max_attempts``.

Each job has its own worker task, so a worker that dies is blamed on the job it held only.

Several daemons, one database: on SQLite there is one writer at a time (``BEGIN IMMEDIATE``),
so a claim is atomic and the watch lock beside the database file allows one daemon. On
PostgreSQL a claim is ``SELECT … FOR UPDATE SKIP LOCKED``: daemons on several machines can
claim from one queue at once, each skipping the rows another is claiming, and never get the
same job. What is supported there: one daemon per machine (the watch lock is a file on that
machine, not in the database) and each library root watched by one daemon. A daemon that
starts puts back only the claims of its own machine (a dead predecessor's) and those whose
lease ran out, never a live daemon's, and settles only the interrupted tag writes under its
own roots.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from libtagger.library.db import Job, Library, utcnow

KINDS = ("file", "move", "gone", "folder")

ENQUEUE_CHUNK = 500
"""Paths per transaction in :func:`enqueue_many` (and per IN list, far below SQLite's limit)."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job in hand, detached from its session."""

    id: int
    kind: str
    path: str
    dest: str | None
    attempts: int


def worker_name() -> str:
    """Who holds a claim: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def _this_machine() -> str:
    """The part of :func:`worker_name` that names this machine."""
    return f"{socket.gethostname()}:"[:64]


def enqueue(library: Library, kind: str, path: str, dest: str | None = None,
            delay: float = 0.0) -> int:
    """Add a job, or fold it into the queued job of the same kind for the same path.

    ``delay`` seconds from now is the earliest it may run; a repeated event pushes that back,
    so a burst of events for one file becomes one job that runs once the file is quiet.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    not_before = utcnow() + timedelta(seconds=delay)
    with library.session() as session:
        existing = None
        if kind in ("file", "folder", "gone"):
            existing = session.scalars(
                select(Job).where(Job.path == path, Job.kind == kind, Job.state == "queued")
            ).first()
        if existing is not None:
            existing.not_before = max(existing.not_before, not_before)
            return existing.id
        job = Job(kind=kind, path=path, dest=dest, not_before=not_before)
        session.add(job)
        session.flush()
        return job.id


def enqueue_many(library: Library, kind: str, paths: Sequence[str],
                 chunk: int = ENQUEUE_CHUNK,
                 between: Callable[[int, int], None] | None = None) -> int:
    """:func:`enqueue` for many paths, one transaction per ``chunk`` of them.

    A reconcile that finds thousands of new files commits them progressively (a kill keeps
    what was queued) without a transaction, and its fsync, per path; ``between(done, total)``
    runs after each chunk (the daemon pings systemd's watchdog there). Returns how many paths
    got a new job (the others folded into a queued one).
    """
    if kind not in ("file", "folder", "gone"):
        raise ValueError(f"enqueue_many cannot make {kind!r} jobs")
    not_before = utcnow()
    added = 0
    for start in range(0, len(paths), chunk):
        part = list(dict.fromkeys(paths[start:start + chunk]))
        with library.session() as session:
            queued = {job.path: job for job in session.scalars(
                select(Job).where(Job.path.in_(part), Job.kind == kind, Job.state == "queued"))}
            for path in part:
                if path in queued:
                    queued[path].not_before = max(queued[path].not_before, not_before)
                else:
                    session.add(Job(kind=kind, path=path, not_before=not_before))
                    added += 1
        if between is not None:
            between(min(start + chunk, len(paths)), len(paths))
    return added


def claim(library: Library, limit: int, lease: float = 600.0,
          now: datetime | None = None) -> list[ClaimedJob]:
    """Claim up to ``limit`` due jobs, oldest first, with a lease of ``lease`` seconds.

    On PostgreSQL the rows are locked as they are read and rows another claimer holds are
    skipped (``FOR UPDATE SKIP LOCKED``), so concurrent claimers share the queue without
    waiting or overlapping; SQLite ignores the clause (its writing transaction already
    excludes every other writer).
    """
    now = now or utcnow()
    with library.session() as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.state == "queued", Job.not_before <= now)
            .order_by(Job.not_before, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            job.state = "claimed"
            job.claimed_by = worker_name()
            job.lease_until = now + timedelta(seconds=lease)
            job.attempts += 1
        return [ClaimedJob(j.id, j.kind, j.path, j.dest, j.attempts) for j in jobs]


def mark_done(session: Session, job_id: int) -> None:
    """Finish a job inside the caller's transaction (the one that stores its result)."""
    job = session.get(Job, job_id)
    if job is not None:
        job.state = "done"
        job.finished_at = utcnow()
        job.lease_until = None
        job.last_error = None


def finish(library: Library, job_id: int) -> None:
    """Finish a job that has no result to store (a move, a delete, a no-op)."""
    with library.session() as session:
        mark_done(session, job_id)


def fail(library: Library, job_id: int, error: str, max_attempts: int = 5,
         backoff: float = 30.0) -> str:
    """Record a failure: retry after ``backoff · 2^(attempts-1)`` s, or park it as failed.

    Returns the job's new state.
    """
    with library.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return "gone"
        job.last_error = error
        job.lease_until = None
        if job.attempts >= max_attempts:
            job.state = "failed"
            job.finished_at = utcnow()
        else:
            job.state = "queued"
            job.not_before = utcnow() + timedelta(seconds=backoff * 2 ** (job.attempts - 1))
        return job.state


def postpone(library: Library, job_id: int, delay: float) -> None:
    """Put a claimed job back without counting an attempt (its file is still changing)."""
    with library.session() as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.state = "queued"
            job.attempts = max(0, job.attempts - 1)
            job.lease_until = None
            job.not_before = utcnow() + timedelta(seconds=delay)


def requeue_claimed(library: Library, only_expired: bool = False) -> int:
    """Put claimed jobs back in the queue: those whose lease ran out, and (at start-up, unless
    ``only_expired``) every claim held by this machine, whose one daemon is the one starting.

    A claim by another machine with a valid lease is left alone: its daemon may be alive.
    """
    with library.session() as session:
        expired = Job.lease_until < utcnow()
        mine = Job.claimed_by.startswith(_this_machine(), autoescape=True)
        condition = (Job.state == "claimed") & (expired if only_expired else expired | mine)
        result = session.execute(
            update(Job).where(condition).values(state="queued", lease_until=None,
                                                claimed_by=None),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount or 0)


def retry_failed(library: Library) -> int:
    """Give parked jobs a new round of attempts (the slow retry schedule)."""
    with library.session() as session:
        result = session.execute(
            update(Job).where(Job.state == "failed")
            .values(state="queued", attempts=0, not_before=utcnow(), finished_at=None),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount or 0)


@dataclass(frozen=True)
class QueueStats:
    """How the queue stands."""

    queued: int
    due: int
    claimed: int
    failed: int
    done_last_10_min: int


def queue_stats(library: Library) -> QueueStats:
    """Counts by state, and jobs finished in the last ten minutes."""
    now = utcnow()
    with library.reader() as session:
        by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        due = session.scalar(
            select(func.count()).where(Job.state == "queued", Job.not_before <= now)
        )
        recent = session.scalar(
            select(func.count()).where(
                Job.state == "done", Job.finished_at >= now - timedelta(minutes=10)
            )
        )
    return QueueStats(
        queued=by_state.get("queued", 0),
        due=int(due or 0),
        claimed=by_state.get("claimed", 0),
        failed=by_state.get("failed", 0),
        done_last_10_min=int(recent or 0),
    )


def prune_done(library: Library, older_than: timedelta = timedelta(days=7)) -> int:
    """Delete finished jobs older than ``older_than`` (the queue is not a history)."""
    with library.session() as session:
        result = session.execute(
            Job.__table__.delete().where(
                Job.state == "done", Job.finished_at < utcnow() - older_than
            )
        )
        return int(result.rowcount or 0)
