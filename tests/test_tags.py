"""Genre tags: real files of every format, real mutagen writes, read back raw and through us."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import resource
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import audiogen
from audiogen import pcm_digest
import mutagen
import pytest
from mutagen.aiff import AIFF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, COMM, ID3, TALB, TCON, TDAT, TDRC, TIT2, TPE1, TRCK, TYER
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from libtagger.config import LimitsConfig, TagConfig
from libtagger.errors import DecodeError, TagWriteError
from libtagger.library.safewrite import TEMP_SUFFIX, is_temp_file, remove_recorded_temp
from libtagger.library.tags import (
    SCORE_FIELD,
    plan_genres,
    read_genres,
    try_write_genres,
    write_genres,
)

FORMATS = ("mp3", "flac", "ogg", "opus", "m4a", "wav", "aiff")
ID3_FORMATS = ("mp3", "wav", "aiff")
VORBIS_FORMATS = ("flac", "ogg", "opus")
MP4_SCORE = "----:org.libtagger:GENRE_SCORE"
# mutagen's own File() picks by name on a tie (a FLAC named .mp3 fails as MP3), so the tests
# open each file with the class of the format they know it has.
KIND = {"mp3": MP3, "flac": FLAC, "ogg": OggVorbis, "opus": OggOpus, "m4a": MP4, "wav": WAVE,
        "aiff": AIFF}
COVER = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
CONFIG = TagConfig()


# --- real files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One 3-second file per format, never written to; tests work on copies."""
    folder = tmp_path_factory.mktemp("tag_sources")
    signal_ = audiogen.music(3.0, seed=7)
    return {fmt: audiogen.write(folder / f"src.{fmt}", signal_) for fmt in FORMATS}


@pytest.fixture(scope="module")
def source_pcm(sources) -> dict[str, str]:
    return {fmt: pcm_digest(path) for fmt, path in sources.items()}


def fresh(sources: dict[str, Path], fmt: str, folder: Path, name: str | None = None) -> Path:
    path = folder / (name or f"song.{fmt}")
    shutil.copyfile(sources[fmt], path)
    return path




def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


# --- raw ID3 bytes, parsed here rather than by mutagen ---------------------------------------


def syncsafe(raw: bytes) -> int:
    return sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(raw))


def id3_block(path: Path) -> bytes:
    """The whole ID3v2 tag: at the start of an MP3, or in the ID3 chunk of a WAV/AIFF."""
    data = path.read_bytes()
    start = 0
    if data[:4] in (b"RIFF", b"FORM"):
        order = "<" if data[:4] == b"RIFF" else ">"
        pos, start = 12, -1
        while pos + 8 <= len(data):
            size = struct.unpack(order + "I", data[pos + 4 : pos + 8])[0]
            if data[pos : pos + 4].lower() == b"id3 ":
                start = pos + 8
                break
            pos += 8 + size + (size & 1)
    assert start >= 0 and data[start : start + 3] == b"ID3", "no ID3v2 tag"
    return data[start : start + 10 + syncsafe(data[start + 6 : start + 10])]


def id3_frames(path: Path) -> tuple[int, list[tuple[bytes, bytes]]]:
    """(major version, [(frame id, payload bytes)]) exactly as stored."""
    block = id3_block(path)
    version, pos, frames = block[3], 10, []
    while pos + 10 <= len(block) and block[pos : pos + 4] != b"\0\0\0\0":
        raw = block[pos + 4 : pos + 8]
        size = syncsafe(raw) if version == 4 else int.from_bytes(raw, "big")
        frames.append((block[pos : pos + 4], block[pos + 10 : pos + 10 + size]))
        pos += 10 + size
    return version, frames


def is_ours(frame_id: bytes, payload: bytes) -> bool:
    return frame_id == b"TCON" or (frame_id == b"TXXX" and SCORE_FIELD.encode() in payload)


# --- tags the user already has ------------------------------------------------------------------


