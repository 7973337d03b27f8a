"""Library-wide statistics for ``libtagger stats``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

from libtagger.library.db import Classification, GenreRow, Job, Library, Run, Track, utcnow
from libtagger.service.queue import queue_stats

# A daemon whose heartbeat is older than this is taken for dead (it beats every 5 s).
HEARTBEAT_TIMEOUT = 30.0

# Upper edges of the confidence buckets shown by ``stats``.
CONFIDENCE_EDGES = (0.25, 0.5, 0.75, 1.0)


def library_stats(library: Library, max_failures: int = 50) -> dict[str, Any]:
    """Track counts by status, top-genre histogram, confidence buckets, recent failures."""
    with library.reader() as session:
        status = dict(session.execute(
            select(Track.status, func.count()).group_by(Track.status).order_by(Track.status)
        ).all())
        top = (
            select(GenreRow.genre, GenreRow.confidence)
            .join(Classification, GenreRow.classification_id == Classification.id)
            .join(Track, Track.id == Classification.track_id)
            .where(GenreRow.rank == 1, Track.status != "missing")
        ).subquery()
        # Counted by the database: a catalogue's million rows never reach Python.
        histogram = dict(session.execute(
            select(top.c.genre, func.count()).group_by(top.c.genre)).all())
        bucket = case(*((top.c.confidence <= edge, i) for i, edge in enumerate(CONFIDENCE_EDGES)),
                      else_=len(CONFIDENCE_EDGES) - 1)
        counted = dict(session.execute(select(bucket, func.count()).group_by(bucket)).all())
        buckets = {_bucket_name(i): counted.get(i, 0) for i in range(len(CONFIDENCE_EDGES))}
        failures = session.execute(
            select(Track.path, Track.last_error)
            .where((Track.status == "failed")
                   | ((Track.status != "missing") & Track.last_error.like("tag not written%")))
            .order_by(Track.updated_at.desc())
            .limit(max_failures)
        ).all()
    return {
        "tracks": sum(status.values()),
        "status": status,
        "genres": dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        "confidence": buckets,
        "failures": [{"path": p, "error": e} for p, e in failures],
    }


def _bucket_name(index: int) -> str:
    low = 0.0 if index == 0 else CONFIDENCE_EDGES[index - 1]
    return f"{low:.2f}-{CONFIDENCE_EDGES[index]:.2f}"


def daemon_status(library: Library, max_failures: int = 20) -> dict[str, Any]:
    """The watch daemon as the database sees it (works while it runs: WAL readers)."""
    import time

    stats = queue_stats(library)
    with library.reader() as session:
        run = session.scalars(
            select(Run).where(Run.kind == "watch").order_by(Run.id.desc()).limit(1)
        ).first()
        reconcile = session.scalars(
            select(Run.finished_at).where(Run.kind == "reconcile").order_by(Run.id.desc()).limit(1)
        ).first()
        failed = session.execute(
            select(Job.path, Job.last_error).where(Job.state == "failed")
            .order_by(Job.updated_at.desc()).limit(max_failures)
        ).all()
    counts = run.counts if run else {}
    heartbeat_age = time.time() - counts.get("heartbeat", 0) if run else None
    running = bool(run and run.finished_at is None and heartbeat_age is not None
                   and heartbeat_age < HEARTBEAT_TIMEOUT)
    return {
        "daemon": {
            "running": running,
            "pid": counts.get("pid"),
            "started_at": run.started_at.isoformat() if run else None,
            "heartbeat_age": heartbeat_age,
            "processed": counts.get("processed", 0),
            "failed": counts.get("failed", 0),
        },
        "queue": {
            "queued": stats.queued, "due": stats.due, "claimed": stats.claimed,
            "failed": stats.failed, "done_last_10_min": stats.done_last_10_min,
        },
        "throughput_per_min": stats.done_last_10_min / 10.0,
        "last_reconcile": reconcile.isoformat() if reconcile else None,
        "failed_jobs": [{"path": p, "error": e} for p, e in failed],
        "now": utcnow().isoformat(),
    }
