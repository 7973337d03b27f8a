"""The pre-check refuses hostile tags and boxes fast, in bounded memory, and passes real files."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libtagger.analysis.precheck import MiB, TagLimits, check_file
from tests.hostile.generate import ENCODINGS, Case, encode, generate_all

REPO = Path(__file__).resolve().parent.parent
REPRODUCERS = Path(__file__).resolve().parent.parent.parent / "shared" / "hostile"  # ../shared
LIMITS = TagLimits()
# Per file, best of a few runs. The slowest hostile file takes ~20 ms; the bound is a guard
# against a walk that reads or loops over a whole flood (seconds), not a speed figure, so it
# leaves room for a loaded CI machine.
BUDGET_MS = 500.0

# What each refused file must be refused for: (class, file name) -> part of the reason.
# A new "refuse-precheck" case fails test_every_refused_case_has_an_expected_reason until
# it is listed here.
REASONS = {
    ("picture-20MB", "cover.mp3"): "ID3v2 tag of 20 MB (limit 16 MB)",
    ("picture-20MB", "cover.flac"): "FLAC picture of 12 MB (limit 10 MB)",
    ("picture-20MB", "cover.m4a"): "MP4 tag box 'udta' of 20 MB (limit 16 MB)",
    ("padding-20MB", "padded.mp3"): "ID3v2 tag of 20 MB (limit 16 MB)",
    ("padding-20MB", "padded.flac"): "FLAC metadata of more than 16 MB (limit 16 MB)",
    ("id3-frame-flood", "txxx-v23.mp3"): "ID3v2 tag with more than 10,000 frames",
    ("id3-frame-flood", "txxx-v24.mp3"): "ID3v2 tag with more than 10,000 frames",
    ("id3-frame-flood", "comm.mp3"): "ID3v2 tag with more than 10,000 frames",
    ("id3-frame-flood", "appended-v24.mp3"): "ID3v2 tag with more than 10,000 frames",
    ("vorbis-comment-flood", "comments.flac"): "FLAC metadata with 20,000 Vorbis comments",
    ("vorbis-comment-flood", "id3-then-comments.flac"): "FLAC metadata with 20,000 Vorbis comments",
    ("vorbis-comment-flood", "comments.ogg"): "Ogg stream with 20,000 Vorbis comments",
    ("vorbis-comment-flood", "comments.opus"): "Ogg stream with 20,000 Vorbis comments",
    ("item-flood", "ape-items.mp3"): "APEv2 tag with 20,000 items (limit 10,000)",
    ("item-flood", "ilst-items.m4a"): "MP4 box tree with more than 10,000 boxes",
    ("chunk-flood", "id3-chunk.wav"): "ID3v2 tag with more than 10,000 frames",
    ("chunk-flood", "id3-chunk.aiff"): "ID3v2 tag with more than 10,000 frames",
    ("chunk-flood", "many-chunks.wav"): "WAV file with more than 10,000 chunks",
    ("many-floods", "comment-blocks.flac"): "with more than 20,000 headers in all",
    ("many-floods", "id3-chunks.wav"): "with more than 20,000 headers in all",
    ("zlib-bomb", "v24-declared.mp3"): "ID3v2 frame TXXX declares 256 MB once decompressed",
    ("zlib-bomb", "v24-lying.mp3"): "ID3v2 frame TXXX is compressed and could inflate to",
    ("zlib-bomb", "v23-declared.mp3"): "ID3v2 frame TXXX declares 1,024 MB once decompressed",
    ("mp4-box-abuse", "free-1000.m4a"): "MP4 box tree with 1,001 free boxes (limit 100)",
    ("mp4-box-abuse", "moov-4GB.m4a"): "MP4 box 'moov' of 4,096 MB (limit 64 MB)",
    ("mp4-box-abuse", "nested-100.m4a"): "MP4 boxes nested more than 32 deep",
    ("mp4-box-abuse", "tiny-box.m4a"): "MP4 box 'free' with size 3",
    ("chunk-size-lie", "list-4GB.wav"): "WAV chunk 'LIST' of 4,096 MB (limit 64 MB)",
    ("chunk-size-lie", "appl-4GB.aiff"): "AIFF chunk 'APPL' of 4,096 MB (limit 64 MB)",
}
REPRODUCER_REASONS = {
    "free_1000_atoms.m4a": "MP4 box tree with 1,001 free boxes (limit 100)",
    "v24_zlib_bomb_1GiB.mp3": "ID3v2 frame TXXX declares 256 MB once decompressed (limit 16 MB)",
    "txxx100k.mp3": "ID3v2 tag with more than 10,000 frames (limit 10,000)",
}


def check_path(path: Path, limits: TagLimits = LIMITS) -> str | None:
    """check_file on a file on disk."""
    with open(path, "rb") as fileobj:
        return check_file(fileobj, os.path.getsize(path), limits)


def is_plain_file(case: Case) -> bool:
    """A regular file the test can open (not a FIFO, socket or mode-000 file)."""
    return case.path.is_file() and case.name != "unreadable"


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> list[Case]:
    """The fast hostile set, generated once."""
    return generate_all(tmp_path_factory.mktemp("hostile"), seed=0, fast=True)


def by_expect(cases: list[Case], expect: str) -> list[Case]:
    """The openable cases with one expected outcome."""
    found = [c for c in cases if c.expect == expect and is_plain_file(c)]
    assert found, f"the generator made no {expect!r} case"
    return found


# --- hostile files are refused, for the right reason ---------------------------------------------


def test_every_refused_case_has_an_expected_reason(cases):
    refused = {(c.name, c.path.name) for c in cases if c.expect == "refuse-precheck"}
    assert refused == set(REASONS)


def test_hostile_tags_are_refused_with_their_reason(cases):
    wrong = {}
    for case in by_expect(cases, "refuse-precheck"):
        reason = check_path(case.path)
        if reason is None or REASONS[case.name, case.path.name] not in reason:
            wrong[case.path.name] = reason
    assert not wrong


@pytest.mark.skipif(not REPRODUCERS.is_dir(), reason="the shared reproducers are not here")
@pytest.mark.parametrize("name", sorted(REPRODUCER_REASONS))
def test_reproducers_are_refused(name):
    assert check_path(REPRODUCERS / name) == REPRODUCER_REASONS[name]


def test_ordinary_cases_pass(cases):
    refused = {c.path.name: check_path(c.path) for c in by_expect(cases, "ok")}
    assert {name: r for name, r in refused.items() if r is not None} == {}


def test_damaged_cases_never_raise_and_are_quick(cases):
    for case in by_expect(cases, "any"):
        start = time.perf_counter()
        reason = check_path(case.path)
        assert (time.perf_counter() - start) * 1000 < BUDGET_MS, case.path
        assert reason is None or isinstance(reason, str)


def test_a_file_shorter_than_its_stated_size_passes(cases):
    # The caller's size may be stale (the file shrank since stat): a truncated view, not a refusal.
    for case in by_expect(cases, "ok"):
        with open(case.path, "rb") as fileobj:
            assert check_file(fileobj, os.path.getsize(case.path) * 2 + 100, LIMITS) is None


# --- quick and bounded ---------------------------------------------------------------------------

_MEASURE = """
import json, os, resource, sys, time
from libtagger.analysis.precheck import TagLimits, check_file
limits = TagLimits()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = {}
for path in sys.argv[1:]:
    best = float("inf")
    for _ in range(3):
        with open(path, "rb") as f:
            start = time.perf_counter()
            check_file(f, os.path.getsize(path), limits)
            best = min(best, time.perf_counter() - start)
    times[path] = best * 1000
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kb": after - before, "ms": times}))
"""


def test_hostile_checks_are_fast_and_small_in_a_fresh_process(cases):
    paths = [str(c.path) for c in by_expect(cases, "refuse-precheck")]
    if REPRODUCERS.is_dir():
        paths += [str(REPRODUCERS / name) for name in REPRODUCER_REASONS]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _MEASURE, *paths], env=env, check=True,
                            capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    assert report["grew_kb"] < 100 * 1024  # ru_maxrss is in KiB on Linux
    slow = {Path(p).name: round(ms, 1) for p, ms in report["ms"].items() if ms > BUDGET_MS}
    assert slow == {}


def test_a_check_allocates_little_even_for_20_MB_tags(cases):
    # Reading a whole tag, picture or padding would show here; the window is 64 KB.
    tracemalloc.start()
    try:
        for case in by_expect(cases, "refuse-precheck") + by_expect(cases, "ok"):
            tracemalloc.reset_peak()
            check_path(case.path)
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < 2 * MiB, (case.path.name, peak)
    finally:
        tracemalloc.stop()


# --- real files with ordinary tags written by mutagen --------------------------------------------

PICTURE = b"\xff\xd8\xff\xe0" + np.random.default_rng(7).bytes(2 * MiB - 4)


def _padding(info) -> int:
    """Ask mutagen for 1 MB of padding."""
    return MiB


def write_ordinary_tags(path: Path) -> Path:
    """Tag a real clip as a user's tagger would: a few text tags, a 2 MB cover, 1 MB padding."""
    import mutagen
    from mutagen.flac import Picture
    from mutagen.id3 import APIC, ID3, TALB, TCON, TIT2, TPE1
    from mutagen.mp4 import MP4Cover

    fmt = path.suffix[1:]
    audio = mutagen.File(path)
    if fmt in ("mp3", "wav", "aiff"):
        if audio.tags is None:
            audio.add_tags()
        tags: ID3 = audio.tags
        for frame in (TIT2(text="Song"), TPE1(text="Band"), TALB(text="Album"),
                      TCON(text="Jazz"), APIC(mime="image/jpeg", type=3, data=PICTURE)):
            tags.add(frame)
    elif fmt == "m4a":
        audio.update({"\xa9nam": "Song", "\xa9ART": "Band", "\xa9alb": "Album", "\xa9gen": "Jazz",
                      "covr": [MP4Cover(PICTURE, MP4Cover.FORMAT_JPEG)]})
    else:
        audio.update({"title": "Song", "artist": "Band", "album": "Album", "genre": "Jazz"})
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/jpeg", PICTURE
        if fmt == "flac":
            audio.add_picture(picture)
        else:
            audio["metadata_block_picture"] = base64.b64encode(picture.write()).decode("ascii")
    audio.save(padding=_padding)
    return path


