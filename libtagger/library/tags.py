"""Genre tags in audio files: read them, plan a change, write it without ever damaging a file.

Each tag family (ID3, Vorbis comments, MP4 atoms) is a small class that declares the mutagen
file types it covers and how it keeps genres; nothing else branches on the format. mutagen edits
files in place, so a write edits a copy and lets :mod:`libtagger.library.safewrite` put it in place of
the file: a crash, a full disk or a kill -9 leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import mutagen
from mutagen.aiff import AIFF
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TCON, TXXX, Encoding
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from libtagger.analysis.audio import AudioFile, FrontEnd, check_tags, open_regular
from libtagger.config import TAG_POLICIES, LimitsConfig, TagConfig
from libtagger.errors import DecodeError, FileError, TagWriteError
from libtagger.library.guards import Snapshot
from libtagger.library.safewrite import StrPath, failure_reason, locked_original, replace_with_edited_copy
from libtagger.analysis.vote import normalise_genre

log = logging.getLogger(__name__)

SCORE_FIELD = "LIBTAGGER_GENRE_SCORE"
"""Name of our score field (ID3 TXXX description, Vorbis comment key)."""


class TagFamily:
    """How one family of tags keeps genres; each subclass declares its parts."""

    kinds: ClassVar[tuple[type[mutagen.FileType], ...]] = ()
    """The mutagen file types whose genres live in this family of tags."""
    read_options: ClassVar[Mapping[str, Any]] = {}
    """Keyword arguments for mutagen when loading a file only to read it."""
    write_options: ClassVar[Mapping[str, Any]] = {}
    """Keyword arguments for mutagen when loading a file that will be saved."""
    text_keys: ClassVar[Mapping[str, str]] = {}
    """Where this family keeps the artist, title and album (read for ``query``)."""

    def text(self, audio: Any, field: str) -> str | None:
        """One text field (artist, title, album) of the loaded file, if it has it."""
        tags = audio.tags
        key = self.text_keys.get(field)
        if tags is None or key is None or key not in tags:
            return None
        value = tags[key]
        values = getattr(value, "text", value)
        text = "; ".join(str(v) for v in values) if isinstance(values, list) else str(values)
        return text.strip() or None

    def genres(self, audio: Any, separator: str) -> list[str]:
        """The genres the loaded file holds."""
        raise NotImplementedError

    def set_genres(self, audio: Any, genres: list[str], config: TagConfig) -> None:
        """Replace the genres in the loaded file (an empty list removes them)."""
        raise NotImplementedError

    def set_score(self, audio: Any, score: float | None, config: TagConfig) -> None:
        """Set our score field, or remove it when there is no score."""
        raise NotImplementedError

    def save(self, audio: Any, config: TagConfig) -> None:
        """Write the edited tags back into the file mutagen loaded."""
        audio.save()

    def refuse(self, audio: Any, path: StrPath) -> None:
        """Raise TagWriteError when this file's tags cannot be rewritten exactly."""

    def audio_fingerprint(self, path: StrPath, source: StrPath, limits: LimitsConfig) -> str:
        """What must be equal before and after a tag write: the compressed audio packets.

        Raises:
            TagWriteError: the audio cannot be demuxed.
        """
        return _audio_hash(path, source, limits)


