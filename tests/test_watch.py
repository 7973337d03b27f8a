"""`libtagger watch` as a real process on a real library: events, settling, moves, crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import audiogen
import numpy as np
import pytest
from conftest import REPO

from libtagger.library.tags import read_genres

CONFIG = """
[watch]
quiet_seconds = {quiet}
poll_seconds = 0.1
polling_seconds = 0.3
root_check_seconds = 0.5
stop_grace_seconds = 3.0
"""


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> object:
    """Poll until ``predicate`` is true; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rows(db: Path, sql: str, *args) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # the daemon has not created the schema yet


def done_paths(db: Path) -> set[str]:
    return {os.fsdecode(p) for (p,) in rows(db, "SELECT path FROM tracks WHERE status='done'")}




class Watcher:
    """A `libtagger watch` subprocess in its own session (so a kill reaches its workers)."""

    def __init__(self, tmp: Path, roots: list[Path], *args: str, quiet: float = 0.5,
                 env: dict[str, str] | None = None, config: str = "") -> None:
        self.db = tmp / "lib.db"
        self.config = tmp / "config.toml"
        self.config.write_text(config or CONFIG.format(quiet=quiet))
        self.log = tmp / f"watch-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "libtagger", "--config", str(self.config), "--db",
                   str(self.db), "watch", "--jobs", "2", *args, *map(str, roots)]
        self._stderr = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        )
        wait_for(lambda: "watching" in self.output() or self.proc.poll() is not None, 60,
                 "the daemon to start")
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._stderr.close()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            finally:
                if self.proc.poll() is None:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


