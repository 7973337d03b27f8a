"""The path of one track: analyse (worker) → record (one transaction) → write the tag (worker).

``worker.analyse`` reads the file in an isolated worker and returns an :class:`Analysis`.
:func:`record` stores it and the track's new status in one transaction and, when a tag is to
be written, records the planned write (with the name of the copy it will edit and the snapshot
of the analysed file) in that same transaction. :func:`apply_tag_write` then has a worker
change the file — only if it is still that snapshot, settled, not open for writing, with a
single link and our owner — and marks the write done. A kill between the two leaves a
``planned`` row that :func:`reconcile_planned_writes` settles on the next start by reading the
file: so no write is lost, none is made twice, and a stale result is never written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from libtagger.analysis.classify import TrackResult
from libtagger.analysis.vote import normalise_genre
from libtagger.config import Config, TagConfig
from libtagger.errors import display_path
from libtagger.library.db import (
    Classification,
    GenreRow,
    Library,
    TagWrite,
    Track,
    genre_key,
    under_path,
    utcnow,
)
from libtagger.library.guards import Snapshot
from libtagger.library.safewrite import remove_recorded_temp, temp_path_for
from libtagger.library.tags import plan_genres
from libtagger.pipeline import worker
from libtagger.pipeline.runner import Runner, WorkerDied
from libtagger.pipeline.worker import Analysis, TrackRef, WritePlan, WriteResult

log = logging.getLogger(__name__)

__all__ = ["Analysis", "Outcome", "TrackRef", "apply_tag_write", "decide", "genres_to_write",
           "last_write", "reconcile_planned_writes", "record", "was_undone"]


@dataclass
class Outcome:
    """What happened to one track in the main process."""

    track_id: int
    path: str
    status: str
    """done, failed, or deferred (busy, settling, a transient error: tried again later)."""
    genres: list[str] = field(default_factory=list)
    error: str | None = None
    write: str = "none"
    """none (nothing to write), gated (below the confidence gate), kept (policy left the
    file as it was), undone (the user undid our genre), written, failed, deferred (tried
    again on the next run), planned (dry run: would be written), disabled (--no-write)."""
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    write_error: str | None = None
    reason: str = ""
    """The genre tree's reason: what was decided, or why nothing may be written."""


def describe(outcome: Outcome) -> str:
    """One line about a track's outcome: what was decided, and what happened to its tag."""
    if outcome.status != "done":
        return f"{outcome.status}: {outcome.error}"
    genre = ", ".join(outcome.genres[:3]) or "no genre"
    tag = {"written": f"wrote {'; '.join(outcome.after)}",
           "kept": "kept the file's genre (policy)",
           "disabled": "not written (writing disabled)",
           "planned": f"would write {'; '.join(outcome.after)}",
           }.get(outcome.write, f"tag {outcome.write}")
    why = outcome.write_error or (outcome.reason if outcome.write in ("gated", "undone") else "")
    return f"{genre}; {tag}" + (f" ({why})" if why else "")


def genres_to_write(result: TrackResult, tags: TagConfig) -> list[str]:
    """What the genre tree decided may be written (none when the evidence disagrees)."""
    if result.decision is None:
        return []
    return list(result.decision.genres[: tags.max_genres])


def track_vector(window_embeddings: np.ndarray) -> np.ndarray:
    """A track's embedding: the mean of its windows', L2-normalised (cosine = dot product)."""
    vector = np.asarray(window_embeddings, dtype=np.float32).mean(axis=0)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _classification(result: TrackResult, run_id: int | None) -> Classification:
    embeddings = vector = None
    dim = None
    if result.embeddings is not None and result.embeddings.size:
        embeddings = result.embeddings.astype(np.float16).tobytes()
        dim = int(result.embeddings.shape[1])
        vector = track_vector(result.embeddings).astype(np.float16).tobytes()
    timeline = None
    if result.timeline is not None:
        timeline = result.to_dict(timeline=True)["timeline"]
    return Classification(
        run_id=run_id,
        model=result.model,
        windows=result.windows,
        voting_windows=result.voting_windows,
        duration=result.duration,
        timeline=timeline,
        tags=result.tags,
        embeddings=embeddings,
        embedding_dim=dim,
        vector=vector,
        decision=result.decision.to_dict() if result.decision else None,
        genres=[
            GenreRow(rank=i + 1, genre=g.genre, score=g.score, confidence=g.confidence)
            for i, g in enumerate(result.genres)
        ],
    )


