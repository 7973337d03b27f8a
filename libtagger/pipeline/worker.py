"""What runs inside a worker process: every step that opens an untrusted file.

The main process plans and records; it hands a worker a :class:`TrackRef` (what was seen
when the track was planned) and gets back an :class:`Analysis`, or a :class:`WritePlan` and
gets back a :class:`WriteResult`. Each task re-checks that the file is still the one that was
planned, is settled, and is not being written by anyone, before it reads or changes anything.
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from libtagger.analysis.audio import AudioFile, FrontEnd, open_regular
from libtagger.analysis.classify import Classifier, TrackResult, classify_or_fail, Failure
from libtagger.analysis.head import PersonalHead
from libtagger.config import Config
from libtagger.errors import TRANSIENT_ERRNOS, FileError, TagWriteError
from libtagger.library import guards
from libtagger.library.guards import Snapshot
from libtagger.library.tags import FileTags, read_genres, read_tags, write_genres

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackRef:
    """A track as the planner saw it; the worker checks the file still matches."""

    path: str
    track_id: int = 0
    snapshot: Snapshot | None = None
    identity: str | None = None
    """The audio hash, when the planner already computed it for this very snapshot."""
    timeline: bool = False


@dataclass(frozen=True)
class Analysis:
    """What a worker learned about one file: its identity and its genres, or why not."""

    path: str
    snapshot: Snapshot | None = None
    identity: str | None = None
    format: str | None = None
    result: TrackResult | None = None
    error: str | None = None
    transient: bool = False
    """The cause lies outside the file (busy, settling, permission, vanished): retry it."""
    busy: bool = False
    """Transient because the file is still being written (settling, open for writing, or it
    changed while looked at): wait for it, which is not a failed attempt."""
    genres_before: list[str] | None = None
    """The genres the file holds now; None when its tags cannot be read."""
    tag_error: str | None = None
    file_tags: FileTags | None = None
    """Artist, title and album as the file's tags say (for ``query``)."""

    @property
    def size(self) -> int:
        """Size when analysed."""
        return self.snapshot.size if self.snapshot else 0

    @property
    def mtime_ns(self) -> int:
        """Modification time when analysed."""
        return self.snapshot.mtime_ns if self.snapshot else 0


@dataclass(frozen=True)
class WritePlan:
    """A planned tag change, for a worker to apply if the file is still the analysed one."""

    write_id: int
    path: str
    before: list[str]
    after: list[str]
    snapshot: Snapshot | None
    temp: str | None
    score: float | None = None
    check_before: bool = True
    """Refuse when the file's genres are no longer ``before`` (someone edited them)."""


@dataclass(frozen=True)
class WriteResult:
    """How a planned write ended: written, deferred (try later) or failed/skipped (why)."""

    state: str
    error: str | None = None
    snapshot: Snapshot | None = None
    """The file after a write (its new size and mtime are what the database remembers)."""


# --- per-process state: one Classifier per worker, built by the pool's set-up ----------------


@dataclass
class _State:
    config: Config = field(default_factory=Config)
    head: PersonalHead | None = None
    classifier: Classifier | None = None


_state = _State()


def setup(config: Config, head: PersonalHead | None = None, models: bool = True) -> Callable[[], None]:
    """The worker set-up for a :class:`~libtagger.pipeline.runner.Runner`."""
    return partial(_setup, config, head, models)


def _setup(config: Config, head: PersonalHead | None, models: bool) -> None:
    from libtagger.analysis.classify import single_threaded_numerics

    single_threaded_numerics()
    _state.config, _state.head = config, head
    if models:
        _state.classifier = Classifier(config, head)
        _state.classifier.warm_up()


def _classifier() -> Classifier:
    if _state.classifier is None:
        _state.classifier = Classifier(_state.config, _state.head)
    return _state.classifier


def warm_up(_: object = None) -> int:
    """A task that only makes sure the models are loaded; returns the worker's pid."""
    _classifier()
    return os.getpid()


# --- the tasks --------------------------------------------------------------------------------