@pytest.fixture
def watcher(tmp_path) -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(*args, **kwargs) -> Watcher:
        w = Watcher(tmp_path, *args, **kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.stop()


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("songs")
    formats = ["mp3", "flac", "m4a", "ogg", "wav", "aiff", "opus", "mp3"]
    return [audiogen.write(folder / f"s{i}.{fmt}", audiogen.music(8.0, seed=200 + i,
                                                                 tempo=100 + 7 * i))
            for i, fmt in enumerate(formats)]


def land(source: Path, dest: Path) -> Path:
    """Copy next to the library, then rename into it: how a finished download lands."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent.parent / f".staging-{dest.name}"
    shutil.copy(source, staging)
    os.rename(staging, dest)
    return dest


def test_files_landing_are_classified_and_tagged(tmp_path, watcher, songs):
    root = tmp_path / "Music"
    root.mkdir()
    already = shutil.copy(songs[0], root / "already.mp3")  # found by the start-up reconcile
    w = watcher([root])
    new = [land(songs[1], root / "new.flac"), land(songs[2], root / "Album" / "nested.m4a")]
    shutil.copy(songs[3], root / "plain-copy.ogg")  # not atomic: created, written, closed
    expected = {str(already), *map(str, new), str(root / "plain-copy.ogg")}
    wait_for(lambda: done_paths(w.db) >= expected, 90, "all four files to be classified")
    wait_for(lambda: rows(w.db, "SELECT count(*) FROM tag_writes WHERE state='written'")
             == [(4,)], 30, "all four tags to be written")
    for path in expected:
        assert read_genres(path), path
        # The log says what really landed in each file.
        assert f"{path}: " in w.output() and f"wrote {'; '.join(read_genres(path))}" in w.output()
    assert w.stop() == 0


def test_a_slow_copy_is_classified_once_when_complete(tmp_path, watcher):
    root = tmp_path / "Music"
    root.mkdir()
    source = audiogen.write(tmp_path / "long.wav", audiogen.music(20.0, seed=7))
    data = source.read_bytes()
    w = watcher([root], quiet=1.0)
    target = root / "slow.wav"
    with open(target, "wb") as out:  # a slow network copy: 8 chunks over ~3 s
        for i in range(8):
            out.write(data[i * len(data) // 8:(i + 1) * len(data) // 8])
            out.flush()
            time.sleep(0.4)
    wait_for(lambda: str(target) in done_paths(w.db), 60, "the slow file to be tagged")
    ((duration, attempts),) = rows(w.db, "SELECT duration, attempts FROM tracks")
    assert duration == pytest.approx(20.0, abs=0.1)  # the whole file, not a prefix
    assert attempts == 1
    assert rows(w.db, "SELECT count(*) FROM classifications") == [(1,)]


def test_moves_renames_deletes_and_folders(tmp_path, watcher, songs):
    root = tmp_path / "Music"
    root.mkdir()
    w = watcher([root])
    song = land(songs[4], root / "song.wav")
    wait_for(lambda: str(song) in done_paths(w.db), 60, "the first file")
    (classified_at,) = rows(w.db, "SELECT created_at FROM classifications")

    renamed = root / "Renamed" / "song-renamed.wav"
    renamed.parent.mkdir()
    os.rename(song, renamed)
    wait_for(lambda: str(renamed) in done_paths(w.db), 30, "the rename to be followed")
    assert rows(w.db, "SELECT created_at FROM classifications") == [classified_at]
    # An inotify move, or (the new folder not watched yet) a delete plus a create of the same
    # audio: either way the log says so.
    wait_for(lambda: f"moved: {song} -> {renamed} (" in w.output(), 10, "the move in the log")

    outside = tmp_path / "Incoming" / "Some Album"
    outside.mkdir(parents=True)
    for i in (5, 6):
        shutil.copy(songs[i], outside / songs[i].name)
    os.rename(outside, root / "Some Album")  # a whole folder moved in
    moved_in = {str(root / "Some Album" / songs[i].name) for i in (5, 6)}
    wait_for(lambda: done_paths(w.db) >= moved_in, 60, "the folder moved in")

    renamed.unlink()
    wait_for(lambda: rows(w.db, "SELECT status FROM tracks WHERE path = ?",
                          os.fsencode(renamed)) == [("missing",)], 30, "the delete")
    wait_for(lambda: f"deleted: {renamed} (" in w.output(), 10,
             "the delete in the log")
    assert rows(w.db, "SELECT count(*) FROM classifications") == [(3,)]  # history kept
    assert w.stop() == 0


def test_kill_9_mid_batch_then_restart_processes_everything_once(tmp_path, watcher, songs):
    root = tmp_path / "Music"
    root.mkdir()
    originals = {}
    w = watcher([root])
    for i, song in enumerate(songs):
        dest = land(song, root / f"{i:02d}{song.suffix}")
        originals[dest] = audiogen.pcm_digest(song)
    wait_for(lambda: len(done_paths(w.db)) >= 2, 60, "a few files to be done")
    w.kill()
    assert len(done_paths(w.db)) < len(songs), "too late: every file was already done"
    with sqlite3.connect(w.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    w2 = watcher([root])
    wait_for(lambda: len(done_paths(w2.db)) == len(songs), 90, "the rest after the restart")
    # A job is done with its result; its tag write (recorded as planned in that same
    # transaction) lands a moment later.
    wait_for(lambda: rows(w2.db, "SELECT count(*) FROM jobs WHERE state != 'done'") == [(0,)]
             and rows(w2.db, "SELECT count(*) FROM tag_writes WHERE state = 'planned'") == [(0,)],
             30, "an empty queue and every tag written")
    per_track = rows(w2.db, "SELECT track_id, count(*) FROM tag_writes GROUP BY track_id")
    assert len(per_track) == len(songs) and all(n == 1 for _, n in per_track)
    assert rows(w2.db, "SELECT DISTINCT state FROM tag_writes") == [("written",)]
    assert rows(w2.db, "SELECT max(c) FROM (SELECT count(*) c FROM classifications "
                       "GROUP BY track_id)") == [(1,)]
    for path, audio in originals.items():
        assert audiogen.pcm_digest(path) == audio
    assert w2.stop() == 0


def test_sigterm_exits_cleanly_and_fast(tmp_path, watcher, songs):
    root = tmp_path / "Music"
    root.mkdir()
    w = watcher([root])
    for i in range(4):
        land(songs[i], root / f"busy{i}{songs[i].suffix}")
    time.sleep(0.8)  # some work in hand
    started = time.monotonic()
    assert w.stop(timeout=10) == 0
    assert time.monotonic() - started < 8
    assert "stopped" in w.output() and "Traceback" not in w.output()
    assert rows(w.db, "SELECT count(*) FROM jobs WHERE state = 'claimed'") == [(0,)]


def test_polling_and_a_root_that_vanishes_and_returns(tmp_path, watcher, songs):
    root = tmp_path / "Share"
    root.mkdir()
    w = watcher([root], "--polling")
    first = land(songs[0], root / "first.mp3")
    wait_for(lambda: str(first) in done_paths(w.db), 60, "a file seen by polling")
    assert f"{root} (polling)" in w.output()

    away = tmp_path / "unmounted"
    os.rename(root, away)  # the share goes away
    wait_for(lambda: "is gone" in w.output(), 20, "the daemon to notice the root is gone")
    time.sleep(1.0)
    assert rows(w.db, "SELECT status FROM tracks") == [("done",)]  # not marked missing
    shutil.copy(songs[1], away / "while-away.flac")
    os.rename(away, root)  # and comes back, with a new file
    wait_for(lambda: str(root / "while-away.flac") in done_paths(w.db), 60,
             "the returned root to be rescanned")
    assert w.stop() == 0


def test_status_while_running_and_a_second_daemon_is_refused(tmp_path, watcher):
    root = tmp_path / "Music"
    root.mkdir()
    w = watcher([root])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    status = subprocess.run(
        [sys.executable, "-m", "libtagger", "--db", str(w.db), "status", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True)
    report = json.loads(status.stdout)
    assert report["daemon"]["running"] and report["daemon"]["pid"] == w.proc.pid
    assert report["last_reconcile"] is not None
    second = subprocess.run(
        [sys.executable, "-m", "libtagger", "--db", str(w.db), "watch", str(root)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert second.returncode == 2 and "already running" in second.stderr
    assert w.stop() == 0
    stopped = json.loads(subprocess.run(
        [sys.executable, "-m", "libtagger", "--db", str(w.db), "status", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True).stdout)
    assert not stopped["daemon"]["running"]


def test_systemd_notify_protocol_and_reload(tmp_path, watcher):
    root = tmp_path / "Music"
    root.mkdir()
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(30)
    try:
        w = watcher([root], env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
        w.config.write_text(CONFIG.format(quiet=0.7) + '\n[tags]\npolicy = "replace"\n')
        w.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in w.output(), 20, "the reload")
        assert w.stop() == 0
        while not any("STOPPING=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
    finally:
        listener.close()


def test_unit_files_pass_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs it)")
    executable = shutil.which("libtagger") or str(Path(sys.executable).parent / "libtagger")
    for unit in ("libtagger.service", "libtagger-user.service"):
        text = (REPO / "systemd" / unit).read_text()
        text = text.replace("/usr/local/bin/libtagger", executable)
        text = text.replace("%h/.local/bin/libtagger", executable)
        copy = tmp_path / unit
        copy.write_text(text)
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_symlinks_in_a_watched_root_are_never_followed(tmp_path, watcher, songs):
    """`ln -s /elsewhere <root>/x` in a watched folder: nothing beyond the link is read into
    the database or tagged, under inotify or polling, and the same link seen again (renamed,
    re-created, rescanned after a restart) raises nothing. Regressions: the daemon planned
    through the link, tagged the files in /elsewhere and then hit IntegrityError planning the
    link again; watchdog's polling observer followed links (two links to "." walk 2^40
    paths, so the poll never ends and no new file is seen)."""
    root = tmp_path / "Music"
    root.mkdir()
    elsewhere = tmp_path / "Elsewhere"
    elsewhere.mkdir()
    outside = [shutil.copy(songs[0], elsewhere / "a.mp3"),
               shutil.copy(songs[1], elsewhere / "b.flac")]
    before = {p: Path(p).read_bytes() for p in outside}
    w = watcher([root])
    wait_for(lambda: "reconciled" in w.output(), 60, "the start-up reconcile")
    os.symlink(elsewhere, root / "x")  # a folder link
    os.symlink(elsewhere / "a.mp3", root / "a-link.mp3")  # a file link
    wait_for(lambda: w.output().count("reached through a symlink") >= 2, 30,
             "both links to be refused")
    os.rename(root / "x", root / "y")  # the same link again, as a move job
    (root / "a-link.mp3").unlink()
    os.symlink(elsewhere / "a.mp3", root / "a-link.mp3")  # and re-created
    real = land(songs[2], root / "real.m4a")
    wait_for(lambda: str(real) in done_paths(w.db), 60, "a real file next to the links")
    wait_for(lambda: w.output().count("reached through a symlink") >= 4, 30,
             "the links seen again to be refused")
    assert w.stop() == 0

    # Polling, with two links that loop: a restart reconciles the root and polls it.
    os.symlink(".", root / "loop1")
    os.symlink(".", root / "loop2")
    w2 = watcher([root], "--polling")
    wait_for(lambda: "reconciled" in w2.output(), 60, "the reconcile after the restart")
    polled = land(songs[3], root / "polled.ogg")
    wait_for(lambda: str(polled) in done_paths(w2.db), 60, "a new file seen by polling")
    assert w2.stop() == 0

    output = w.output() + w2.output()
    assert "IntegrityError" not in output and "Traceback" not in output, output
    for path, data in before.items():
        assert Path(path).read_bytes() == data, f"{path} outside the library was changed"
    assert {os.fsdecode(p) for (p,) in rows(w.db, "SELECT path FROM tracks")} == \
        {str(real), str(polled)}
    # (A job queued at the stop, e.g. for an event of our own tag write, is fine.)
    assert rows(w.db, "SELECT kind, path, state, last_error FROM jobs "
                      "WHERE state IN ('failed', 'claimed') OR last_error IS NOT NULL") == []


IN_ACCESS, IN_CLOSE_WRITE = 0x1, 0x8


def reads_before_close(inotify_fd: int) -> int:
    """How many reads of the watched file inotify saw before its writer closed it."""
    import struct

    data = b""
    while True:
        try:
            chunk = os.read(inotify_fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    reads, offset = 0, 0
    while offset < len(data):
        _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
        offset += 16 + length
        if mask & IN_CLOSE_WRITE:
            return reads
        reads += bool(mask & IN_ACCESS)
    raise AssertionError("the writer's close was not seen")


def test_a_stalled_copy_is_left_alone_until_it_completes(tmp_path, watcher, songs):
    """A copy that stalls for longer than watch.quiet_seconds, its writer keeping the file
    open: the daemon defers the file (postponed, not counted as an attempt) and reads not a
    byte of it until the copy is complete; then it is tagged once and its audio is the
    source's. Regressions: the partial file was classified and rewritten by copy-and-rename
    while the writer went on into the lost old inode (8.0 MB left of a stalled copy); the
    move check hashed the partial file while it was open for writing."""
    import ctypes

    root = tmp_path / "Music"
    root.mkdir()
    source = audiogen.write(tmp_path / "long.mp3", audiogen.music(20.0, seed=9))
    target = root / "stalled.mp3"
    ready, go = tmp_path / "ready", tmp_path / "go"
    w = watcher([root], quiet=1.0)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        f"data = open({str(source)!r}, 'rb').read()\n"
        f"with open({str(target)!r}, 'wb') as out:\n"
        f"    open({str(ready)!r}, 'w').close()\n"
        f"    while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "    out.write(data[: len(data) // 3]); out.flush()\n"
        "    time.sleep(5)\n"  # stalled for 5 x quiet_seconds, the file still open
        "    out.write(data[len(data) // 3 :]); out.flush()\n"
        f"    same = os.stat({str(target)!r}).st_ino == os.fstat(out.fileno()).st_ino\n"
        "    print(same, os.fstat(out.fileno()).st_size, flush=True)\n"
    )], stdout=subprocess.PIPE, text=True)
    libc = ctypes.CDLL(None, use_errno=True)
    inotify = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        wait_for(ready.exists, 10, "the writer to open the file")
        assert libc.inotify_add_watch(inotify, os.fsencode(target), IN_ACCESS | IN_CLOSE_WRITE) >= 0
        go.touch()
        same_inode, size = writer.communicate(timeout=60)[0].split()
        assert same_inode == "True", "the file was replaced under the writer"
        assert int(size) == source.stat().st_size
        assert reads_before_close(inotify) == 0, "the file was read while being written"
    finally:
        os.close(inotify)
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert "open for writing" in w.output()  # it was tried, and deferred, during the stall
    wait_for(lambda: rows(w.db, "SELECT state FROM tag_writes") == [("written",)], 60,
             "the complete file to be tagged")
    ((duration, attempts, status),) = rows(w.db, "SELECT duration, attempts, status FROM tracks")
    assert status == "done" and duration == pytest.approx(20.0, abs=0.1) and attempts == 1
    assert rows(w.db, "SELECT count(*) FROM classifications") == [(1,)]
    assert rows(w.db, "SELECT max(attempts), count(*) FROM jobs WHERE state = 'failed' "
                      "OR last_error IS NOT NULL")[0][1] == 0
    assert all(n <= 1 for (n,) in rows(w.db, "SELECT attempts FROM jobs"))
    assert read_genres(target)
    assert audiogen.pcm_digest(target) == audiogen.pcm_digest(source)
    assert audio_frames(target) == audio_frames(source)
    assert w.stop() == 0


def audio_frames(path: Path) -> bytes:
    """An mp3's bytes without its ID3v2 tag (and ID3v1 trailer): the audio itself."""
    data = path.read_bytes()
    if data[:3] == b"ID3":
        size = 0
        for byte in data[6:10]:
            size = size << 7 | byte
        data = data[10 + size + (10 if data[5] & 0x10 else 0):]
    if data[-128:-125] == b"TAG":
        data = data[:-128]
    return data


