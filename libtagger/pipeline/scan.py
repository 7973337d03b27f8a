"""Walk a library, decide what is new, changed, moved or gone, and process what needs it.

Deciding costs no audio work for unchanged files: a file whose size and mtime match the
database is skipped on a ``stat`` alone. Only a changed or new file is opened — in a worker,
never here — first for its identity (a hash of its audio packets), which tells a tag edit or a
move from new audio. Work to do is marked ``pending`` and committed before any of it starts,
so a scan killed at any moment resumes where it stopped. A dry run goes the same way with
``store=False``: it reads the database if there is one and changes nothing at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy import or_, select, update

from libtagger.analysis.head import PersonalHead
from libtagger.config import Config
from libtagger.errors import display_path
from libtagger.library.db import Library, Run, Track, under_path, utcnow
from libtagger.library.guards import Snapshot
from libtagger.pipeline import worker
from libtagger.pipeline.runner import Runner, WorkerDied
from libtagger.pipeline.track import (
    Analysis,
    Outcome,
    TrackRef,
    write_outcome,
    decide,
    describe,
    last_write,
    was_undone,
    reconcile_planned_writes,
    record,
)
from libtagger.pipeline.walk import NOT_AUDIO, FoundFile, Walk, walk_library

__all__ = ["NOT_AUDIO", "ScanSummary", "plan_scan", "scan_library", "walk_library"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Ids per IN (...) list: far below SQLite's smallest default variable limit (999).
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class ScanSummary:
    """What a scan found and did."""

    run_id: int | None = None
    found: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    missing: int = 0
    unchanged: int = 0
    retouched: int = 0
    """Files whose tags changed but whose audio did not: stat updated, not reclassified."""
    classified: int = 0
    written: int = 0
    skipped: int = 0
    """Classified but not written: below the gate, kept by the policy, or writing disabled."""
    failed: int = 0
    write_failed: int = 0
    deferred: int = 0
    """Left for the next run: still being written, settling, or a transient error."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """Folders that could not be read; their tracks were not taken for deleted."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """Roots named that are neither a folder nor an audio file, with the reason."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        """The numeric fields, as stored with the run."""
        keys = ("found", "new", "changed", "moved", "missing", "unchanged", "retouched",
                "classified", "written", "skipped", "failed", "write_failed", "deferred")
        return {k: getattr(self, k) for k in keys} | {"unreadable_folders": len(self.unreadable)}


ProgressCallback = Callable[[str, int, int], None]
"""Called as (phase, done, total); phases: "walk", "classify"."""

Identify = Callable[[list[str]], dict[str, tuple[Snapshot, str] | None]]


class Analyser(Protocol):
    """What analyses planned tracks: a :class:`Runner` or a cluster."""

    def run(self, refs: Iterable[TrackRef]) -> Iterator[tuple[TrackRef, Any]]:
        """(ref, Analysis or WorkerDied) per track."""
        ...
"""Audio hashes of files, computed in workers: path -> (snapshot, identity) or None."""


def _known(library: Library | None, roots: list[str]) -> dict[str, Any]:
    if library is None:
        return {}
    with library.reader() as session:
        rows = session.execute(
            select(Track.id, Track.path, Track.size, Track.mtime_ns, Track.status, Track.identity)
            .where(or_(*(under_path(Track.path, root) for root in roots)))
        ).all()
    return {r.path: r for r in rows}


def _blocked(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def plan_scan(library: Library, roots: list[str], force: bool, summary: ScanSummary,
              identify: Identify, progress: ProgressCallback | None = None,
              always_hash: bool = False) -> list[TrackRef]:
    """Compare disk and database; apply moves, missing marks and stat updates; return the
    tracks to classify (already marked ``pending`` and committed).

    ``always_hash`` looks every new file's audio up among known tracks even when none is
    missing yet: the daemon's way to follow a move whose delete event it has not handled.
    """
    found, walk = _walk(roots, summary, progress)
    known = _known(library, roots)
    unreadable = [folder for folder, _ in walk.unreadable]

    refs: dict[str, TrackRef] = {}
    stat_updates: list[dict[str, int]] = []
    reappeared: list[int] = []
    new_paths = [p for p in found if p not in known]
    vanished = [r for p, r in known.items() if p not in found and r.status != "missing"
                and not _blocked(p, unreadable)]
    changed_known = [p for p, r in known.items() if p in found and not force
                     and r.status != "pending" and r.identity is not None
                     and (found[p].size, found[p].mtime_ns) != (r.size, r.mtime_ns)]
    hashes = identify(changed_known) if changed_known else {}
    for path, row in known.items():
        f = found.get(path)
        if f is None:
            continue
        same_stat = f.size == row.size and f.mtime_ns == row.mtime_ns
        if row.status == "missing":
            reappeared.append(row.id)
        if force or row.status == "pending":
            refs[path] = TrackRef(path, row.id, f.snapshot)
        elif same_stat:
            summary.unchanged += 1
        elif (seen := hashes.get(path)) is not None and seen[1] == row.identity \
                and seen[0].same_file(f.snapshot):
            stat_updates.append({"id": row.id, "size": f.size, "mtime_ns": f.mtime_ns})
            summary.retouched += 1
        else:
            refs[path] = TrackRef(path, row.id, f.snapshot)
            summary.changed += 1

    # A track whose audio turns up under a new path was moved: follow it. Candidates are the
    # tracks that vanished from these roots and any track already missing elsewhere (a move
    # between folders seen as a delete plus a create). Hashing new files costs a read, so it is
    # done only when there is a candidate at all: never on a first scan.
    moves: dict[int, FoundFile] = {}
    identities: dict[str, str] = {}
    by_identity = {r.identity: r.id for r in vanished if r.identity}
    if new_paths and (by_identity or always_hash or _any_missing(library)):
        seen_new = identify(new_paths)
        for path in list(new_paths):
            seen = seen_new.get(path)
            if seen is None or not seen[0].same_file(found[path].snapshot):
                continue
            identity = seen[1]
            identities[path] = identity
            track_id = by_identity.pop(identity, None)
            if track_id is None:
                track_id = _moved_from(library, identity, set(moves))
            if track_id is not None:
                moves[track_id] = found[path]
                new_paths.remove(path)
    summary.moved = len(moves)

    with library.session() as session:
        for track_id, f in moves.items():
            track = session.get(Track, track_id)
            assert track is not None
            log.info("moved: %s -> %s (the same audio; genres and history kept)",
                     display_path(track.path), display_path(f.path))
            track.path, track.size, track.mtime_ns = f.path, f.size, f.mtime_ns
            if track.status == "missing":
                track.status = "done" if track.classification else "pending"
            track.missing_since = None
        gone: list[int] = []
        for r in vanished:
            if r.id not in moves:
                gone.append(r.id)
                log.info("deleted: %s (marked missing, history kept)", display_path(r.path))
        for ids in chunks(gone):
            session.execute(
                update(Track).where(Track.id.in_(ids))
                .values(status="missing", missing_since=utcnow()),
                execution_options={"synchronize_session": False},
            )
        summary.missing = len(gone)
        for track_id in reappeared:
            track = session.get(Track, track_id)
            assert track is not None
            track.status = "done" if track.classification else "pending"
            track.missing_since = None
        for values in stat_updates:
            session.execute(
                update(Track).where(Track.id == values["id"])
                .values(size=values["size"], mtime_ns=values["mtime_ns"]),
                execution_options={"synchronize_session": False},
            )
        for path in new_paths:
            f = found[path]
            track = Track(path=f.path, size=f.size, mtime_ns=f.mtime_ns, status="pending")
            session.add(track)
            session.flush()
            refs[path] = TrackRef(path, track.id, f.snapshot, identities.get(path))
        summary.new = len(new_paths)
        todo = [ref.track_id for ref in refs.values()]
        for ids in chunks(todo):
            session.execute(
                update(Track).where(Track.id.in_(ids)).values(status="pending"),
                execution_options={"synchronize_session": False},
            )
    return sorted(refs.values(), key=lambda r: r.path)


def _walk(roots: list[str], summary: ScanSummary,
          progress: ProgressCallback | None) -> tuple[dict[str, FoundFile], Walk]:
    found: dict[str, FoundFile] = {}
    walk = Walk()
    for f in walk_library(roots, walk):
        found[f.path] = f
        if progress and len(found) % 500 == 0:
            progress("walk", len(found), 0)
    summary.found = len(found)
    summary.unreadable, summary.refused = walk.unreadable, walk.refused
    log.debug("found %d audio files under %s", len(found), ", ".join(map(display_path, roots)))
    return found, walk


def _any_missing(library: Library) -> bool:
    with library.reader() as session:
        return session.scalar(
            select(Track.id).where(Track.status == "missing", Track.identity.is_not(None)).limit(1)
        ) is not None


def _moved_from(library: Library, identity: str, taken: set[int]) -> int | None:
    """A track with this audio whose file is gone: the source of a move, if there is one."""
    with library.reader() as session:
        rows = session.execute(
            select(Track.id, Track.path, Track.status).where(Track.identity == identity)
        ).all()
    for row in rows:
        if row.id not in taken and (row.status == "missing" or not os.path.exists(row.path)):
            return row.id
    return None


def identify_with(runner: Runner[Any, Any]) -> Identify:
    """An :data:`Identify` that hashes files in the runner's workers."""
    def identify(paths: list[str]) -> dict[str, tuple[Snapshot, str] | None]:
        out: dict[str, tuple[Snapshot, str] | None] = {}
        for path, seen in runner.run(paths, task=worker.identify):
            out[path] = None if isinstance(seen, WorkerDied) else seen
        return out
    return identify


