"""How a machine joins a Dask cluster to classify for a scan elsewhere: ``libtagger worker``."""

from __future__ import annotations

import os
import sys

import click

from libtagger.commands.common import config_for, jobs_for


@click.command()
@click.argument("scheduler", required=False)
@click.option("--jobs", "-j", type=click.IntRange(1, 256),
              help="Tracks analysed at once, one process each (default: one per core).")
@click.option("--scheduler-file", type=click.Path(dir_okay=False),
              help="Read the scheduler's address from this file (dask scheduler "
                   "--scheduler-file).")
@click.option("--host", help="The address this worker listens on and gives the scheduler "
                             "(default: the interface that reaches the scheduler).")
@click.option("--name", help="This worker's name in the cluster (default: Dask's).")
@click.pass_context
def worker(ctx: click.Context, scheduler: str | None, jobs: int | None,
           scheduler_file: str | None, host: str | None, name: str | None) -> None:
    """Join the Dask cluster at SCHEDULER (tcp://host:8786) and classify for its scans.

    Runs `dask worker` with libtagger's start-up check and no dashboard. The scan sends its own
    settings; this machine's config only says where it mounts the library
    ([library.path_map]).
    """
    from libtagger.cluster.client import _distributed

    _distributed()  # the one-line error naming the extra, before anything starts
    if not scheduler and not scheduler_file:
        raise click.UsageError("name the scheduler (tcp://host:8786) or --scheduler-file")
    config = config_for(ctx)  # a bad config fails here, in one line, not in every task
    from libtagger.analysis.model import check_models

    check_models(config)
    args = [sys.executable, "-m", "distributed.cli.dask_worker"]
    args += [scheduler] if scheduler else ["--scheduler-file", scheduler_file]
    args += ["--nworkers", "1", "--nthreads", str(jobs_for(jobs, config, os.cpu_count() or 1)),
             "--no-dashboard", "--preload", "libtagger.cluster"]
    if host:
        args += ["--host", host]
    if name:
        args += ["--name", name]
    env = dict(os.environ)
    if ctx.obj.get("config_path"):  # the worker process reads its path map from the same file
        env["LIBTAGGER_CONFIG"] = os.path.abspath(ctx.obj["config_path"])
    os.execve(sys.executable, args, env)
