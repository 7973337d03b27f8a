"""The ``libtagger`` command line: the only module that prints, prompts or exits.

Exit codes: 0 all went well; 1 some files failed (each reported, the rest done);
2 a usage, configuration or model error stopped the command before it started.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any

import click

from libtagger import __version__
from libtagger.errors import LibtaggerError, display_path

EXIT_FILE_FAILURES = 1
EXIT_FATAL = 2

class _Commands(click.Group):
    """The command group; the one place a LibtaggerError becomes a message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LibtaggerError as exc:
            click.echo(f"libtagger: error: {exc}", err=True)
            ctx.exit(EXIT_FATAL)


def _default_jobs(n_files: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_files))


def _load(ctx: click.Context, models: tuple[str, ...] = (), top: int | None = None):
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


def _expand(paths: tuple[str, ...]) -> list[str]:
    """Files as given; folders replaced by the audio files under them."""
    from libtagger.audio import find_audio

    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out.extend(find_audio(path))
        else:
            out.append(path)
    return out


def _format_time(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="libtagger")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $LIBTAGGER_CONFIG or ~/.config/libtagger/config.toml).",
)
@click.option(
    "--db",
    "database",
    envvar="LIBTAGGER_DB",
    default=None,
    help="Genre database: a path or SQLAlchemy URL (default: config, else "
    "~/.local/share/libtagger/library.db).",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, database: str | None, verbose: int) -> None:
    """Tag a music library with genres, from the audio itself."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(logging.WARNING, verbose)
    ctx.obj["config_path"] = config_path
    ctx.obj["database"] = database


class _JournalFormatter(logging.Formatter):
    """Prefix each line with its syslog priority (<3> error … <7> debug) for journald."""

    PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                  logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def _setup_logging(base: int, verbose: int) -> None:
    """Log to stderr; under journald (JOURNAL_STREAM set) with priorities and no timestamps."""
    levels = [logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG]
    level = levels[min(levels.index(base) + verbose, len(levels) - 1)]
    handler = logging.StreamHandler()
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "watchdog", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _library(ctx: click.Context, config):
    """Open the database named by --db, else the config's, else the default one."""
    from libtagger.db import Library

    return Library(ctx.obj["database"] or config.library.database or None)


def _jobs(jobs: int | None, config, n_files: int) -> int:
    return jobs or config.library.jobs or _default_jobs(n_files)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (JSON Lines).")