def decide(analysis: Analysis, config: Config, write: bool,
           last_write: tuple[list[str], list[str]] | None = None,
           undone: bool = False) -> Outcome:
    """What should happen to a file's genre tag, given its analysis (no side effects).

    ``last_write`` is (before, after) of our newest write to it, if any; ``undone`` says the
    user undid our genre on it (not written again unless they ask: ``--rewrite-undone``).
    """
    path = analysis.path
    if analysis.result is None:
        status = "deferred" if analysis.transient else "failed"
        return Outcome(0, path, status, error=analysis.error)
    result = analysis.result
    outcome = Outcome(0, path, "done", genres=[g.genre for g in result.genres],
                      reason=result.decision.reason if result.decision else "")
    ours = genres_to_write(result, config.tags)
    if not config.tags.write or not write:
        outcome.write = "disabled"
    elif not ours:
        outcome.write = "gated" if result.genres else "none"
    elif undone:
        outcome.write = "undone"
        outcome.reason = ("you undid libtagger's genre on this file; --rewrite-undone writes "
                          "it again")
    elif analysis.genres_before is None:
        outcome.write, outcome.write_error = "failed", analysis.tag_error
    else:
        before = analysis.genres_before
        outcome.before = before
        after = plan_over_our_write(before, ours, config.tags.policy, last_write)
        if after is None:
            outcome.write = "kept"
        else:
            outcome.write, outcome.after = "planned", after
    return outcome


def record(library: Library, ref: TrackRef, analysis: Analysis, config: Config,
           run_id: int | None = None, write: bool = True,
           on_commit: Callable[[Session], None] | None = None,
           rewrite_undone: bool = False) -> tuple[Outcome, WritePlan | None]:
    """Store one analysis and plan its tag write in one transaction.

    ``on_commit`` runs inside that transaction (the daemon finishes its job there, so a job
    is done exactly when its result is stored). Returns the outcome and the write to apply.
    """
    with library.session() as session:
        if on_commit is not None:
            on_commit(session)
        track = session.get(Track, ref.track_id)
        if track is None:  # deleted from the database meanwhile; nothing to record
            return Outcome(ref.track_id, analysis.path, "failed",
                           error="track no longer in database"), None
        if not analysis.transient:  # waiting for a copy to finish is not an attempt
            track.attempts += 1
        outcome = decide(analysis, config, write, last_write(session, track.id),
                         was_undone(session, track.id) and not rewrite_undone)
        outcome.track_id = track.id
        if analysis.result is None:
            # A transient cause (busy, settling, permissions) leaves the track pending: the
            # next scan or reconcile tries it again. A bad file waits until it changes.
            track.status = "pending" if analysis.transient else "failed"
            track.last_error = analysis.error
            if analysis.snapshot is not None and not analysis.transient:
                track.size, track.mtime_ns = analysis.size, analysis.mtime_ns
            return outcome, None
        result = analysis.result
        track.status = "done"
        track.last_error = None
        track.identity = analysis.identity or track.identity
        track.format = analysis.format
        track.duration = result.duration
        # The stat of the file that was analysed, never a later one: a file replaced since
        # then shows up as changed on the next scan.
        track.size, track.mtime_ns = analysis.size, analysis.mtime_ns
        if analysis.file_tags is not None:
            remember_file_tags(track, analysis.file_tags.genres, analysis.file_tags)
        track.replace_classification(session, _classification(result, run_id))
        if outcome.write != "planned":
            return outcome, None
        planned = TagWrite(
            track_id=track.id, run_id=run_id, path=track.path, before=outcome.before,
            after=outcome.after, state="planned", temp_path=str(temp_path_for(track.path)),
            snapshot=dataclasses.asdict(analysis.snapshot) if analysis.snapshot else None,
        )
        session.add(planned)
        session.flush()
        score = result.genres[0].score if result.genres else None
        return outcome, _plan_of(planned, score)


def remember_file_tags(track: Track, genres: list[str], tags: Any = None) -> None:
    """Keep what the file's tags say on the track: its genres, and artist, title, album."""
    track.file_genre = "; ".join(genres) or None
    track.file_genre_key = genre_key(genres) or None
    if tags is not None:
        track.artist, track.title, track.album = tags.artist, tags.title, tags.album


def last_write(session: Session, track_id: int) -> tuple[list[str], list[str]] | None:
    """(before, after) of our newest write to a track, if any."""
    last = session.execute(
        select(TagWrite.before, TagWrite.after)
        .where(TagWrite.track_id == track_id, TagWrite.state == "written",
               TagWrite.kind == "write")
        .order_by(TagWrite.id.desc()).limit(1)
    ).first()
    return None if last is None else (list(last.before), list(last.after))


def was_undone(session: Session, track_id: int) -> bool:
    """Whether the user undid our newest write to a track (and nothing was written since)."""
    state = session.scalar(
        select(TagWrite.state)
        .where(TagWrite.track_id == track_id, TagWrite.kind == "write",
               TagWrite.state.in_(("written", "undone")))
        .order_by(TagWrite.id.desc()).limit(1)
    )
    return state == "undone"


def plan_over_our_write(before: list[str], ours: list[str], policy: str,
                        last: tuple[list[str], list[str]] | None) -> list[str] | None:
    """:func:`plan_genres`, except that a genre we wrote ourselves (unchanged since) is ours
    to update: the policy is applied to what the file held before that write instead.
    """
    if last is not None and before and _same(before, last[1]):
        planned = plan_genres(last[0], ours, policy)
        if planned is None:  # the policy would keep the user's original: restore it
            planned = list(last[0])
        return None if _same(before, planned) else planned
    return plan_genres(before, ours, policy)