def analyse(ref: TrackRef) -> Analysis:
    """Identity, genres and current tags of one file; never raises for a bad file."""
    config = _state.config
    try:
        with open_regular(ref.path) as file:
            before = Snapshot.of(os.fstat(file.fileno()))
            if ref.snapshot is not None and not ref.snapshot.same_file(before):
                return Analysis(ref.path, before, error="changed since it was found; "
                                "it will be looked at again", transient=True, busy=True)
            busy = guards.settling(os.fstat(file.fileno()), config.library.settle_seconds) \
                or guards.open_for_writing(file.fileno(), ref.path)
            if busy:
                return Analysis(ref.path, before, error=f"not read yet: {busy}", transient=True,
                                busy=True)
            identity, fmt = ref.identity, None
            with AudioFile(ref.path, FrontEnd(), limits=config.limits) as audio:
                fmt = audio.info.format
                if identity is None:
                    identity = audio.stream_hash()
            outcome = classify_or_fail(_classifier(), ref.path, ref.timeline)
            after = Snapshot.of(os.fstat(file.fileno()))
    except FileError as exc:
        return Analysis(ref.path, error=exc.reason, transient=exc.transient)
    except OSError as exc:
        return Analysis(ref.path, error=f"cannot read: {exc.strerror or exc}",
                        transient=_transient(exc))
    if not before.same_file(after):
        return Analysis(ref.path, after, error="changed while it was read; it will be read "
                        "again", transient=True, busy=True)
    if isinstance(outcome, Failure):
        return Analysis(ref.path, before, identity, fmt, error=outcome.reason)
    tags, tag_error = None, None
    try:
        tags = read_tags(ref.path, config.tags.separator, config.limits)
    except FileError as exc:
        tag_error = exc.reason
    return Analysis(ref.path, before, identity, fmt, result=outcome,
                    genres_before=tags.genres if tags else None, tag_error=tag_error,
                    file_tags=tags)


def classify(item: tuple[str, bool]) -> TrackResult | Failure:
    """Classify one file (path, timeline) for ``classify`` and ``evaluate``; never raises."""
    path, timeline = item
    return classify_or_fail(_classifier(), path, timeline)


def identify(path: str) -> tuple[Snapshot, str] | None:
    """The file's snapshot and audio hash (a move's fingerprint), or None if unreadable or
    open for writing by another process."""
    try:
        with open_regular(path) as file:
            before = Snapshot.of(os.fstat(file.fileno()))
            if guards.open_for_writing(file.fileno(), path):
                return None  # a copy in progress: not read until it is complete
            with AudioFile(path, FrontEnd(), limits=_state.config.limits) as audio:
                identity = audio.stream_hash()
            if not before.same_file(Snapshot.of(os.fstat(file.fileno()))):
                return None
            return before, identity
    except (FileError, OSError):
        return None


def current_genres(path: str) -> list[str] | str:
    """The genres a file holds now, or the reason they cannot be read."""
    try:
        return read_genres(path, _state.config.tags.separator, _state.config.limits)
    except FileError as exc:
        return exc.reason


def write(plan: WritePlan) -> WriteResult:
    """Apply one planned tag change, if the file is still exactly the one that was analysed."""
    config = _state.config
    try:
        st = os.lstat(plan.path)
    except FileNotFoundError:
        return WriteResult("deferred", "the file is gone (moved or deleted?)")
    except OSError as exc:
        return WriteResult("deferred", f"cannot look at the file: {exc.strerror or exc}")
    if stat_module.S_ISLNK(st.st_mode):
        return WriteResult("failed", "the path is now a symlink; not changed")
    if os.path.realpath(plan.path) != os.path.abspath(plan.path):
        # A folder on the way was replaced by a symlink (the same inode may lie beyond it,
        # so the snapshot would match): the file is no longer inside the library.
        return WriteResult("failed", "the path now leads through a symlink; not changed")
    now = Snapshot.of(st)
    if plan.snapshot is not None and not plan.snapshot.same_file(now):
        return WriteResult("deferred", "the file changed since it was analysed; not changed "
                           "(it will be analysed again)")
    refusal = guards.unsafe_to_replace(st)
    if refusal:
        return WriteResult("failed", refusal)
    try:
        # The settle time was checked when the file was analysed; its mtime is unchanged
        # since (the snapshot matched), so only a writer that has it open can be busy now.
        with open_regular(plan.path) as file:
            busy = guards.open_for_writing(file.fileno(), plan.path)
        if busy:
            return WriteResult("deferred", f"not written yet: {busy}")
        if plan.check_before:
            found = read_genres(plan.path, config.tags.separator, config.limits)
            if _key(found) != _key(plan.before):
                return WriteResult("failed", "the file's genre changed meanwhile; not changed")
        write_genres(plan.path, plan.after, config.tags, score=plan.score, temp=plan.temp,
                     expect=plan.snapshot, limits=config.limits)
    except TagWriteError as exc:
        return WriteResult("deferred" if exc.transient else "failed", exc.reason)
    except FileError as exc:
        return WriteResult("failed", exc.reason)
    except OSError as exc:
        return WriteResult("deferred" if _transient(exc) else "failed",
                           f"{exc.strerror or exc}; not changed")
    try:
        return WriteResult("written", snapshot=Snapshot.of(os.stat(plan.path)))
    except OSError:
        return WriteResult("written")


def _key(genres: list[str]) -> list[str]:
    from libtagger.analysis.vote import normalise_genre

    return [normalise_genre(g) for g in genres]


def _transient(exc: OSError) -> bool:
    return exc.errno in TRANSIENT_ERRNOS