@pytest.fixture(scope="module")
def ordinary_files(tmp_path_factory) -> list[Path]:
    """A real clip in every format, with ordinary tags."""
    folder = tmp_path_factory.mktemp("ordinary")
    paths = []
    for fmt in ENCODINGS:
        path = folder / f"tagged.{fmt}"
        path.write_bytes(encode(fmt))
        paths.append(write_ordinary_tags(path))
    return paths


def test_ordinary_tagged_files_pass(ordinary_files):
    assert {p.name: check_path(p) for p in ordinary_files} == {p.name: None for p in ordinary_files}


@pytest.mark.parametrize("tight", [
    TagLimits(max_tag_bytes=MiB),  # the 1 MB padding (and the cover) fill more than that
    TagLimits(max_picture_bytes=MiB),  # the 2 MB cover
    TagLimits(max_frames=2),  # five tags
], ids=["tag-bytes", "picture-bytes", "frames"])
def test_ordinary_files_are_measured_not_waved_through(ordinary_files, tight):
    # The same files under a limit they exceed: proof that each format's check sees them.
    passed = [p.name for p in ordinary_files if check_path(p, tight) is None]
    assert passed == []


# --- arbitrary input -----------------------------------------------------------------------------

_HEADS: list[bytes] = []


def real_heads() -> list[bytes]:
    """The first 8 KB of a real clip in every format (made once)."""
    if not _HEADS:
        _HEADS.extend(encode(fmt, seconds=0.2)[: 8 * 1024] for fmt in ENCODINGS)
    return _HEADS


