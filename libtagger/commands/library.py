"""Commands on the scanned library: scan, undo, query, export, show, stats, runs, db."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click

from libtagger.commands.common import (
    EXIT_FILE_FAILURES,
    JOBS,
    ROW_LIMIT,
    config_for,
    existing_library_for,
    format_time,
    jobs_for,
    library_for,
    output_format,
)
from libtagger.errors import display_path, path_fields


@click.command()
@click.argument("roots", nargs=-1, type=click.Path(exists=True))
@click.option("--jobs", "-j", type=JOBS, help="Worker processes (default: one per core).")
@click.option("--dry-run", is_flag=True, help="Classify and show what would be written; change nothing.")
@click.option("--no-write", is_flag=True, help="Store results in the database; leave the files alone.")
@click.option("--force", is_flag=True, help="Reclassify every track, changed or not.")
@click.option("--policy", type=click.Choice(["fill_empty", "replace", "append"]),
              help="How genres are written (default: config, else fill_empty).")
@click.option("--rewrite-undone", is_flag=True,
              help="Also write files whose genre you undid (by default they are left alone).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Classify on a Dask cluster: 'local' (a LocalCluster on this machine) or a "
                   "scheduler such as tcp://host:8786 (default: cluster.scheduler; '' for this "
                   "machine's own workers).")
@click.pass_context
def scan(ctx: click.Context, roots: tuple[str, ...], jobs: int | None, dry_run: bool,
         no_write: bool, force: bool, policy: str | None, rewrite_undone: bool,
         scheduler: str | None) -> None:
    """Find tracks under ROOTS (folders or single files), classify new and changed ones,
    store and tag them."""
    from libtagger.pipeline.scan import scan_library

    config = config_for(ctx)
    if policy:
        config = dataclasses.replace(config, tags=dataclasses.replace(config.tags, policy=policy))
    roots = roots or config.library.roots
    if not roots:
        raise click.UsageError("name a music folder (or set library.roots in the config)")
    library = existing_library_for(ctx, config) if dry_run else library_for(ctx, config)
    try:
        # The bar is gone (it is transient) before a message prints: on a line of its own.
        with _ScanProgress() as progress:
            summary = scan_library(
                library, roots, config, jobs=jobs_for(jobs, config, os.cpu_count() or 1),
                force=force, write=not no_write, dry_run=dry_run, progress=progress.update,
                rewrite_undone=rewrite_undone,
                scheduler=config.cluster.scheduler if scheduler is None else scheduler,
            )
    except KeyboardInterrupt:
        click.echo("interrupted: what was done is saved; run the scan again to resume", err=True)
        sys.exit(130)
    if dry_run:
        for o in summary.outcomes:
            click.echo(f"{display_path(o.path)}: {_would(o)}")
    for o in summary.outcomes if not dry_run else ():
        if o.status == "deferred" or o.write == "deferred":
            click.echo(f"later: {display_path(o.path)}: {o.error or o.write_error}", err=True)
    for folder, reason in summary.unreadable:
        click.echo(f"warning: cannot read folder {display_path(folder)}: {reason}; its tracks "
                   "are kept as they were", err=True)
    for root, reason in summary.refused:
        click.echo(f"error: {display_path(root)}: {reason}; nothing scanned there", err=True)
    _print_summary(summary, dry_run)
    if summary.failed or summary.write_failed or summary.refused:
        sys.exit(EXIT_FILE_FAILURES)


@click.command("write")
@click.argument("terms", nargs=-1)
@click.option("--policy", type=click.Choice(["fill_empty", "replace", "append"]),
              help="How genres are written (default: config, else fill_empty).")
@click.option("--dry-run", is_flag=True, help="Show what would be written; change nothing.")
@click.option("--rewrite-undone", is_flag=True, help="Also write files whose genre you undid.")
@click.pass_context
def write_command(ctx: click.Context, terms: tuple[str, ...], policy: str | None,
                  dry_run: bool, rewrite_undone: bool) -> None:
    """Write the stored genres of the tracks matching QUERY (all without one) into their
    files again, with the current policy: no classification needed."""
    from libtagger.pipeline.rewrite import write_stored
    from libtagger.query.language import select_tracks

    config = config_for(ctx)
    if policy:
        config = dataclasses.replace(config, tags=dataclasses.replace(config.tags, policy=policy))
    library = library_for(ctx, config)
    with library.reader() as session:
        ids = [t.id for t in select_tracks(session, " ".join(terms) or "status:done")]
    outcomes = write_stored(library, config, ids, dry_run, rewrite_undone)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.write] = counts.get(o.write, 0) + 1
        if o.write in ("planned", "written", "failed", "deferred", "undone") or dry_run:
            verb = {"written": "wrote " + "; ".join(o.after)}.get(o.write)
            click.echo(f"{display_path(o.path)}: {verb or _would(o)}")
    done = counts.get("planned" if dry_run else "written", 0)
    click.echo(f"{len(outcomes)} tracks: {'would write' if dry_run else 'wrote'} {done}, "
               + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())
                           if state not in ("planned", "written")) or "nothing else")
    if counts.get("failed"):
        sys.exit(EXIT_FILE_FAILURES)


PHASES = {"start": "starting workers, loading models", "walk": "finding files",
          "classify": "classifying"}
"""What the progress bar says in each phase of a scan."""


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
            for earlier in self._tasks.values():  # one line: what is happening now
                self._progress.update(earlier, visible=False)
            self._tasks[phase] = self._progress.add_task(PHASES.get(phase, phase),
                                                         total=total or None, rate="")
        task = self._tasks[phase]
        self._progress.update(task, completed=done, total=total or None)
        speed = self._progress.tasks[task].speed
        if speed:
            self._progress.update(task, rate=f"{speed:.1f} tracks/s")

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)


def _decision_line(decision: dict | None, level: str | None) -> str:
    """What the genre tree decided for a track, in one line."""
    if not decision:
        return "(classified before the genre tree: rescan with --force)"
    genres = "; ".join(decision.get("genres") or [])
    if not genres:
        return f"nothing to write: {decision.get('reason')}"
    return (f"write {genres} ({decision.get('level')}, {decision.get('confidence', 0):.0%} of "
            f"votes): {decision.get('reason')}")


def _would(o) -> str:
    """What a dry run says about one file: what would happen, and why."""
    if o.status == "failed":
        return f"would fail: {o.error}"
    if o.status == "deferred":
        return f"would wait: {o.error}"
    genre = ", ".join(o.genres[:3]) or "no genre"
    reasons = {
        "planned": lambda: f"would write {'; '.join(o.after)} "
                           f"(now: {'; '.join(o.before) or 'no genre'})",
        "kept": lambda: f"would keep {'; '.join(o.before)} (policy)",
        "gated": lambda: f"would not write: {o.reason or 'below the gate'}",
        "none": lambda: "would not write: no genre",
        "disabled": lambda: "would store only (writing disabled)",
        "undone": lambda: f"would not write: {o.reason}",
        "deferred": lambda: f"left for later: {o.write_error}",
        "written": lambda: f"wrote {'; '.join(o.after)}",
        "failed": lambda: f"would not write: {o.write_error}",
    }
    return f"{genre}; " + reasons.get(o.write, lambda: o.write)()


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
        + (f", {s.deferred} left for the next run (busy, still settling, or not writable now)"
           if s.deferred else "")
        + (f", {len(s.unreadable)} folders unreadable" if s.unreadable else "")
    )
    if dry_run:
        click.echo("dry run: nothing was changed, not even the database")
    for path, reason in s.failures:
        click.echo(f"error: {display_path(path)}: {reason}", err=True)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--since", help="Undo writes made since WHEN (2026-11-01, 3d, monday, …).")
@click.option("--run", "run_id", type=ROW_LIMIT, help="Undo the writes of one scan (see `libtagger runs`).")
@click.option("--dry-run", is_flag=True, help="Show what would be restored; change nothing.")
@click.pass_context
def undo(ctx: click.Context, paths: tuple[str, ...], since: str | None, run_id: int | None,
         dry_run: bool) -> None:
    """Restore the genres files had before libtagger wrote them.

    Files whose genre was changed by someone else since our write are skipped and reported.
    """
    from libtagger.query.language import parse_when
    from libtagger.library.undo import undo_writes

    if not (paths or since or run_id):
        raise click.UsageError("say what to undo: PATH…, --since WHEN or --run ID")
    config = config_for(ctx)
    library = library_for(ctx, config)
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


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Bring the database schema up to date (also done automatically on start)."""
    from libtagger.library.db import Library, current_revision, head_revision

    config = config_for(ctx)
    library = Library(ctx.obj["database"] or config.library.database or None, migrate=False)
    before = current_revision(library.engine)
    from libtagger.library.db import upgrade as run_upgrade

    run_upgrade(library.engine)
    click.echo(f"{library.url}: schema {before or '(empty)'} -> {head_revision()}")