class ID3Genres(TagFamily):
    """ID3v2 TCON in an ID3 chunk (WAV, AIFF); an existing tag keeps its version."""

    kinds: ClassVar[tuple[type[mutagen.FileType], ...]] = (WAVE, AIFF)
    text_keys: ClassVar[Mapping[str, str]] = {"artist": "TPE1", "title": "TIT2", "album": "TALB"}
    # translate=False keeps every frame as stored; saving in the tag's own version then writes
    # them back unchanged (translating would turn TYER/TDAT into TDRC, then back, lossily).
    read_options: ClassVar[Mapping[str, Any]] = {"translate": False}
    # Without load_v1=False an ID3v1 tag's fields would be merged into the v2 tag on save.
    write_options: ClassVar[Mapping[str, Any]] = {"translate": False, "load_v1": False}

    def genres(self, audio: Any, separator: str) -> list[str]:
        tags: ID3 | None = audio.tags
        if tags is None:
            return []
        if tags.version < (2, 3, 0):
            tags.update_to_v24()  # ID3v2.2/v1 frames have other names; this is in memory only
        values = [genre for frame in tags.getall("TCON") for genre in frame.genres]
        if tags.version < (2, 4, 0):  # v2.3 holds one string; we joined several with separator
            values = [part for value in values for part in value.split(separator)]
        return _cleaned(values)

    def set_genres(self, audio: Any, genres: list[str], config: TagConfig) -> None:
        tags = self._tags(audio, config)
        tags.delall("TCON")
        if not genres:
            return
        if self._version(tags, config) == 4:
            tags.add(TCON(encoding=Encoding.UTF8, text=genres))
        else:
            text = config.separator.join(genres)
            tags.add(TCON(encoding=_v23_encoding(text), text=[text]))

    def set_score(self, audio: Any, score: float | None, config: TagConfig) -> None:
        tags = self._tags(audio, config)
        tags.delall(f"TXXX:{SCORE_FIELD}")
        if score is not None:
            tags.add(TXXX(encoding=Encoding.LATIN1, desc=SCORE_FIELD, text=[_score_text(score)]))

    def refuse(self, audio: Any, path: StrPath) -> None:
        tags: ID3 | None = audio.tags
        if tags is not None and tags.version[:2] == (2, 2):
            raise TagWriteError(path, "ID3v2.2 tag: mutagen can only save it by converting "
                                      "every frame to v2.3; not changed")

    def save(self, audio: Any, config: TagConfig) -> None:
        # v23_sep=None keeps other frames' multiple values as they were (NUL-separated).
        audio.save(v2_version=self._version(audio.tags, config), v23_sep=None)

    def _tags(self, audio: Any, config: TagConfig) -> ID3:
        """The file's ID3 tag, made in the configured version if there is none."""
        tags: ID3 | None = audio.tags
        if tags is None:
            audio.add_tags()
            tags = audio.tags
            tags.version = (2, config.id3_version, 0)
        elif tags.version < (2, 3, 0):  # mutagen cannot write v2.2: convert every frame
            if config.id3_version == 3:
                tags.update_to_v23()
            else:
                tags.update_to_v24()
        return tags

    @staticmethod
    def _version(tags: ID3, config: TagConfig) -> int:
        """The ID3v2 version to save in: the tag's own, unless mutagen cannot write it."""
        major = tags.version[1] if tags.version[0] == 2 else 0
        return major if major in (3, 4) else config.id3_version


class MP3Genres(ID3Genres):
    """ID3v2 TCON at the start of an MP3; an ID3v1 trailer keeps all but its genre byte."""

    kinds: ClassVar[tuple[type[mutagen.FileType], ...]] = (MP3,)

    def audio_fingerprint(self, path: StrPath, source: StrPath, limits: LimitsConfig) -> str:
        # The packets, and the exact bytes between the ID3v2 tag (with its footer, if any) and
        # an ID3v1 trailer: a decoder reads the LAME/Xing frame there (gapless trimming), which
        # a leftover byte would hide without changing any packet.
        digest = hashlib.sha1(_audio_hash(path, source, limits).encode(),
                              usedforsecurity=False)
        with open(source, "rb") as file:
            head = file.read(10)
            start = 0
            if len(head) == 10 and head[:3] == b"ID3":
                size = sum((b & 0x7F) << s for b, s in zip(head[6:10], (21, 14, 7, 0)))
                start = 10 + size + (10 if head[3] == 4 and head[5] & 0x10 else 0)
            end = file.seek(0, os.SEEK_END)
            if end >= 128 + start:
                file.seek(end - 128)
                if file.read(3) == b"TAG":
                    end -= 128
            file.seek(start)
            remaining = end - start
            while remaining > 0:
                block = file.read(min(remaining, 1 << 20))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
        return digest.hexdigest()

    def save(self, audio: Any, config: TagConfig) -> None:
        # mutagen would rebuild an ID3v1 trailer from the v2 frames, blanking the comment and
        # every field the v2 tag lacks; so it drops the trailer and we put the original back.
        trailer = _id3v1_trailer(audio.filename)
        audio.save(v1=0, v2_version=self._version(audio.tags, config), v23_sep=None)
        if trailer is not None and _id3v1_trailer(audio.filename) is None:
            with open(audio.filename, "ab") as file:
                genre = _id3v1_genre(self.genres(audio, config.separator))
                file.write(trailer[:-1] + bytes([genre]))