def make_runner(config: Config, jobs: int, head: PersonalHead | None = None,
                models: bool = True) -> Runner[Any, Any]:
    """The isolated worker pool for ``config`` (models loaded in each worker)."""
    return Runner(worker.analyse, jobs, config.limits, worker.setup(config, head, models))


def scan_library(
    library: Library | None,
    roots: Iterable[str],
    config: Config,
    jobs: int = 1,
    force: bool = False,
    write: bool = True,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    rewrite_undone: bool = False,
    scheduler: str = "",
) -> ScanSummary:
    """Scan ``roots``: plan, classify what needs it with ``jobs`` workers, store, write tags.

    ``scheduler`` ("local" or a Dask scheduler's address) sends the analysis to a Dask
    cluster (:mod:`libtagger.cluster`); planning, recording and tag writes stay here.

    ``dry_run`` analyses and reports what would happen, changing nothing: not a file and not
    the database (``library`` may then be None: no database yet).

    Raises:
        ModelError: the models cannot be loaded.
        DatabaseError: the database cannot be used.
    """
    from libtagger.analysis.model import check_models
    from libtagger.library.personal import active_head

    roots = [os.path.realpath(os.path.expanduser(r)) if os.path.isdir(r) else os.path.abspath(r)
             for r in roots]
    summary = ScanSummary()
    name = check_models(config)  # fail fast on a model problem, before touching anything
    head = None
    if library is not None and config.personal.mode != "off":
        head = active_head(library, name)
    if progress:
        progress("start", 0, 0)
    with make_runner(config, jobs, head, models=not scheduler) as runner, \
            _analyser(config, scheduler, jobs, head, runner) as analyser:
        if dry_run:
            _dry_run(library, roots, force, write, config, runner, analyser, summary, progress,
                     rewrite_undone)
            return summary
        assert library is not None
        reconcile_planned_writes(library, runner)
        with library.session() as session:
            run = Run(kind="scan", roots=roots, counts={})
            session.add(run)
            session.flush()
            summary.run_id = run.id
        status = "failed"
        try:
            refs = plan_scan(library, roots, force, summary, identify_with(runner), progress)
            _process(library, runner, analyser, config, refs, write, summary, progress,
                     rewrite_undone)
            status = "done"
        except KeyboardInterrupt:
            summary.interrupted = True
            status = "interrupted"
            raise
        finally:
            with library.session() as session:
                run = session.get(Run, summary.run_id)
                assert run is not None
                run.finished_at = utcnow()
                run.status = status
                run.counts = summary.counts()
    return summary


