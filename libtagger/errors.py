"""The one family of errors libtagger raises; the CLI turns them into messages and exit codes."""

from __future__ import annotations

import base64
import errno
import os

TRANSIENT_ERRNOS = frozenset({errno.EPERM, errno.ENOENT, errno.EAGAIN, errno.EACCES, errno.EBUSY,
                              errno.ENOSPC, errno.ESTALE, errno.EDQUOT, errno.EIO})
"""OS errors whose cause lies outside the file and may go away: worth a retry later."""


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printable text, even when the file name is not valid UTF-8."""
    text = os.fspath(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def path_fields(path: str | os.PathLike[str]) -> dict[str, str]:
    """A path for JSON and CSV, the same way everywhere, lossless and always valid UTF-8.

    ``path`` is the text (bytes that are not UTF-8 shown as U+FFFD); only when there are such
    bytes, ``path_bytes`` holds the exact name, base64-encoded, to find the file again.
    """
    raw = os.fsencode(path)
    try:
        return {"path": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"path": raw.decode("utf-8", "replace"),
                "path_bytes": base64.b64encode(raw).decode("ascii")}


class LibtaggerError(Exception):
    """Base class of every error libtagger raises on purpose."""


class ConfigError(LibtaggerError):
    """The configuration is invalid; the message names the key."""


class ModelError(LibtaggerError):
    """A model file or its sidecar is missing, damaged or unusable."""


class DatabaseError(LibtaggerError):
    """The database cannot be opened, upgraded or written."""


class ClusterError(LibtaggerError):
    """The Dask cluster cannot be reached, has no worker, or went away during a run."""


class LearnError(LibtaggerError):
    """Not enough tagged tracks to learn from, or no usable personal head."""


class FileError(LibtaggerError):
    """Something is wrong with one file; the run goes on with the others."""

    def __init__(self, path: str | os.PathLike[str], reason: str, transient: bool = False) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason
        self.transient = transient
        """The cause lies outside the file (busy, permissions, a vanished folder): retry."""


class DecodeError(FileError):
    """A file could not be read or decoded as audio."""


class TagWriteError(FileError):
    """A genre could not be written into a file's tags; the file is left as it was."""
