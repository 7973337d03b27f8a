"""Shared fixtures: real encoded audio files, the real models, a real PostgreSQL server, and
a leak check."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import audiogen  # noqa: E402
import pg  # noqa: E402

from libtagger.analysis.classify import Classifier  # noqa: E402
from libtagger.config import Config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def crash_free(result) -> None:
    """A CliRunner result ended as the command meant to: exit codes only, no exception.

    (The runner keeps an exception's traceback out of ``result.output``, so looking for
    "Traceback" there can never fail.)
    """
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.exception!r}\n{result.output}")
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def settled_immediately(tmp_path_factory):
    """Tests make files and scan them at once; in a real library they are old. The settle
    rule (a file modified in the last seconds is left for later) has tests of its own, which
    pass their own configuration; every other command reads this one."""
    config = tmp_path_factory.mktemp("config") / "config.toml"
    config.write_text("[library]\nsettle_seconds = 0.0\n")
    previous = os.environ.get("LIBTAGGER_CONFIG")
    os.environ["LIBTAGGER_CONFIG"] = str(config)
    yield config
    if previous is None:
        os.environ.pop("LIBTAGGER_CONFIG", None)
    else:
        os.environ["LIBTAGGER_CONFIG"] = previous


@pytest.fixture(autouse=True)
def no_leaked_threads_or_processes():
    """Fail a test that leaves a thread or a child process running."""
    threads_before = set(threading.enumerate())
    yield
    new_threads = [t for t in threading.enumerate() if t not in threads_before]
    for thread in new_threads:  # a thread told to stop may need a moment to get there
        thread.join(timeout=2.0)
    leaked_threads = [t for t in new_threads if t.is_alive()]
    children = multiprocessing.active_children()
    assert not leaked_threads, f"leaked threads: {leaked_threads}"
    assert not children, f"leaked child processes: {children}"


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    """The default classifier with the shipped models, loaded once for the session."""
    return Classifier(Config())


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    """A folder with one 20-second music-like file in every supported format."""
    folder = tmp_path_factory.mktemp("formats")
    signal = audiogen.music(20.0, seed=1)
    for fmt in audiogen.ENCODINGS:
        audiogen.write(folder / f"song.{fmt}", signal)
    return folder


@pytest.fixture(scope="session")
def long_mp3(tmp_path_factory) -> Path:
    """A 90-second mp3, long enough that the classifier seeks to its windows."""
    path = tmp_path_factory.mktemp("long") / "long.mp3"
    return audiogen.write(path, audiogen.music(90.0, seed=2, tempo=128.0))


@pytest.fixture(scope="session")
def pg_server():
    """A throw-away PostgreSQL cluster on a Unix socket, for the whole session."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'libtagger[postgres]'")
    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in "
                    "/usr/lib/postgresql/*/bin): apt-get install postgresql")
    server = pg.PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """The URL of an empty PostgreSQL database of this test's own, dropped after it."""
    name = pg_server.new_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_location(request, tmp_path) -> str:
    """Where a test's database lives, once for each backend: a SQLite file or a PostgreSQL
    URL (a fresh, empty database either way)."""
    if request.param == "sqlite":
        return str(tmp_path / "lib.db")
    return request.getfixturevalue("pg_url")