def _analyser(config: Config, scheduler: str, jobs: int, head: PersonalHead | None,
              runner: Runner[Any, Any]) -> AbstractContextManager[Analyser]:
    """What analyses the tracks: the local workers, or a Dask cluster."""
    if not scheduler:
        return nullcontext(runner)
    from libtagger.cluster.client import ClusterAnalyser

    return ClusterAnalyser(config, scheduler, jobs, head)


def _process(library: Library, runner: Runner[Any, Any], analyser: Analyser, config: Config,
             refs: list[TrackRef], write: bool, summary: ScanSummary,
             progress: ProgressCallback | None, rewrite_undone: bool = False) -> None:
    """Analyse the tracks (in the workers or on the cluster); store each result and apply its
    write here, as it comes."""
    total = len(refs)
    log.debug("%d tracks to classify (%d new, %d changed), on %s", total, summary.new,
              summary.changed, type(analyser).__name__)
    if progress:
        progress("classify", 0, total)
    for done, (ref, analysis) in enumerate(analyser.run(refs), start=1):
        if isinstance(analysis, WorkerDied):
            analysis = Analysis(ref.path, ref.snapshot, error=analysis.reason)
        outcome, plan = record(library, ref, analysis, config, summary.run_id, write,
                               rewrite_undone=rewrite_undone)
        write_outcome(library, runner, outcome, plan)
        _count(summary, outcome)
        log.info("%s: %s", display_path(ref.path), describe(outcome))
        if progress:
            progress("classify", done, total)


