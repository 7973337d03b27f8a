"""The scan's side of a cluster: connect, keep a bounded number of tracks in flight, collect.

:class:`ClusterAnalyser` has the one method of :class:`~libtagger.pipeline.runner.Runner` that
analysis needs, :meth:`run`, so the scan treats both alike. Dask retries a task whose worker
was lost (killed, machine gone) on another worker; a track that has cost
``distributed.scheduler.allowed-failures`` workers (3 by default) comes back as
:class:`~libtagger.pipeline.runner.WorkerDied` and is recorded as failed with that reason. A
scheduler that goes away ends the run with :class:`~libtagger.errors.ClusterError`: the tracks
not yet recorded are still ``pending``, and the next scan takes them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from libtagger.analysis.head import PersonalHead
from libtagger.cluster.paths import PathMap
from libtagger.config import Config
from libtagger.errors import ClusterError
from libtagger.pipeline.runner import WorkerDied
from libtagger.pipeline.worker import Analysis, TrackRef

log = logging.getLogger(__name__)

CLUSTER_EXTRA = "pip install 'libtagger[cluster]'"
IN_FLIGHT_PER_THREAD = 2
"""Tracks handed to the cluster per worker thread: enough to keep every thread busy while
results travel back, few enough that a stopped scan leaves little work thrown away."""


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"a Dask cluster needs the 'distributed' package: {CLUSTER_EXTRA}") \
            from None
    # distributed logs every connection at INFO on its own handler; a scan's output is ours.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return distributed


class ClusterAnalyser:
    """Analysis of tracks on a Dask cluster: ``scheduler`` is "local" or an address.

    "local" starts a LocalCluster on this machine (loopback only, no dashboard) with
    ``cluster.local_workers`` worker processes of ``jobs`` threads each.

    Raises:
        ClusterError: ``distributed`` is missing, the scheduler cannot be reached, or no
            worker joins within ``cluster.connect_seconds``.
    """

    def __init__(self, config: Config, scheduler: str, jobs: int,
                 head: PersonalHead | None = None) -> None:
        distributed = _distributed()
        from libtagger.cluster import plugin

        self._cluster: Any = None
        timeout = config.cluster.connect_seconds
        path_map: PathMap | None = None
        try:
            if scheduler == "local":
                self._cluster = distributed.LocalCluster(
                    n_workers=config.cluster.local_workers, threads_per_worker=max(1, jobs),
                    processes=True, host="127.0.0.1", dashboard_address=None,
                    silence_logs=logging.ERROR)
                self.client = distributed.Client(self._cluster, timeout=timeout)
                path_map = PathMap(config.library.path_map)  # the same machine, its own map
            else:
                self.client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            self.close()
            raise ClusterError(f"no Dask worker joined {scheduler} within {timeout:g} s "
                               "(cluster.connect_seconds); start one with `libtagger worker "
                               f"{scheduler}`") from None
        self.client.register_plugin(plugin.AnalysisPlugin(config, head, path_map),
                                    name=plugin.NAME)
        self._task = plugin.analyse
        self._run_id = uuid.uuid4().hex[:12]

    def threads(self) -> int:
        """Worker threads in the cluster now."""
        return sum(self.client.nthreads().values()) or 1

    def run(self, refs: Iterable[TrackRef]) -> Iterator[tuple[TrackRef, Analysis | WorkerDied]]:
        """(ref, Analysis or WorkerDied) for each track, in completion order, a bounded number
        in flight. Closing the generator early cancels what the cluster still holds.

        Raises:
            ClusterError: the scheduler went away.
        """
        distributed = _distributed()
        queue = iter(refs)
        futures = distributed.as_completed()
        held: dict[str, TrackRef] = {}
        limit = IN_FLIGHT_PER_THREAD * self.threads()
        done, submitted = 0, 0
        try:
            while True:
                while len(held) < limit:
                    ref = next(queue, None)
                    if ref is None:
                        break
                    submitted += 1
                    key = f"libtagger-analyse-{self._run_id}-{submitted}"
                    future = self.client.submit(self._task, ref, key=key, pure=False)
                    held[future.key] = ref
                    futures.add(future)
                if not held:
                    return
                future = next(futures)
                ref = held.pop(future.key)
                yield ref, self._outcome(future)
                done += 1
                if done % 50 == 0:  # workers join and leave: follow the cluster's size
                    limit = IN_FLIGHT_PER_THREAD * self.threads()
        finally:
            for future in list(futures.futures):
                future.cancel()

    def _outcome(self, future: Any) -> Analysis | WorkerDied:
        distributed = _distributed()
        try:
            return future.result()  # type: ignore[no-any-return]
        except distributed.KilledWorker:
            import dask

            tries = dask.config.get("distributed.scheduler.allowed-failures") + 1
            return WorkerDied(f"the Dask worker analysing it died, {tries} times on end "
                              "(distributed.scheduler.allowed-failures)")
        except (distributed.CancelledError, OSError) as exc:
            raise ClusterError(f"lost the Dask cluster: {exc or type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - a task's own bug costs its track only
            log.debug("cluster task failed", exc_info=exc)
            return WorkerDied(f"cluster worker error ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """Disconnect (and stop a LocalCluster this analyser started)."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> ClusterAnalyser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
