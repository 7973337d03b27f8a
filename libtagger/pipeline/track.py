"""The path of one track: analyse (worker) → record (one transaction) → write the tag.

``analyse`` is pure CPU work with no side effects, run in worker processes. ``record`` stores
the result and the track's new status in one transaction and, when a tag is to be written,
records the planned write in that same transaction. ``apply_tag_write`` then changes the file
(atomically, see :mod:`libtagger.library.tags`) and marks the write done. A kill between the two leaves
a ``planned`` row that :func:`reconcile_planned_writes` settles on the next start by reading
the file: so no write is lost, and none is made twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from libtagger.analysis.audio import AudioFile
from libtagger.analysis.classify import Classifier, Failure, TrackResult, classify_or_fail
from libtagger.config import Config, TagConfig
from libtagger.library.db import Classification, GenreRow, Library, TagWrite, Track, utcnow
from libtagger.errors import FileError, display_path
from libtagger.library.tags import plan_genres, read_genres, write_genres
from libtagger.analysis.vote import normalise_genre

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Analysis:
    """What a worker learned about one file: its identity and its genres, or why not."""

    path: str
    size: int = 0
    mtime_ns: int = 0
    identity: str | None = None
    format: str | None = None
    result: TrackResult | None = None
    error: str | None = None


@dataclass
class Outcome:
    """What happened to one track in the main process."""

    track_id: int
    path: str
    status: str
    """done or failed."""
    genres: list[str] = field(default_factory=list)
    error: str | None = None
    write: str = "none"
    """none (nothing to write), gated (below the confidence gate), kept (policy left the
    file as it was), written, failed, planned (dry run), disabled (--no-write)."""
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    write_error: str | None = None


def analyse(classifier: Classifier, path: str, timeline: bool = False) -> Analysis:
    """Identity and classification of one file; never raises for a bad file."""
    try:
        stat = os.stat(path)
        with AudioFile(path, classifier.frontend) as audio:
            identity = audio.stream_hash()
            fmt = audio.info.format
    except FileError as exc:
        return Analysis(path, error=exc.reason)
    except OSError as exc:
        return Analysis(path, error=f"cannot read: {exc.strerror or exc}")
    outcome = classify_or_fail(classifier, path, timeline)
    if isinstance(outcome, Failure):
        return Analysis(path, stat.st_size, stat.st_mtime_ns, identity, fmt, error=outcome.reason)
    return Analysis(path, stat.st_size, stat.st_mtime_ns, identity, fmt, result=outcome)


def genres_to_write(result: TrackResult, tags: TagConfig) -> list[str]:
    """The genres that pass the write gate, best first (none when the windows disagree)."""
    if not result.genres or result.genres[0].confidence < tags.min_confidence:
        return []
    return [g.genre for g in result.genres[: tags.max_genres] if g.score >= tags.min_score]


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
        genres=[
            GenreRow(rank=i + 1, genre=g.genre, score=g.score, confidence=g.confidence)
            for i, g in enumerate(result.genres)
        ],
    )


def record(
    library: Library,
    track_id: int,
    analysis: Analysis,
    config: Config,
    run_id: int | None = None,
    write: bool = True,
    on_commit: Callable[[Session], None] | None = None,
) -> Outcome:
    """Store one analysis and plan its tag write in one transaction, then write the tag.

    ``on_commit`` runs inside that transaction (the daemon finishes its job there, so a job
    is done exactly when its result is stored).
    """
    planned_id: int | None = None
    with library.session() as session:
        if on_commit is not None:
            on_commit(session)
        track = session.get(Track, track_id)
        if track is None:  # deleted from the database meanwhile; nothing to record
            return Outcome(track_id, analysis.path, "failed", error="track no longer in database")
        outcome = Outcome(track_id, track.path, "failed")
        track.attempts += 1
        if analysis.result is None:
            track.status = "failed"
            track.last_error = analysis.error
            outcome.error = analysis.error
            return outcome
        result = analysis.result
        track.status = "done"
        track.last_error = None
        track.identity = analysis.identity or track.identity
        track.format = analysis.format
        track.duration = result.duration
        track.size, track.mtime_ns = analysis.size, analysis.mtime_ns
        track.replace_classification(session, _classification(result, run_id))
        outcome.status = "done"
        outcome.genres = [g.genre for g in result.genres]

        ours = genres_to_write(result, config.tags)
        if not config.tags.write or not write:
            outcome.write = "disabled"
        elif not ours:
            outcome.write = "gated" if result.genres else "none"
        else:
            try:
                before = read_genres(track.path, config.tags.separator)
            except FileError as exc:
                outcome.write, outcome.write_error = "failed", exc.reason
            else:
                after = plan_for_track(session, track.id, before, ours, config.tags.policy)
                outcome.before = before
                if after is None:
                    outcome.write = "kept"
                else:
                    planned = TagWrite(
                        track_id=track.id, run_id=run_id, path=track.path, before=before,
                        after=after, state="planned",
                    )
                    session.add(planned)
                    session.flush()
                    planned_id = planned.id
    if planned_id is not None:
        state, error, after = apply_tag_write(library, planned_id, config)
        outcome.write, outcome.write_error, outcome.after = state, error, after
    return outcome


def plan_for_track(session: Session, track_id: int, before: list[str], ours: list[str],
                   policy: str) -> list[str] | None:
    """:func:`plan_genres`, except that a genre we wrote ourselves (unchanged since) is ours
    to update: the policy is applied to what the file held before that write instead.
    """
    last = session.execute(
        select(TagWrite.before, TagWrite.after)
        .where(TagWrite.track_id == track_id, TagWrite.state == "written",
               TagWrite.kind == "write")
        .order_by(TagWrite.id.desc()).limit(1)
    ).first()
    if last is not None and before and _same(before, list(last.after)):
        planned = plan_genres(list(last.before), ours, policy)
        if planned is None:  # the policy would keep the user's original: restore it
            planned = list(last.before)
        return None if _same(before, planned) else planned
    return plan_genres(before, ours, policy)


def apply_tag_write(
    library: Library, write_id: int, config: Config
) -> tuple[str, str | None, list[str]]:
    """Write a planned tag change into the file and mark it; returns (state, error, genres)."""
    with library.session() as session:
        planned = session.get(TagWrite, write_id)
        assert planned is not None
        path, after = planned.path, list(planned.after)
        track = planned.track
        score = None  # an undo puts back the old genre and drops our score field
        if planned.kind == "write" and track.classification and track.classification.genres:
            score = track.classification.genres[0].score
    try:
        write_genres(path, after, config.tags, score=score)
    except FileError as exc:
        _finish_write(library, write_id, "failed", exc.reason)
        return "failed", exc.reason, after
    _finish_write(library, write_id, "written")
    return "written", None, after


def _finish_write(library: Library, write_id: int, state: str, error: str | None = None) -> None:
    """Mark a write's final state; after a real write, remember the file's new size and mtime."""
    with library.session() as session:
        planned = session.get(TagWrite, write_id)
        assert planned is not None
        planned.state = state
        planned.error = error
        if state == "written":
            planned.written_at = utcnow()
            try:
                stat = os.stat(planned.path)
            except OSError:
                return
            track = planned.track
            if track.path == planned.path:
                track.size, track.mtime_ns = stat.st_size, stat.st_mtime_ns


def _same(a: list[str], b: list[str]) -> bool:
    return [normalise_genre(x) for x in a] == [normalise_genre(x) for x in b]


def reconcile_planned_writes(library: Library, config: Config) -> dict[str, int]:
    """Settle writes left ``planned`` by a kill: done already, still to do, or overtaken.

    Returns counts of each decision (completed, redone, skipped).
    """
    counts = {"completed": 0, "redone": 0, "skipped": 0}
    with library.session() as session:
        pending = session.scalars(select(TagWrite.id).where(TagWrite.state == "planned")).all()
    for write_id in pending:
        with library.session() as session:
            planned = session.get(TagWrite, write_id)
            assert planned is not None
            path, before, after = planned.path, list(planned.before), list(planned.after)
        try:
            current = read_genres(path, config.tags.separator)
        except FileError as exc:
            _finish_write(library, write_id, "failed", exc.reason)
            counts["skipped"] += 1
            continue
        if _same(current, after):
            _finish_write(library, write_id, "written")
            counts["completed"] += 1
        elif _same(current, before):
            apply_tag_write(library, write_id, config)
            counts["redone"] += 1
        else:
            _finish_write(library, write_id, "skipped", "the file's genre changed meanwhile")
            counts["skipped"] += 1
        log.info("settled interrupted tag write on %s", display_path(path))
    return counts
