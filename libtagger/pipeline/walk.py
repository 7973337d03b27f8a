"""Find the audio files under library roots, without opening anything that is not one.

Only regular files are yielded; symlinks are never followed (what they point to inside the
library is found through its real path, what lies outside is not ours). Hidden files, partial
downloads and libtagger's own temporary copies are skipped by name; a file whose name does not
say it is audio is sniffed by its first bytes (our own check: no parser sees it here, in the
main process). A folder that cannot be read is reported, so that its tracks are not taken for
deleted.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from libtagger.analysis.audio import AUDIO_EXTENSIONS
from libtagger.library.guards import Snapshot
from libtagger.library.safewrite import is_temp_file

# Endings that are never audio: skipped without opening them.
NOT_AUDIO = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".txt", ".nfo", ".cue", ".log",
     ".m3u", ".m3u8", ".pls", ".pdf", ".db", ".ini", ".json", ".xml", ".html", ".sfv",
     ".md5", ".accurip", ".lrc", ".url", ".zip", ".rar", ".7z", ".exe", ".dll", ".ds_store"}
)

PARTIAL_DOWNLOADS = frozenset({".part", ".crdownload", ".download", ".!qb", ".tmp", ".partial",
                               ".opdownload", ".!ut"})
"""Endings browsers and download clients give a file until it is complete."""

# First bytes of the containers we read, at their offsets: (offset, magic).
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"ID3"), (0, b"fLaC"), (0, b"OggS"), (0, b"RIFF"), (0, b"FORM"), (4, b"ftyp"),
    (0, b"MAC "), (0, b"wvpk"), (0, b"MPCK"), (0, b"\x1aE\xdf\xa3"),
    (0, b"0&\xb2u\x8e\x66\xcf\x11"),
)


def is_partial_download(name: str) -> bool:
    """A name a download in progress carries (the finished file gets its own name)."""
    lower = name.lower()
    return os.path.splitext(lower)[1] in PARTIAL_DOWNLOADS or name.startswith("._")


def ignored_name(name: str) -> bool:
    """Hidden files, partial downloads, our own temporary copies and known non-audio."""
    return (name.startswith(".") or is_temp_file(name) or is_partial_download(name)
            or os.path.splitext(name)[1].lower() in NOT_AUDIO)


def sniff_audio(path: str) -> bool:
    """Whether a file's first bytes are those of an audio container (or an MPEG frame)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return False
    try:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 12)
    except OSError:
        return False
    finally:
        os.close(fd)
    if any(head[offset:offset + len(magic)] == magic for offset, magic in _MAGIC):
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # MPEG audio sync


@dataclass(frozen=True)
class FoundFile:
    """An audio file found on disk."""

    path: str
    snapshot: Snapshot

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.snapshot.size

    @property
    def mtime_ns(self) -> int:
        """Modification time."""
        return self.snapshot.mtime_ns


@dataclass
class Walk:
    """What a walk found besides the files: folders it could not read."""

    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """(folder, reason) for every folder that could not be listed."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(root, reason) for every root named that is neither a folder nor an audio file."""


_NOT_A_FILE = ((stat_module.S_ISFIFO, "a named pipe"), (stat_module.S_ISCHR, "a device"),
               (stat_module.S_ISBLK, "a device"), (stat_module.S_ISSOCK, "a socket"))


def _refusal(path: str, st: os.stat_result) -> str:
    """Why a root that is not a folder was not scanned (it was named, so it is said)."""
    if stat_module.S_ISLNK(st.st_mode):
        return "a symlink, which libtagger never follows: name the file it points to"
    for test, kind in _NOT_A_FILE:
        if test(st.st_mode):
            return f"{kind}, not a music file or folder"
    if ignored_name(os.path.basename(path)):
        return "not a track by its name (hidden, a partial download, or a non-audio ending)"
    return "not an audio file (neither its name nor its first bytes are audio)"


def walk_library(roots: Iterable[str], walk: Walk | None = None) -> Iterator[FoundFile]:
    """Audio files under ``roots`` (by extension, else by content), in path order.

    A root may be a single file. A folder reached twice (bind mounts) is walked once.
    """
    walk = walk if walk is not None else Walk()
    seen_dirs: set[tuple[int, int]] = set()
    # A folder root may itself be a symlink (the user chose it); a file root never is followed.
    named = {os.path.realpath(r) if os.path.isdir(r) else os.path.abspath(r)
             for r in map(os.path.expanduser, roots)}
    stack = sorted(named, reverse=True)
    while stack:
        folder = stack.pop()
        try:
            st = os.lstat(folder)
        except OSError as exc:
            walk.unreadable.append((folder, exc.strerror or str(exc)))
            continue
        if folder in named and not stat_module.S_ISDIR(st.st_mode):  # a file named as a root
            found = _found(folder, os.path.basename(folder), st) if stat_module.S_ISREG(
                st.st_mode) else None
            if found is None:
                walk.refused.append((folder, _refusal(folder, st)))
            else:
                yield found
            continue
        if not stat_module.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in seen_dirs:
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name, reverse=True)
        except OSError as exc:
            walk.unreadable.append((folder, exc.strerror or str(exc)))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat_module.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat_module.S_ISREG(st.st_mode):
                found = _found(entry.path, entry.name, st)
                if found is not None:
                    yield found


def _found(path: str, name: str, st: os.stat_result) -> FoundFile | None:
    if ignored_name(name):
        return None
    if os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS and not sniff_audio(path):
        return None
    return FoundFile(path, Snapshot.of(st))
