"""The ``libtagger`` command line: the group, its error handling and the classifier commands.

The command line (this module and ``libtagger.commands``) is the only place that prints, prompts
or exits; the library, service and personal commands live in ``libtagger.commands``.

Exit codes: 0 all went well; 1 some files failed (each reported, the rest done);
2 a usage, configuration or model error stopped the command before it started.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import logging
import os
import sys
from typing import Any

import click

from libtagger import __version__
from libtagger.commands.common import (
    EXIT_FATAL,
    EXIT_FILE_FAILURES,
    JOBS,
    TOP,
    config_for,
    default_jobs,
    format_time,
    library_for,
    output_format,
    setup_logging,
)
from libtagger.commands.library import db, export, query, runs, scan, show, stats, undo
from libtagger.commands.library import write_command
from libtagger.commands.cluster import worker
from libtagger.commands.personal import learn, similar
from libtagger.commands.service import service, status, watch
from libtagger.errors import LibtaggerError, display_path


class _Commands(click.Group):
    """The command group; the one place a LibtaggerError becomes a message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except LibtaggerError as exc:
            click.echo(f"libtagger: error: {exc}", err=True)
            ctx.exit(EXIT_FATAL)
        except OperationalError as exc:
            # The database refused mid-command (locked past the busy timeout, disk full, I/O
            # error): every step is its own transaction, so nothing is half stored.
            from libtagger.library.db import database_problem

            url = (ctx.obj or {}).get("database_url")
            click.echo(f"libtagger: error: {database_problem(url, exc)}", err=True)
            ctx.exit(EXIT_FATAL)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Click's main, plus: the output itself failing (a full disk) is one line, exit 2.

        Here rather than in :meth:`invoke`, so that ``--help`` and ``--version`` (printed
        while the arguments are parsed) are covered too.
        """
        try:
            return super().main(*args, **kwargs)
        except OSError as exc:
            # Click ends a closed pipe quietly (exit 1). Writing the output to a full disk
            # fails with no file name (every file we open names itself). Any other OSError
            # that gets this far is a bug to be seen.
            if exc.filename is not None or exc.errno not in _OUTPUT_ERRNOS:
                raise
            _drop_output()
            click.echo(f"libtagger: error: cannot write the output ({exc.strerror or exc})",
                       err=True)
            sys.exit(EXIT_FATAL)


_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _drop_output() -> None:
    """Point stdout at /dev/null, so that the exit's own flush of what is left cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's captured output)
        pass