def notify_listener(tmp_path: Path) -> tuple[socket.socket, str]:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(30)
    return listener, address


def test_a_big_reconcile_queues_in_chunks_and_keeps_the_watchdog_fed(tmp_path, watcher):
    """2,000 new files at start-up: the reconcile queues them 500 per transaction and sends
    WATCHDOG=1 (with its progress in STATUS=) after each chunk (regression: one transaction
    per path, no keep-alive until all were queued: systemd would kill the daemon after
    WatchdogSec, and a kill meanwhile kept nothing)."""
    root = tmp_path / "Music"
    root.mkdir()
    for i in range(2000):
        (root / f"{i:04d}.mp3").write_bytes(b"")  # plan-only work: found by their names
    listener, address = notify_listener(tmp_path)
    try:
        w = watcher([root], env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "60000000"})
        messages: list[str] = []
        while not any("queued 2000 of 2000" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert w.stop() == 0
    finally:
        listener.close()
    chunks = [m for m in messages if "STATUS=reconcile: queued" in m]
    assert [m.split("queued ")[1].split(" of")[0] for m in chunks] == ["500", "1000", "1500",
                                                                       "2000"]
    assert all("WATCHDOG=1" in m for m in chunks)
    assert rows(w.db, "SELECT count(*) FROM jobs WHERE kind = 'file'") == [(2000,)]


RELOAD = CONFIG + """
reconcile_minutes = {reconcile}
[library]
roots = [{roots}]
[personal]
mode = "{personal}"
"""


def reload_config(roots: list[Path], quiet: float, reconcile: float = 60.0,
                  personal: str = "personal") -> str:
    return RELOAD.format(quiet=quiet, reconcile=reconcile, personal=personal,
                         roots=", ".join(f'"{r}"' for r in roots))


def test_sighup_applies_roots_quiet_period_schedule_and_personal(tmp_path, watcher, songs):
    """SIGHUP applies the whole configuration (regression: it ignored library.roots, the
    quiet period and the settle time derived from it, the scheduler's intervals and
    [personal]): a new root is watched and a file landing there is tagged after the new
    quiet period, a removed root is no longer watched, the reconcile runs at its new
    interval, and a change the workers see restarts them."""
    first, second = tmp_path / "First", tmp_path / "Second"
    first.mkdir()
    second.mkdir()
    w = watcher([], config=reload_config([first], quiet=0.5))
    wait_for(lambda: "reconciled" in w.output(), 60, "the start-up reconcile")
    w.config.write_text(reload_config([second], quiet=3.0, reconcile=0.02))
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded (workers restarted)" in w.output(), 60,
             "the reload (a new quiet period is a new settle time for the workers)")
    assert f"{first}: no longer watched" in w.output() and f"{second}: watched" in w.output()
    reconciles = w.output().count("reconciled")
    dropped = land(songs[0], first / "not-watched.mp3")
    landed = land(songs[1], second / "landed.flac")
    mtime = landed.stat().st_mtime
    wait_for(lambda: str(landed) in done_paths(w.db), 60, "the file in the new root")
    ((created,),) = rows(w.db, "SELECT c.created_at FROM classifications c JOIN tracks t "
                               "ON t.id = c.track_id WHERE t.path = ?", os.fsencode(landed))
    from datetime import datetime, timezone

    classified = datetime.fromisoformat(str(created)).replace(tzinfo=timezone.utc).timestamp()
    assert classified - mtime >= 3.0, "classified before the new quiet period had passed"
    wait_for(lambda: w.output().count("reconciled") >= reconciles + 2, 30,
             "reconciles at the new 1.2 s interval")
    assert str(dropped) not in {os.fsdecode(p) for (p,) in rows(w.db, "SELECT path FROM tracks")}

    w.config.write_text(reload_config([second], quiet=3.0, reconcile=0.02, personal="off"))
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: w.output().count("(workers restarted)") == 2, 60, "[personal] applied")
    w.proc.send_signal(signal.SIGHUP)  # nothing changed: the workers are kept
    wait_for(lambda: w.output().count("configuration reloaded") == 3, 30, "the third reload")
    assert w.output().count("(workers restarted)") == 2

    # A model that does not exist: refused before the workers are stopped; the daemon goes on.
    w.config.write_text(reload_config([second], quiet=3.0, reconcile=0.02, personal="off")
                        + '[classifier]\nmodels = ["no-such-model"]\n')
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded: unknown model 'no-such-model'" in w.output(), 30,
             "the bad model to be refused")
    later = land(songs[2], second / "later.m4a")
    wait_for(lambda: str(later) in done_paths(w.db), 60, "a file after the refused reload")
    assert "Traceback" not in w.output()
    assert w.stop() == 0


