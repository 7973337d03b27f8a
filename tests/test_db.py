"""The database: durable SQLite settings, migrations, and upgrades without loss, on SQLite and
on a real PostgreSQL server (the ``db_location`` fixture runs a test on both)."""

from __future__ import annotations

import os
import sqlite3
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from libtagger.cli import main
from libtagger.errors import DatabaseError
from libtagger.library.db import (
    Classification,
    GenreRow,
    Library,
    TagWrite,
    Track,
    create_db_engine,
    current_revision,
    database_url,
    head_revision,
    upgrade,
)


def test_sqlite_is_durable_and_concurrent(tmp_path):
    library = Library(tmp_path / "lib.db")
    with library.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
    assert current_revision(library.engine) == head_revision()
    assert {"tracks", "classifications", "genres", "tag_writes", "runs"} <= set(library.table_names())


def test_non_utf8_paths_round_trip(db_location):
    library = Library(db_location)
    odd = os.fsdecode(b"/music/caf\xe9/\xff.mp3")
    with library.session() as session:
        session.add(Track(path=odd, size=1, mtime_ns=1, status="done"))
    with library.session() as session:
        assert session.scalars(select(Track.path)).one() == odd
    library.close()


def test_sizes_and_nanosecond_mtimes_are_64_bit(db_location):
    library = Library(db_location)
    with library.session() as session:
        session.add(Track(path="/m/big.wav", size=5 * 2**30, mtime_ns=1_764_000_000_123_456_789))
    with library.reader() as session:
        track = session.scalars(select(Track)).one()
        assert (track.size, track.mtime_ns) == (5 * 2**30, 1_764_000_000_123_456_789)
    library.close()


def test_the_migrations_build_the_schema_the_models_declare(db_location):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from sqlalchemy import Float

    from libtagger.library.db import Base

    def same_float(_ctx, _inspected, _declared, inspected_type, declared_type):
        # SQLAlchemy 2.1 declares float as Double; the migrations say Float. SQLite stores
        # both as REAL and PostgreSQL's FLOAT is double precision: the same column.
        if isinstance(inspected_type, Float) and isinstance(declared_type, Float):
            return False
        return None

    library = Library(db_location)
    with library.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": same_float})
        assert compare_metadata(context, Base.metadata) == []
    library.close()


def test_one_classification_per_track(db_location):
    library = Library(db_location)
    with library.session() as session:
        track = Track(path="/m/a.mp3", size=1, mtime_ns=1)
        track.classification = Classification(model="m", windows=1, voting_windows=1,
                                              genres=[GenreRow(rank=1, genre="Rock", score=0.5,
                                                               confidence=1.0)])
        session.add(track)
    with library.session() as session:
        track = session.scalars(select(Track)).one()
        track.replace_classification(
            session, Classification(model="m", windows=2, voting_windows=2)
        )
    with library.session() as session:
        assert session.scalars(select(Classification.windows)).all() == [2]
        assert session.scalars(select(GenreRow)).all() == []
    library.close()


def test_database_built_at_the_first_migration_upgrades_without_loss(db_location):
    path = db_location
    engine = create_db_engine(database_url(path))
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO tracks (id, path, size, mtime_ns, identity, format, duration, status, "
            "attempts, added_at, updated_at) VALUES (1, :p, 10, 20, 'abc', 'mp3', 200.5, 'done', "
            "1, '2026-11-01 10:00:00', '2026-11-01 10:00:00')"), {"p": b"/music/old.mp3"})
        conn.execute(text(
            "INSERT INTO runs (id, kind, started_at, status, roots, counts) VALUES "
            "(1, 'scan', '2026-11-01 10:00:00', 'done', '[]', '{}')"))
        conn.execute(text(
            "INSERT INTO classifications (id, track_id, run_id, model, windows, voting_windows, "
            "created_at) VALUES (1, 1, 1, 'msd_vgg', 8, 8, '2026-11-01 10:00:00')"))
        conn.execute(text(
            "INSERT INTO genres (classification_id, rank, genre, score, confidence) VALUES "
            "(1, 1, 'House', 0.7, 0.9)"))
    engine.dispose()

    result = CliRunner().invoke(main, ["--db", str(path), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"0001 -> {head_revision()}" in result.stdout
    library = Library(path)
    with library.session() as session:
        track = session.scalars(select(Track)).one()
        assert (track.path, track.size, track.identity, track.duration) == (
            "/music/old.mp3", 10, "abc", 200.5)
        assert [(g.genre, g.score) for g in track.classification.genres] == [("House", 0.7)]
        assert session.scalars(select(TagWrite)).all() == []
    library.close()


def test_alembic_upgrades_an_empty_database_step_by_step(db_location):
    from alembic import command

    from libtagger.library.db import alembic_config

    url = database_url(db_location)
    command.upgrade(alembic_config(url), "0001")
    engine = create_db_engine(url)
    assert current_revision(engine) == "0001"
    command.upgrade(alembic_config(url), "head")
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_opening_an_old_database_upgrades_it_automatically(db_location):
    engine = create_db_engine(database_url(db_location))
    upgrade(engine, "0001")
    engine.dispose()
    library = Library(db_location)
    assert "tag_writes" in library.table_names()
    library.close()


def test_sqlite_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    engine = create_db_engine(database_url(path))
    upgrade(engine, "0001")
    engine.dispose()
    Library(path).close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "tag_writes" in tables


def test_a_postgres_url_without_its_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(DatabaseError, match=r"pip install 'libtagger\[postgres\]'"):
        Library("postgresql+psycopg://someone@/music")
    result = CliRunner().invoke(main, ["--db", "postgresql+psycopg://someone@/music", "stats"])
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert "\n" not in message and "libtagger[postgres]" in message, message


def test_unusable_locations_are_clear_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatabaseError, match="cannot create the folder"):
        Library(blocker / "sub" / "lib.db")
    with pytest.raises(DatabaseError, match="not a database URL"):
        database_url("nope://::")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseError):
        Library(garbage)


