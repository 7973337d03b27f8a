"""Watching library roots: one watchdog observer per root, whose handler only files jobs.

The handler filters events and records them as jobs in the queue; nothing else runs in an
observer thread. A root is watched with inotify, or by polling when asked to (network shares)
or when the inotify watch limit runs out.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Any

from libtagger.analysis.audio import AUDIO_EXTENSIONS
from libtagger.config import WatchConfig
from libtagger.library.db import Library
from libtagger.service.queue import enqueue
from libtagger.library.safewrite import is_temp_file
from libtagger.pipeline.scan import NOT_AUDIO

# The daemon's own log name: its lines, observers included, stay under one name.
log = logging.getLogger("libtagger.service.watch")

INOTIFY_HELP = (
    "the inotify watch limit is reached (fs.inotify.max_user_watches, one watch per folder); "
    "raise it with `sysctl fs.inotify.max_user_watches=524288` (persist it in "
    "/etc/sysctl.d/) or use polling for this root"
)


def _wanted(path: str) -> bool:
    """Whether an event path may be a track: not hidden, not ours, not a known non-audio."""
    name = os.path.basename(path)
    if name.startswith(".") or is_temp_file(name):
        return False
    ext = os.path.splitext(name)[1].lower()
    return ext in AUDIO_EXTENSIONS or (ext not in NOT_AUDIO and ext == "")


class LibraryEvents:
    """A watchdog event handler that filters events and records them as jobs; nothing else."""

    def __init__(self, library: Library, quiet: float) -> None:
        self.library = library
        self.quiet = quiet

    def dispatch(self, event: Any) -> None:
        """watchdog's entry point: route an event to a job, never raising."""
        try:
            self._record(event)
        except Exception:  # noqa: BLE001 - an event handler must not kill its observer thread
            log.exception("could not record %s", event)

    def _record(self, event: Any) -> None:
        kind = event.event_type
        path = os.fsdecode(event.src_path)
        if kind == "moved":
            dest = os.fsdecode(event.dest_path)
            if is_temp_file(path):
                return  # our own atomic tag write landing: the pipeline already knows
            if event.is_directory or _wanted(dest):
                enqueue(self.library, "move", path, dest)
            elif _wanted(path):
                enqueue(self.library, "gone", path)
        elif kind == "deleted":
            if event.is_directory or _wanted(path):
                enqueue(self.library, "gone", path)
        elif kind == "created" and event.is_directory:
            enqueue(self.library, "folder", path, delay=self.quiet)
        elif kind in ("created", "modified") and not event.is_directory:
            # ("closed" adds nothing the quiet period does not cover, and our own atomic tag
            # write ends with one under the track's name: it would queue a needless job.)
            if _wanted(path):
                enqueue(self.library, "file", path, delay=self.quiet)


@dataclass
class RootWatch:
    """One library root: its observer, and whether it is there right now."""

    path: str
    polling: bool
    observer: Any = None
    available: bool = False
    mode: str = ""
    handler: LibraryEvents | None = None

    def set_quiet(self, quiet: float) -> None:
        """A new quiet period (a reload): new events wait this long."""
        if self.handler is not None:
            self.handler.quiet = quiet

    def start(self, library: Library, watch: WatchConfig) -> bool:
        """Watch this root with inotify, or by polling (asked for, or when inotify runs out)."""
        if not os.path.isdir(self.path):
            log.warning("%s is not there; will retry", self.path)
            self.available = False
            return False
        handler = self.handler = LibraryEvents(library, watch.quiet_seconds)
        if not self.polling:
            from watchdog.observers import Observer

            observer = Observer()
            observer.schedule(handler, self.path, recursive=True)
            try:
                observer.start()
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                log.warning("%s: %s; polling it every %g s instead", self.path, INOTIFY_HELP,
                            watch.polling_seconds)
                self.polling = True
            else:
                self.observer, self.available, self.mode = observer, True, "inotify"
                return True
        from watchdog.observers.polling import PollingObserverVFS

        # lstat, not stat: watchdog's default follows a symlinked folder (out of the library,
        # or round in a loop: two links to "." make the snapshot walk 2^40 paths).
        observer = PollingObserverVFS(os.lstat, os.scandir, polling_interval=watch.polling_seconds)
        observer.schedule(handler, self.path, recursive=True)
        observer.start()
        self.observer, self.available, self.mode = observer, True, "polling"
        return True

    def stop(self) -> None:
        """Stop and join this root's observer, if it has one."""
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
