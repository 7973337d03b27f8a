"""Classification on a Dask cluster: the scan plans and records here, workers elsewhere listen.

The split is the local one, stretched over machines. The scanning machine walks the library,
decides what needs work, records every result and applies every tag write, exactly as a local
scan does; only :func:`libtagger.pipeline.worker.analyse` — decode, windows, CNNs, vote, read
the tags — runs on the cluster. Nothing a Dask worker does changes a file or the database, so
crash safety and exactly-once writes hold unchanged: a result that never comes back is a track
still ``pending``.

* :mod:`~libtagger.cluster.plugin` — what runs on a Dask worker: a plugin that keeps one
  isolated libtagger worker pool (models loaded once per process, each file under the same
  time and memory limits as at home), and the task that maps a path to this machine's mount.
* :mod:`~libtagger.cluster.client` — what runs in the scan: connect (or start a LocalCluster),
  keep a bounded number of tracks in flight, turn a lost task into a reason.
* :mod:`~libtagger.cluster.paths` — the library's paths as another machine mounts them.

``dask worker --preload libtagger.cluster`` (what ``libtagger worker`` runs) checks at start-up
that this machine can serve: libtagger and its models import, and the path map is valid.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: fail a worker's start-up now rather than every task later.

    Raises:
        LibtaggerError: the models or this machine's configuration cannot be used.
    """
    from libtagger.analysis.model import check_models
    from libtagger.config import load_config

    config = load_config()
    check_models(config)
    for library_path, here in config.library.path_map:
        log.info("libtagger: library folder %s is %s on this machine", library_path, here)
    log.info("libtagger: worker %s ready", getattr(worker, "name", ""))