@click.command()
@click.argument("terms", nargs=-1)
@output_format()
@click.option("--sort", default="path", show_default=True,
              help="path (A to Z), score (highest first), added or classified (newest first), "
                   "genre (A to Z); a leading - reverses it.")
@click.option("--limit", type=ROW_LIMIT, help="At most this many tracks.")
@click.pass_context
def query(ctx: click.Context, terms: tuple[str, ...], fmt: str, sort: str, limit: int | None) -> None:
    """Find tracks: libtagger query 'genre:house score:>0.6 added:>monday'.

    Terms are field:value (genre, score, confidence, rank, path, format, status, model,
    duration, windows, added, changed, classified, error); -term negates; OR separates
    alternatives. See the README for the whole grammar.
    """
    from libtagger.query.language import select_tracks, shown_genre
    from libtagger.query.listing import track_rows, write_rows

    config = config_for(ctx)
    library = library_for(ctx, config)
    with library.reader() as session:
        text = " ".join(terms)
        rows = track_rows(select_tracks(session, text, order_by=sort, limit=limit),
                          shown_genre(text))
    write_rows(rows, fmt, sys.stdout)


@click.command()
@output_format("json")
@click.pass_context
def export(ctx: click.Context, fmt: str) -> None:
    """Export the whole library to stdout: every track with its genres."""
    ctx.invoke(query, terms=(), fmt=fmt, sort="path", limit=None)


