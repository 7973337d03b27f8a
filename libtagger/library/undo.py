"""Undo our tag writes: put back the genre a file had before libtagger wrote it.

A file is restored only if it still holds exactly what we wrote; if someone (a person, DJ
software) changed its genre since, it is skipped and reported. An undo is itself recorded as
a tag write (kind ``undo``), so it is crash-safe the same way and shows up in the history.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from libtagger.analysis.vote import normalise_genre
from libtagger.config import Config
from libtagger.library.db import Library, TagWrite, Track
from libtagger.library.guards import Snapshot
from libtagger.library.safewrite import temp_path_for


@dataclass(frozen=True)
class UndoItem:
    """What undo did (or would do) to one file."""

    path: str
    state: str
    """restored, would-restore (dry run), skipped, failed."""
    genres: list[str]
    """What the file holds now (restored: what it was given back)."""
    reason: str | None = None


def _same(a: list[str], b: list[str]) -> bool:
    return [normalise_genre(x) for x in a] == [normalise_genre(x) for x in b]


def _selected(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)


def undo_writes(
    library: Library,
    config: Config,
    paths: list[str] | None = None,
    since: datetime | None = None,
    run_id: int | None = None,
    dry_run: bool = False,
) -> list[UndoItem]:
    """Restore the genres our selected writes replaced; newest state must still be ours.

    ``paths`` are files or folders (anything under them); ``since`` is naive UTC.
    With several writes selected for one file, it gets back what it held before the first.
    """
    prefixes = [os.path.realpath(os.path.expanduser(p)) for p in paths or []]
    query = select(TagWrite).where(TagWrite.kind == "write", TagWrite.state == "written")
    if since is not None:
        query = query.where(TagWrite.created_at >= since)
    if run_id is not None:
        query = query.where(TagWrite.run_id == run_id)
    with library.session() as session:
        chosen: dict[int, list[TagWrite]] = {}
        for write in session.scalars(query.order_by(TagWrite.id)):
            if prefixes and not _selected(write.track.path, prefixes):
                continue
            chosen.setdefault(write.track_id, []).append(write)
        plans = []
        for track_id, writes in chosen.items():
            latest = session.scalars(
                select(TagWrite)
                .where(TagWrite.track_id == track_id, TagWrite.state.in_(("written", "undone")))
                .order_by(TagWrite.id.desc())
                .limit(1)
            ).one()
            track = session.get(Track, track_id)
            assert track is not None
            plans.append((track.path, track_id, writes, latest))

    from libtagger.pipeline import worker
    from libtagger.pipeline.runner import Runner, WorkerDied
    from libtagger.pipeline.track import apply_tag_write, write_plan

    items: list[UndoItem] = []
    if not plans:
        return items
    # Reading and writing the files happens in an isolated worker, as in a scan.
    with Runner(worker.current_genres, 1, config.limits,
                worker.setup(config, models=False)) as runner:
        for path, track_id, writes, latest in plans:
            if latest.id != writes[-1].id:
                items.append(UndoItem(path, "skipped", [], "written again since by a later run"))
                continue
            target = list(writes[0].before)
            try:
                snapshot = Snapshot.of(os.stat(path))
            except OSError as exc:
                items.append(UndoItem(path, "failed", [], exc.strerror or str(exc)))
                continue
            current = runner.outcome(runner.submit(path))
            if not isinstance(current, list):
                reason = current.reason if isinstance(current, WorkerDied) else current
                items.append(UndoItem(path, "failed", [], reason))
                continue
            if not _same(current, list(latest.after)):
                items.append(UndoItem(path, "skipped", current, "genre changed since our write"))
                continue
            if dry_run:
                items.append(UndoItem(path, "would-restore", target))
                continue
            with library.session() as session:
                restore = TagWrite(track_id=track_id, kind="undo", path=path, before=current,
                                   after=target, state="planned",
                                   temp_path=str(temp_path_for(path)),
                                   snapshot=dataclasses.asdict(snapshot))
                session.add(restore)
                session.flush()
                restore_id = restore.id
            result = apply_tag_write(library, runner, write_plan(library, restore_id))
            if result.state != "written":
                items.append(UndoItem(path, "failed", current, result.error))
                continue
            with library.session() as session:
                for write in writes:
                    session.get(TagWrite, write.id).state = "undone"  # type: ignore[union-attr]
            items.append(UndoItem(path, "restored", target))
    return items