def test_sighup_after_learn_gives_the_workers_the_new_head(tmp_path, watcher):
    """`libtagger learn` while the daemon runs, then SIGHUP with the config unchanged: the
    workers restart with the new head, and the next file gets your genre (regression: the
    reload restarted workers only for new models, so the head waited for a restart)."""
    from test_personal import FAMILIES, RATE, drone

    root = tmp_path / "Music"
    for f, (genre, make) in enumerate(FAMILIES.items()):
        (root / genre).mkdir(parents=True)
        for i in range(5):
            path = audiogen.write(root / genre / f"t{i}.flac", make(100 * f + i), rate=RATE)
            audiogen.set_genre(path, [genre])
    w = watcher([root], config=CONFIG.format(quiet=0.5) + "[personal]\nmin_tracks = 4\n")
    wait_for(lambda: len(done_paths(w.db)) == 15, 120, "the tagged tracks to be classified")
    learned = subprocess.run(
        [sys.executable, "-m", "libtagger", "--config", str(w.config), "--db", str(w.db),
         "learn", "--out", str(tmp_path / "report")], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300, check=False)
    assert learned.returncode == 0, learned.stderr
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in w.output(), 60, "the reload")
    assert "configuration reloaded (workers restarted)" in w.output()
    fresh = tmp_path / "new.flac"
    audiogen.write(fresh, drone(50), rate=RATE)
    landed = land(fresh, root / "Incoming" / "new.flac")
    wait_for(lambda: rows(w.db, "SELECT count(*) FROM tag_writes t JOIN tracks k ON "
                                "k.id = t.track_id WHERE k.path = ? AND t.state = 'written'",
                          os.fsencode(landed)) == [(1,)], 60, "the new file to be tagged")
    assert read_genres(landed) == ["Deep Drone"]
    assert w.stop() == 0


