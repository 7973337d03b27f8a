"""Commands on your own listening: learn your genres, find tracks that sound alike."""

from __future__ import annotations

import json
import os
import sys

import click

from libtagger.commands.common import ROW_LIMIT, config_for, library_for, output_format


@click.command()
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

    from libtagger.analysis.evaluate import plot_confusion
    from libtagger.library.personal import learn as run_learn

    config = config_for(ctx)
    library = library_for(ctx, config)
    from libtagger.pipeline.batch import genres_of

    report = run_learn(library, config, "+".join(config.classifier.models),
                       genres_of(config, config.library.jobs or os.cpu_count() or 1),
                       list(roots), force)
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
        click.echo(f"head {report.head_id} saved but not activated: {report.refused} "
                   "(--force activates it anyway)")
    click.echo(f"wrote {out / 'learn.json'} and {out / 'learn-confusion.png'}")


@click.command()
@click.argument("path", type=click.Path())
@click.option("-n", "count", type=ROW_LIMIT, default=20, show_default=True)
@output_format()
@click.pass_context
def similar(ctx: click.Context, path: str, count: int, fmt: str) -> None:
    """The tracks that sound most like PATH (cosine similarity of CNN embeddings)."""
    from libtagger.library.similar import neighbour_rows, similar_tracks, write_neighbours

    config = config_for(ctx)
    rows = neighbour_rows(similar_tracks(library_for(ctx, config), path, count))
    write_neighbours(rows, fmt, sys.stdout)