def add_other_tags(path: Path, fmt: str) -> None:
    """Title, artist, album, date, track, comment and a cover, the way each format keeps them."""
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    if fmt in ID3_FORMATS:
        for frame in (TIT2(encoding=3, text="Tïtle"), TPE1(encoding=3, text=["A", "B"]),
                      TALB(encoding=3, text="Album"), TDRC(encoding=3, text="2021-05-04"),
                      TRCK(encoding=3, text="3/12"),
                      COMM(encoding=3, lang="eng", desc="", text="a comment"),
                      APIC(encoding=3, mime="image/png", type=3, desc="front", data=COVER)):
            tags.add(frame)
    elif fmt in VORBIS_FORMATS:
        for key, value in (("TITLE", "Tïtle"), ("ARTIST", "A"), ("ALBUM", "Album"),
                           ("DATE", "2021-05-04"), ("TRACKNUMBER", "3"),
                           ("COMMENT", "a comment")):
            tags[key] = value
        picture = Picture()
        picture.type, picture.mime, picture.desc, picture.data = 3, "image/png", "front", COVER
        if fmt == "flac":
            audio.add_picture(picture)
        else:
            tags["METADATA_BLOCK_PICTURE"] = base64.b64encode(picture.write()).decode()
    else:
        tags.update({"\xa9nam": ["Tïtle"], "\xa9ART": ["A"], "\xa9alb": ["Album"],
                     "\xa9day": ["2021-05-04"], "trkn": [(3, 12)], "\xa9cmt": ["a comment"],
                     "covr": [MP4Cover(COVER, imageformat=MP4Cover.FORMAT_PNG)]})
    audio.save()


def other_tags(path: Path, fmt: str) -> object:
    """Everything a file holds besides our genre and score fields."""
    if fmt in ID3_FORMATS:
        version, frames = id3_frames(path)
        return version, sorted(f for f in frames if not is_ours(*f))
    audio = KIND[fmt](path)
    if fmt in VORBIS_FORMATS:
        pairs = [(k, v) for k, v in audio.tags if k.upper() not in ("GENRE", SCORE_FIELD)]
        pictures = [(p.type, p.mime, p.desc, p.data) for p in getattr(audio, "pictures", [])]
        return pairs, pictures
    return {k: v for k, v in audio.tags.items() if k not in ("\xa9gen", MP4_SCORE)}


def raw_genres(path: Path, fmt: str) -> tuple[object, ...]:
    """The genre field as the format stores it, read with mutagen directly."""
    if fmt in ID3_FORMATS:
        tags = KIND[fmt](path, translate=False).tags
        return tags.version[1], [f.text for f in tags.getall("TCON")]
    audio = KIND[fmt](path)
    if fmt in VORBIS_FORMATS:
        return ([v for k, v in audio.tags if k == "GENRE"],)
    return (audio.tags.get("\xa9gen"),)


# --- writing and reading every format --------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("genres", [["Rock"], ["Rock", "Hip-Hop", "R&B"]], ids=["one", "several"])
def test_write_and_read_back(sources, source_pcm, tmp_path, fmt, genres):
    path = fresh(sources, fmt, tmp_path)
    write_genres(path, genres, CONFIG)
    expected = {
        "mp3": (4, [genres]),  # FFmpeg wrote an ID3v2.4 tag; it stays v2.4: multi-value TCON
        "wav": (3, [["; ".join(genres)]]),  # no tag before: the configured v2.3, one string
        "aiff": (3, [["; ".join(genres)]]),
    }.get(fmt, (genres,))  # Vorbis: repeated GENRE fields; MP4: several ©gen values
    assert raw_genres(path, fmt) == expected
    assert read_genres(path) == genres
    assert pcm_digest(path) == source_pcm[fmt]
    assert temp_files(tmp_path) == []


