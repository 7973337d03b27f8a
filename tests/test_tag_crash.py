"""Crashes in the middle of tag writes: every file still decodes to the same audio.

A writer process is killed with SIGKILL at random moments, and with SIGXFSZ at exact points of
the copy and of the save; a cleaner runs while writes are live. Like the pipeline, the writer
records the name of each copy before the copy exists, and recovery removes only recorded names
(``remove_recorded_temp``, as ``reconcile_planned_writes`` does).
"""

from __future__ import annotations

import json
import os
import random
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import audiogen
from audiogen import pcm_digest
import pytest

from libtagger.config import TagConfig
from libtagger.library.safewrite import TEMP_SUFFIX, remove_recorded_temp, temp_path_for
from libtagger.library.tags import read_genres, write_genres

REPO = Path(__file__).resolve().parent.parent
FORMATS = ("mp3", "flac", "m4a", "ogg", "wav")
KILLS = 25
SEED = 20240611
# The long genre makes the tag outgrow its padding, and on the way back leaves more padding than
# mutagen keeps, so every write moves the audio of an MP3 or FLAC: the moment an in-place write
# interrupted by a kill would corrupt it.
GENRES_A = ["Rock"]
GENRES_B = ["Jazz", "Blues", ("Experimental " * 8000).strip()]  # about 100 kB

# Writes GENRES_A, then GENRES_B, to every file, round and round until killed. Before each
# write it records the copy's name in the journal (argv[1]), as the pipeline records it in the
# database: a line written before a kill is in the kernel's hands, so it survives the kill.
WRITER = """
import json, os, sys
from libtagger.config import TagConfig
from libtagger.library.safewrite import temp_path_for
from libtagger.library.tags import write_genres

config = TagConfig(write_score=True)
lists = json.loads(sys.stdin.readline())
journal = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
print("ready", flush=True)
turn = 0
while True:
    for path in sys.argv[2:]:
        temp = temp_path_for(path)
        os.write(journal, (json.dumps([path, str(temp)]) + "\\n").encode())
        write_genres(path, lists[turn % 2], config, score=0.5, temp=temp)
    turn += 1
"""




def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def recorded(journal: Path) -> dict[Path, Path]:
    """Each file's newest recorded copy: the one its pending write's row would name."""
    newest: dict[Path, Path] = {}
    if journal.exists():
        for line in journal.read_text().splitlines(keepends=True):
            if line.endswith("\n"):  # a line cut by the kill names nothing yet created
                path, temp = json.loads(line)
                newest[Path(path)] = Path(temp)
    return newest