@click.command()
@click.argument("path", type=click.Path())
@output_format()
@click.pass_context
def show(ctx: click.Context, path: str, fmt: str) -> None:
    """Everything known about one track: genres, the decision and why, tags, history, and its
    timeline; for a folder, the list of its tracks."""
    from sqlalchemy import select

    from libtagger.library.db import TagWrite, Track
    from libtagger.query.listing import track_rows, write_rows

    config = config_for(ctx)
    library = library_for(ctx, config)
    real = os.path.realpath(os.path.expanduser(path))
    if os.path.isdir(real):  # a folder: its tracks, as `query path:` lists them
        from libtagger.library.db import under_path

        with library.reader() as session:
            tracks = session.scalars(select(Track).where(under_path(Track.path, real))
                                     .order_by(Track.path)).all()
            rows = track_rows(tracks)
        if not rows:
            raise click.UsageError(f"no scanned tracks under {display_path(real)}")
        write_rows(rows, fmt, sys.stdout)
        return
    with library.reader() as session:
        track = session.scalars(select(Track).where(Track.path == real)).first()
        if track is None:
            raise click.UsageError(f"not in the database: {display_path(real)} (scan it first)")
        row = track_rows([track])[0]
        found = track.classification
        writes = session.scalars(
            select(TagWrite).where(TagWrite.track_id == track.id).order_by(TagWrite.id)
        ).all()
        row.update(
            decision=found.decision if found else None,
            vocabulary=(found.decision or {}).get("level") if found else None,
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
    from libtagger.query.explain import tag_state

    row["tag_state"] = tag_state(row, row["tag_writes"], config.tags)
    if fmt == "json":  # the whole record; CSV is the row `query` would print
        click.echo(json.dumps({**row, **path_fields(row["path"])}, indent=2, ensure_ascii=False))
        return
    if fmt == "csv":
        write_rows([row], "csv", sys.stdout)
        return
    click.echo(display_path(row["path"]))
    click.echo(f"  status     {row['status']}" + (f" ({row['last_error']})" if row["last_error"] else ""))
    click.echo(f"  format     {row['format'] or '?'}, {format_time(row['duration'])}")
    in_file = [f"{k} {row[k]}" for k in ("artist", "title", "album") if row[k]]
    click.echo("  in file    " + "; ".join([f"genre {row['tag'] or '(none)'}", *in_file])
               + "  (as last scanned)")
    click.echo(f"  tag        {row['tag_state']}")
    if found:
        click.echo(f"  model      {row['model']}, {row['windows']} windows "
                   f"({row['voting_windows']} voting), classified {row['classified_at']}")
        for g in row["genres"]:
            click.echo(f"  genre      {g['genre']:<16} score {g['score']:.2f}  "
                       f"confidence {g['confidence']:.2f}")
        click.echo(f"  decision   {_decision_line(row['decision'], row['vocabulary'])}")
        top_tags = ", ".join(f"{k} {v:.2f}" for k, v in row["tags"].items())
        click.echo(f"  top tags   {top_tags}")
    for w in row["tag_writes"]:
        click.echo(f"  {w['kind']:<10} {w['at'][:19]}  {'; '.join(w['before']) or '(none)'} -> "
                   f"{'; '.join(w['after']) or '(none)'}  [{w['state']}]"
                   + (f"  {w['error']}" if w["error"] else ""))
    restorable = [w for w in row["tag_writes"] if w["kind"] == "write" and w["state"] == "written"]
    if restorable:
        click.echo(f"  undo       would restore {'; '.join(restorable[0]['before']) or '(no genre)'}")
    for w in row["timeline"] or []:
        label = w["genre"] or "silence"
        score = f" {w['score']:.2f}" if w["score"] is not None else ""
        click.echo(f"  {format_time(w['start']):>8} - {format_time(w['end']):<8} {label}{score}")


@click.command()
@output_format()
@click.pass_context
def stats(ctx: click.Context, fmt: str) -> None:
    """Genre histogram, confidence distribution and failures of the library."""
    from libtagger.query.report import library_stats

    config = config_for(ctx)
    library = library_for(ctx, config)
    report = library_stats(library)
    if fmt != "table":
        from libtagger.query.listing import write_report

        write_report(report, fmt, sys.stdout)
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


@click.command()
@click.option("--limit", type=ROW_LIMIT, default=20, show_default=True)
@output_format()
@click.pass_context
def runs(ctx: click.Context, limit: int, fmt: str) -> None:
    """The latest scans, with their counts (for `undo --run ID`), newest first.

    Dry runs are not listed: they change nothing, not even the database."""
    from sqlalchemy import select

    from libtagger.library.db import Run
    from libtagger.query.listing import write_records

    config = config_for(ctx)
    library = library_for(ctx, config)
    with library.reader() as session:
        rows = [{"id": run.id, "kind": run.kind, "status": run.status,
                 "started_at": run.started_at.isoformat(),
                 "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                 "counts": {k: v for k, v in run.counts.items() if v}}
                for run in session.scalars(select(Run).order_by(Run.id.desc()).limit(limit))]
    if fmt == "csv":
        rows = [{**r, "counts": "; ".join(f"{k} {v}" for k, v in r["counts"].items())}
                for r in rows]
    write_records(rows, fmt, sys.stdout, RUN_COLUMNS, ("ID", "KIND", "STARTED", "STATUS", "COUNTS"),
                  lambda r: [str(r["id"]), r["kind"], r["started_at"][:16].replace("T", " "),
                             r["status"], ", ".join(f"{k} {v}" for k, v in r["counts"].items())])


RUN_COLUMNS = ("id", "kind", "status", "started_at", "finished_at", "counts")
