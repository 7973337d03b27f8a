"""What runs on a Dask worker: one isolated libtagger worker pool, and the analysis task.

A Dask worker process does not decode anything itself. Its plugin starts the same pebble pool
a local scan uses (:class:`~libtagger.pipeline.runner.Runner`, one process per Dask thread),
so a file that crashes FFmpeg, hangs or balloons costs one pool process and comes back as a
reason — the Dask worker, and every other track it holds, is untouched.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from libtagger.analysis.head import PersonalHead
from libtagger.cluster.paths import PathMap
from libtagger.config import Config, load_config
from libtagger.pipeline import worker as track_worker
from libtagger.pipeline.runner import Runner, WorkerDied
from libtagger.pipeline.worker import Analysis, TrackRef

NAME = "libtagger"
"""The plugin's name on every worker (a scan registering it again replaces it)."""


class AnalysisPlugin(WorkerPlugin):
    """Keeps one libtagger worker pool per Dask worker, with the scanning machine's settings.

    ``path_map`` None means this machine's own ``[library.path_map]`` (from its config file,
    ``$LIBTAGGER_CONFIG`` or the default location), read when the plugin starts.
    """

    idempotent = False

    def __init__(self, config: Config, head: PersonalHead | None,
                 path_map: PathMap | None = None) -> None:
        self.config = config
        self.head = head
        self.path_map = path_map
        self.runner: Runner[TrackRef, Analysis] | None = None

    def setup(self, worker: Any) -> None:
        """Start the pool: one isolated process per Dask thread, models loaded in each."""
        if self.path_map is None:
            self.path_map = PathMap(load_config().library.path_map)
        # Dask starts its worker processes as daemons, which multiprocessing forbids to have
        # children. Ours cannot outlive this process anyway: each asks the kernel to kill it
        # when its parent dies (PR_SET_PDEATHSIG, see libtagger.pipeline.runner).
        multiprocessing.current_process().daemon = False
        threads = getattr(getattr(worker, "state", None), "nthreads", None) \
            or getattr(worker, "nthreads", 1)
        self.runner = Runner(track_worker.analyse, threads, self.config.limits,
                             track_worker.setup(self.config, self.head))

    def teardown(self, worker: Any) -> None:
        """Stop the pool (its processes are terminated; they hold nothing unsaved)."""
        if self.runner is not None:
            self.runner.close(now=True)
            self.runner = None


def analyse(ref: TrackRef) -> Analysis | WorkerDied:
    """The Dask task: analyse one track on this machine, as the scanning machine named it.

    The file is read through this machine's mount; the result speaks of the scanning
    machine's path and snapshot, so that its tag write checks the file it planned. A file whose
    size or modification time differs from the planned one is not analysed (it changed, or
    the mount is a different copy).
    """
    plugin: AnalysisPlugin = get_worker().plugins[NAME]  # type: ignore[assignment]
    assert plugin.runner is not None and plugin.path_map is not None
    here = plugin.path_map.here(ref.path)
    # Devices and inodes differ between machines; size and mtime are what both can compare.
    local_ref = dataclasses.replace(ref, path=here, snapshot=None)
    result = plugin.runner.outcome(plugin.runner.submit(local_ref))
    if isinstance(result, WorkerDied):
        return result
    seen = result.snapshot
    if ref.snapshot is not None and seen is not None and \
            (seen.size, seen.mtime_ns) != (ref.snapshot.size, ref.snapshot.mtime_ns):
        return Analysis(ref.path, ref.snapshot, error="changed since it was found; it will be "
                        "looked at again", transient=True, busy=True)
    return dataclasses.replace(result, path=ref.path,
                               snapshot=ref.snapshot if seen is not None else None)