def run_writer_and_kill(paths: list[Path], journal: Path, delay: float,
                        meanwhile: Callable[[], object] | None = None) -> None:
    """Start the writer, let it write for ``delay`` seconds after start-up, kill -9 it.

    ``meanwhile`` is called over and over while the writer runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(journal), *map(str, paths)],
                            env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(json.dumps([GENRES_A, GENRES_B]).encode() + b"\n")
        proc.stdin.close()
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        assert ready and proc.stdout.readline() == b"ready\n", "writer did not start"
        end = time.monotonic() + delay
        while meanwhile is not None and time.monotonic() < end and proc.poll() is None:
            meanwhile()
        time.sleep(max(0.0, end - time.monotonic()))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        errors = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"writer stopped by itself: {errors.decode()}"


def test_kill_9_during_writes_never_damages_a_file(tmp_path):
    rng = random.Random(SEED)
    library = tmp_path / "library"
    library.mkdir()
    journal = tmp_path / "journal"
    signal_ = audiogen.music(20.0, seed=11)
    paths = [audiogen.write(library / f"song.{fmt}", signal_) for fmt in FORMATS]
    audio = {path: pcm_digest(path) for path in paths}
    seen: set[tuple[str, ...]] = set()
    killed_mid_write = 0
    for _ in range(KILLS):
        run_writer_and_kill(paths, journal, rng.uniform(0.0, 0.4))  # a round takes ~0.25 s
        leftovers = temp_files(library)
        killed_mid_write += bool(leftovers)
        # A kill leaves at most the copy of the write it interrupted, under the name recorded
        # for it; removing the recorded names (the next start's reconcile) leaves none.
        newest = recorded(journal)
        assert set(leftovers) <= set(newest.values()), "a copy under an unrecorded name"
        assert len(leftovers) <= 1, leftovers
        for temp in newest.values():
            assert remove_recorded_temp(temp) == (temp in leftovers)
        assert temp_files(library) == []
        for path in paths:
            assert pcm_digest(path) == audio[path], f"{path.name}: audio changed"
            genres = read_genres(path)
            assert genres in ([], GENRES_A, GENRES_B), f"{path.name}: {genres[:3]}"
            seen.add(tuple(genres))
    assert {tuple(GENRES_A), tuple(GENRES_B)} <= seen, "the writer never got going"
    assert killed_mid_write > 0, "no kill landed while a copy was being written"
    assert sorted(p.name for p in library.iterdir()) == sorted(p.name for p in paths)


def test_cleaning_up_during_live_writes_removes_only_stale_copies(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    journal = tmp_path / "journal"
    signal_ = audiogen.music(5.0, seed=12)
    paths = [audiogen.write(library / f"song.{fmt}", signal_) for fmt in FORMATS]
    stale = library / f".song.mp3.0badf00d{TEMP_SUFFIX}"  # recorded, left by a crash
    stale.write_bytes(b"left by a crash")
    lookalike = library / f".song.mp3.5ca1ab1e{TEMP_SUFFIX}"  # the user's, never recorded
    lookalike.write_bytes(b"not ours")
    removed: list[Path] = []
    live_seen: set[Path] = set()

    def clean() -> None:
        # Every name recorded so far, live writes among them: a cleaner that deleted a live
        # copy would make the writer fail and stop by itself.
        live_seen.update(temp_files(library))
        for temp in [stale, *recorded(journal).values()]:
            if remove_recorded_temp(temp):
                removed.append(temp)

    run_writer_and_kill(paths, journal, 1.5, clean)  # the writer survived every clean
    assert stale in removed
    assert live_seen - {stale, lookalike}, "the cleaner never ran beside a live copy"
    assert lookalike.read_bytes() == b"not ours"
    for path in paths:
        assert read_genres(path) in ([], GENRES_A, GENRES_B)
    for temp in recorded(journal).values():
        remove_recorded_temp(temp)
    assert temp_files(library) == [lookalike]


def write_until_killed_at(path: Path, genres: list[str], limit: int, temp: Path) -> int:
    """Run write_genres (editing the recorded copy ``temp``) in a forked child that the kernel
    kills (SIGXFSZ) the moment any write goes past ``limit`` bytes: a crash at an exact point
    of the copy or the save. Returns the signal that ended the child, or 0 if it finished."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            write_genres(path, genres, TagConfig(), temp=temp)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_crash_at_exact_points_of_copy_and_save(tmp_path, fmt):
    path = audiogen.write(tmp_path / f"song.{fmt}", audiogen.music(5.0, seed=3))
    size = path.stat().st_size
    original = path.read_bytes()
    points = [size // 3, size - 1, size + 100, size + 20_000]  # in the copy; in the save
    for limit in points:
        temp = temp_path_for(path)
        assert write_until_killed_at(path, GENRES_B, limit, temp) == signal.SIGXFSZ, limit
        assert path.read_bytes() == original, f"damaged by a crash at byte {limit}"
        assert temp_files(tmp_path) == [temp]
        assert remove_recorded_temp(temp)
        assert temp_files(tmp_path) == []
    write_genres(path, GENRES_B, TagConfig())  # and without a limit it works
    assert read_genres(path) == GENRES_B