def test_id3v24_tcon_is_null_separated_on_disk(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    write_genres(path, ["Rock", "Hip-Hop"], CONFIG)
    version, frames = id3_frames(path)
    assert version == 4
    assert [p for f, p in frames if f == b"TCON"] == [b"\x03Rock\x00Hip-Hop\x00"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_tags_cover_and_audio_untouched(sources, source_pcm, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    add_other_tags(path, fmt)
    before = other_tags(path, fmt)
    assert pcm_digest(path) == source_pcm[fmt]
    write_genres(path, ["Jazz", "Blues"], TagConfig(write_score=True), score=0.5)
    assert other_tags(path, fmt) == before
    assert pcm_digest(path) == source_pcm[fmt]
    assert read_genres(path) == ["Jazz", "Blues"]


@pytest.mark.parametrize("fmt", ID3_FORMATS)
def test_id3v23_tag_stays_v23_with_frames_byte_identical(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    if fmt == "mp3":
        mutagen.id3.delete(path)  # FFmpeg's v2.4 tag
    audio = mutagen.File(path)
    audio.add_tags()
    for frame in (TYER(encoding=0, text="1999"), TDAT(encoding=0, text="0405"),
                  TIT2(encoding=1, text="Tïtle"), TPE1(encoding=1, text=["A", "B"]),
                  TCON(encoding=0, text="(17)")):
        audio.tags.add(frame)
    audio.save(v2_version=3, v23_sep=None)
    version, frames_before = id3_frames(path)
    assert version == 3 and b"TYER" in dict(frames_before)
    assert read_genres(path) == ["Rock"]  # the ID3v1-style number
    write_genres(path, ["Jazz", "Blues"], TagConfig(id3_version=4))  # 4 is for new tags only
    version, frames_after = id3_frames(path)
    assert version == 3
    assert sorted(f for f in frames_after if not is_ours(*f)) == \
        sorted(f for f in frames_before if not is_ours(*f))
    assert [p for f, p in frames_after if f == b"TCON"] == [b"\x00Jazz; Blues\x00"]
    assert read_genres(path) == ["Jazz", "Blues"]


@pytest.mark.parametrize("fmt", ID3_FORMATS)
def test_id3v24_tag_stays_v24_with_tdrc_byte_identical(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags.add(TDRC(encoding=3, text="2021-05-04T10:11"))
    audio.save(v2_version=4)
    version, frames_before = id3_frames(path)
    write_genres(path, ["Jazz", "Blues"], TagConfig(id3_version=3))
    version, frames_after = id3_frames(path)
    assert version == 4
    tdrc = [p for f, p in frames_after if f == b"TDRC"]
    assert tdrc == [p for f, p in frames_before if f == b"TDRC"] and tdrc
    assert raw_genres(path, fmt) == (4, [["Jazz", "Blues"]])


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("fmt", ID3_FORMATS)
def test_file_without_id3_gets_configured_version(sources, tmp_path, fmt, version):
    path = fresh(sources, fmt, tmp_path)
    if fmt == "mp3":
        mutagen.id3.delete(path)
    write_genres(path, ["Rock", "Pop"], TagConfig(id3_version=version))
    text = ["Rock", "Pop"] if version == 4 else ["Rock; Pop"]
    assert raw_genres(path, fmt) == (version, [text])
    assert read_genres(path) == ["Rock", "Pop"]


def test_v23_reading_splits_on_the_configured_separator_only(sources, tmp_path):
    path = fresh(sources, "wav", tmp_path)
    write_genres(path, ["Rock/Pop"], TagConfig(id3_version=3))
    assert read_genres(path) == ["Rock/Pop"]
    assert read_genres(path, separator="/") == ["Rock", "Pop"]
    write_genres(path, ["Rock", "Pop"], TagConfig(id3_version=3, separator=" / "))
    assert raw_genres(path, "wav") == (3, [["Rock / Pop"]])
    assert read_genres(path, separator=" / ") == ["Rock", "Pop"]


def test_v24_single_value_is_not_split(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    write_genres(path, ["Rock; Pop"], CONFIG)
    assert read_genres(path) == ["Rock; Pop"]


def test_v23_genre_containing_the_separator_is_refused(sources, tmp_path):
    path = fresh(sources, "wav", tmp_path)
    digest = sha256(path)
    with pytest.raises(TagWriteError, match="read back"):
        write_genres(path, ["Rock; Pop", "Jazz"], CONFIG)
    assert sha256(path) == digest and temp_files(tmp_path) == []


def test_id3v1_trailer_kept_with_its_genre_updated(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    audio = mutagen.File(path)
    audio.tags.add(TIT2(encoding=3, text="Title"))
    audio.save(v1=2)  # mutagen adds an ID3v1 trailer made from the v2 frames
    trailer = bytearray(path.read_bytes()[-128:])
    trailer[97:125] = b"only in v1".ljust(28, b"\0")  # a v1 comment the v2 tag lacks
    path.write_bytes(path.read_bytes()[:-128] + bytes(trailer))
    write_genres(path, ["Jazz", "Rock"], CONFIG)
    after = path.read_bytes()[-128:]
    assert after[:127] == bytes(trailer[:127])
    assert after[127] == TCON.GENRES.index("Jazz")
    frames = dict(id3_frames(path)[1])
    assert b"COMM" not in frames  # the v1 fields were not merged into the v2 tag
    assert read_genres(path) == ["Jazz", "Rock"]


def test_id3v1_only_file(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    mutagen.id3.delete(path)
    title, artist_and_album = b"Old Title".ljust(30, b"\0"), b"\0" * 60
    v1 = b"TAG" + title + artist_and_album + b"1999" + b"\0" * 30 + bytes([17])  # 17: Rock
    path.write_bytes(path.read_bytes() + v1)
    assert read_genres(path) == ["Rock"]  # what a player shows
    write_genres(path, ["Jazz"], CONFIG)
    assert path.read_bytes()[-128:] == v1[:127] + bytes([TCON.GENRES.index("Jazz")])
    assert raw_genres(path, "mp3") == (3, [["Jazz"]])


def test_id3v22_tag_is_refused_since_mutagen_cannot_write_it(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    mutagen.id3.delete(path)

    def frame(frame_id: bytes, text: bytes) -> bytes:
        return frame_id + len(text).to_bytes(3, "big") + text

    frames = frame(b"TT2", b"\x00Old Title") + frame(b"TCO", b"\x00(17)")
    size = bytes((len(frames) >> s) & 0x7F for s in (21, 14, 7, 0))
    path.write_bytes(b"ID3\x02\x00\x00" + size + frames + path.read_bytes())
    assert read_genres(path) == ["Rock"]
    before = path.read_bytes()
    # Saving would convert every frame to v2.3 (regression: it did, silently): refused.
    with pytest.raises(TagWriteError, match="ID3v2.2 tag"):
        write_genres(path, ["Jazz"], CONFIG)
    assert path.read_bytes() == before and ID3(path).version == (2, 2, 0)


def test_an_id3v24_footer_tag_is_refused_untouched(sources, tmp_path):
    # A v2.4 tag with a footer ("3DI") after it: mutagen rewrites the tag but leaves the old
    # footer in the audio stream, so the audio bytes would change (regression: they did).
    path = fresh(sources, "mp3", tmp_path)
    mutagen.id3.delete(path)
    text = b"\x03Old Title"
    frames = b"TIT2" + bytes((len(text) >> s) & 0x7F for s in (21, 14, 7, 0)) + b"\0\0" + text
    size = bytes((len(frames) >> s) & 0x7F for s in (21, 14, 7, 0))
    header = b"ID3\x04\x00\x10" + size
    path.write_bytes(header + frames + b"3DI" + header[3:] + path.read_bytes())
    before = path.read_bytes()
    with pytest.raises(TagWriteError, match="audio bytes would differ"):
        write_genres(path, ["Jazz"], CONFIG)
    assert path.read_bytes() == before


# --- policies, counts and our score ----------------------------------------------------------


@pytest.mark.parametrize(("existing", "ours", "policy", "expected"), [
    ([], ["Rock"], "fill_empty", ["Rock"]),
    (["Jazz"], ["Rock"], "fill_empty", None),
    ([], [], "fill_empty", None),
    (["Jazz"], ["Rock", "Pop"], "replace", ["Rock", "Pop"]),
    (["Rock", "Pop"], ["Rock", "Pop"], "replace", None),
    (["hip hop"], ["Hip-Hop"], "replace", ["Hip-Hop"]),
    ([], ["Rock"], "replace", ["Rock"]),
    (["Jazz"], [], "replace", None),
    (["Jazz"], ["Rock"], "append", ["Jazz", "Rock"]),
    (["Hip Hop", "R n B"], ["Hip-Hop", "R&B", "Soul"], "append", ["Hip Hop", "R n B", "Soul"]),
    (["rock"], ["Rock"], "append", None),
    ([], ["Rock", "ROCK"], "append", ["Rock"]),
])
def test_plan_genres(existing, ours, policy, expected):
    assert plan_genres(existing, ours, policy) == expected


def test_plan_genres_unknown_policy():
    with pytest.raises(ValueError, match="unknown tag policy"):
        plan_genres([], ["Rock"], "merge")


@pytest.mark.parametrize(("policy", "expected"), [
    ("fill_empty", ["Jazz"]), ("replace", ["Rock", "Soul"]), ("append", ["Jazz", "Rock", "Soul"]),
])
def test_policy_on_a_file(sources, tmp_path, policy, expected):
    path = fresh(sources, "flac", tmp_path)
    write_genres(path, ["Jazz"], CONFIG)
    config = TagConfig(policy=policy)
    planned = plan_genres(read_genres(path, config.separator), ["Rock", "Soul"], config.policy)
    if planned is not None:
        write_genres(path, planned, config)
    assert read_genres(path) == expected


def test_writes_every_genre_it_is_given(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    genres = ["Rock", "Pop", "Indie", "Jazz", "Blues", "Folk"]
    write_genres(path, genres, TagConfig(max_genres=1))  # max_genres is the caller's business
    assert read_genres(path) == genres


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_list_removes_the_genre(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    write_genres(path, ["Rock"], CONFIG)
    write_genres(path, [], CONFIG)
    assert read_genres(path) == []
    assert raw_genres(path, fmt)[-1] in ([], None)


def score_field(path: Path, fmt: str) -> list[str]:
    audio = mutagen.File(path)
    if fmt in ID3_FORMATS:
        return [t for f in audio.tags.getall(f"TXXX:{SCORE_FIELD}") for t in f.text]
    if fmt in VORBIS_FORMATS:
        return [v for k, v in audio.tags if k == SCORE_FIELD]
    return [bytes(v).decode() for v in audio.tags.get(MP4_SCORE, [])]


@pytest.mark.parametrize("fmt", FORMATS)
def test_score_field(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    write_genres(path, ["Rock"], CONFIG, score=0.8123)
    assert score_field(path, fmt) == []  # write_score is off by default
    write_genres(path, ["Rock"], TagConfig(write_score=True), score=0.8123)
    assert score_field(path, fmt) == ["0.812"]
    write_genres(path, ["Pop"], CONFIG)
    assert score_field(path, fmt) == ["0.812"]  # off: the field is left alone
    write_genres(path, ["Pop"], TagConfig(write_score=True), score=None)
    assert score_field(path, fmt) == []  # on without a score: a stale score is removed
    assert read_genres(path) == ["Pop"]


def test_bad_genre_values_are_refused(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    for bad in (["Rock", " "], ["Ro\0ck"]):
        with pytest.raises(ValueError):
            write_genres(path, bad, CONFIG)
    assert sha256(path) == sha256(sources["mp3"])


# --- detection and bad files -----------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "name"), [("flac", "song.mp3"), ("ogg", "song.m4a"),
                                          ("wav", "song.flac"), ("mp3", "song.ogg")])
def test_content_decides_the_format_not_the_name(sources, source_pcm, tmp_path, fmt, name):
    path = fresh(sources, fmt, tmp_path, name)
    write_genres(path, ["Rock", "Pop"], CONFIG)
    assert path.read_bytes()[:4] == sources[fmt].read_bytes()[:4]
    fresh_copy = fresh(sources, fmt, tmp_path)
    write_genres(fresh_copy, ["Rock", "Pop"], CONFIG)
    assert raw_genres(path, fmt) == raw_genres(fresh_copy, fmt)
    assert read_genres(path) == ["Rock", "Pop"]
    assert pcm_digest(path) == source_pcm[fmt]


def test_flac_named_mp3_has_no_id3_tag(sources, tmp_path):
    path = fresh(sources, "flac", tmp_path, "song.mp3")
    write_genres(path, ["Rock"], CONFIG)
    assert FLAC(path).tags["GENRE"] == ["Rock"]
    with pytest.raises(mutagen.id3.ID3NoHeaderError):
        ID3(path)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.mp3", b"", "empty file"),
    ("noise.mp3", bytes(range(256)) * 400, "not a readable MP3"),
    ("noise.flac", b"\x01\x02" * 50_000, "not a readable FLAC"),
    ("notes.txt", b"a shopping list, not a song\n" * 100, "not a format we tag"),
    ("fake.m4a", b"\0\0\0\x18ftypM4A " + b"\0" * 5000, "not a readable MP4"),
])
def test_unreadable_files_give_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=message):
        read_genres(path)
    with pytest.raises(DecodeError, match=message):
        write_genres(path, ["Rock"], CONFIG)
    assert not try_write_genres(path, ["Rock"], CONFIG)
    assert path.read_bytes() == content
    assert temp_files(tmp_path) == []


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DecodeError, match="No such file"):
        read_genres(tmp_path / "gone.mp3")
    with pytest.raises(TagWriteError, match="No such file"):
        write_genres(tmp_path / "gone.mp3", ["Rock"], CONFIG)
    with pytest.raises(TagWriteError, match="not a regular file"):
        write_genres(tmp_path, ["Rock"], CONFIG)


@pytest.mark.parametrize("fmt", ["mp3", "flac", "m4a"])
def test_configured_tag_limits_refuse_what_the_defaults_accept(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    audio = KIND[fmt](path)
    if audio.tags is None:
        audio.add_tags()
    for i in range(50):  # 50 tag items: ordinary under the default 10 000, not under 20
        if fmt == "mp3":
            audio.tags.add(COMM(encoding=3, lang="eng", desc=f"note {i}", text=["x"]))
        elif fmt == "m4a":
            audio.tags[f"----:org.test:NOTE{i}"] = [b"x"]
        else:
            audio.tags[f"NOTE{i}"] = ["x"]
    audio.save()
    digest = sha256(path)
    assert read_genres(path) == [] and read_genres(path, limits=LimitsConfig()) == []
    tight = LimitsConfig(max_tag_items=20)
    with pytest.raises(DecodeError, match="refused unread"):
        read_genres(path, limits=tight)
    with pytest.raises(DecodeError, match="refused unread"):
        write_genres(path, ["Rock"], CONFIG, limits=tight)
    assert sha256(path) == digest and temp_files(tmp_path) == []
    write_genres(path, ["Rock"], CONFIG, limits=LimitsConfig(max_tag_items=1000))
    assert read_genres(path) == ["Rock"]


# --- the file on disk: links, permissions, refusals, a full disk ----------------------------


def test_symlink_is_followed_and_kept(sources, tmp_path):
    real = fresh(sources, "mp3", tmp_path, "real.mp3")
    link = tmp_path / "link.mp3"
    link.symlink_to(real.name)
    write_genres(link, ["Rock"], CONFIG)
    assert link.is_symlink() and read_genres(real) == ["Rock"]


def test_hard_link_becomes_a_file_of_its_own(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    other = tmp_path / "other.mp3"
    os.link(path, other)
    write_genres(path, ["Rock"], CONFIG)
    assert read_genres(path) == ["Rock"]
    assert sha256(other) == sha256(sources["mp3"])


@pytest.mark.skipif(os.geteuid() != 0, reason="changing the owner needs root")
def test_owner_group_and_mode_are_kept(sources, tmp_path):
    path = fresh(sources, "flac", tmp_path)
    os.chown(path, 1234, 2345)
    os.chmod(path, 0o640)
    write_genres(path, ["Rock"], CONFIG)
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o640)


def assert_refused(path: Path, match: str) -> None:
    """A refused write raises TagWriteError, leaves the bytes as they were, and no copy."""
    digest = sha256(path)
    with pytest.raises(TagWriteError, match=match) as info:
        write_genres(path, ["Rock"], CONFIG)
    assert info.value.path == os.fspath(path)
    assert not try_write_genres(path, ["Rock"], CONFIG)
    assert sha256(path) == digest
    assert temp_files(path.parent) == []


def test_read_only_file_is_refused_even_for_root(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    os.chmod(path, 0o444)
    assert_refused(path, "read-only file")


def test_read_only_folder_is_refused(sources, tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    path = fresh(sources, "mp3", folder)
    folder.chmod(0o555)
    try:
        assert_refused(path, "read-only folder")
    finally:
        folder.chmod(0o755)


def test_locked_file_is_refused(sources, tmp_path):
    path = fresh(sources, "mp3", tmp_path)
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert_refused(path, "locked by another process")
    write_genres(path, ["Rock"], CONFIG)  # free again once the lock is gone
    assert read_genres(path) == ["Rock"]


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of a given size; skip where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                 str(point)], capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here; test_file_size_limit covers a full disk")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


@pytest.mark.parametrize("stage", ["copy", "save"])
def test_full_disk(sources, small_disk, stage):
    size = sources["mp3"].stat().st_size
    page = 4096
    room = size + 2 * page if stage == "copy" else 2 * size + 8 * page
    disk = small_disk(room)
    path = fresh(sources, "mp3", disk)
    genre = "Experimental " * 5000 if stage == "save" else "Rock"  # 65 kB: the tag must grow
    digest = sha256(path)
    with pytest.raises(TagWriteError, match="disk full") as info:
        write_genres(path, [genre], CONFIG)
    assert "not changed" in info.value.reason
    assert sha256(path) == digest
    assert temp_files(disk) == []


def _write_in_child(path: Path, genre: str, limit: int) -> str:
    """Run write_genres in a forked child under RLIMIT_FSIZE; its outcome as text."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        outcome = "no error"
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so writes fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            write_genres(path, [genre], CONFIG)
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(writer, outcome.encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


@pytest.mark.parametrize("stage", ["copy", "save"])
def test_file_size_limit(sources, tmp_path, stage):
    path = fresh(sources, "flac", tmp_path)
    size = path.stat().st_size
    limit = size // 2 if stage == "copy" else size + 1000
    genre = "Experimental " * 5000 if stage == "save" else "Rock"
    digest = sha256(path)
    outcome = _write_in_child(path, genre, limit)
    assert outcome.startswith("TagWriteError") and "EFBIG" in outcome, outcome
    assert sha256(path) == digest
    assert temp_files(tmp_path) == []


# --- leftovers from interrupted writes -------------------------------------------------------


def test_remove_recorded_temp(sources, tmp_path):
    song = fresh(sources, "mp3", tmp_path)
    stale = tmp_path / f".song.mp3.0badf00d{TEMP_SUFFIX}"
    live = tmp_path / f".song.mp3.5ca1ab1e{TEMP_SUFFIX}"
    hidden = tmp_path / ".song.mp3.keep"
    for path in (stale, live, hidden):
        path.write_bytes(b"x")
    assert is_temp_file(stale) and not is_temp_file(hidden) and not is_temp_file(song)
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a write in progress
        assert not remove_recorded_temp(live)
        assert remove_recorded_temp(stale)
    assert live.exists() and hidden.exists() and song.exists() and not stale.exists()
    assert remove_recorded_temp(live) and not live.exists()
    assert not remove_recorded_temp(stale)  # gone already
    link = tmp_path / f".link.mp3.feedface{TEMP_SUFFIX}"
    link.symlink_to(song)
    assert not remove_recorded_temp(link)  # a symlink under a recorded name is not our copy
    assert link.is_symlink() and song.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_latin_genres(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    genres = ["ロック", "Música Popular Brasileira"]
    write_genres(path, genres, CONFIG)
    assert read_genres(path) == genres


@pytest.mark.parametrize("fmt", ["flac", "m4a"])
def test_file_without_any_tags(sources, tmp_path, fmt):
    path = fresh(sources, fmt, tmp_path)
    KIND[fmt](path).delete()
    assert not KIND[fmt](path).tags
    write_genres(path, ["Rock"], TagConfig(write_score=True), score=0.25)
    assert read_genres(path) == ["Rock"]
    assert score_field(path, fmt) == ["0.250"]
