"""What every command shares: exit codes, config and database from the options, logging."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import click

from libtagger.config import INT_RANGES, MAX_JOBS

EXIT_FILE_FAILURES = 1
EXIT_FATAL = 2

ROW_LIMIT = click.IntRange(min=1, max=2**63 - 1)
"""A count or id that reaches SQLite: a positive signed 64-bit integer (a larger one would
raise OverflowError when bound)."""
JOBS = click.IntRange(min=1, max=MAX_JOBS)
"""--jobs: worker processes, bounded as ``library.jobs`` is (a pool of 10**20 never stops)."""
TOP = click.IntRange(*INT_RANGES["classifier.top_k"])
"""--top: genres reported per file, bounded as ``classifier.top_k`` is."""


OUTPUT_HELP = "table for people; csv or json for programs (see the README's Output formats)."


def output_format(default: str = "table") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format table|csv|json`` with ``--json`` as its alias: every command spells machine
    output the same way. The command receives the chosen format as ``fmt``."""
    from libtagger.query.listing import OUTPUT_FORMATS

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def chosen(*args: Any, fmt: str, as_json: bool, **kwargs: Any) -> Any:
            if as_json and fmt not in (default, "json"):
                raise click.UsageError(f"--json and --format {fmt} disagree: give one of them")
            return command(*args, fmt="json" if as_json else fmt, **kwargs)

        chosen = click.option("--json", "as_json", is_flag=True,
                              help="Short for --format json.")(chosen)
        return click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS),
                            default=default, show_default=True, help=OUTPUT_HELP)(chosen)

    return decorate


def default_jobs(n_files: int) -> int:
    """One worker per core, but no more than there are files."""
    return max(1, min(os.cpu_count() or 1, n_files))


def config_for(ctx: click.Context, models: tuple[str, ...] = (), top: int | None = None):
    """The config named by --config (or the default one), with command-line overrides."""
    from libtagger.config import load_config

    config = load_config(ctx.obj["config_path"])
    changes: dict[str, Any] = {}
    if models:
        changes["models"] = models
    if top is not None:
        changes["top_k"] = top
    if changes:
        config = dataclasses.replace(
            config, classifier=dataclasses.replace(config.classifier, **changes)
        )
    return config


def format_time(seconds: float | None) -> str:
    """Seconds as m:ss or h:mm:ss (?:?? when unknown)."""
    if seconds is None:
        return "?:??"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JournalFormatter(logging.Formatter):
    """Prefix each line with its syslog priority (<3> error … <7> debug) for journald."""

    PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                  logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def setup_logging(base: int, verbose: int) -> None:
    """Log to stderr; under journald (JOURNAL_STREAM set) with priorities and no timestamps."""
    levels = [logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG]
    level = levels[min(levels.index(base) + verbose, len(levels) - 1)]
    handler = logging.StreamHandler()
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # -v and -vv are about libtagger: other libraries keep to warnings, whatever the level.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))
    logging.getLogger("libtagger").setLevel(level)


def library_for(ctx: click.Context, config):
    """Open the database named by --db, else the config's, else the default one."""
    from libtagger.library.db import Library

    library = Library(ctx.obj["database"] or config.library.database or None)
    ctx.obj["database_url"] = library.url
    return library


def existing_library_for(ctx: click.Context, config):
    """The database if it exists, opened without creating or upgrading it (dry runs)."""
    from libtagger.library.db import Library

    library = Library.existing(ctx.obj["database"] or config.library.database or None)
    if library is not None:
        ctx.obj["database_url"] = library.url
    return library


def jobs_for(jobs: int | None, config, n_files: int) -> int:
    """Worker processes: --jobs, else the config's, else one per core (at most one per file)."""
    return jobs or config.library.jobs or default_jobs(n_files)
