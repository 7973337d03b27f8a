"""Replace a file with an edited copy of itself, so that a crash never leaves it half written.

The original is locked and only ever read; the edit happens on a hidden copy beside it, in the
same folder (so on the same file system), with the original's owner, permission bits and
extended attributes. Only once the edited copy is complete and flushed to disk is it renamed
over the original, and the folder flushed too. A crash, a full disk or a kill -9 leaves either
the old file or the new one, plus at worst a stale copy whose name the caller recorded before
it existed, which :func:`remove_recorded_temp` clears.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from libtagger.errors import TRANSIENT_ERRNOS, TagWriteError

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

TEMP_SUFFIX = ".libtagger-tmp"
"""Every temporary copy of a file being tagged ends with this, and nothing else should."""
TEMP_PATTERN = f".*{TEMP_SUFFIX}"
"""Glob pattern of the temporary copies (hidden files), for scanners and watchers to skip."""


@contextlib.contextmanager
def locked_original(path: StrPath) -> Iterator[tuple[Path, IO[bytes]]]:
    """The file ``path`` names (a symlink followed) and that file open for reading, locked.

    Yields (target, original): the real path, to hand to :func:`replace_with_edited_copy`
    inside the block. An OSError anywhere in the block becomes a TagWriteError.

    Raises:
        TagWriteError: the file or its folder is read-only, the file is not a regular file or
            is locked by another process, or reading or replacing it failed (the reason says
            plainly when the disk is full).
    """
    target = Path(os.path.realpath(path))  # write the file a symlink points to; keep the link
    try:
        _check_writable(path, target)
        with open(target, "rb") as original:
            try:
                fcntl.flock(original.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TagWriteError(path, "locked by another process; not changed",
                                    transient=True) from None
            yield target, original
    except OSError as exc:
        raise TagWriteError(path, failure_reason(exc),
                            transient=exc.errno in TRANSIENT_ERRNOS) from exc


def replace_with_edited_copy(path: StrPath, target: Path, original: IO[bytes],
                             edit: Callable[[Path], None], temp: Path | None = None) -> None:
    """Copy the locked original beside it, edit the copy, flush it, rename it over the original.

    Until the rename the original is never opened for writing; on any failure the copy is
    removed and the original stays exactly as it was.

    Raises:
        TagWriteError: the file changed on disk meanwhile; and whatever ``edit`` raises.
        OSError: copying, flushing or renaming failed.
    """
    before = os.fstat(original.fileno())
    temp, fd = _create_temp(target, temp)
    try:
        original.seek(0)
        with open(fd, "wb", closefd=False) as copy:
            shutil.copyfileobj(original, copy, 1 << 20)
        _copy_attributes(original.fileno(), fd, before)
        edit(temp)
        os.fsync(fd)
        now = os.stat(target)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != \
                (before.st_ino, before.st_size, before.st_mtime_ns):
            raise TagWriteError(path, "the file changed while we wrote its tags; not changed",
                                transient=True)
        os.replace(temp, target)
    except BaseException:
        _unlink_quietly(temp)
        raise
    finally:
        os.close(fd)
    _fsync_folder(target.parent)


def failure_reason(exc: BaseException) -> str:
    """A short reason for a failed write, saying plainly when the disk is full."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:  # mutagen wraps the OSError; look through causes and arguments
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.errno is not None:
            plain = {
                errno.ENOSPC: "disk full (no space left on device)",
                errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large for the file size limit (EFBIG)",
                errno.EROFS: "read-only file system",
            }.get(item.errno, item.strerror or str(item))
            return f"{plain}; not changed"
        pending += [item.__cause__, item.__context__, *item.args]
    return f"mutagen could not save the tags ({exc}); not changed"


def is_temp_file(path: StrPath) -> bool:
    """Whether a path is one of our temporary copies (by its name)."""
    name = os.path.basename(os.fspath(path))
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_recorded_temp(path: StrPath) -> bool:
    """Delete one temporary copy whose name a write recorded before creating it.

    Nothing else is ever removed: a user's file that merely looks like one of our copies is
    not ours. A copy a running write still holds locked is kept.
    """
    return _remove_if_stale(Path(path))


# --- the replacement, step by step ------------------------------------------------------------


def _check_writable(path: StrPath, target: Path) -> None:
    """Refuse files and folders the user made read-only, even when we run as root."""
    st = os.stat(target)
    if not stat.S_ISREG(st.st_mode):
        raise TagWriteError(path, "not a regular file")
    if not st.st_mode & stat.S_IWUSR or not os.access(target, os.W_OK):
        raise TagWriteError(path, "read-only file (no write permission); not changed",
                            transient=True)
    folder = os.stat(target.parent)
    if not folder.st_mode & stat.S_IWUSR or not os.access(target.parent, os.W_OK | os.X_OK):
        raise TagWriteError(path, "read-only folder: no safe copy can be made beside the file",
                            transient=True)


def temp_path_for(path: StrPath) -> Path:
    """The name a write of ``path`` will use for its copy (record it before writing)."""
    return _temp_path(Path(os.path.realpath(path)))


def _create_temp(target: Path, chosen: Path | None = None) -> tuple[Path, int]:
    """A new hidden file beside the target, open and locked for as long as the write lasts.

    The lock tells remove_recorded_temp the copy is alive. A cleaner can only take it in the
    instant between creating and locking; then we see the name gone and try again.
    """
    # A name recorded by the caller is the only one a cleanup will remove, so it is the only
    # one tried: again, when a cleaner removed it in that instant.
    names = [chosen] * 3 if chosen is not None else [_temp_path(target) for _ in range(3)]
    for temp in names:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(temp).st_ino == os.fstat(fd).st_ino:
                return temp, fd
        except OSError:  # BlockingIOError, FileNotFoundError: a cleaner got there first
            pass
        os.close(fd)
    raise OSError(errno.EBUSY, "temporary copies kept being removed by another process")


def _temp_path(target: Path) -> Path:
    """A unique hidden name beside the target, short enough for any file system."""
    name = target.name
    if len(os.fsencode(name)) > 200:
        name = hashlib.sha256(os.fsencode(name)).hexdigest()[:20]
    return target.with_name(f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _copy_attributes(source_fd: int, fd: int, before: os.stat_result) -> None:
    """Give the copy the original's owner, group, permission bits and extended attributes."""
    if os.geteuid() == 0:
        os.fchown(fd, before.st_uid, before.st_gid)
    else:
        with contextlib.suppress(OSError):  # allowed when we are in the file's group
            os.fchown(fd, -1, before.st_gid)
    os.fchmod(fd, stat.S_IMODE(before.st_mode))
    try:
        names = os.listxattr(source_fd)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(fd, name, os.getxattr(source_fd, name))
        except OSError:
            log.debug("extended attribute %s not copied", name)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; the file is already replaced, so a failure only warns."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("could not flush folder %s: %s", folder, exc)


def _remove_if_stale(path: Path) -> bool:
    """Delete a temporary copy unless a running write holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
        return True
    except OSError:  # BlockingIOError: a write in progress
        return False
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove temporary copy %s: %s", path, exc)