def workers_holding(daemon_pid: int, path: Path) -> list[int]:
    """The daemon's worker processes that have ``path`` open right now."""
    children = []
    for task in Path(f"/proc/{daemon_pid}/task").glob("*"):  # pebble's threads start workers too
        try:
            children += (task / "children").read_text().split()
        except OSError:
            continue
    holding = []
    for pid in map(int, children):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    holding.append(pid)
                    break
            except OSError:
                continue
    return holding


def test_a_bad_file_is_done_and_a_dead_worker_costs_only_its_own_job(tmp_path, watcher, songs):
    """The queue rule, in the real daemon: a file that does not decode is stored as failed
    and its job is done, not retried until the file changes; a worker killed while it reads
    one file (SIGKILL, as the OOM killer does) fails that file's job only, and the files in
    flight with it are classified and tagged (regressions, issue 8.10: a dead worker's failure
    was blamed on the first job in flight; the README promised retries for bad files)."""
    root = tmp_path / "Music"
    root.mkdir()
    victim_source = audiogen.write(tmp_path / "victim.wav",
                                   audiogen.music(1500.0, rate=16000, channels=1, seed=11))
    bad_source = tmp_path / "bad.mp3"
    bad_source.write_bytes(np.random.default_rng(3).bytes(50_000))
    w = watcher([root], "--jobs", "1")
    wait_for(lambda: "reconciled" in w.output(), 60, "the start-up reconcile")
    victim, bad = root / "victim.wav", root / "bad.mp3"
    good = [land(songs[0], root / "good.mp3"), land(victim_source, victim),
            land(bad_source, bad), land(songs[1], root / "good.flac")][::3]
    kills: list[int] = []
    stop = threading.Event()

    def kill_whoever_reads_the_victim() -> None:
        while not stop.is_set():
            for pid in workers_holding(w.proc.pid, victim):
                os.kill(pid, signal.SIGSTOP)  # hold it still; is it still the one?
                if pid in workers_holding(w.proc.pid, victim):
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                else:
                    os.kill(pid, signal.SIGCONT)

    killer = threading.Thread(target=kill_whoever_reads_the_victim)
    killer.start()
    try:
        wait_for(lambda: rows(w.db, "SELECT status FROM tracks WHERE path = ?",
                              os.fsencode(victim)) == [("failed",)], 120,
                 "the victim's worker to be killed while it classified it")
    finally:
        stop.set()
        killer.join()
    wait_for(lambda: all(rows(w.db, "SELECT count(*) FROM tag_writes t JOIN tracks k ON "
                                    "k.id = t.track_id WHERE k.path = ? AND t.state = 'written'",
                              os.fsencode(path)) == [(1,)] for path in good), 60,
             "the good files to be tagged")

    def track(path: Path) -> tuple:
        return rows(w.db, "SELECT status, attempts, last_error FROM tracks WHERE path = ?",
                    os.fsencode(path))[0]

    def jobs(path: Path) -> list[tuple]:
        return rows(w.db, "SELECT state, attempts, last_error FROM jobs WHERE path = ? "
                          "AND kind = 'file'", os.fsencode(path))

    status, attempts, error = track(victim)
    assert (status, attempts) == ("failed", 1) and "worker killed (SIGKILL" in error
    assert jobs(victim) == [("done", 1, None)]
    for path in good:
        assert track(path)[0::2] == ("done", None) and jobs(path) == [("done", 1, None)]
    status, attempts, error = track(bad)
    assert (status, attempts) == ("failed", 1) and error, error
    assert jobs(bad) == [("done", 1, None)]

    renamed = root / "bad-renamed.mp3"
    os.rename(bad, renamed)  # an event, but the file itself did not change: not retried
    wait_for(lambda: rows(w.db, "SELECT count(*) FROM tracks WHERE path = ?",
                          os.fsencode(renamed)) == [(1,)], 30, "the rename")
    assert track(renamed)[:2] == ("failed", 1)
    bad = renamed
    with open(bad, "ab") as out:  # the file changed: looked at again
        out.write(b"\0" * 1000)
    wait_for(lambda: track(bad)[1] == 2, 30, "the changed file to be tried again")
    assert track(bad)[0] == "failed"
    assert "Traceback" not in w.output()
    assert w.stop() == 0