class FieldGenres(TagFamily):
    """Genres as the values of one key in a dict-like tag; our score under another key."""

    genre_key: ClassVar[str]
    score_key: ClassVar[str]

    def genres(self, audio: Any, separator: str) -> list[str]:
        return _cleaned(audio.tags.get(self.genre_key, [])) if audio.tags is not None else []

    def set_genres(self, audio: Any, genres: list[str], config: TagConfig) -> None:
        self._set(audio, self.genre_key, list(genres))

    def set_score(self, audio: Any, score: float | None, config: TagConfig) -> None:
        self._set(audio, self.score_key, [] if score is None else [self.score_value(score)])

    def score_value(self, score: float) -> Any:
        """The score as this family stores it."""
        return _score_text(score)

    @staticmethod
    def _set(audio: Any, key: str, values: list[Any]) -> None:
        if audio.tags is None:
            audio.add_tags()
        if values:
            audio.tags[key] = values  # replaces every value of the key (Vorbis: in any case)
        elif key in audio.tags:
            del audio.tags[key]


class VorbisGenres(FieldGenres):
    """Repeated GENRE fields in a Vorbis comment (FLAC, Ogg Vorbis, Ogg Opus)."""

    kinds: ClassVar[tuple[type[mutagen.FileType], ...]] = (FLAC, OggVorbis, OggOpus)
    genre_key = "GENRE"
    score_key = SCORE_FIELD
    text_keys: ClassVar[Mapping[str, str]] = {"artist": "artist", "title": "title",
                                              "album": "album"}


class MP4Genres(FieldGenres):
    """Several values in the MP4 ©gen atom (mutagen reads a legacy gnre atom as ©gen)."""

    kinds: ClassVar[tuple[type[mutagen.FileType], ...]] = (MP4,)
    genre_key = "\xa9gen"
    score_key = "----:org.libtagger:GENRE_SCORE"
    text_keys: ClassVar[Mapping[str, str]] = {"artist": "\xa9ART", "title": "\xa9nam",
                                              "album": "\xa9alb"}

    def score_value(self, score: float) -> Any:
        return MP4FreeForm(_score_text(score).encode(), dataformat=AtomDataType.UTF8)


FAMILIES: tuple[TagFamily, ...] = (MP3Genres(), ID3Genres(), VorbisGenres(), MP4Genres())
"""Every tag family we write, declared once."""
_FAMILY_OF: dict[type[mutagen.FileType], TagFamily] = {
    kind: family for family in FAMILIES for kind in family.kinds
}


def read_genres(path: StrPath, separator: str = "; ",
                limits: LimitsConfig | None = None) -> list[str]:
    """The genres the file holds now (multi-value fields and v2.3 joined strings split).

    ``limits`` bounds the tags parsed (None: the defaults; the pipeline passes the config's).

    Raises:
        DecodeError: the file cannot be read, is not a format we tag, mutagen cannot parse it,
            or its tags are beyond ``limits``.
    """
    try:
        with open_regular(path) as file:
            _refuse_hostile(path, file, limits or LimitsConfig())
            kind, family = _detect(path, file)
            return family.genres(_load(path, kind, file, family.read_options), separator)
    except OSError as exc:
        raise DecodeError(path, exc.strerror or str(exc)) from exc


@dataclass(frozen=True)
class FileTags:
    """What a file's tags say, for the library's records (``query tag:``, ``artist:`` …)."""

    genres: list[str]
    artist: str | None = None
    title: str | None = None
    album: str | None = None


def read_tags(path: StrPath, separator: str = "; ",
              limits: LimitsConfig | None = None) -> FileTags:
    """The genres, artist, title and album a file holds now (one parse).

    Raises:
        DecodeError: as :func:`read_genres`.
    """
    try:
        with open_regular(path) as file:
            _refuse_hostile(path, file, limits or LimitsConfig())
            kind, family = _detect(path, file)
            audio = _load(path, kind, file, family.read_options)
            return FileTags(family.genres(audio, separator), *(
                family.text(audio, f) for f in ("artist", "title", "album")))
    except OSError as exc:
        raise DecodeError(path, exc.strerror or str(exc)) from exc


