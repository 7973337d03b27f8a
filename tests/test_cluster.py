"""Scans whose analysis runs on a real Dask cluster: a LocalCluster, and a `dask scheduler`
with `libtagger worker`s started as subprocesses on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from libtagger.analysis.audio import AudioFile, FrontEnd  # noqa: E402
from libtagger.cluster.paths import PathMap  # noqa: E402
from libtagger.config import ConfigError, config_from_dict  # noqa: E402
from libtagger.library.tags import read_genres  # noqa: E402

import audiogen  # noqa: E402

HOSTILE = Path(__file__).resolve().parent.parent.parent / "shared" / "hostile"
CONFIG = "[library]\nsettle_seconds = 0\n[limits]\nseconds_per_file = 30\n" \
         "[cluster]\nconnect_seconds = 30\n"


def libtagger(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "libtagger", *args], capture_output=True,
                          text=True, timeout=timeout)


def make_library(folder: Path, count: int, seconds: float = 12.0) -> list[Path]:
    folder.mkdir(parents=True)
    formats = ["mp3", "flac", "ogg", "m4a", "wav"]
    return [audiogen.write(folder / f"track{i}.{formats[i % len(formats)]}",
                           audiogen.music(seconds, seed=40 + i, tempo=90.0 + 7 * i))
            for i in range(count)]


def results(db: Path, root: Path) -> dict[str, tuple]:
    """Per file (relative to root): status, error, genres with scores, written genres."""
    out = {}
    with contextlib.closing(sqlite3.connect(db)) as con:
        for track_id, path, status, error in con.execute(
                "SELECT id, path, status, last_error FROM tracks"):
            genres = con.execute(
                "SELECT g.genre, round(g.score, 5), g.rank FROM genres g JOIN classifications c "
                "ON g.classification_id = c.id WHERE c.track_id = ? ORDER BY g.rank",
                (track_id,)).fetchall()
            writes = con.execute("SELECT after, state FROM tag_writes WHERE track_id = ?",
                                 (track_id,)).fetchall()
            out[os.path.relpath(os.fsdecode(path), root)] = (status, error, tuple(genres), tuple(writes))
    return out


def audio_hash(path: Path) -> str:
    with AudioFile(path, FrontEnd()) as audio:
        return audio.stream_hash()


@contextlib.contextmanager
def dask_scheduler(tmp_path: Path) -> Iterator[str]:
    """A real `dask scheduler` on loopback (random port, no dashboard); yields its address."""
    info = tmp_path / "scheduler.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert process.poll() is None, "dask scheduler exited"
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        yield json.loads(info.read_text())["address"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def libtagger_worker(address: str, config: Path, log: Path) -> Iterator[subprocess.Popen]:
    """`libtagger worker ADDRESS` as its own process (its nanny and one Dask worker)."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "libtagger", "--config", str(config), "worker", address,
             "--jobs", "1", "--host", "127.0.0.1"], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_local_cluster_scan_stores_and_writes_exactly_what_a_local_scan_does(tmp_path):
    """The same genres, scores, failures and tag writes, hostile files included: on the
    cluster too a decoder crash, a zlib bomb or a tag flood costs only its own file."""
    make_library(tmp_path / "here", 3)
    if HOSTILE.is_dir():
        for path in (p for p in HOSTILE.iterdir() if p.suffix in (".mp3", ".m4a")):
            shutil.copy(path, tmp_path / "here" / path.name)
    (tmp_path / "here" / "empty.mp3").write_bytes(b"")
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)

    local = libtagger("--config", str(config), "--db", str(tmp_path / "local.db"), "scan",
                      "--jobs", "2", str(tmp_path / "here"))
    cluster = libtagger("--config", str(config), "--db", str(tmp_path / "cluster.db"), "scan",
                        "--jobs", "2", "--scheduler", "local", str(tmp_path / "there"))

    assert local.returncode == cluster.returncode == 1, cluster.stderr  # the bad files failed
    assert "Traceback" not in cluster.stderr and "distributed" not in cluster.stderr
    assert cluster.stdout == local.stdout
    mine, theirs = results(tmp_path / "local.db", tmp_path / "here"), \
        results(tmp_path / "cluster.db", tmp_path / "there")
    assert theirs == mine
    assert sum(status == "done" for status, *_ in theirs.values()) == 3
    assert theirs["empty.mp3"][0] == "failed" and theirs["empty.mp3"][1]
    for name, (status, *_) in mine.items():
        if status == "done":
            assert read_genres(tmp_path / "there" / name) == read_genres(tmp_path / "here" / name)
            assert read_genres(tmp_path / "there" / name)  # a genre was really written


