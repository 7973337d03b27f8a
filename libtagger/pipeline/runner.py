"""The one bounded, isolated runner every entry point shares: scan, watch, classify, evaluate.

Everything that parses an untrusted file (FFmpeg, mutagen) runs in a worker process of a
`pebble <https://pebble.readthedocs.io>`_ process pool, never in the main process. pebble gives
each task its own fate: a worker that segfaults, is killed by the OOM killer or runs past the
per-file budget costs only the task it held (it is replaced; the run goes on). On top of that:

* each worker caps its own address space (``RLIMIT_AS``), so a decompression bomb ends in a
  MemoryError or a dead worker, not in the OOM killer choosing the user's browser;
* each worker asks the kernel to kill it when the process that started it dies
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of a scan leaves no orphans;
* no more than ``2 × workers`` tasks are in flight, and Ctrl-C or SIGTERM stops the pool at
  once (:meth:`Runner.close` terminates the workers; nothing they did is half-stored, because
  they store nothing).
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import resource
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pebble import ProcessExpired, ProcessPool

from libtagger.config import LimitsConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
STOP_SECONDS = 10
"""How long stopping the pool waits for pebble's threads to end."""


@dataclass(frozen=True)
class WorkerDied:
    """A task whose worker did not come back: why, in the user's words."""

    reason: str


def _signal_name(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def death_reason(error: BaseException, limits: LimitsConfig) -> str:
    """What to record for a task whose worker died or ran out of time."""
    if isinstance(error, FutureTimeout):
        return f"took longer than {limits.seconds_per_file:g} s (limits.seconds_per_file)"
    if isinstance(error, ProcessExpired):
        name = _signal_name(error.exitcode)
        if error.exitcode == -signal.SIGKILL:
            return (f"worker killed (SIGKILL; out of memory?) while reading this file; "
                    f"limit {limits.memory_mb} MB (limits.memory_mb)")
        return f"decoder crashed ({name})"
    return f"worker error ({type(error).__name__}: {error})"


def _init_worker(limits: LimitsConfig, parent: int, setup: Callable[[], None] | None) -> None:
    """Runs first in every worker: die with the parent, cap memory, ignore Ctrl-C, set up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe to the pool still ends us
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # A crash here is a file's fault and is reported as its reason; a Python stack dump of
    # the worker (faulthandler, inherited from a parent that enabled it) says nothing more.
    faulthandler.disable()
    # Ctrl-C reaches the whole process group; the main process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if limits.memory_mb:
        cap = limits.memory_mb * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    if setup is not None:
        setup()


class Runner(Generic[T, R]):
    """A pool of isolated workers running ``task(item)``; a dead worker costs one item.

    ``setup`` runs once in every worker (load the models there, not here).
    """

    def __init__(self, task: Callable[[T], R], workers: int, limits: LimitsConfig,
                 setup: Callable[[], None] | None = None) -> None:
        self.task = task
        self.limits = limits
        self.workers = max(1, workers)
        self._pool = ProcessPool(max_workers=self.workers, initializer=_init_worker,
                                 initargs=(limits, os.getpid(), setup))
        self._closed = False

    def submit(self, item: T, task: Callable[[Any], Any] | None = None) -> Future[Any]:
        """Start one item (or another task on it, e.g. a tag write); returns its future."""
        timeout = self.limits.seconds_per_file or None
        return self._pool.schedule(task or self.task, args=(item,), timeout=timeout)

    def outcome(self, future: Future[Any]) -> Any:
        """The future's result, or a :class:`WorkerDied` when its worker did not come back."""
        try:
            return future.result()
        except (ProcessExpired, FutureTimeout) as exc:
            return WorkerDied(death_reason(exc, self.limits))
        except MemoryError:
            return WorkerDied(f"needed more than {self.limits.memory_mb} MB (limits.memory_mb)")
        except Exception as exc:  # noqa: BLE001 - a task's own bug costs its item only
            log.debug("worker task failed", exc_info=exc)
            return WorkerDied(death_reason(exc, self.limits))

    def run(self, items: Iterable[T], task: Callable[[Any], Any] | None = None,
            ordered: bool = False) -> Iterator[tuple[T, Any]]:
        """(item, result or WorkerDied) for every item, at most ``2 × workers`` in flight.

        Completion order, or input order with ``ordered``. Closing the generator early
        (Ctrl-C, an exception in the consumer) cancels what is still queued.
        """
        queue = iter(items)
        pending: dict[Future[Any], int] = {}
        ready: dict[int, tuple[T, Any]] = {}
        items_by_index: dict[int, T] = {}
        next_in, next_out = 0, 0
        try:
            while True:
                while len(pending) < 2 * self.workers:
                    item = next(queue, _END)
                    if item is _END:
                        break
                    pending[self.submit(item, task)] = next_in
                    items_by_index[next_in] = item
                    next_in += 1
                if not pending:
                    return
                finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in finished:
                    index = pending.pop(future)
                    ready[index] = (items_by_index.pop(index), self.outcome(future))
                if ordered:
                    while next_out in ready:
                        yield ready.pop(next_out)
                        next_out += 1
                else:
                    for index in sorted(ready):
                        yield ready.pop(index)
        finally:
            for future in pending:
                future.cancel()

    def close(self, now: bool = False) -> None:
        """Stop the workers: wait for the tasks in hand, or (``now``) terminate them."""
        if self._closed:
            return
        self._closed = True
        if not now:
            self._pool.close()
            self._pool.join()
            return
        self._pool.stop()  # terminates the workers; PR_SET_PDEATHSIG covers any left
        # Joining pebble's threads can block for good if a worker died mid-message: wait a
        # bounded time (its threads are daemon threads and do not hold up the exit).
        joiner = threading.Thread(target=self._pool.join, name="libtagger-pool-stop",
                                  daemon=True)
        joiner.start()
        joiner.join(STOP_SECONDS)
        if joiner.is_alive():
            log.warning("the worker pool did not stop within %d s; leaving it", STOP_SECONDS)

    def __enter__(self) -> Runner[T, R]:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(now=exc_type is not None)


_END: Any = object()
