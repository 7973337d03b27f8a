"""Commands for the watch service: run it (watch) and ask what it is doing (status)."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from libtagger.commands.common import config_for, jobs_for, library_for, setup_logging
from libtagger.errors import display_path


@click.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option("--polling", is_flag=True, help="Poll the folders instead of inotify (network shares).")
@click.pass_context
def watch(ctx: click.Context, roots: tuple[str, ...], jobs: int | None, polling: bool) -> None:
    """Watch music folders and tag new and changed tracks as they arrive (the service)."""
    from libtagger.service.watch import run_daemon

    setup_logging(logging.INFO, ctx.obj["verbose"])
    config = config_for(ctx)
    roots = roots or config.library.roots
    if not roots:
        raise click.UsageError("name a music folder (or set library.roots in the config)")
    library = library_for(ctx, config)
    code = run_daemon(config, library, list(roots), jobs_for(jobs, config, os.cpu_count() or 1),
                      polling, ctx.obj["config_path"])
    sys.exit(code)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """What the watch daemon is doing: queue, work in hand, failures, last reconcile."""
    from libtagger.query.report import daemon_status

    config = config_for(ctx)
    report = daemon_status(library_for(ctx, config))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    daemon = report["daemon"]
    if daemon["running"]:
        click.echo(f"daemon: running (pid {daemon['pid']}) since {daemon['started_at']}, "
                   f"last heartbeat {daemon['heartbeat_age']:.0f} s ago")
    else:
        click.echo("daemon: not running" + (f" (last seen {daemon['started_at']})"
                                             if daemon["started_at"] else ""))
    q = report["queue"]
    click.echo(f"queue: {q['queued']} waiting ({q['due']} due), {q['claimed']} in progress, "
               f"{q['failed']} failed")
    click.echo(f"done: {daemon['processed']} tracks this session, {q['done_last_10_min']} jobs "
               f"in the last 10 minutes ({report['throughput_per_min']:.1f}/min)")
    click.echo(f"last reconcile: {report['last_reconcile'] or 'never'}")
    for failure in report["failed_jobs"]:
        click.echo(f"failed: {display_path(failure['path'])}: {failure['error']}")