def _plan_of(row: TagWrite, score: float | None, check_before: bool = True) -> WritePlan:
    snapshot = Snapshot(**row.snapshot) if row.snapshot else None
    return WritePlan(row.id, row.path, list(row.before), list(row.after), snapshot,
                     row.temp_path, score, check_before)


def apply_tag_write(library: Library, runner: Runner[Any, Any], plan: WritePlan) -> WriteResult:
    """Have a worker apply a planned write, then mark it; returns how it ended."""
    result = runner.outcome(runner.submit(plan, task=worker.write))
    if isinstance(result, WorkerDied):
        result = WriteResult("failed", result.reason)
    _finish_write(library, plan.write_id, result)
    return result


def write_outcome(library: Library, runner: Runner[Any, Any], outcome: Outcome,
                  plan: WritePlan | None) -> Outcome:
    """Apply a recorded track's planned write (if any) and note on its outcome how it ended."""
    if plan is not None:
        result = apply_tag_write(library, runner, plan)
        outcome.write, outcome.write_error = result.state, result.error
        if result.state == "written":
            outcome.after = plan.after
    return outcome


def write_plan(library: Library, write_id: int, check_before: bool = True) -> WritePlan:
    """The :class:`WritePlan` of a recorded write (undo and reconcile apply these)."""
    with library.session() as session:
        row = session.get(TagWrite, write_id)
        assert row is not None
        track = row.track
        score = None  # an undo puts back the old genre and drops our score field
        if row.kind == "write" and track.classification and track.classification.genres:
            score = track.classification.genres[0].score
        return _plan_of(row, score, check_before)


def _finish_write(library: Library, write_id: int, result: WriteResult) -> None:
    """Mark a write's final state; after a real write, remember the file's new size and mtime.

    A deferred write stays on record as ``deferred`` and is tried again by the next scan or
    reconcile (:func:`reconcile_planned_writes`), without classifying the file again.
    """
    with library.session() as session:
        planned = session.get(TagWrite, write_id)
        assert planned is not None
        planned.state = result.state
        planned.error = result.error
        track = planned.track
        if result.state != "written":
            if result.state in ("failed", "deferred") and track.path == planned.path:
                # Seen by `query error:` and `stats`: the track is classified, its tag is not.
                track.last_error = f"tag not written: {result.error}"
            return
        planned.written_at = utcnow()
        if track.last_error and track.last_error.startswith("tag not written"):
            track.last_error = None
        if track.path == planned.path:
            remember_file_tags(track, list(planned.after))
            track.written = "; ".join(planned.after) if planned.kind == "write" else None
        if result.snapshot is not None and track.path == planned.path:
            track.size, track.mtime_ns = result.snapshot.size, result.snapshot.mtime_ns
            planned.snapshot = dataclasses.asdict(result.snapshot)


def _same(a: list[str], b: list[str]) -> bool:
    return [normalise_genre(x) for x in a] == [normalise_genre(x) for x in b]


def reconcile_planned_writes(library: Library, runner: Runner[Any, Any],
                             roots: Sequence[str] | None = None) -> dict[str, int]:
    """Settle writes left ``planned`` by a kill, and try ``deferred`` ones again.

    A planned write is done already, still to do, or overtaken (the file's genre changed);
    its recorded temporary copy, if a kill left one, is removed. With ``roots``, only writes
    to files under them are settled (a daemon leaves other daemons' roots alone). Returns
    counts of each decision (completed, redone, skipped, deferred).
    """
    counts = {"completed": 0, "redone": 0, "skipped": 0, "deferred": 0}
    condition = TagWrite.state.in_(("planned", "deferred"))
    if roots is not None:
        condition = condition & or_(false(), *(under_path(TagWrite.path, r) for r in roots))
    with library.session() as session:
        pending = session.execute(
            select(TagWrite.id, TagWrite.state, TagWrite.temp_path).where(condition)
        ).all()
    for write_id, state, temp in pending:
        if temp:
            remove_recorded_temp(temp)
        plan = write_plan(library, write_id, check_before=False)
        current = runner.outcome(runner.submit(plan.path, task=worker.current_genres))
        if not isinstance(current, list):
            reason = current.reason if isinstance(current, WorkerDied) else current
            _finish_write(library, write_id, WriteResult("deferred", reason))
            counts["deferred"] += 1
            continue
        if state == "planned" and _same(current, plan.after):
            _finish_write(library, write_id, WriteResult("written"))
            counts["completed"] += 1
        elif _same(current, plan.before):
            result = apply_tag_write(library, runner, dataclasses.replace(plan, check_before=True))
            counts["redone" if result.state == "written" else result.state
                   if result.state in counts else "skipped"] += 1
        else:
            _finish_write(library, write_id,
                          WriteResult("skipped", "the file's genre changed meanwhile"))
            counts["skipped"] += 1
        log.info("settled an interrupted or deferred tag write on %s", display_path(plan.path))
    return counts