@click.option("--windows", is_flag=True, help="Classify every window and show the timeline.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option("--model", "models", multiple=True, help="Model to use (repeat to combine); overrides config.")
@click.option("--top", type=click.IntRange(min=1), help="Genres to report per file.")
@click.pass_context
def classify(
    ctx: click.Context,
    paths: tuple[str, ...],
    as_json: bool,
    windows: bool,
    jobs: int | None,
    models: tuple[str, ...],
    top: int | None,
) -> None:
    """Print the genres of audio files (folders are searched for audio)."""
    from libtagger.classify import Failure, classify_many

    config = _load(ctx, models, top)
    files = _expand(paths)
    failed = 0
    for result in classify_many(files, config, jobs or _default_jobs(len(files)), windows):
        if isinstance(result, Failure):
            failed += 1
            click.echo(f"error: {display_path(result.path)}: {result.reason}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(result.to_dict(timeline=windows), ensure_ascii=False))
            continue
        genres = ", ".join(f"{g.genre} {g.score:.2f}" for g in result.genres)
        if result.silent:
            genres = "(silent: no genre)"
        elif not genres:
            genres = "(no genre above the threshold)"
        click.echo(f"{display_path(result.path)}\t{genres}")
        if windows and result.timeline:
            for w in result.timeline:
                label = "silence" if w.silent or not w.genres else f"{w.genres[0].genre} {w.genres[0].score:.2f}"
                click.echo(f"  {_format_time(w.start):>8} - {_format_time(w.end):<8} {label}")
    if failed:
        click.echo(f"{failed} of {len(files)} files failed", err=True)
        sys.exit(EXIT_FILE_FAILURES)


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder for evaluation.json and confusion.png.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option("--model", "models", multiple=True,
              help="CNN model to use (repeat to combine), or 'default' / 'personal' (your head "
                   "from `libtagger learn`).")
@click.pass_context
def evaluate(
    ctx: click.Context, directory: str, out_dir: str, jobs: int | None, models: tuple[str, ...]
) -> None:
    """Measure accuracy on DIRECTORY/<genre>/<file> (folder names are the truth)."""
    from libtagger.classify import classify_many
    from libtagger.evaluate import evaluate as run_evaluation
    from libtagger.evaluate import labelled_files, write_reports

    head = None
    if "personal" in models:
        from libtagger.personal import LearnError, active_head

        config = _load(ctx, tuple(m for m in models if m not in ("personal", "default")))
        config = dataclasses.replace(
            config, personal=dataclasses.replace(config.personal, mode="personal"))
        head = active_head(_library(ctx, config), "+".join(config.classifier.models))
        if head is None:
            raise LearnError("no personal head for these models yet: run `libtagger learn`")
    else:
        config = _load(ctx, tuple(m for m in models if m != "default"))
    labelled = labelled_files(directory)
    if not labelled:
        raise click.UsageError(f"no audio files in {directory}/<genre>/ folders")
    paths = [p for p, _ in labelled]
    results = list(classify_many(paths, config, jobs or _default_jobs(len(paths)), head=head))
    report = run_evaluation(labelled, results)
    json_path, png_path = write_reports(report, out_dir)

    click.echo(f"model: {report.model}")
    click.echo(f"tracks: {len(report.files)}  failed: {len(report.failures)}")
    click.echo(f"accuracy: {report.accuracy:.1%}  top-3 accuracy: {report.top3_accuracy:.1%}")
    click.echo(f"{'genre':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>5}")
    for genre, m in report.per_genre.items():
        click.echo(f"{genre:<16}{m['precision']:>10.2f}{m['recall']:>8.2f}{m['f1']:>8.2f}{m['support']:>5}")
    for failure in report.failures:
        click.echo(f"error: {display_path(failure.path)}: {failure.reason}", err=True)
    click.echo(f"wrote {json_path} and {png_path}")
    if report.failures:
        sys.exit(EXIT_FILE_FAILURES)


@main.command()
@click.option("--tags", is_flag=True, help="Also list every tag each model outputs.")
def models(tags: bool) -> None:
    """List the shipped models with their licence and published accuracy."""
    from libtagger.model import ModelInfo, model_path, shipped_models, tflite_runtime

    click.echo(f"TFLite runtime: {tflite_runtime()[0]}")
    for name in shipped_models():
        data = json.loads(model_path(name).with_suffix(".json").read_text(encoding="utf-8"))
        info = ModelInfo.from_sidecar(data, name)
        click.echo(
            f"{info.name:<12} {len(info.labels)} tags, {info.embedding_dim}-d embeddings, "
            f"ROC-AUC {info.published_roc_auc} on {info.dataset}; licence {info.licence}"
        )
        if tags:
            click.echo("    " + ", ".join(info.labels))


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option("--dry-run", is_flag=True, help="Classify and show what would be written; change nothing.")
@click.option("--no-write", is_flag=True, help="Store results in the database; leave the files alone.")
@click.option("--force", is_flag=True, help="Reclassify every track, changed or not.")
@click.option("--policy", type=click.Choice(["fill_empty", "replace", "append"]),
              help="How genres are written (default: config, else fill_empty).")
@click.pass_context
def scan(ctx: click.Context, roots: tuple[str, ...], jobs: int | None, dry_run: bool,
         no_write: bool, force: bool, policy: str | None) -> None:
    """Find tracks under ROOTS, classify new and changed ones, store and tag them."""
    from libtagger.scan import scan_library

    config = _load(ctx)
    if policy:
        config = dataclasses.replace(config, tags=dataclasses.replace(config.tags, policy=policy))
    roots = roots or config.library.roots
    if not roots:
        raise click.UsageError("name a music folder (or set library.roots in the config)")
    library = _library(ctx, config)
    with _ScanProgress() as progress:
        try:
            summary = scan_library(
                library, roots, config, jobs=_jobs(jobs, config, os.cpu_count() or 1),
                force=force, write=not no_write, dry_run=dry_run, progress=progress.update,
            )
        except KeyboardInterrupt:
            click.echo("interrupted: what was done is saved; run the scan again to resume", err=True)
            sys.exit(130)
    if dry_run:
        for o in summary.outcomes:
            if o.write == "planned":
                before = "; ".join(o.before) or "(no genre)"
                click.echo(f"{display_path(o.path)}: {before} -> {'; '.join(o.after)}")
    _print_summary(summary, dry_run)
    if summary.failed or summary.write_failed:
        sys.exit(EXIT_FILE_FAILURES)


class _ScanProgress:
    """A rich progress bar on stderr: files found while walking, then tracks classified."""

    def __enter__(self) -> _ScanProgress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            auto_refresh=console.is_terminal,  # no redraw thread when nobody watches
        )
        self._progress.__enter__()
        self._tasks: dict[str, Any] = {}
        return self

    def update(self, phase: str, done: int, total: int) -> None:
        if phase not in self._tasks:
            label = "finding files" if phase == "walk" else "classifying"
            self._tasks[phase] = self._progress.add_task(label, total=total or None, rate="")
        task = self._tasks[phase]
        self._progress.update(task, completed=done, total=total or None)
        speed = self._progress.tasks[task].speed
        if speed:
            self._progress.update(task, rate=f"{speed:.1f} tracks/s")

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)