small_limits = st.builds(TagLimits, **{
    field: st.integers(0, 64) for field in
    ("max_tag_bytes", "max_picture_bytes", "max_frames", "max_atoms", "max_free_atoms",
     "max_depth", "max_box_bytes", "max_inflated_bytes")
})


# No tag, a v2.4 tag of 32 bytes, a v2.3 tag with an extended header: headers before the format.
ID3_PREFIXES = [b"", b"ID3\x04\x00\x00\x00\x00\x00\x20", b"ID3\x03\x00\x40\x00\x00\x02\x00"]
# The time budget is asserted per call; hypothesis's own deadline would count shrinking too.
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_checked(data: bytes, size: int, limits: TagLimits) -> None:
    """check_file returns None or a reason, within the time budget."""
    start = time.perf_counter()
    reason = check_file(io.BytesIO(data), size, limits)
    assert (time.perf_counter() - start) * 1000 < BUDGET_MS
    assert reason is None or (isinstance(reason, str) and reason)


@FUZZ
@given(data=st.binary(max_size=4096), size_delta=st.integers(-64, 64),
       limits=st.one_of(st.just(LIMITS), small_limits))
def test_arbitrary_bytes_never_raise(data, size_delta, limits):
    run_checked(data, max(0, len(data) + size_delta), limits)


@FUZZ
@given(which=st.integers(0, len(ENCODINGS) - 1),
       edits=st.lists(st.tuples(st.integers(0, 8 * 1024 - 1), st.integers(0, 255)), max_size=16),
       prefix=st.sampled_from(ID3_PREFIXES),
       limits=st.one_of(st.just(LIMITS), small_limits))
def test_mutated_real_headers_never_raise(which, edits, prefix, limits):
    data = bytearray(prefix + real_heads()[which])
    for at, value in edits:
        data[at % len(data)] = value
    run_checked(bytes(data), len(data), limits)
