"""Classify many files for ``classify`` and ``evaluate``: the same isolated workers as a scan.

Nothing is stored and nothing is written; a file that crashes or hangs its worker costs only
itself (a :class:`~libtagger.analysis.classify.Failure` with the reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from libtagger.analysis.classify import Failure, TrackResult
from libtagger.analysis.head import PersonalHead
from libtagger.analysis.model import check_models
from libtagger.config import Config
from libtagger.pipeline import worker
from libtagger.pipeline.runner import Runner, WorkerDied


def classify_many(paths: Iterable[str], config: Config, jobs: int = 1, timeline: bool = False,
                  head: PersonalHead | None = None) -> Iterator[TrackResult | Failure]:
    """Classify files in order with ``jobs`` isolated worker processes.

    Raises:
        ModelError: the models cannot be used (checked before any worker starts).
    """
    check_models(config)
    items = [(path, timeline) for path in paths]
    if not items:
        return
    with Runner(worker.classify, min(jobs, len(items)), config.limits,
                worker.setup(config, head)) as runner:
        for (path, _), result in runner.run(items, ordered=True):
            yield Failure(path, result.reason) if isinstance(result, WorkerDied) else result


def genres_of(config: Config, jobs: int = 1) -> Callable[[list[str]], dict[str, list[str] | str]]:
    """A reader of many files' genre tags in isolated workers (``learn`` harvests with it):
    path -> genres, or the reason they cannot be read."""
    def read(paths: list[str]) -> dict[str, list[str] | str]:
        if not paths:
            return {}
        with Runner(worker.current_genres, min(jobs, len(paths)), config.limits,
                    worker.setup(config, models=False)) as runner:
            return {path: (r.reason if isinstance(r, WorkerDied) else r)
                    for path, r in runner.run(paths)}
    return read