def _print_summary(summary, dry_run: bool) -> None:
    s = summary
    click.echo(
        f"{s.found} files: {s.new} new, {s.changed} changed, {s.moved} moved, "
        f"{s.missing} missing, {s.unchanged} unchanged"
        + (f", {s.retouched} with edited tags only" if s.retouched else "")
    )
    if dry_run:
        planned = sum(o.write == "planned" for o in s.outcomes)
        wrote = f"would write {planned} tags, {s.skipped - planned} would not"
    else:
        wrote = f"wrote {s.written} tags, {s.skipped} not written (gate, policy or --no-write)"
    click.echo(
        f"classified {s.classified}, {wrote}, {s.failed} failed"
        + (f", {s.write_failed} tag writes failed" if s.write_failed else "")
    )
    for path, reason in s.failures:
        click.echo(f"error: {display_path(path)}: {reason}", err=True)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--since", help="Undo writes made since WHEN (2026-11-01, 3d, monday, …).")
@click.option("--run", "run_id", type=int, help="Undo the writes of one scan (see `libtagger runs`).")
@click.option("--dry-run", is_flag=True, help="Show what would be restored; change nothing.")
@click.pass_context
def undo(ctx: click.Context, paths: tuple[str, ...], since: str | None, run_id: int | None,
         dry_run: bool) -> None:
    """Restore the genres files had before libtagger wrote them.

    Files whose genre was changed by someone else since our write are skipped and reported.
    """
    from libtagger.query import parse_when
    from libtagger.undo import undo_writes

    if not (paths or since or run_id):
        raise click.UsageError("say what to undo: PATH…, --since WHEN or --run ID")
    config = _load(ctx)
    library = _library(ctx, config)
    when = parse_when(since) if since else None
    items = undo_writes(library, config, list(paths), when, run_id, dry_run)
    failed = 0
    for item in items:
        genres = "; ".join(item.genres) or "(no genre)"
        if item.state in ("restored", "would-restore"):
            verb = "restored" if item.state == "restored" else "would restore"
            click.echo(f"{verb}: {display_path(item.path)} -> {genres}")
        else:
            failed += item.state == "failed"
            click.echo(f"{item.state}: {display_path(item.path)}: {item.reason}", err=True)
    restored = sum(i.state in ("restored", "would-restore") for i in items)
    click.echo(f"{restored} restored, {len(items) - restored - failed} skipped, {failed} failed"
               if items else "nothing to undo")
    if failed:
        sys.exit(EXIT_FILE_FAILURES)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Bring the database schema up to date (also done automatically on start)."""
    from libtagger.db import Library, current_revision, head_revision

    config = _load(ctx)
    library = Library(ctx.obj["database"] or config.library.database or None, migrate=False)
    before = current_revision(library.engine)
    from libtagger.db import upgrade as run_upgrade

    run_upgrade(library.engine)
    click.echo(f"{library.url}: schema {before or '(empty)'} -> {head_revision()}")


_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
                       default="table", show_default=True, help="Output format.")


@main.command()
@click.argument("terms", nargs=-1)
@_FORMAT
@click.option("--sort", default="path", show_default=True,
              help="path, score, added, classified or genre; a leading - reverses it.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many tracks.")
@click.pass_context
def query(ctx: click.Context, terms: tuple[str, ...], fmt: str, sort: str, limit: int | None) -> None:
    """Find tracks: libtagger query 'genre:house score:>0.6 added:>monday'.

    Terms are field:value (genre, score, confidence, rank, path, format, status, model,
    duration, windows, added, changed, classified, error); -term negates; OR separates
    alternatives. See the README for the whole grammar.
    """
    from libtagger.listing import track_rows, write_rows
    from libtagger.query import select_tracks

    config = _load(ctx)
    library = _library(ctx, config)
    with library.session() as session:
        rows = track_rows(select_tracks(session, " ".join(terms), order_by=sort, limit=limit))
    write_rows(rows, fmt, sys.stdout)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True, help="Output format.")
@click.pass_context
def export(ctx: click.Context, fmt: str) -> None:
    """Export the whole library to stdout: every track with its genres."""
    ctx.invoke(query, terms=(), fmt=fmt, sort="path", limit=None)


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
@click.pass_context
def show(ctx: click.Context, path: str, as_json: bool) -> None:
    """Everything known about one track: genres, tags, history, and its timeline."""
    from sqlalchemy import select

    from libtagger.db import TagWrite, Track
    from libtagger.listing import track_rows

    config = _load(ctx)
    library = _library(ctx, config)
    real = os.path.realpath(os.path.expanduser(path))
    with library.session() as session:
        track = session.scalars(select(Track).where(Track.path == real)).first()
        if track is None:
            raise click.UsageError(f"not in the database: {display_path(real)} (scan it first)")
        row = track_rows([track])[0]
        found = track.classification
        writes = session.scalars(
            select(TagWrite).where(TagWrite.track_id == track.id).order_by(TagWrite.id)
        ).all()
        row.update(
            identity=track.identity,
            attempts=track.attempts,
            windows=found.windows if found else None,
            voting_windows=found.voting_windows if found else None,
            tags=dict(list((found.tags or {}).items())[:10]) if found else {},
            timeline=found.timeline if found else None,
            tag_writes=[
                {"kind": w.kind, "state": w.state, "before": w.before, "after": w.after,
                 "at": w.created_at.isoformat(), "run": w.run_id, "error": w.error}
                for w in writes
            ],
        )
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(display_path(row["path"]))
    click.echo(f"  status     {row['status']}" + (f" ({row['last_error']})" if row["last_error"] else ""))
    click.echo(f"  format     {row['format'] or '?'}, {_format_time(row['duration'])}")
    if found:
        click.echo(f"  model      {row['model']}, {row['windows']} windows "
                   f"({row['voting_windows']} voting), classified {row['classified_at']}")
        for g in row["genres"]:
            click.echo(f"  genre      {g['genre']:<16} score {g['score']:.2f}  "
                       f"confidence {g['confidence']:.2f}")
        top_tags = ", ".join(f"{k} {v:.2f}" for k, v in row["tags"].items())
        click.echo(f"  top tags   {top_tags}")
    for w in row["tag_writes"]:
        click.echo(f"  {w['kind']:<10} {w['at'][:19]}  {'; '.join(w['before']) or '(none)'} -> "
                   f"{'; '.join(w['after']) or '(none)'}  [{w['state']}]")
    for w in row["timeline"] or []:
        label = w["genre"] or "silence"
        score = f" {w['score']:.2f}" if w["score"] is not None else ""
        click.echo(f"  {_format_time(w['start']):>8} - {_format_time(w['end']):<8} {label}{score}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Genre histogram, confidence distribution and failures of the library."""
    from libtagger.report import library_stats

    config = _load(ctx)
    library = _library(ctx, config)
    report = library_stats(library)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"tracks: {report['tracks']}  " + "  ".join(
        f"{status}: {n}" for status, n in report["status"].items()))
    click.echo("\ntop genre        tracks")
    width = max(report["genres"].values(), default=1)
    for genre, n in report["genres"].items():
        click.echo(f"{genre:<16} {n:>6}  {'#' * max(1, round(30 * n / width))}")
    click.echo("\nconfidence       tracks")
    for bucket, n in report["confidence"].items():
        click.echo(f"{bucket:<16} {n:>6}")
    if report["failures"]:
        click.echo(f"\nfailures ({len(report['failures'])}):")
        for failure in report["failures"]:
            click.echo(f"  {display_path(failure['path'])}: {failure['error']}")


