"""Is this file safe to read as finished audio, and safe to change, right now?

A file is analysed and written only when it is a regular file inside a library root reached
without a symlink, no other process has it open for writing, it has not been modified for the
settle time, and it is still the very file (device, inode, size, mtime) that was analysed.
Changing it by copy-and-rename must also not split its hard links or change its owner; such
files are left alone with the reason said. Every check returns a reason or None.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass

# fcntl.F_SETLEASE and F_RDLCK are Linux's; other systems fall back to scanning /proc.
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_UNLCK = fcntl.F_UNLCK


@dataclass(frozen=True)
class Snapshot:
    """What a file was when it was looked at: enough to tell that it is still the same."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    nlink: int = 1
    uid: int = -1
    gid: int = -1

    @classmethod
    def of(cls, st: os.stat_result) -> Snapshot:
        """The snapshot of a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_nlink, st.st_uid,
                   st.st_gid)

    def same_file(self, other: Snapshot) -> bool:
        """The same inode with the same size and mtime (its content did not change)."""
        return (self.device, self.inode, self.size, self.mtime_ns) == \
            (other.device, other.inode, other.size, other.mtime_ns)


def inside_roots(path: str, roots: list[str]) -> str | None:
    """Why ``path`` is not ours to touch: outside every root, or reached through a symlink."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    if real != absolute:
        return "reached through a symlink; libtagger only changes files inside the library"
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return None
    return "outside the library folders"


def settling(st: os.stat_result, settle_seconds: float, now: float | None = None) -> str | None:
    """Why a file may still be being written: modified too recently."""
    age = (now if now is not None else time.time()) - st.st_mtime
    if age < settle_seconds:
        return f"modified {max(age, 0.0):.0f} s ago (settle time {settle_seconds:g} s)"
    return None


def open_for_writing(fd: int, path: str) -> str | None:
    """Why the file is busy: another process has it open for writing (a copy in progress).

    Linux grants a read lease only when no process has the file open for writing, which is
    exactly the question; the lease is released at once. Where a lease is not allowed (a file
    we do not own, a network file system) every process's open files in /proc are looked at.
    """
    try:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return "open for writing by another process (a copy in progress?)"
        return _writers_in_proc(path)
    fcntl.fcntl(fd, _F_SETLEASE, _F_UNLCK)
    return None


def _writers_in_proc(path: str) -> str | None:
    """The /proc scan: is any process's descriptor for this file open with write access?"""
    try:
        target = os.stat(path)
    except OSError:
        return None
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None  # no /proc: nothing more can be known
    for pid in pids:
        if pid == me:
            continue
        folder = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(folder)
        except OSError:
            continue
        for name in fds:
            try:
                st = os.stat(f"{folder}/{name}")
                if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{name}") as info:
                    flags = next(int(line.split()[1], 8) for line in info
                                 if line.startswith("flags:"))
            except (OSError, ValueError, IndexError, StopIteration):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                return f"open for writing by process {pid} (a copy in progress?)"
    return None


def unsafe_to_replace(st: os.stat_result) -> str | None:
    """Why copy-and-rename would harm this file: hard links split, or a new owner."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink > 1:
        return (f"has {st.st_nlink} hard links: rewriting it would split them "
                "(the other names would keep the old file); not changed")
    if os.geteuid() != 0:
        if st.st_uid != os.geteuid():
            return (f"owned by another user (uid {st.st_uid}): a rewritten copy would belong "
                    "to libtagger's user; not changed")
        if st.st_gid not in (os.getegid(), *os.getgroups()):
            return (f"its group (gid {st.st_gid}) is not one of libtagger's: a rewritten copy "
                    "would change it; not changed")
    return None
