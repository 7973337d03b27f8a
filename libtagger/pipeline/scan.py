"""Walk a library, decide what is new, changed, moved or gone, and process what needs it.

Deciding costs no audio work for unchanged files: a file whose size and mtime match the
database is skipped on a ``stat`` alone. Only a changed or new file is opened, and then first
for its identity (a hash of its audio packets), which tells a tag edit or a move from new
audio. Work to do is marked ``pending`` and committed before any of it starts, so a scan
killed at any moment resumes where it stopped.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

import mutagen
from sqlalchemy import or_, select, update

from libtagger.analysis.audio import AUDIO_EXTENSIONS, AudioFile, FrontEnd
from libtagger.analysis.classify import Classifier, init_worker, worker_classifier
from libtagger.config import Config
from libtagger.library.db import Library, Run, Track, under_path, utcnow
from libtagger.errors import FileError
from libtagger.pipeline.track import Analysis, Outcome, analyse, genres_to_write, record
from libtagger.pipeline.track import reconcile_planned_writes
from libtagger.analysis.head import PersonalHead
from libtagger.library.personal import active_head
from libtagger.library.safewrite import is_temp_file, remove_stale_temp_files
from libtagger.library.tags import plan_genres, read_genres

# Endings that are never audio: skipped without opening them.
NOT_AUDIO = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".txt", ".nfo", ".cue", ".log",
     ".m3u", ".m3u8", ".pls", ".pdf", ".db", ".ini", ".json", ".xml", ".html", ".sfv",
     ".md5", ".accurip", ".lrc", ".url", ".zip", ".rar", ".7z", ".exe", ".dll", ".ds_store"}
)


@dataclass(frozen=True)
class FoundFile:
    """An audio file found on disk."""

    path: str
    size: int
    mtime_ns: int


def _looks_like_audio(path: str) -> bool:
    """Content check for a file whose name does not say it is audio (mutagen's sniffing)."""
    try:
        return mutagen.File(path) is not None
    except (mutagen.MutagenError, OSError, ValueError):
        return False


def walk_library(roots: Iterable[str], temp_files: list[str] | None = None) -> Iterator[FoundFile]:
    """Audio files under ``roots`` (by extension, else by content), in path order.

    Symlinks are never followed: what they point to inside the library is found through its
    real path, and what lies outside is not ours. Hidden files and folders are skipped, and so
    are libtagger's own temporary files (collected into ``temp_files`` when given); a folder
    reached twice (bind mounts) is walked once.
    """
    seen_dirs: set[tuple[int, int]] = set()
    stack = sorted({os.path.realpath(os.path.expanduser(r)) for r in roots}, reverse=True)
    while stack:
        folder = stack.pop()
        if os.path.isfile(folder):  # a single file given as a root (the daemon's file jobs)
            found = _found_file(folder)
            if found is not None:
                yield found
            continue
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue  # unreadable or vanished folder: nothing to find there
        for entry in entries:
            name = entry.name
            if is_temp_file(name):
                if temp_files is not None:
                    temp_files.append(entry.path)
                continue
            if name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                ext = os.path.splitext(name)[1].lower()
                if ext in NOT_AUDIO:
                    continue
                if ext not in AUDIO_EXTENSIONS and not _looks_like_audio(entry.path):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat_module.S_ISREG(st.st_mode):
                yield FoundFile(entry.path, st.st_size, st.st_mtime_ns)


def _found_file(path: str) -> FoundFile | None:
    """A single path, if it is a regular file that looks like audio."""
    name = os.path.basename(path)
    ext = os.path.splitext(name)[1].lower()
    if is_temp_file(name) or ext in NOT_AUDIO:
        return None
    if ext not in AUDIO_EXTENSIONS and not _looks_like_audio(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FoundFile(path, st.st_size, st.st_mtime_ns) if stat_module.S_ISREG(st.st_mode) else None


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
    failures: list[tuple[str, str]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        """The numeric fields, as stored with the run."""
        keys = ("found", "new", "changed", "moved", "missing", "unchanged", "retouched",
                "classified", "written", "skipped", "failed", "write_failed")
        return {k: getattr(self, k) for k in keys}


ProgressCallback = Callable[[str, int, int], None]
"""Called as (phase, done, total); phases: "walk", "classify"."""


def _identity(path: str) -> str | None:
    try:
        with AudioFile(path, FrontEnd()) as audio:
            return audio.stream_hash()
    except FileError:
        return None


def _any_missing(library: Library) -> bool:
    with library.session() as session:
        return session.scalar(
            select(Track.id).where(Track.status == "missing", Track.identity.is_not(None)).limit(1)
        ) is not None


def _moved_from(library: Library, identity: str, taken: set[int]) -> int | None:
    """A track with this audio whose file is gone: the source of a move, if there is one."""
    with library.session() as session:
        rows = session.execute(
            select(Track.id, Track.path, Track.status).where(Track.identity == identity)
        ).all()
    for row in rows:
        if row.id not in taken and (row.status == "missing" or not os.path.exists(row.path)):
            return row.id
    return None


def plan_scan(library: Library, roots: list[str], force: bool, summary: ScanSummary,
              progress: ProgressCallback | None = None, always_hash: bool = False) -> list[int]:
    """Compare disk and database; apply moves, missing marks and stat updates; return the
    ids of the tracks to classify (already marked ``pending`` and committed).

    ``always_hash`` looks every new file's audio up among known tracks even when none is
    missing yet: the daemon's way to follow a move whose delete event it has not handled.
    """
    found: dict[str, FoundFile] = {}
    temp_files: list[str] = []
    for f in walk_library(roots, temp_files):
        found[f.path] = f
        if progress and len(found) % 500 == 0:
            progress("walk", len(found), 0)
    summary.found = len(found)
    if temp_files:  # left by a write that was killed: the originals are intact
        remove_stale_temp_files(temp_files)

    with library.session() as session:
        rows = session.execute(
            select(Track.id, Track.path, Track.size, Track.mtime_ns, Track.status, Track.identity)
            .where(or_(*(under_path(Track.path, root) for root in roots)))
        ).all()
    known = {r.path: r for r in rows}

    todo: list[int] = []
    stat_updates: list[dict[str, int]] = []
    reappeared: list[int] = []
    new_paths = [p for p in found if p not in known]
    vanished = [r for p, r in known.items() if p not in found and r.status != "missing"]
    for path, row in known.items():
        f = found.get(path)
        if f is None:
            continue
        same_stat = f.size == row.size and f.mtime_ns == row.mtime_ns
        if row.status == "missing":
            reappeared.append(row.id)
        if force or row.status == "pending":
            todo.append(row.id)
        elif same_stat:
            summary.unchanged += 1
        elif row.identity is not None and _identity(path) == row.identity:
            stat_updates.append({"id": row.id, "size": f.size, "mtime_ns": f.mtime_ns})
            summary.retouched += 1
        else:
            todo.append(row.id)
            summary.changed += 1

    # A track whose audio turns up under a new path was moved: follow it. Candidates are the
    # tracks that vanished from these roots and any track already missing elsewhere (a move
    # between folders seen as a delete plus a create). Hashing new files costs a read, so it is
    # done only when there is a candidate at all: never on a first scan.
    moves: dict[int, FoundFile] = {}
    by_identity = {r.identity: r.id for r in vanished if r.identity}
    if new_paths and (by_identity or always_hash or _any_missing(library)):
        for path in list(new_paths):
            identity = _identity(path)
            track_id = by_identity.pop(identity, None) if identity else None
            if track_id is None and identity:
                track_id = _moved_from(library, identity, set(moves))
            if track_id is not None:
                moves[track_id] = found[path]
                new_paths.remove(path)
    summary.moved = len(moves)

    with library.session() as session:
        for track_id, f in moves.items():
            track = session.get(Track, track_id)
            assert track is not None
            track.path, track.size, track.mtime_ns = f.path, f.size, f.mtime_ns
            if track.status == "missing":
                track.status = "done" if track.classification else "pending"
            track.missing_since = None
        gone = [r.id for r in vanished if r.id not in moves]
        if gone:
            session.execute(
                update(Track).where(Track.id.in_(gone))
                .values(status="missing", missing_since=utcnow()),
                execution_options={"synchronize_session": False},
            )
        summary.missing = len(gone)
        for track_id in reappeared:
            track = session.get(Track, track_id)
            assert track is not None
            track.status = "done" if track.classification else "pending"
            track.missing_since = None
        if stat_updates:
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
            todo.append(track.id)
        summary.new = len(new_paths)
        if todo:
            session.execute(
                update(Track).where(Track.id.in_(todo)).values(status="pending"),
                execution_options={"synchronize_session": False},
            )
    return todo


def _analyse_in_worker(path: str) -> Analysis:
    return analyse(worker_classifier(), path)


def scan_library(
    library: Library,
    roots: Iterable[str],
    config: Config,
    jobs: int = 1,
    force: bool = False,
    write: bool = True,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> ScanSummary:
    """Scan ``roots``: plan, classify what needs it with ``jobs`` workers, store, write tags.

    ``dry_run`` classifies and reports what would be written, storing and writing nothing.

    Raises:
        ModelError: the models cannot be loaded.
        DatabaseError: the database cannot be used.
    """
    roots = [os.path.realpath(os.path.expanduser(r)) for r in roots]
    summary = ScanSummary()
    name = Classifier(config).name  # fail fast on a model problem, before touching anything
    head = active_head(library, name) if config.personal.mode != "off" else None
    if not dry_run:
        reconcile_planned_writes(library, config)
    with library.session() as session:
        run = Run(kind="scan", roots=roots, counts={})
        session.add(run)
        session.flush()
        summary.run_id = run.id

    try:
        if dry_run:
            todo_paths = _dry_run_paths(library, roots, force, summary)
        else:
            todo = plan_scan(library, roots, force, summary, progress)
            with library.session() as session:
                rows = session.execute(select(Track.id, Track.path).where(Track.id.in_(todo))).all()
            todo_paths = {r.path: r.id for r in rows}
        _process(library, config, todo_paths, jobs, write, dry_run, summary, progress, head)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        with library.session() as session:
            run = session.get(Run, summary.run_id)
            assert run is not None
            run.finished_at = utcnow()
            run.status = "interrupted" if summary.interrupted else "done"
            run.counts = summary.counts()
    return summary


def _dry_run_paths(library: Library, roots: list[str], force: bool,
                   summary: ScanSummary) -> dict[str, int]:
    """What a real scan would classify, without changing the database (ids are 0)."""
    found = {f.path: f for f in walk_library(roots)}
    summary.found = len(found)
    with library.session() as session:
        rows = session.execute(select(Track.path, Track.size, Track.mtime_ns, Track.status)).all()
    known = {r.path: r for r in rows}
    todo = {}
    for path, f in found.items():
        row = known.get(path)
        if row is None:
            summary.new += 1
            todo[path] = 0
        elif force or row.status == "pending" or (row.size, row.mtime_ns) != (f.size, f.mtime_ns):
            summary.changed += row is not None and not force
            todo[path] = 0
        else:
            summary.unchanged += 1
    return todo


def _process(library: Library, config: Config, todo: dict[str, int], jobs: int, write: bool,
             dry_run: bool, summary: ScanSummary, progress: ProgressCallback | None,
             head: PersonalHead | None = None) -> None:
    """Classify the paths in a worker pool; store each result as it arrives."""
    total = len(todo)
    if progress:
        progress("classify", 0, total)
    if not total:
        return
    done = 0
    for analysis in _analyses(config, list(todo), jobs, head):
        if dry_run:
            outcome = _dry_outcome(analysis, config)
        else:
            outcome = record(library, todo[analysis.path], analysis, config, summary.run_id, write)
        _count(summary, outcome)
        done += 1
        if progress:
            progress("classify", done, total)


def _analyses(config: Config, paths: list[str], jobs: int,
              head: PersonalHead | None = None) -> Iterator[Analysis]:
    """Analyses in completion order; at most 2 × jobs files in flight."""
    if jobs <= 1:
        classifier = Classifier(config, head)
        for path in paths:
            yield analyse(classifier, path)
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=init_worker,
                             initargs=(config, head)) as pool:
        pending: set[Future[Analysis]] = set()
        queue = iter(paths)
        try:
            while True:
                while len(pending) < 2 * jobs:
                    path = next(queue, None)
                    if path is None:
                        break
                    pending.add(pool.submit(_analyse_in_worker, path))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def _dry_outcome(analysis: Analysis, config: Config) -> Outcome:
    """What ``record`` would do, without doing it."""
    if analysis.result is None:
        return Outcome(0, analysis.path, "failed", error=analysis.error)
    outcome = Outcome(0, analysis.path, "done", genres=[g.genre for g in analysis.result.genres])
    ours = genres_to_write(analysis.result, config.tags)
    if not config.tags.write:
        outcome.write = "disabled"
    elif not ours:
        outcome.write = "gated"
    else:
        try:
            outcome.before = read_genres(analysis.path, config.tags.separator)
        except FileError as exc:
            outcome.write, outcome.write_error = "failed", exc.reason
            return outcome
        after = plan_genres(outcome.before, ours, config.tags.policy)
        outcome.write = "kept" if after is None else "planned"
        outcome.after = after or []
    return outcome


def _count(summary: ScanSummary, outcome: Outcome) -> None:
    summary.outcomes.append(outcome)
    if outcome.status == "failed":
        summary.failed += 1
        summary.failures.append((outcome.path, outcome.error or "unknown error"))
        return
    summary.classified += 1
    if outcome.write == "written":
        summary.written += 1
    elif outcome.write == "failed":
        summary.write_failed += 1
        summary.failures.append((outcome.path, f"tag not written: {outcome.write_error}"))
    else:
        summary.skipped += 1