@main.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.pass_context
def runs(ctx: click.Context, limit: int) -> None:
    """The latest scans, with their counts (for `undo --run ID`)."""
    from sqlalchemy import select

    from libtagger.db import Run

    config = _load(ctx)
    library = _library(ctx, config)
    with library.session() as session:
        for run in session.scalars(select(Run).order_by(Run.id.desc()).limit(limit)):
            counts = ", ".join(f"{k} {v}" for k, v in run.counts.items() if v)
            click.echo(f"{run.id:>5}  {run.kind:<6} {run.started_at:%Y-%m-%d %H:%M}  "
                       f"{run.status:<11} {counts}")


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option("--polling", is_flag=True, help="Poll the folders instead of inotify (network shares).")
@click.pass_context
def watch(ctx: click.Context, roots: tuple[str, ...], jobs: int | None, polling: bool) -> None:
    """Watch music folders and tag new and changed tracks as they arrive (the service)."""
    from libtagger.watch import run_daemon

    _setup_logging(logging.INFO, ctx.obj["verbose"])
    config = _load(ctx)
    roots = roots or config.library.roots
    if not roots:
        raise click.UsageError("name a music folder (or set library.roots in the config)")
    library = _library(ctx, config)
    code = run_daemon(config, library, list(roots), _jobs(jobs, config, os.cpu_count() or 1),
                      polling, ctx.obj["config_path"])
    sys.exit(code)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """What the watch daemon is doing: queue, work in hand, failures, last reconcile."""
    from libtagger.report import daemon_status

    config = _load(ctx)
    report = daemon_status(_library(ctx, config))
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


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder for learn.json and learn-confusion.png.")
@click.option("--force", is_flag=True, help="Activate the new head even if it scores lower.")
@click.pass_context
def learn(ctx: click.Context, roots: tuple[str, ...], out_dir: str, force: bool) -> None:
    """Learn your own genres from the tracks you tagged (scanned tracks, under ROOTS if given).

    Tracks whose genre libtagger wrote are never used. Prints cross-validated accuracy next to
    the default classifier's on the same tracks, and saves the head for scan and watch.
    """
    from pathlib import Path

    from libtagger.evaluate import plot_confusion
    from libtagger.personal import learn as run_learn

    config = _load(ctx)
    library = _library(ctx, config)
    report = run_learn(library, config, "+".join(config.classifier.models), list(roots), force)
    p, d = report.personal, report.default
    low, high = report.accuracy_interval
    click.echo(f"learned from {len(p.files)} tracks in {len(report.genres)} genres "
               f"({report.folds}-fold cross-validation, split by track)")
    if report.dropped:
        click.echo("not enough tracks (need " + str(config.personal.min_tracks) + "): "
                   + ", ".join(f"{g} ({n})" for g, n in sorted(report.dropped.items())))
    click.echo(f"accuracy: yours {p.accuracy:.1%} (95% interval {low:.0%}-{high:.0%}), "
               f"default genres {d.accuracy:.1%} on the same tracks")
    click.echo(f"{'genre':<20}{'tracks':>7}{'precision':>10}{'recall':>8}{'f1':>7}")
    for genre, m in p.per_genre.items():
        click.echo(f"{genre:<20}{m['support']:>7}{m['precision']:>10.2f}{m['recall']:>8.2f}"
                   f"{m['f1']:>7.2f}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learn.json").write_text(json.dumps(
        {"personal": p.to_dict(), "default": d.to_dict(), "genres": report.genres,
         "dropped": report.dropped, "accuracy_interval": report.accuracy_interval,
         "head": report.head_id, "activated": report.activated}, indent=2) + "\n")
    plot_confusion(p, out / "learn-confusion.png")
    if report.activated:
        click.echo(f"head {report.head_id} is now active: scan and watch use your genres")
    else:
        click.echo(f"head {report.head_id} saved but not activated: it scored "
                   f"{p.accuracy:.1%}, the active head {report.previous_accuracy:.1%} "
                   "(--force activates it anyway)")
    click.echo(f"wrote {out / 'learn.json'} and {out / 'learn-confusion.png'}")


@main.command()
@click.argument("path", type=click.Path())
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def similar(ctx: click.Context, path: str, count: int, fmt: str) -> None:
    """The tracks that sound most like PATH (cosine similarity of CNN embeddings)."""
    from libtagger.similar import neighbour_rows, similar_tracks, write_neighbours

    config = _load(ctx)
    rows = neighbour_rows(similar_tracks(_library(ctx, config), path, count))
    write_neighbours(rows, fmt, sys.stdout)