def _expand(paths: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given; folders replaced by the audio files under them.

    Also returns the folders that could not be listed, with the reason.
    """
    from libtagger.analysis.audio import find_audio

    out: list[str] = []
    unreadable: list[tuple[str, str]] = []

    def note(exc: OSError) -> None:
        unreadable.append((exc.filename or "?", exc.strerror or str(exc)))

    for path in paths:
        if os.path.isdir(path):
            out.extend(find_audio(path, onerror=note))
        else:
            out.append(path)
    return out, unreadable


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
    setup_logging(logging.WARNING, verbose)
    ctx.obj["config_path"] = config_path
    ctx.obj["database"] = database


@main.command()
# readable=False: an unreadable file is reported with the others' results (the worker says
# why), not refused as a usage error that stops every file.
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@output_format()
@click.option("--windows", is_flag=True, help="Classify every window and show the timeline.")
@click.option("--jobs", "-j", type=JOBS, help="Worker processes (default: one per core).")
@click.option("--model", "models", multiple=True, help="Model to use (repeat to combine); overrides config.")
@click.option("--top", type=TOP, help="Genres to report per file.")
@click.pass_context
def classify(
    ctx: click.Context,
    paths: tuple[str, ...],
    fmt: str,
    windows: bool,
    jobs: int | None,
    models: tuple[str, ...],
    top: int | None,
) -> None:
    """Print the genres of audio files (folders are searched for audio).

    --format json prints one JSON object per file as each is done (JSON Lines)."""
    from libtagger.analysis.classify import Failure
    from libtagger.pipeline.batch import classify_many
    from libtagger.query.listing import csv_row

    config = config_for(ctx, models, top)
    files, unreadable = _expand(paths)
    failed = len(unreadable)
    for folder, reason in unreadable:
        click.echo(f"error: {display_path(folder)}: cannot read folder ({reason})", err=True)
    rows = None
    if fmt == "csv":
        rows = csv.DictWriter(sys.stdout, CLASSIFY_COLUMNS, lineterminator="\n",
                              extrasaction="ignore")
        rows.writeheader()
    for result in classify_many(files, config, jobs or default_jobs(len(files)), windows):
        if isinstance(result, Failure):
            failed += 1
            click.echo(f"error: {display_path(result.path)}: {result.reason}", err=True)
            continue
        if fmt == "json":
            click.echo(json.dumps(result.to_dict(timeline=windows), ensure_ascii=False))
            continue
        if rows is not None:
            rows.writerow(csv_row(_classify_row(result)))
            continue
        genres = ", ".join(f"{g.genre} {g.score:.2f}" for g in result.genres)
        if result.silent:
            genres = "(silent: no genre)"
        elif not genres:
            genres = "(no genre above the threshold)"
        decision = result.decision
        verdict = ""
        if decision is not None:
            verdict = ("\twrites " + "; ".join(decision.genres) if decision.genres
                       else f"\twrites nothing ({decision.reason})")
        click.echo(f"{display_path(result.path)}\t{genres}{verdict}")
        if windows and result.timeline:
            for w in result.timeline:
                label = "silence" if w.silent or not w.genres else f"{w.genres[0].genre} {w.genres[0].score:.2f}"
                click.echo(f"  {format_time(w.start):>8} - {format_time(w.end):<8} {label}")
    if failed:
        folders = f" and {len(unreadable)} unreadable folders" if unreadable else ""
        click.echo(f"{failed - len(unreadable)} of {len(files)} files failed{folders}", err=True)
        sys.exit(EXIT_FILE_FAILURES)


CLASSIFY_COLUMNS = ("path", "genre", "score", "confidence", "genres", "writes", "reason",
                    "duration", "windows", "voting_windows", "model", "path_bytes")


def _classify_row(result: Any) -> dict[str, Any]:
    """One classified file as a CSV row (``--format csv``)."""
    record = result.to_dict()
    top = record["genres"][0] if record["genres"] else {}
    decision = record.get("decision") or {}
    return {**record, "genre": top.get("genre"), "score": top.get("score"),
            "confidence": top.get("confidence"), "writes": "; ".join(decision.get("genres") or []),
            "reason": decision.get("reason"), "path": result.path}


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder for evaluation.json, confusion.png and precision_coverage.png.")
@click.option("--jobs", "-j", type=JOBS, help="Worker processes (default: one per core).")
@click.option("--model", "models", multiple=True,
              help="CNN model to use (repeat to combine), or 'default' / 'personal' (your head "
                   "from `libtagger learn`).")
@click.pass_context
def evaluate(
    ctx: click.Context, directory: str, out_dir: str, jobs: int | None, models: tuple[str, ...]
) -> None:
    """Measure accuracy on DIRECTORY/<genre>/<file> (folder names are the truth)."""
    from libtagger.pipeline.batch import classify_many
    from libtagger.analysis.evaluate import evaluate as run_evaluation
    from libtagger.analysis.evaluate import labelled_files, write_reports

    head = None
    if "personal" in models:
        from libtagger.library.personal import LearnError, active_head

        config = config_for(ctx, tuple(m for m in models if m not in ("personal", "default")))
        config = dataclasses.replace(
            config, personal=dataclasses.replace(config.personal, mode="personal"))
        head = active_head(library_for(ctx, config), "+".join(config.classifier.models))
        if head is None:
            raise LearnError("no personal head for these models yet: run `libtagger learn`")
    else:
        config = config_for(ctx, tuple(m for m in models if m != "default"))
    labelled = labelled_files(directory)
    if not labelled:
        raise click.UsageError(f"no audio files in {directory}/<genre>/ folders")
    paths = [p for p, _ in labelled]
    if head is not None:
        trained = set(head.meta.get("trained_on", []))
        overlap = sum(os.path.realpath(p) in trained for p in paths)
        if overlap:
            click.echo(f"warning: {overlap} of {len(paths)} tracks here trained this head; its "
                       "accuracy on them is optimistic (evaluate on tracks it has not seen)",
                       err=True)
    results = list(classify_many(paths, config, jobs or default_jobs(len(paths)), head=head))
    report = run_evaluation(labelled, results, {n.name: n.parent for n in config.genres})
    written = write_reports(report, out_dir)

    click.echo(f"model: {report.model}")
    click.echo(f"tracks: {len(report.files)}  failed: {len(report.failures)}")
    click.echo(f"accuracy: {report.accuracy:.1%}  top-3 accuracy: {report.top3_accuracy:.1%}")
    click.echo(f"{'genre':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>5}")
    for genre, m in report.per_genre.items():
        click.echo(f"{genre:<16}{m['precision']:>10.2f}{m['recall']:>8.2f}{m['f1']:>8.2f}{m['support']:>5}")
    for failure in report.failures:
        click.echo(f"error: {display_path(failure.path)}: {failure.reason}", err=True)
    w = report.written
    if w.get("written") is not None and report.files:
        precision = f"{w['precision']:.0%}" if w["precision"] is not None else "-"
        click.echo(f"written at the configured gates: {w['coverage']:.0%} of tracks "
                   f"({w['written']}/{len(report.files)}), {precision} of them right")
    click.echo("wrote " + ", ".join(str(p) for p in written))
    if report.failures:
        sys.exit(EXIT_FILE_FAILURES)


@main.command()
@click.option("--tags", is_flag=True, help="Also list every tag each model outputs.")
@output_format()
def models(tags: bool, fmt: str) -> None:
    """List the shipped models with their licence and published accuracy."""
    from libtagger.analysis.model import ModelInfo, model_path, shipped_models, tflite_runtime
    from libtagger.query.listing import write_records

    infos = [ModelInfo.from_sidecar(json.loads(model_path(name).with_suffix(".json")
                                               .read_text(encoding="utf-8")), name)
             for name in shipped_models()]
    if fmt != "table":
        records = [{"name": i.name, "tags": len(i.labels), "embedding_dim": i.embedding_dim,
                    "accuracy": i.accuracy, "dataset": i.dataset, "licence": i.licence,
                    **({"labels": list(i.labels) if fmt == "json" else "; ".join(i.labels)}
                       if tags else {})}
                   for i in infos]
        write_records(records, fmt, sys.stdout, list(records[0]) if records else ["name"],
                      [], lambda r: [])
        return
    click.echo(f"TFLite runtime: {tflite_runtime()[0]}")
    for info in infos:
        click.echo(
            f"{info.name:<12} {len(info.labels)} tags, {info.embedding_dim}-d embeddings, "
            f"{info.accuracy} on {info.dataset}; licence {info.licence}"
        )
        if tags:
            click.echo("    " + ", ".join(info.labels))


for _command in (db, export, learn, query, runs, scan, show, similar, stats, status, undo, watch,
                 worker,
                 write_command):
    main.add_command(_command)
main.add_command(service)