def test_upgrade_backfills_track_vectors_from_window_embeddings(db_location):
    import numpy as np

    path = db_location
    engine = create_db_engine(database_url(path))
    upgrade(engine, "0003")
    windows = np.array([[3.0, 0.0], [1.0, 0.0], [2.0, 2.0]], dtype=np.float16)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO tracks (id, path, size, mtime_ns, status, attempts, added_at, "
            "updated_at) VALUES (1, :p, 1, 1, 'done', 1, '2026-11-01', '2026-11-01')"),
            {"p": b"/m/a.flac"})
        conn.execute(text(
            "INSERT INTO classifications (track_id, model, windows, voting_windows, created_at, "
            "embeddings, embedding_dim) VALUES (1, 'm', 3, 3, '2026-11-01', :e, 2)"),
            {"e": windows.tobytes()})
    engine.dispose()
    library = Library(path)
    with library.session() as session:
        found = session.scalars(select(Classification)).one()
        vector = np.frombuffer(found.vector, dtype=np.float16).astype(np.float32)
    expected = np.array([2.0, 2.0 / 3.0]) / np.hypot(2.0, 2.0 / 3.0)  # the mean, normalised
    np.testing.assert_allclose(vector, expected, atol=1e-3)
    library.close()


def test_upgrade_moves_personal_heads_from_files_into_the_database(db_location, tmp_path):
    """0008: every machine sharing a database applies the same head, so it lives in it."""
    import numpy as np

    from libtagger.analysis.head import PersonalHead
    from libtagger.library.personal import active_head, active_head_id

    head = PersonalHead(["Mine", "Yours"], np.zeros(4, np.float32), np.ones(4, np.float32),
                        np.ones((1, 4), np.float32), np.zeros(1, np.float32), "m",
                        {"tracks": 9})
    kept = tmp_path / "head-0001.npz"
    kept.write_bytes(head.to_bytes())
    engine = create_db_engine(database_url(db_location))
    upgrade(engine, "0007")
    with engine.begin() as conn:
        for head_id, path, active in ((1, kept, True), (2, tmp_path / "gone.npz", False),
                                      (3, tmp_path / "also-gone.npz", True)):
            conn.execute(text(
                "INSERT INTO heads (id, path, model, genres, tracks, metrics, active, created_at) "
                "VALUES (:i, :p, :m, '[]', 9, '{}', :a, '2026-11-01')"),
                {"i": head_id, "p": str(path), "m": "m" if head_id == 1 else "other", "a": active})
    engine.dispose()
    library = Library(db_location)
    kept.unlink()  # from now on the file plays no part
    assert active_head_id(library, "m") == 1
    loaded = active_head(library, "m")
    assert loaded is not None and loaded.genres == ["Mine", "Yours"] and loaded.meta["tracks"] == 9
    assert active_head_id(library, "other") is None  # its file was not here: deactivated
    with library.engine.connect() as conn:
        assert conn.execute(text("SELECT id, active FROM heads ORDER BY id")).all() == [
            (1, True), (2, False), (3, False)]
    library.close()