def _dry_run(library: Library | None, roots: list[str], force: bool, write: bool,
             config: Config, runner: Runner[Any, Any], analyser: Analyser, summary: ScanSummary,
             progress: ProgressCallback | None, rewrite_undone: bool = False) -> None:
    """What a real scan would classify and write; the database is only read."""
    found, _ = _walk(roots, summary, progress)
    known = _known(library, roots)
    refs = []
    for path, f in found.items():
        row = known.get(path)
        if row is None:
            summary.new += 1
        elif force or row.status == "pending" or (row.size, row.mtime_ns) != (f.size, f.mtime_ns):
            summary.changed += not force and row.status != "pending"
        else:
            summary.unchanged += 1
            continue
        refs.append(TrackRef(path, row.id if row else 0, f.snapshot))
    if progress:
        progress("classify", 0, len(refs))
    for done, (ref, analysis) in enumerate(analyser.run(refs), start=1):
        if isinstance(analysis, WorkerDied):
            analysis = Analysis(ref.path, ref.snapshot, error=analysis.reason)
        last, undone = _history(library, ref.track_id) if ref.track_id else (None, False)
        outcome = decide(analysis, config, write, last, undone and not rewrite_undone)
        outcome.track_id = ref.track_id
        _count(summary, outcome)
        if progress:
            progress("classify", done, len(refs))


def _history(library: Library | None, track_id: int
             ) -> tuple[tuple[list[str], list[str]] | None, bool]:
    if library is None:
        return None, False
    with library.reader() as session:
        return last_write(session, track_id), was_undone(session, track_id)


def _count(summary: ScanSummary, outcome: Outcome) -> None:
    summary.outcomes.append(outcome)
    if outcome.status == "deferred":
        summary.deferred += 1
        return
    if outcome.status == "failed":
        summary.failed += 1
        summary.failures.append((outcome.path, outcome.error or "unknown error"))
        return
    summary.classified += 1
    if outcome.write == "written":
        summary.written += 1
    elif outcome.write == "deferred":
        summary.deferred += 1
    elif outcome.write == "failed":
        summary.write_failed += 1
        summary.failures.append((outcome.path, f"tag not written: {outcome.write_error}"))
    else:
        summary.skipped += 1