def test_a_worker_reads_through_its_path_map_and_the_scan_writes_its_own_files(tmp_path):
    """`dask scheduler` and `libtagger worker` as real processes. The worker mounts the
    library elsewhere ([library.path_map]); what it analyses is its own copy (the audio
    differs, the size and time do not), and the tag is written on the scanning machine."""
    library = tmp_path / "library"
    library.mkdir()
    original = audiogen.write(library / "song.wav", audiogen.music(12.0, seed=7))
    mount = tmp_path / "mount"
    mount.mkdir()
    copy = mount / "song.wav"
    data = bytearray(original.read_bytes())
    for i in range(len(data) - 4000, len(data) - 2000):  # samples near the end, not the header
        data[i] ^= 0x55
    copy.write_bytes(bytes(data))
    st = original.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert audio_hash(copy) != audio_hash(original)

    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("connect_seconds = 30", "connect_seconds = 3"))
    worker_config = tmp_path / "worker.toml"
    worker_config.write_text(f'[library.path_map]\n"{library}" = "{mount}"\n')
    db = tmp_path / "lib.db"
    with dask_scheduler(tmp_path) as address:
        lonely = libtagger("--config", str(config), "--db", str(db), "scan", "--scheduler",
                           address, str(library))
        assert lonely.returncode != 0 and "no Dask worker joined" in lonely.stderr
        assert "Traceback" not in lonely.stderr and len(lonely.stderr.strip().splitlines()) == 1

        config.write_text(CONFIG)
        with libtagger_worker(address, worker_config, tmp_path / "worker.log"):
            done = libtagger("--config", str(config), "--db", str(db), "scan", "--scheduler",
                             address, str(library))
    assert done.returncode == 0, done.stderr + (tmp_path / "worker.log").read_text()
    assert "classified 1, wrote 1 tags" in done.stdout
    with contextlib.closing(sqlite3.connect(db)) as con:
        path, identity, status = con.execute(
            "SELECT path, identity, status FROM tracks").fetchone()
    assert (os.fsdecode(path), status) == (str(library / "song.wav"), "done")
    assert identity == audio_hash(copy)  # the worker read its own mount
    assert read_genres(original) and not read_genres(copy)  # the scan wrote its own file


def test_a_dask_worker_killed_mid_scan_loses_nothing(tmp_path):
    """SIGKILL one of two Dask workers while it holds tracks: Dask hands them to the other
    (or to its restarted self); every track is classified and written once."""
    files = make_library(tmp_path / "music", 8, seconds=8.0)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    db = tmp_path / "lib.db"
    import psutil

    with dask_scheduler(tmp_path) as address, \
            libtagger_worker(address, config, tmp_path / "w1.log") as first, \
            libtagger_worker(address, config, tmp_path / "w2.log"):
        scan = subprocess.Popen([sys.executable, "-m", "libtagger", "--config", str(config),
                                 "--db", str(db), "scan", "--scheduler", address,
                                 str(tmp_path / "music")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        killed = None
        while killed is None and scan.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            if not db.exists() or _done(db) < 1:
                continue
            # The Dask worker process is the nanny's child; its own children are the pool.
            nanny = psutil.Process(first.pid)
            workers = [c for c in nanny.children() if c.children()]
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        out, err = scan.communicate(timeout=300)
    assert killed is not None, "the scan ended before a worker could be killed"
    assert _done(db) >= 1
    assert scan.returncode == 0, err
    assert "classified 8, wrote 8 tags" in out
    with contextlib.closing(sqlite3.connect(db)) as con:
        writes = con.execute("SELECT track_id, count(*) FROM tag_writes WHERE state = 'written' "
                             "GROUP BY track_id").fetchall()
        statuses = {s for (s,) in con.execute("SELECT status FROM tracks")}
    assert len(writes) == 8 and all(n == 1 for _, n in writes) and statuses == {"done"}
    for path in files:
        assert read_genres(path)


def _done(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
        try:
            return con.execute("SELECT count(*) FROM tracks WHERE status = 'done'").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_an_unreachable_scheduler_or_a_missing_extra_is_one_line(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("connect_seconds = 30", "connect_seconds = 2"))
    gone = libtagger("--config", str(config), "--db", str(tmp_path / "lib.db"), "scan",
                     "--scheduler", "tcp://127.0.0.1:9", str(music))
    assert gone.returncode != 0 and "cannot reach the Dask scheduler" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    # Without distributed installed (its import blocked), the error names the extra.
    blocked = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['distributed'] = None\n"
         "from libtagger.cli import main; main()", "--config", str(config), "--db",
         str(tmp_path / "lib.db"), "scan", "--scheduler", "local", str(music)],
        capture_output=True, text=True, timeout=120)
    assert blocked.returncode != 0 and "pip install 'libtagger[cluster]'" in blocked.stderr
    assert "Traceback" not in blocked.stderr


def test_the_path_map_takes_the_longest_prefix_and_only_whole_folders():
    paths = PathMap((("/srv/music", "/mnt/a"), ("/srv/music/live", "/mnt/b")))
    assert paths.here("/srv/music/x.mp3") == "/mnt/a/x.mp3"
    assert paths.here("/srv/music/live/y.flac") == "/mnt/b/y.flac"
    assert paths.here("/srv/musicals/z.mp3") == "/srv/musicals/z.mp3"
    assert paths.here("/srv/music") == "/mnt/a"


def test_the_path_map_config_is_checked():
    config = config_from_dict({"library": {"path_map": {"/srv/music/": "/mnt/nas/music"}}})
    assert config.library.path_map == (("/srv/music", "/mnt/nas/music"),)
    for bad in ({"relative": "/mnt"}, {"/srv": 3}, ["/srv"]):
        with pytest.raises(ConfigError, match="path_map"):
            config_from_dict({"library": {"path_map": bad}})
    with pytest.raises(ConfigError, match="cluster.local_workers"):
        config_from_dict({"cluster": {"local_workers": 0}})
