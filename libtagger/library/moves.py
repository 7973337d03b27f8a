"""What a file deleted or moved on disk does to its database rows (the watch daemon's events)."""

from __future__ import annotations

import os

from sqlalchemy import select, update

from libtagger.library.db import Library, Track, under_path, utcnow


def mark_missing(library: Library, path: str) -> int:
    """Mark the track at ``path`` (or every track under a folder) missing; keep its history."""
    if os.path.exists(path):
        return 0  # deleted and recreated meanwhile: its own file job will look at it
    with library.session() as session:
        result = session.execute(
            update(Track).where(under_path(Track.path, path), Track.status != "missing")
            .values(status="missing", missing_since=utcnow()),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount or 0)


def move_tracks(library: Library, source: str, dest: str) -> int:
    """Point the rows of a moved file (or of everything in a moved folder) at the new path."""
    moved = 0
    with library.session() as session:
        rows = session.scalars(select(Track).where(under_path(Track.path, source))).all()
        for track in rows:
            new_path = dest + track.path[len(source):]
            if not os.path.exists(new_path):
                continue
            clash = session.scalars(select(Track).where(Track.path == new_path)).first()
            if clash is not None and clash.id != track.id:
                session.delete(clash)  # replaced by the moved file: the moved row wins
                session.flush()
            stat = os.stat(new_path)
            track.path, track.size, track.mtime_ns = new_path, stat.st_size, stat.st_mtime_ns
            if track.status == "missing":
                track.status = "done" if track.classification else "pending"
                track.missing_since = None
            moved += 1
    return moved