def plan_genres(existing: Sequence[str], ours: Sequence[str], policy: str) -> list[str] | None:
    """What a file's genres should become under ``policy``; None when nothing would change.

    Raises:
        ValueError: ``policy`` is not one of ``TAG_POLICIES``.
    """
    if policy not in TAG_POLICIES:
        raise ValueError(f"unknown tag policy {policy!r}; expected one of {TAG_POLICIES}")
    if not ours:
        return None
    if policy == "fill_empty":
        return None if existing else list(ours)
    if policy == "replace":
        return None if list(existing) == list(ours) else list(ours)
    seen = {normalise_genre(genre) for genre in existing}
    added = []
    for genre in ours:
        if normalise_genre(genre) not in seen:
            seen.add(normalise_genre(genre))
            added.append(genre)
    return [*existing, *added] if added else None


def write_genres(path: StrPath, genres: Sequence[str], config: TagConfig,
                 score: float | None = None, temp: StrPath | None = None,
                 expect: Snapshot | None = None, limits: LimitsConfig | None = None) -> None:
    """Set the file's genres (and our score field if configured), changing nothing else.

    The genres are written as given, in order; an empty list removes them. With
    ``config.write_score`` the score field is set, or removed when ``score`` is None. A symlink
    is followed; a hard-linked file becomes a file of its own (the other names keep the old
    bytes: the pipeline refuses such files before calling this). ``temp`` names the copy to
    edit (recorded by the caller before it exists, so only that file is ever cleaned up);
    ``expect`` refuses a file that is no longer that snapshot; ``limits`` bounds the tags
    parsed, as in :func:`read_genres`. The copy is renamed over the original only if its audio
    packets hash exactly as the original's.

    Raises:
        TagWriteError: the file or its folder is read-only, the file is locked or changed
            meanwhile, the disk is full, or mutagen could not save; the file is left as it was.
        DecodeError: the file is not a format we tag, mutagen cannot parse it, or its tags are
            beyond ``limits``.
        ValueError: a genre is empty or contains a NUL character.
    """
    wanted = [genre.strip() for genre in genres]
    if any(not genre or "\0" in genre for genre in wanted):
        raise ValueError(f"genres must be non-empty text without NUL characters: {wanted!r}")
    limits = limits or LimitsConfig()
    with locked_original(path) as (target, original):
        if expect is not None and not expect.same_file(Snapshot.of(os.fstat(original.fileno()))):
            raise TagWriteError(path, "the file changed since it was analysed; not changed",
                                transient=True)
        _refuse_hostile(path, original, limits)
        kind, family = _detect(path, original)
        loaded = _load(path, kind, original, family.read_options)  # garbage fails here
        family.refuse(loaded, path)
        info = loaded.info
        audio_hash = family.audio_fingerprint(path, target, limits)

        def edit(copy: Path) -> None:
            audio = _load(path, kind, copy, family.write_options)
            try:
                family.set_genres(audio, wanted, config)
                if config.write_score:
                    family.set_score(audio, score, config)
                family.save(audio, config)
            except Exception as exc:  # mutagen wraps OSError (a full disk) in its own errors
                raise TagWriteError(path, failure_reason(exc)) from exc
            _check_copy(path, kind, family, copy, wanted, config, info)
            if family.audio_fingerprint(path, copy, limits) != audio_hash:
                raise TagWriteError(path, "the audio bytes would differ after saving (a tag "
                                          "layout mutagen cannot rewrite exactly); not changed")

        replace_with_edited_copy(path, target, original, edit,
                                 Path(temp) if temp is not None else None)


def try_write_genres(path: StrPath, genres: Sequence[str], config: TagConfig,
                     score: float | None = None, limits: LimitsConfig | None = None) -> bool:
    """:func:`write_genres` that logs a failure and returns False instead of raising."""
    try:
        write_genres(path, genres, config, score, limits=limits)
    except FileError as exc:
        log.warning("genres not written: %s", exc)
        return False
    return True