def test_a_permission_denied_is_retried_with_backoff_until_it_passes(songs):
    """A file the daemon may not read yet (EACCES, as uid 65534: root reads anything) is not
    the file's fault: its job is retried after backoff_seconds, then twice that, counting
    attempts, and it is classified once readable; the track's own attempts count only the
    real analysis (regression, issue 8.10: a read failure was recorded with its job done,
    never retried)."""
    from unprivileged import NOBODY, popen_as_nobody, shared_folder

    home = shared_folder()
    root = home / "Music"
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    config = home / "config.toml"
    config.write_text(CONFIG.format(quiet=0.5) + "backoff_seconds = 2.0\n")
    log = home / "watch.log"
    db = home / "lib.db"
    with open(log, "w") as stderr:
        daemon = popen_as_nobody(["--db", str(db), "watch", "--jobs", "1", str(root)], home,
                                 config, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for(lambda: "reconciled" in log.read_text() or daemon.poll() is not None, 120,
                 "the unprivileged daemon to start")
        assert daemon.poll() is None, log.read_text()
        locked = root / "locked.mp3"
        staging = home / "staging.mp3"
        shutil.copy(songs[0], staging)
        os.chown(staging, NOBODY, NOBODY)
        staging.chmod(0o000)  # its owner, without capabilities, may not open it
        os.rename(staging, locked)

        def job() -> tuple:
            found = rows(db, "SELECT state, attempts, last_error, not_before, updated_at "
                             "FROM jobs WHERE path = ? AND kind = 'file'", os.fsencode(locked))
            return found[0] if found else ()

        wait_for(lambda: job() and job()[:2] == ("queued", 2), 60, "two failed attempts")
        state, attempts, error, not_before, updated = job()
        assert state == "queued" and "Permission denied" in error
        from datetime import datetime

        delay = (datetime.fromisoformat(not_before) - datetime.fromisoformat(updated))
        assert 3.0 < delay.total_seconds() <= 4.5  # the second retry waits twice as long
        locked.chmod(0o644)
        wait_for(lambda: rows(db, "SELECT status, attempts FROM tracks") == [("done", 1)], 60,
                 "the file to be classified once readable")
        assert job()[0] == "done" and job()[1] == 3
        assert "will retry" in log.read_text() and "Traceback" not in log.read_text()
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not stop on SIGTERM:\n" + log.read_text()[-3000:])
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        shutil.rmtree(home, ignore_errors=True)


def test_a_deferred_tag_write_is_tried_again_by_the_periodic_reconcile(tmp_path, watcher, songs):
    """A tag write deferred because the file was read-only is written once it is writable,
    by the next reconcile, without classifying again (regression: the daemon retried
    deferred writes only when it was restarted, while the README promised the reconcile)."""
    root = tmp_path / "Music"
    root.mkdir()
    w = watcher([root], config=CONFIG.format(quiet=0.5) + "reconcile_minutes = 0.05\n")
    staging = tmp_path / "staging.mp3"
    shutil.copy(songs[0], staging)
    staging.chmod(0o444)
    target = root / "read-only.mp3"
    os.rename(staging, target)
    wait_for(lambda: rows(w.db, "SELECT state FROM tag_writes") == [("deferred",)], 60,
             "the write to be deferred")
    assert "read-only file" in rows(w.db, "SELECT error FROM tag_writes")[0][0]
    target.chmod(0o644)  # no new size or mtime: only the deferred write brings it back
    wait_for(lambda: rows(w.db, "SELECT state FROM tag_writes") == [("written",)], 30,
             "the next reconcile to write it")
    assert read_genres(target)
    assert rows(w.db, "SELECT count(*) FROM classifications") == [(1,)]
    assert w.stop() == 0
