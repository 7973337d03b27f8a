"""What commands print: tracks as rows for ``query``, ``export`` and ``show``, and any
records or report as a table, CSV or JSON, with paths written one way everywhere."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from libtagger.library.db import Track
from libtagger.errors import display_path, path_fields
from libtagger.query.language import QueryError

OUTPUT_FORMATS = ("table", "csv", "json")
TABLE_COLUMNS = ("path", "genre", "rank", "score", "confidence", "status")
CSV_COLUMNS = ("path", "format", "duration", "status", "genre", "rank", "score", "confidence",
               "genres",
               "tag", "written", "artist", "title", "album", "model", "classified_at",
               "added_at", "last_error")


def track_rows(tracks: Iterable[Track],
               shown: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Flat, JSON-ready records; ``path`` is exact (undecodable bytes as surrogate escapes).

    ``genre``, ``rank``, ``score`` and ``confidence`` are those of the track's top genre, or,
    given ``shown`` (``language.shown_genre``: the genres a query asked about), of its best
    genre that the query matched, so that a listing shows why each track is in it.
    """
    rows = []
    for track in tracks:
        found = track.classification
        genres = [
            {"genre": g.genre, "score": round(g.score, 4), "confidence": round(g.confidence, 4)}
            for g in (found.genres if found else [])
        ]
        rank = next((i for i, g in enumerate(genres) if shown is None or shown(g["genre"])), 0)
        top: dict[str, Any] = genres[rank] if genres else {}
        rows.append({
            "path": track.path,
            "format": track.format,
            "duration": None if track.duration is None else round(track.duration, 3),
            "status": track.status,
            "genre": top.get("genre"),
            "rank": rank + 1 if genres else None,
            "score": top.get("score"),
            "confidence": top.get("confidence"),
            "genres": genres,
            "tag": track.file_genre,
            "written": track.written,
            "artist": track.artist,
            "title": track.title,
            "album": track.album,
            "model": found.model if found else None,
            "classified_at": _iso(found.created_at) if found else None,
            "added_at": _iso(track.added_at),
            "last_error": track.last_error,
        })
    return rows


def write_rows(rows: Sequence[dict[str, Any]], fmt: str, stream: IO[str]) -> None:
    """Write :func:`track_rows` records as ``table``, ``csv`` or ``json``.

    Paths follow :func:`~libtagger.errors.path_fields` in JSON and CSV (text, plus
    ``path_bytes`` when the name is not UTF-8); the table shows the text. CSV lists only the
    genre names (``; ``-joined).

    Raises:
        QueryError: ``fmt`` is not one of :data:`OUTPUT_FORMATS`.
    """
    write_records(rows, fmt, stream, CSV_COLUMNS, TABLE_COLUMNS, lambda row: [
        display_path(row["path"]), *(_cell(row[c]) for c in TABLE_COLUMNS[1:])])


def write_records(rows: Sequence[dict[str, Any]], fmt: str, stream: IO[str],
                  csv_columns: Sequence[str], table_columns: Sequence[str],
                  table_cells: Callable[[dict[str, Any]], Sequence[str]]) -> None:
    """Records as every command prints them: a ``table`` for people; ``csv`` or ``json`` for
    programs, where a ``path`` is written by :func:`~libtagger.errors.path_fields` and a
    ``genres`` list by its genre names (CSV) or in full (JSON).

    Raises:
        QueryError: ``fmt`` is not one of :data:`OUTPUT_FORMATS`.
    """
    if fmt == "json":
        json.dump([{**row, **path_fields(row["path"])} if "path" in row else row
                   for row in rows], stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    elif fmt == "csv":
        with_path = "path" in csv_columns
        writer = csv.DictWriter(stream, [*csv_columns, *(["path_bytes"] if with_path else [])],
                                lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(csv_row(row) if with_path else row)
    elif fmt == "table":
        write_table(table_columns, [table_cells(row) for row in rows], stream)
    else:
        raise QueryError(f"unknown output format {fmt!r}: expected table, csv or json")


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A record with a ``path`` as one CSV row: path fields, genre names ``; ``-joined."""
    flat = {**row, "path_bytes": "", **path_fields(row["path"])}
    if isinstance(row.get("genres"), list):
        flat["genres"] = "; ".join(g["genre"] for g in row["genres"])
    return flat


def report_rows(report: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """A nested report (``stats``, ``status``) as ``field,value`` rows for CSV: nested keys
    joined by dots, list items by their index (``failures.0.path``)."""
    rows: list[dict[str, Any]] = []
    items = report.items() if isinstance(report, dict) else enumerate(report)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)) and value:
            rows.extend(report_rows(value, name + "."))  # type: ignore[arg-type]
        elif isinstance(value, (dict, list)):
            continue
        else:
            rows.append({"field": name, "value": "" if value is None else value})
    return rows


def write_report(report: dict[str, Any], fmt: str, stream: IO[str]) -> None:
    """A one-object report as ``json`` (the object) or ``csv`` (:func:`report_rows`); the
    command prints its own table.

    Paths inside follow the same convention as listings (:func:`~libtagger.errors.path_fields`).
    """
    if fmt == "json":
        json.dump(_json_paths(report), stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    else:
        writer = csv.DictWriter(stream, ["field", "value"], lineterminator="\n")
        writer.writeheader()
        for row in report_rows(_json_paths(report)):
            writer.writerow(row)


def _json_paths(value: Any) -> Any:
    """``value`` with every dict's ``path`` replaced by its path fields (valid UTF-8)."""
    if isinstance(value, dict):
        out = {k: _json_paths(v) for k, v in value.items()}
        if isinstance(value.get("path"), str):
            out.update(path_fields(value["path"]))
        return out
    if isinstance(value, list):
        return [_json_paths(v) for v in value]
    return value


def _iso(moment: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with its offset."""
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def _cell(value: Any) -> str:
    """A table or CSV cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_table(columns: Sequence[str], cells: Sequence[Sequence[str]], stream: IO[str]) -> None:
    """Plain text columns under a header, each as wide as its widest cell."""
    lines = [list(columns), *map(list, cells)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        stream.write("  ".join(padded).rstrip() + "\n")