def _detect(path: StrPath, file: IO[bytes]) -> tuple[type[mutagen.FileType], TagFamily]:
    """mutagen's own scores over the formats we tag, the content ranking above the name."""
    header = file.read(128)
    if not header:
        raise DecodeError(path, "empty file (0 bytes)")
    name = os.fspath(path)

    def rank(kind: type[mutagen.FileType]) -> tuple[int, int, str]:
        return kind.score("", file, header), kind.score(name, file, header), kind.__name__

    kind = max(_FAMILY_OF, key=rank)
    if rank(kind)[1] <= 0:
        raise DecodeError(path, "not a format we tag (MP3, FLAC, Ogg Vorbis/Opus, MP4/M4A, WAV, "
                                "AIFF)")
    return kind, _FAMILY_OF[kind]


def _load(path: StrPath, kind: type[mutagen.FileType], source: StrPath | IO[bytes],
          options: Mapping[str, Any]) -> Any:
    """Parse a file with the detected mutagen type.

    Raises:
        DecodeError: mutagen cannot parse it.
    """
    if not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    try:
        return kind(source, **options)
    except Exception as exc:  # mutagen raises many types on malformed input; all mean the same
        raise DecodeError(path, f"not a readable {kind.__name__} file ({exc})") from exc


def _check_copy(path: StrPath, kind: type[mutagen.FileType], family: TagFamily, temp: Path,
                genres: list[str], config: TagConfig, info: Any) -> None:
    """Read the edited copy back: our genres and the same audio stream, or no rename."""
    audio = _load(path, kind, temp, family.read_options)
    found = family.genres(audio, config.separator)
    if found != genres:
        raise TagWriteError(path, f"genres read back as {found} instead of {genres}; not changed")
    same = all(getattr(audio.info, key, None) == getattr(info, key, None)
               for key in ("sample_rate", "channels"))
    if not same or not math.isclose(audio.info.length, info.length, rel_tol=1e-3, abs_tol=1e-3):
        raise TagWriteError(path, "the audio stream looked different after saving; not changed")


def _refuse_hostile(path: StrPath, file: IO[bytes], limits: LimitsConfig) -> None:
    """Refuse, before mutagen parses them, tags that would balloon or hang it (our own
    bounded header walk: see ``libtagger.analysis.precheck``).

    Raises:
        DecodeError: the tags are far beyond anything real.
    """
    size = os.fstat(file.fileno()).st_size
    refusal = check_tags(file, size, limits)  # type: ignore[arg-type]
    file.seek(0)
    if refusal:
        raise DecodeError(path, f"refused unread: {refusal}")


def _audio_hash(path: StrPath, source: StrPath, limits: LimitsConfig) -> str:
    """The hash of a file's compressed audio packets (tags excluded).

    Raises:
        TagWriteError: the audio cannot be demuxed.
    """
    try:
        with AudioFile(source, FrontEnd(), limits=limits) as audio:
            return audio.stream_hash()
    except DecodeError as exc:
        raise TagWriteError(path, f"cannot check the audio ({exc.reason}); not changed") from exc


def _cleaned(values: Iterable[str]) -> list[str]:
    return [value.strip() for value in values if value.strip()]


def _score_text(score: float) -> str:
    return f"{score:.3f}"


def _v23_encoding(text: str) -> int:
    """Latin-1 where it fits (what v2.3 readers handle best), else UTF-16."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return Encoding.UTF16
    return Encoding.LATIN1


def _id3v1_trailer(filename: str) -> bytes | None:
    """The 128-byte ID3v1 tag at the end of a file, if there is one (and not part of APEv2)."""
    with open(filename, "rb") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() < 128 + 3:
            return None
        file.seek(-128 - 3, os.SEEK_END)
        tail = file.read()
    return tail[3:] if tail[3:6] == b"TAG" and tail[:8] != b"APETAGEX" else None


def _id3v1_genre(genres: list[str]) -> int:
    """The ID3v1 genre number of our first genre, or 255 (none) if it has no number."""
    numbers = {name.casefold(): number for number, name in enumerate(TCON.GENRES[:192])}
    return numbers.get(genres[0].casefold(), 255) if genres else 255
