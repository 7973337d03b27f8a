"""``libtagger write``: apply stored results to files again, without classifying anything.

A changed policy (``replace``, ``append``), a new ``max_genres`` or an undone write the user
wants back is one quick command: each selected track's stored decision is planned against the
genres its file holds now and written by the same isolated workers, with the same guards, as
a scan. A file that changed since it was classified is left for a rescan: its stored result
may no longer be its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

from libtagger.analysis.tree import Decision
from libtagger.config import Config
from libtagger.library.db import Library, TagWrite, Track
from libtagger.library.guards import Snapshot
from libtagger.library.safewrite import temp_path_for
from libtagger.pipeline import worker
from libtagger.pipeline.runner import Runner, WorkerDied
from libtagger.pipeline.track import (
    Outcome,
    apply_tag_write,
    last_write,
    plan_over_our_write,
    was_undone,
    write_plan,
)


def write_stored(library: Library, config: Config, track_ids: Iterable[int],
                 dry_run: bool = False, rewrite_undone: bool = False) -> list[Outcome]:
    """Plan and (unless ``dry_run``) apply the stored decisions of these tracks."""
    outcomes: list[Outcome] = []
    with Runner(worker.current_genres, 1, config.limits,
                worker.setup(config, models=False)) as runner:
        for track_id in track_ids:
            outcome = _one(library, config, runner, track_id, dry_run, rewrite_undone)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def _one(library: Library, config: Config, runner: Runner, track_id: int, dry_run: bool,
         rewrite_undone: bool) -> Outcome | None:
    with library.reader() as session:
        track = session.get(Track, track_id)
        if track is None or track.classification is None:
            return None
        decision = Decision.from_dict(track.classification.decision)
        path, size, mtime = track.path, track.size, track.mtime_ns
        last, undone = last_write(session, track_id), was_undone(session, track_id)
        genres = [g.genre for g in track.classification.genres]
    outcome = Outcome(track_id, path, "done", genres=genres,
                      reason=decision.reason if decision else "")
    ours = list(decision.genres[: config.tags.max_genres]) if decision else []
    if not ours:
        outcome.write = "gated" if decision else "none"
        if decision is None:
            outcome.reason = "classified before the genre tree: rescan it with --force"
        return outcome
    try:
        snapshot = Snapshot.of(os.stat(path))
    except OSError as exc:
        outcome.write, outcome.write_error = "deferred", exc.strerror or str(exc)
        return outcome
    if (snapshot.size, snapshot.mtime_ns) != (size, mtime):
        outcome.write = "deferred"
        outcome.write_error = "changed since it was classified: rescan it first"
        return outcome
    if undone and not rewrite_undone:
        outcome.write = "undone"
        outcome.reason = "you undid libtagger's genre on this file; --rewrite-undone writes it"
        return outcome
    before = runner.outcome(runner.submit(path))
    if not isinstance(before, list):
        outcome.write = "failed"
        outcome.write_error = before.reason if isinstance(before, WorkerDied) else before
        return outcome
    outcome.before = before
    after = plan_over_our_write(before, ours, config.tags.policy, last)
    if after is None:
        outcome.write = "kept"
        return outcome
    outcome.after = after
    if dry_run:
        outcome.write = "planned"
        return outcome
    with library.session() as session:
        planned = TagWrite(track_id=track_id, path=path, before=before, after=after,
                           state="planned", temp_path=str(temp_path_for(path)),
                           snapshot=dataclasses.asdict(snapshot))
        session.add(planned)
        session.flush()
        write_id = planned.id
    result = apply_tag_write(library, runner, write_plan(library, write_id))
    outcome.write, outcome.write_error = result.state, result.error
    return outcome
