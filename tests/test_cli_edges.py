"""Edges of the command line that once ended in a traceback (issue 12.11): each now gives one
clear line and the documented exit code, through the real ``libtagger`` command group."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import audiogen
from conftest import crash_free

from libtagger.cli import main
from libtagger.library import db as db_module
from libtagger.library.db import Library
from libtagger.query import language
from libtagger.query.language import QueryError, select_tracks


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def database(tmp_path) -> Path:
    path = tmp_path / "library.db"
    Library(path).close()
    return path


def _one_line_error(result, exit_code: int = 2) -> str:
    """The command failed with ``exit_code`` and said why in words, not a traceback."""
    assert result.exit_code == exit_code, result.output
    crash_free(result)
    return result.output


def test_a_query_of_a_thousand_alternatives_is_refused_by_name(runner, database):
    text = " OR ".join(["genre:house"] * 1000)
    result = runner.invoke(main, ["--db", str(database), "query", text])
    output = _one_line_error(result)
    assert "more than 200 terms" in output
    assert len(output.strip().splitlines()) == 1


def test_what_the_term_cap_misses_is_still_a_query_error(database, monkeypatch):
    # SQLite's own limit on an expression's depth, should a query get past MAX_TERMS.
    monkeypatch.setattr(language, "MAX_TERMS", 10_000)
    library = Library(database)
    with library.reader() as session, pytest.raises(QueryError, match="too large"):
        select_tracks(session, " OR ".join(["path:/a*"] * 1000))
    library.close()


@pytest.mark.parametrize("command", [["query", "--limit"], ["runs", "--limit"],
                                     ["undo", "--run"]])
def test_a_number_past_sqlite_integers_is_a_usage_error(runner, database, command):
    result = runner.invoke(main, ["--db", str(database), *command, "99999999999999999999"])
    assert "is not in the range" in _one_line_error(result)


def test_a_locked_database_ends_a_scan_with_one_clear_line(runner, database, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 300)  # 30 s in real life
    music = tmp_path / "music"
    music.mkdir()
    song = audiogen.write(music / "song.mp3", audiogen.music(4.0))
    before = song.read_bytes()
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        result = runner.invoke(main, ["--db", str(database), "scan", "--jobs", "1", str(music)])
        # Readers are not writers: a query still answers while the other writer holds on.
        listed = runner.invoke(main, ["--db", str(database), "query"])
    finally:
        other.execute("ROLLBACK")
        other.close()
    output = _one_line_error(result)
    assert f"libtagger: error: the database sqlite:///{database} is locked by another " \
           "program (waited 0.3 s)" in output
    assert song.read_bytes() == before
    assert listed.exit_code == 0, listed.output


def test_classify_reports_a_bad_path_and_classifies_the_rest(runner, tmp_path):
    good = [audiogen.write(tmp_path / "a.mp3", audiogen.music(4.0)),
            audiogen.write(tmp_path / "b.flac", audiogen.music(4.0, seed=1))]
    result = runner.invoke(main, [
        "classify", "--jobs", "1", str(good[0]), str(tmp_path / "missing.mp3"),
        str(good[0] / "under-a-file.mp3"), str(good[1])])
    output = _one_line_error(result, exit_code=1)
    for path in good:
        assert f"{path}\t" in output
    assert f"error: {tmp_path / 'missing.mp3'}: cannot open: No such file" in output
    assert f"error: {good[0] / 'under-a-file.mp3'}: cannot open: Not a directory" in output


def test_classify_reports_an_unreadable_file_and_folder_and_classifies_the_rest():
    # As uid 65534: root reads anything. Regression: click refused the unreadable file as a
    # usage error (exit 2), so nothing was classified, not even the readable file.
    import shutil

    from unprivileged import run_as_nobody, shared_folder

    home = shared_folder()
    try:
        config = home / "config.toml"
        config.write_text("[library]\nsettle_seconds = 0\n")
        good = audiogen.write(home / "a.mp3", audiogen.music(4.0))
        unreadable = home / "unreadable.mp3"
        unreadable.write_bytes(good.read_bytes())
        unreadable.chmod(0)
        closed = home / "closed"
        closed.mkdir()
        audiogen.write(closed / "inside.mp3", audiogen.music(4.0, seed=2))
        closed.chmod(0)
        result = run_as_nobody(["classify", "--jobs", "1", str(good), str(unreadable),
                                str(closed)], home, config, timeout=120)
    finally:
        (home / "closed").chmod(0o755)
        shutil.rmtree(home)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert f"{good}\t" in result.stdout
    assert f"error: {unreadable}: cannot open: Permission denied" in result.stderr
    assert f"error: {closed}: cannot read folder (Permission denied)" in result.stderr


@pytest.mark.parametrize(("command", "message"), [
    (["scan", "--jobs", "100000000000000000000"], "not in the range 1<=x<=256"),
    (["watch", "--jobs", "257"], "not in the range 1<=x<=256"),
    (["classify", "--jobs", "0"], "not in the range 1<=x<=256"),
    (["classify", "--top", "100000000000000000000"], "not in the range 1<=x<=100"),
])
def test_a_huge_worker_count_is_a_usage_error(tmp_path, command, message):
    # Regression: scan --jobs 10**20 scanned, printed its summary, then never exited (the
    # pool of 10**20 workers never stopped). A real process, so a hang fails by its timeout.
    song = audiogen.write(tmp_path / "song.flac", audiogen.music(4.0))
    proc = subprocess.run(
        [sys.executable, "-c", "from libtagger.cli import main; main()",
         "--db", str(tmp_path / "lib.db"), *command, str(song if command[0] == "classify"
                                                         else tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "lib.db").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", [["models"], ["query"], ["export"], ["stats"], ["--help"],
                                     ["--version"], ["query", "--help"]])
def test_output_to_a_full_disk_is_one_line(database, command):
    # Regression: every command printing to a full disk ended in an OSError traceback.
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-c", "from libtagger.cli import main; main()",
             "--db", str(database), *command],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "libtagger: error: cannot write the output (No space left on " \
                          "device)\n", proc.stderr
