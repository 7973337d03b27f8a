"""Commands for the watch service: run it (watch) and ask what it is doing (status)."""

from __future__ import annotations

import logging
import os
import sys

import click

from libtagger.commands.common import (
    JOBS,
    config_for,
    jobs_for,
    library_for,
    output_format,
    setup_logging,
)
from libtagger.errors import display_path


@click.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--jobs", "-j", type=JOBS, help="Worker processes (default: one per core).")
@click.option("--polling", is_flag=True, help="Poll the folders instead of inotify (network shares).")
@click.pass_context
def watch(ctx: click.Context, roots: tuple[str, ...], jobs: int | None, polling: bool) -> None:
    """Watch music folders and tag new and changed tracks as they arrive (the service)."""
    from libtagger.service.watch import run_daemon

    setup_logging(logging.INFO, ctx.obj["verbose"])
    config = config_for(ctx)
    from_config = not roots
    roots = roots or config.library.roots
    if not roots:
        raise click.UsageError("name a music folder (or set library.roots in the config)")
    library = library_for(ctx, config)
    code = run_daemon(config, library, list(roots), jobs_for(jobs, config, os.cpu_count() or 1),
                      polling, ctx.obj["config_path"], roots_from_config=from_config)
    sys.exit(code)


@click.command()
@output_format()
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """What the watch daemon is doing: queue, work in hand, failures, last reconcile."""
    from libtagger.query.report import daemon_status

    config = config_for(ctx)
    report = daemon_status(library_for(ctx, config))
    if fmt != "table":
        from libtagger.query.listing import write_report

        write_report(report, fmt, sys.stdout)
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


@click.group()
def service() -> None:
    """Install `libtagger watch` as a systemd service (see `service install --help`)."""


@service.command()
@click.option("--user", "kind", flag_value="user", default=True,
              help="A service of your own (systemctl --user); the default.")
@click.option("--system", "kind", flag_value="system",
              help="A system service running as the user libtagger (run as root).")
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False),
              help="Music folder to watch; repeat for several (default: library.roots).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              default=None, help="Config file the service reads (default: the usual one).")
@click.option("--dry-run", is_flag=True,
              help="Print the unit and what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Replace a different unit that is already installed.")
@click.option("--root-dir", type=click.Path(file_okay=False), default=None, hidden=True,
              help="Install below this folder (packaging, tests); runs nothing, like "
                   "systemctl --root.")
@click.pass_context
def install(ctx: click.Context, kind: str, roots: tuple[str, ...], config_path: str | None,
            dry_run: bool, force: bool, root_dir: str | None) -> None:
    """Write the systemd unit for this installation and the folders it needs."""
    import difflib
    import shlex
    from pathlib import Path

    from libtagger.config import Config, load_config
    from libtagger.service.install import InstallError, carry_out, plan_install

    config_path = config_path or ctx.obj["config_path"]
    if config_path:
        config = load_config(config_path)
    elif kind == "system":
        system_config = Path(root_dir or "/") / "etc/libtagger/config.toml"
        config = load_config(system_config) if system_config.is_file() else Config()
    else:
        config = load_config(None)
    roots = roots or config.library.roots
    plan = plan_install(kind, roots, config_path, root_dir, database=config.library.database)

    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    if plan.changes_unit:
        click.echo(f"{plan.unit_path} exists and differs:")
        click.echo("".join(difflib.unified_diff(
            plan.existing.splitlines(keepends=True), plan.unit.splitlines(keepends=True),
            f"{plan.unit_path} (installed)", f"{plan.unit_path} (new)")), nl=False)
        if not force:
            raise InstallError(f"not replacing {plan.unit_path}: use --force to replace it")
    if dry_run:
        click.echo(f"# {plan.unit_path}")
        click.echo(plan.unit, nl=False)
        click.echo()
        for folder in plan.folders:
            click.echo(f"would create {folder}")
        if plan.add_user:
            click.echo(f"would run: {shlex.join(plan.add_user)}")
        if plan.existing == plan.unit:
            click.echo(f"{plan.unit_path} is up to date")
        else:
            click.echo(f"would {'replace' if plan.existing else 'write'} {plan.unit_path}")
        click.echo("then:")
    else:
        if plan.add_user and not plan.run_add_user:
            prefix = "" if root_dir else "sudo "
            click.echo(f"the user {plan.add_user[-1]} is missing; create it with:\n"
                       f"  {prefix}{shlex.join(plan.add_user)}")
        carry_out(plan, force=force)
        for folder in plan.folders:
            click.echo(f"created {folder}")
        if plan.run_add_user and plan.add_user:
            click.echo(f"ran: {shlex.join(plan.add_user)}")
        click.echo(f"{'up to date' if plan.existing == plan.unit else 'wrote'}: {plan.unit_path}")
        click.echo("next:")
    for step in plan.next_steps:
        click.echo(f"  {step}")
