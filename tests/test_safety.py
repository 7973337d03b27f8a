"""Never a damaged file: each case here was a way to lose audio, links or data (issues 8, 12).

Real files, real worker processes, a real writer process copying slowly into the library.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import audiogen
import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

from conftest import crash_free

from libtagger.cli import main
from libtagger.library.db import Library, TagWrite, Track
from libtagger.library.guards import Snapshot
from libtagger.library.tags import read_genres
from libtagger.pipeline import worker
from libtagger.pipeline.scan import ScanSummary, plan_scan

HOSTILE = Path(__file__).resolve().parent.parent.parent / "shared" / "hostile"


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """A 30-second mp3 to copy around."""
    return audiogen.write(tmp_path_factory.mktemp("song") / "song.mp3",
                          audiogen.music(30.0, seed=21, tempo=126.0))


def scan(db: Path, *args: str, config: Path | None = None) -> tuple[int, str, str]:
    options = ["--config", str(config)] if config else []
    result = CliRunner().invoke(main, [*options, "--db", str(db), "scan", "--jobs", "1", *args])
    crash_free(result)
    return result.exit_code, result.stdout, result.stderr


def test_a_file_still_being_copied_is_neither_read_nor_written(tmp_path, song):
    """A slow copy into the library while a scan runs: the scan leaves it alone (regression:
    it classified the partial file, rewrote it, and the copy went on into a lost inode)."""
    root = tmp_path / "Music"
    root.mkdir()
    target = root / "arriving.mp3"
    data = song.read_bytes()
    ready = tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        f"data = open({str(song)!r}, 'rb').read()\n"
        f"with open({str(target)!r}, 'wb') as out:\n"
        "    out.write(data[: len(data) // 3]); out.flush()\n"
        f"    open({str(ready)!r}, 'w').close()\n"
        "    time.sleep(6)\n"  # a stalled network copy: the file stays open for writing
        "    out.write(data[len(data) // 3 :])\n"
    )])
    try:
        while not ready.exists():
            time.sleep(0.05)
        db = tmp_path / "lib.db"
        code, out, err = scan(db, str(root))
        assert "1 left for the next run" in out and "open for writing" in err
        assert target.stat().st_size < len(data)  # untouched: still the writer's
    finally:
        writer.wait(timeout=30)
    assert target.read_bytes() == data  # the copy completed into the same file
    code, out, _ = scan(db, str(root))
    assert code == 0 and "wrote 1 tags" in out
    assert read_genres(target) and audiogen.pcm_digest(target) == audiogen.pcm_digest(song)


def test_the_settle_time_defers_a_just_modified_file(tmp_path, song):
    root = tmp_path / "Music"
    root.mkdir()
    target = root / "fresh.mp3"
    target.write_bytes(song.read_bytes())
    config = tmp_path / "config.toml"
    config.write_text("[library]\nsettle_seconds = 30\n")
    code, out, err = scan(tmp_path / "lib.db", str(root), config=config)
    assert "1 left for the next run" in out and "settle time 30 s" in err
    assert target.read_bytes() == song.read_bytes()
    old = time.time() - 60
    os.utime(target, (old, old))
    code, out, _ = scan(tmp_path / "lib.db", str(root), config=config)
    assert "wrote 1 tags" in out


def test_hard_linked_files_are_not_split(tmp_path, song):
    """Copy-and-rename would give one name a new file (regression: links were broken)."""
    root = tmp_path / "Music"
    root.mkdir()
    first = root / "a.mp3"
    first.write_bytes(song.read_bytes())
    os.link(first, tmp_path / "seeding.mp3")  # a torrent client's copy
    code, out, err = scan(tmp_path / "lib.db", str(root))
    assert "has 2 hard links" in err and "wrote 0 tags" in out
    assert os.stat(first).st_nlink == 2 and first.read_bytes() == song.read_bytes()


def test_a_file_replaced_after_analysis_gets_no_stale_genre(tmp_path, song):
    """The write applies only to the analysed file (regression: the old audio's genres went
    into the new file and its stat was stored, hiding the change for good)."""
    path = tmp_path / "track.mp3"
    path.write_bytes(song.read_bytes())
    snapshot = Snapshot.of(os.stat(path))
    replacement = tmp_path / "new.mp3"
    audiogen.write(replacement, audiogen.music(12.0, seed=5))
    os.replace(replacement, path)  # a new inode under the same name
    new_bytes = path.read_bytes()
    plan = worker.WritePlan(1, str(path), [], ["Jazz"], snapshot, None)
    result = worker.write(plan)
    assert result.state == "deferred" and "changed since it was analysed" in result.error
    assert path.read_bytes() == new_bytes


def test_partial_downloads_and_lookalike_temp_files_are_never_touched(tmp_path, song):
    root = tmp_path / "Music"
    root.mkdir()
    names = ["song.mp3.part", "song.mp3.crdownload", "b.mp3.download", "c.mp3.!qB",
             "d.mp3.tmp", "._e.mp3", ".x.mp3.0a1b2c3d.libtagger-tmp"]
    for name in names:
        (root / name).write_bytes(song.read_bytes())
    (root / "real.mp3").write_bytes(song.read_bytes())
    code, out, _ = scan(tmp_path / "lib.db", str(root))
    assert "1 files: 1 new" in out
    for name in names:  # regression: a file named like our temporary copies was deleted
        assert (root / name).read_bytes() == song.read_bytes()


def test_a_fifo_named_like_audio_does_not_hang_classify(tmp_path, song):
    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "libtagger", "classify", "-j", "1",
                             str(fifo), str(song)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FIFO, socket or device" in result.stderr and "song.mp3" in result.stdout


def test_a_first_scan_beyond_the_sqlite_variable_limit(tmp_path):
    """Every IN (...) list is chunked (regression: 32,767 new files failed, on SQLite builds
    with the default limit, for ever). The limit is lowered here instead of making 32k files."""
    root = tmp_path / "Music"
    root.mkdir()
    for i in range(700):
        (root / f"{i:04d}.mp3").write_bytes(b"")
    library = Library(tmp_path / "lib.db")

    @event.listens_for(library.engine, "connect")
    def low_limit(connection, _record):
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 600)

    library.engine.dispose()
    refs = plan_scan(library, [str(root)], False, ScanSummary(), identify=lambda paths: {})
    assert len(refs) == 700
    with library.reader() as session:
        assert session.scalars(select(Track.status)).all() == ["pending"] * 700
    library.close()


def test_a_dry_run_creates_no_database(tmp_path, song):
    root = tmp_path / "Music"
    root.mkdir()
    (root / "a.mp3").write_bytes(song.read_bytes())
    db = tmp_path / "sub" / "lib.db"
    code, out, _ = scan(db, "--dry-run", str(root))
    assert code == 0 and "a.mp3:" in out and "would write" in out
    assert not db.exists() and not db.parent.exists()


def test_workers_die_with_a_killed_scan(tmp_path, song):
    """kill -9 of the scan leaves no worker behind (regression: they lived on, 330 MB each)."""
    root = tmp_path / "Music"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.mp3").write_bytes(song.read_bytes())
    scan_process = subprocess.Popen(
        [sys.executable, "-m", "libtagger", "--db", str(tmp_path / "lib.db"), "scan", "-j", "2",
         str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.monotonic() + 60
    while len(children) < 2 and time.monotonic() < deadline:
        try:
            children = [int(p) for p in Path(f"/proc/{scan_process.pid}/task/{scan_process.pid}"
                                             "/children").read_text().split()]
        except OSError:
            break
        time.sleep(0.1)
    assert children, "the scan started no workers"
    scan_process.send_signal(signal.SIGKILL)
    scan_process.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in children):
        assert time.monotonic() < deadline, "workers outlived their scan"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.skipif(not HOSTILE.is_dir(), reason="the shared hostile reproducers are absent")
def test_the_hostile_reproducers_cost_only_themselves(tmp_path, song):
    """A segfaulting decoder, a zlib bomb and a tag flood, in one scan with a good file."""
    root = tmp_path / "Music"
    root.mkdir()
    for path in HOSTILE.iterdir():
        if path.suffix in (".mp3", ".m4a"):
            (root / path.name).write_bytes(path.read_bytes())
    (root / "good.mp3").write_bytes(song.read_bytes())
    config = tmp_path / "config.toml"
    config.write_text("[library]\nsettle_seconds = 0\n[limits]\nseconds_per_file = 30\n")
    started = time.monotonic()
    code, out, err = scan(tmp_path / "lib.db", str(root), config=config)
    assert time.monotonic() - started < 120
    assert code == 1 and "classified 1, wrote 1 tags" in out and "3 failed" in out
    assert "free_1000_atoms.m4a: " in err and "v24_zlib_bomb_1GiB.mp3: " in err
    assert "txxx100k.mp3: " in err
    with Library(tmp_path / "lib.db").reader() as session:
        statuses = {Path(t.path).name: t.status for t in session.scalars(select(Track))}
        assert statuses["good.mp3"] == "done" and list(statuses.values()).count("failed") == 3
        assert not session.scalars(select(TagWrite).where(TagWrite.state == "planned")).all()
    code, out, _ = scan(tmp_path / "lib.db", str(root), config=config)
    assert "classified 0" in out  # a bad file waits for a change; it is not retried


def _crash_or_hang(item: int) -> int:
    if item == 1:
        os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug does
    if item == 2:
        time.sleep(30)  # a parser stuck in a tag flood
    return item * 10


def test_a_crashing_or_hanging_worker_costs_only_its_item():
    """Regression: one segfault broke the pool (BrokenProcessPool) and every file after it."""
    from libtagger.config import LimitsConfig
    from libtagger.pipeline.runner import Runner, WorkerDied

    limits = LimitsConfig(seconds_per_file=2.0)
    with Runner(_crash_or_hang, 2, limits) as runner:
        results = dict(runner.run(range(6), ordered=True))
    assert [results[i] for i in (0, 3, 4, 5)] == [0, 30, 40, 50]
    assert isinstance(results[1], WorkerDied) and results[1].reason == "decoder crashed (SIGSEGV)"
    assert isinstance(results[2], WorkerDied) and "took longer than 2 s" in results[2].reason


def test_a_write_never_goes_through_a_folder_replaced_by_a_symlink(tmp_path, song):
    """A planned (or deferred) write whose folder was moved out of the library and replaced
    by a symlink to it: the snapshot still matches (same inode), but the file now lies
    outside the library and is not changed (regression: the write, e.g. one settled by the
    daemon's start-up reconcile of planned writes, followed the link)."""
    root = tmp_path / "Music"
    album = root / "Album"
    album.mkdir(parents=True)
    track = album / "a.mp3"
    track.write_bytes(song.read_bytes())
    plan = worker.WritePlan(1, str(track), [], ["Jazz"], Snapshot.of(os.stat(track)), None)
    elsewhere = tmp_path / "Elsewhere"
    os.rename(album, elsewhere)
    os.symlink(elsewhere, album)
    result = worker.write(plan)
    assert result.state == "failed" and "symlink" in result.error
    assert (elsewhere / "a.mp3").read_bytes() == song.read_bytes()


@pytest.fixture
def nobody_home():
    """A world-writable folder under /tmp for libtagger run as uid 65534, and its config."""
    from unprivileged import shared_folder

    folder = shared_folder()
    config = folder / "config.toml"
    config.write_text("[library]\nsettle_seconds = 0\n")
    yield folder, config
    for dirpath, dirnames, _ in os.walk(folder):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
    import shutil

    shutil.rmtree(folder)


def test_an_unreadable_subfolder_does_not_mark_its_tracks_missing(nobody_home, song):
    """A subfolder that cannot be listed (EACCES, here as uid 65534: root reads anything) is
    reported and its tracks are kept (regression, issue 8.7: only a vanished root was
    protected; one unreadable subfolder marked all its tracks missing)."""
    from unprivileged import NOBODY, run_as_nobody

    home, config = nobody_home
    root = home / "Music"
    for name in ("Open/a.mp3", "Locked/b.mp3", "Locked/Deeper/c.mp3"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(song.read_bytes())
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, NOBODY, NOBODY)
    db = home / "lib.db"
    first = run_as_nobody(["--db", str(db), "scan", "--jobs", "1", "--no-write", str(root)],
                          home, config)
    assert first.returncode == 0 and "3 new" in first.stdout, first.stderr
    (root / "Locked").chmod(0o000)
    second = run_as_nobody(["--db", str(db), "scan", "--jobs", "1", str(root)], home, config)
    assert "Traceback" not in second.stderr, second.stderr
    reported = second.stdout + second.stderr
    assert f"cannot read folder {root / 'Locked'}: Permission denied" in reported
    assert "0 missing" in second.stdout, second.stdout
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT path, status FROM tracks").fetchall())
    assert {os.fsdecode(p): s for p, s in statuses.items()} == {
        str(root / "Open/a.mp3"): "done", str(root / "Locked/b.mp3"): "done",
        str(root / "Locked/Deeper/c.mp3"): "done"}


def test_another_users_file_is_left_unchanged_when_not_root(nobody_home, song):
    """As uid 65534, a writable file owned by uid 1000 (mode 666, folder 777) keeps its
    bytes and its owner, with the reason said; a file of our own next to it is tagged
    (regression, issue 8.5: copy-and-rename gave the file to libtagger's user)."""
    from unprivileged import NOBODY, run_as_nobody

    home, config = nobody_home
    root = home / "Music"
    root.mkdir()
    root.chmod(0o777)
    theirs, ours = root / "theirs.mp3", root / "ours.mp3"
    for path, owner in ((theirs, 1000), (ours, NOBODY)):
        path.write_bytes(song.read_bytes())
        os.chown(path, owner, owner)
        path.chmod(0o666)
    result = run_as_nobody(["--db", str(home / "lib.db"), "scan", "--jobs", "1", str(root)],
                           home, config)
    assert "Traceback" not in result.stderr, result.stderr
    assert "owned by another user (uid 1000)" in result.stderr, result.stderr
    assert "wrote 1 tags" in result.stdout, result.stdout
    assert theirs.read_bytes() == song.read_bytes()
    st = theirs.stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert read_genres(ours) and ours.stat().st_uid == NOBODY


def test_a_writing_session_holds_the_write_lock_from_its_first_read(tmp_path):
    """Regression: pysqlite began transactions lazily, so a session's read-then-write was not
    atomic: another writer could slip in between the read and the write."""
    first = Library(tmp_path / "lib.db")
    second = Library(tmp_path / "lib.db")

    @event.listens_for(second.engine, "connect")
    def impatient(connection, _record):
        connection.execute("PRAGMA busy_timeout = 100")

    with first.session() as session:
        session.scalars(select(Track)).all()  # only a read so far
        with pytest.raises(Exception, match="database is locked"):
            with second.session() as other:
                other.scalars(select(Track)).all()
        with second.reader() as reader:  # readers are never held up
            assert reader.scalars(select(Track)).all() == []
    first.close()
    second.close()
