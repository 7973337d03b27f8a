"""The watch daemon's worker processes: audio work off the main thread, models loaded once each."""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

from libtagger.analysis.classify import init_worker, worker_classifier
from libtagger.config import Config
from libtagger.library.db import Library
from libtagger.analysis.head import PersonalHead
from libtagger.library.personal import active_head
from libtagger.pipeline.track import Analysis, analyse


def start_workers(config: Config, library: Library, jobs: int) -> ProcessPoolExecutor:
    """A pool of ``jobs`` workers with the models (and the active personal head) loaded."""
    head = None
    if config.personal.mode != "off":
        head = active_head(library, "+".join(config.classifier.models))
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init, initargs=(config, head),
    )
    # Load the models before saying READY: a round trip through the workers.
    for future in [pool.submit(_worker_ready, i) for i in range(jobs)]:
        future.result()
    return pool


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now, without waiting for the work they have in hand."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:  # a worker deep in a long mix is not waited for
        process.terminate()
    for process in processes:
        process.join(timeout=5)


def analyse_in_worker(path: str) -> Analysis:
    """The audio work for one track, run in a worker process."""
    return analyse(worker_classifier(), path)


def _worker_init(config: Config, head: PersonalHead | None) -> None:
    # Ctrl-C reaches the whole process group; the daemon decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    init_worker(config, head)


def _worker_ready(_: int) -> int:
    worker_classifier().warm_up()  # TFLite finishes its set-up on the first prediction
    return os.getpid()
