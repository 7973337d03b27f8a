"""A scan killed with SIGKILL loses nothing committed, damages no file, and resumes."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import audiogen
from conftest import REPO

from libtagger.library.safewrite import is_temp_file


def done_count(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM tracks WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def start_scan(db, root) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "libtagger", "--db", str(db), "scan", "--jobs", "1", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )


def test_kill_9_mid_scan_then_resume(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    formats = ["mp3", "flac", "m4a", "ogg", "wav", "aiff"]
    files = []
    for i in range(12):
        signal_ = audiogen.music(8.0, seed=100 + i, tempo=90 + 5 * i)
        files.append(audiogen.write(root / f"t{i:02d}.{formats[i % len(formats)]}", signal_))
    originals = {p: audiogen.pcm_digest(p) for p in files}
    db = tmp_path / "lib.db"

    for kill_after in (1, 5, 9):  # kill three times, each later in the scan
        proc = start_scan(db, root)
        deadline = time.monotonic() + 120
        while done_count(db) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline, "scan made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for path, audio in originals.items():
            assert audiogen.pcm_digest(path) == audio

    final = start_scan(db, root)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    with sqlite3.connect(db) as conn:
        statuses = conn.execute("SELECT status, count(*) FROM tracks GROUP BY status").fetchall()
        assert statuses == [("done", 12)]
        per_track = conn.execute(
            "SELECT t.id, count(c.id) FROM tracks t LEFT JOIN classifications c "
            "ON c.track_id = t.id GROUP BY t.id").fetchall()
        assert all(n == 1 for _, n in per_track)
        writes = conn.execute(
            "SELECT track_id, state, count(*) FROM tag_writes GROUP BY track_id, state").fetchall()
        # Every track's genre was written exactly once, however often the scan was killed.
        assert sorted((state, n) for _, state, n in writes) == [("written", 1)] * 12
    for path, audio in originals.items():
        assert audiogen.pcm_digest(path) == audio
    assert not [p for p in os.listdir(root) if is_temp_file(p)]
    shutil.rmtree(root)


def _screen_line(raw: bytes, needle: bytes) -> str:
    """The terminal line holding ``needle`` as it shows: escape codes dropped, and only what
    was written after the line's last carriage return (an erased progress bar is gone)."""
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw)
    line = next(line for line in text.split(b"\n") if needle in line)
    return line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode()  # the pty ends lines in \r\n


def test_ctrl_c_in_a_terminal_says_so_on_its_own_line_and_the_next_scan_resumes(tmp_path):
    """Ctrl-C at a terminal: the bar is erased, the message has its own line, exit 130; what
    was stored stays, no file is damaged, and the next scan does the rest."""
    root = tmp_path / "Music"
    root.mkdir()
    files = [audiogen.write(root / f"t{i}.flac", audiogen.music(30.0, seed=300 + i))
             for i in range(8)]
    originals = {p: audiogen.pcm_digest(p) for p in files}
    db = tmp_path / "lib.db"
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100", TERM="xterm")
    pid, terminal = pty.fork()
    if pid == 0:  # pragma: no cover - the child: the scan, on the pty as its terminal
        os.execve(sys.executable, [sys.executable, "-m", "libtagger", "--db", str(db), "scan",
                                   "--jobs", "1", str(root)], env)
    output = b""
    deadline = time.monotonic() + 120
    while b"classifying" not in output or done_count(db) < 1:
        assert time.monotonic() < deadline, output.decode(errors="replace")
        if select.select([terminal], [], [], 0.1)[0]:
            output += os.read(terminal, 65536)
    os.write(terminal, b"\x03")  # Ctrl-C, typed: the terminal signals the whole foreground group
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # EIO: the child is gone and the pty closed
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 130, output.decode(errors="replace")
    # The first seconds say what is happening, one phase at a time, before the count starts.
    assert 0 <= output.find(b"starting workers, loading models") < output.find(b"classifying")
    message = b"interrupted: what was done is saved"
    assert _screen_line(output, message).startswith(message.decode()), output
    assert b"Traceback" not in output and b"KeyboardInterrupt" not in output, output
    stored = done_count(db)
    assert 1 <= stored < len(files)
    for path, audio in originals.items():
        assert audiogen.pcm_digest(path) == audio
    final = start_scan(db, root)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    assert done_count(db) == len(files)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM classifications").fetchone()[0] == len(files)
    assert not [p for p in os.listdir(root) if is_temp_file(p)]
