"""The genre database: SQLAlchemy 2 models and the connection helpers.

The schema is owned by Alembic (``migrations/``); :class:`Library` upgrades an older
database on start-up. SQLite runs in WAL mode with ``synchronous=FULL``: a committed result
survives a power cut, and readers (``libtagger query`` while a scan runs) never block the writer.
PostgreSQL (``postgresql+psycopg://…``, the ``libtagger[postgres]`` extra) is the shared
database for several machines; the same models and migrations serve both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from sqlalchemy import (
    JSON,
    BigInteger,
    and_,
    or_,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

from libtagger.config import APP_NAME
from libtagger.errors import DatabaseError

BUSY_TIMEOUT_MS = 30_000

POSTGRES_EXTRA = "pip install 'libtagger[postgres]'"

Int64 = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit integer (sizes, nanosecond mtimes): BIGINT on PostgreSQL, whose INTEGER is 32
bits; plain INTEGER on SQLite, where every integer is already 64 bits."""


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo (how every timestamp is stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


class FilePath(TypeDecorator[str]):
    """A file path stored as its raw bytes, so names that are not valid UTF-8 survive.

    Python sees ``str`` (undecodable bytes as surrogate escapes, like ``os.fsdecode``).
    Byte order is also path order, which makes "everything under this folder" a range scan.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else os.fsdecode(value)


def under_path(column: Any, path: str) -> Any:
    """SQL: ``column`` is the file ``path`` or anything under that folder.

    Byte order is path order, so "under folder/" is the range [folder/, folder0) on the
    unique index ("0" is the byte after "/"), and /m/2024 never matches /m/2024-old.
    """
    folder = path.rstrip(os.sep) + os.sep
    after = folder[:-1] + chr(ord(os.sep) + 1)
    return or_(column == path, and_(column >= folder, column < after))


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Track(Base):
    """One audio file in the library, present or gone."""

    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(FilePath, unique=True)
    """Absolute path; updated when the file is moved or renamed."""
    size: Mapped[int] = mapped_column(Int64)
    mtime_ns: Mapped[int] = mapped_column(Int64)
    identity: Mapped[str | None] = mapped_column(String(40), index=True)
    """Hash of the compressed audio stream (not the tags): survives renames and tag edits."""
    format: Mapped[str | None] = mapped_column(String(32))
    duration: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    """pending, done, failed or missing."""
    last_error: Mapped[str | None]
    attempts: Mapped[int] = mapped_column(default=0)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    missing_since: Mapped[datetime | None]
    file_genre: Mapped[str | None]
    """The genre tag the file carries, as last read ("; "-joined)."""
    file_genre_key: Mapped[str | None]
    """The same genres normalised and fenced, ``|hiphop|rock|``, for exact ``tag:`` matches."""
    written: Mapped[str | None]
    """What libtagger last wrote into the file ("; "-joined); cleared by undo."""
    artist: Mapped[str | None]
    title: Mapped[str | None]
    album: Mapped[str | None]

    classification: Mapped[Classification | None] = relationship(
        back_populates="track", cascade="all, delete-orphan", uselist=False
    )
    """The current classification; see :meth:`replace_classification`."""

    def replace_classification(self, session: Session, new: Classification) -> None:
        """Make ``new`` the current classification, deleting the old one first.

        The delete is flushed before the insert: one classification per track is a unique
        constraint, and the unit of work would otherwise insert before it deletes.
        """
        if self.classification is not None:
            session.delete(self.classification)
            session.flush()
        self.classification = new


def genre_key(genres: list[str]) -> str:
    """``|a|b|`` of normalised genre names: ``tag:`` matches a whole genre, never a part."""
    from libtagger.analysis.vote import normalise_genre

    return "|" + "|".join(normalise_genre(g) for g in genres) + "|" if genres else ""


class Classification(Base):
    """One classification of a track by a model set: genres, timeline, embeddings."""

    __tablename__ = "classifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    track_id: Mapped[int] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), unique=True
    )
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    model: Mapped[str] = mapped_column(String(200))
    windows: Mapped[int]
    voting_windows: Mapped[int]
    duration: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    timeline: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """Per-window genres for long audio (mixes); None for sampled tracks."""
    tags: Mapped[dict[str, float] | None] = mapped_column(JSON)
    """Mean probability of every model tag."""
    embeddings: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Per-window CNN embeddings, float16, shape [windows, embedding_dim]."""
    embedding_dim: Mapped[int | None]
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The genre tree's decision: genres to write, level, confidence, reason, each network's
    broad genre (see ``libtagger.analysis.tree``); None for results stored before it."""
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The track's embedding: mean over windows, L2-normalised, float16 (similar tracks)."""

    track: Mapped[Track] = relationship(back_populates="classification")
    genres: Mapped[list[GenreRow]] = relationship(
        back_populates="classification", cascade="all, delete-orphan", order_by="GenreRow.rank"
    )

    def embedding_matrix(self) -> np.ndarray | None:
        """The stored embeddings as a float32 array [windows, dim]."""
        if self.embeddings is None or not self.embedding_dim:
            return None
        flat = np.frombuffer(self.embeddings, dtype=np.float16).astype(np.float32)
        return flat.reshape(-1, self.embedding_dim)


class GenreRow(Base):
    """One genre of a classification, ranked."""

    __tablename__ = "genres"
    __table_args__ = (Index("ix_genres_genre_score", "genre", "score"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    classification_id: Mapped[int] = mapped_column(
        ForeignKey("classifications.id", ondelete="CASCADE"), index=True
    )
    rank: Mapped[int]
    genre: Mapped[str] = mapped_column(String(100))
    score: Mapped[float]
    confidence: Mapped[float]

    classification: Mapped[Classification] = relationship(back_populates="genres")


class TagWrite(Base):
    """One change we made (or planned) to a file's genre tag: what it held, what we wrote.

    A write is recorded as ``planned`` and committed before the file is touched, then marked
    ``written`` (or ``failed``). A ``planned`` row found on start-up means we were killed in
    between; reading the file tells which side of the rename it was (see ``reconcile``).
    """

    __tablename__ = "tag_writes"

    id: Mapped[int] = mapped_column(primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(8), default="write")
    """write (a classification result) or undo (restoring an earlier value)."""
    path: Mapped[str] = mapped_column(FilePath)
    """The file's path at the time of the write."""
    before: Mapped[list[str]] = mapped_column(JSON)
    after: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(10), default="planned", index=True)
    """planned, written, failed, skipped (found changed by someone else), undone."""
    error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    written_at: Mapped[datetime | None]
    temp_path: Mapped[str | None] = mapped_column(FilePath)
    """The temporary copy this write edits, recorded before it is created: the only kind of
    file libtagger ever removes."""
    snapshot: Mapped[dict[str, int] | None] = mapped_column(JSON)
    """The analysed file (device, inode, size, mtime_ns): the write applies only to it."""

    track: Mapped[Track] = relationship()


class Job(Base):
    """One piece of work for the watch daemon, claimed with a lease (see ``libtagger.service.queue``)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_not_before", "state", "not_before"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    """file (appeared or changed), move (path -> dest), gone (deleted), folder (appeared)."""
    path: Mapped[str] = mapped_column(FilePath, index=True)
    dest: Mapped[str | None] = mapped_column(FilePath)
    state: Mapped[str] = mapped_column(String(8), default="queued")
    """queued, claimed, done or failed (parked after too many attempts)."""
    attempts: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    """Not to be claimed before this: the settle period, or the retry backoff."""
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(index=True)


class Head(Base):
    """A personal genre head trained by ``libtagger learn``: the head itself and how well it
    did. Kept in the database, so that every machine sharing it uses the same head."""

    __tablename__ = "heads"

    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The head (``PersonalHead.to_bytes``: arrays in .npz form); None for a head whose file
    (before migration 0008) was not found, which is then inactive."""
    model: Mapped[str] = mapped_column(String(200))
    """The CNN models whose embeddings it was trained on (it only fits those)."""
    genres: Mapped[list[str]] = mapped_column(JSON)
    tracks: Mapped[int]
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One scan (or watch session, or undo): when, where, and what came of it."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    """running, done, interrupted (a run killed before it finished stays 'running')."""
    roots: Mapped[list[str]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


def default_database_path() -> Path:
    """``library.db`` in the user's data folder (XDG: ~/.local/share/libtagger)."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "library.db"


def database_url(location: str | os.PathLike[str] | None) -> str:
    """A SQLAlchemy URL from a path, a URL, or None (the default path).

    Raises:
        DatabaseError: the location is not a usable path or URL.
    """
    if location is None:
        location = default_database_path()
    text = os.fspath(location)
    if "://" in text:
        try:
            make_url(text)
        except (ArgumentError, ValueError) as exc:
            raise DatabaseError(f"not a database URL: {text}") from exc
        return text
    path = Path(text).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create the folder for {path}: {exc.strerror}") from exc
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings: WAL, durable commits, foreign keys, a busy wait."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _casefold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _sqlite_begin(connection: Any) -> None:
    """Start every transaction ourselves: IMMEDIATE for a writing session, so that its reads
    and writes are one atomic step (pysqlite would begin lazily, at the first write, and a
    read-then-write could interleave with another writer); DEFERRED for a reader."""
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def _sqlite_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN: _sqlite_begin issues it
    dbapi_connection.create_function("lt_fold", 1, _casefold, deterministic=True)


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite connections get :func:`_sqlite_pragmas`.

    Raises:
        DatabaseError: the URL names a database whose driver is not installed.
    """
    try:
        engine = create_engine(url, future=True)
    except (ImportError, NoSuchModuleError) as exc:
        scheme = url.split("://", 1)[0]
        hint = f": {POSTGRES_EXTRA}" if scheme.startswith("postgres") else ""
        raise DatabaseError(f"no driver for {scheme}:// databases is installed{hint}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", _sqlite_autocommit)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def alembic_config(url: str):  # -> alembic.config.Config
    """Alembic's config pointing at the migrations shipped with the package."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("libtagger.migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic), in one transaction.

    Raises:
        DatabaseError: the migration failed; the database is left as it was.
    """
    from alembic import command

    cfg = alembic_config(str(engine.url))
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"cannot upgrade the database: {reason}") from exc


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: empty database)."""
    from alembic.runtime.migration import MigrationContext

    # A read: it must not wait for (or fail on) another program's write transaction.
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision the shipped migrations know."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def database_problem(url: str | None, exc: BaseException) -> str:
    """What went wrong with the database, in one line ("the database URL is locked ...")."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    where = f"the database {url}" if url else "the database"
    if "database is locked" in reason or "database is busy" in reason:
        return (f"{where} is locked by another program (waited {BUSY_TIMEOUT_MS / 1000:g} s); "
                "what was done is saved: run the command again once it is free")
    return f"{where}: {reason}"


class Library:
    """An open genre database: the engine and a session factory.

    Raises:
        DatabaseError: the database cannot be opened or upgraded.
    """

    def __init__(self, location: str | os.PathLike[str] | None = None, migrate: bool = True):
        self.url = database_url(location)
        try:
            self.engine = create_db_engine(self.url)
            if migrate and current_revision(self.engine) != head_revision():
                upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot open {database_problem(self.url, exc)}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(sqlite_begin="DEFERRED"),
                                     expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A writing session: one transaction (``BEGIN IMMEDIATE`` on SQLite) that commits,
        or rolls back on error."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session that only reads: it never waits for, or blocks, a writer."""
        with self._readers.begin() as session:
            yield session

    @classmethod
    def existing(cls, location: str | os.PathLike[str] | None) -> Library | None:
        """The database at ``location`` if it exists, opened without creating or upgrading
        anything (a dry run); None when there is none yet."""
        text = os.fspath(location) if location else ""
        if "://" not in text:  # a file path: look, without creating its folder
            path = Path(text).expanduser() if text else default_database_path()
            if not path.is_file():
                return None
            # Read-only: no write, and no checkpoint of the write-ahead log on close either.
            return cls(f"sqlite:///file:{path.absolute()}?mode=ro&uri=true", migrate=False)
        return cls(location, migrate=False)

    def table_names(self) -> list[str]:
        """The tables in the database (for checks and tests)."""
        return sorted(inspect(self.engine).get_table_names())

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
