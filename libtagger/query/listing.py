"""Tracks as rows for ``libtagger query``, ``export`` and ``show``: a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from libtagger.library.db import Track
from libtagger.errors import display_path, path_fields
from libtagger.query.language import QueryError

OUTPUT_FORMATS = ("table", "csv", "json")
TABLE_COLUMNS = ("path", "genre", "score", "confidence", "status")
CSV_COLUMNS = ("path", "format", "duration", "status", "genre", "score", "confidence", "genres",
               "tag", "written", "artist", "title", "album", "model", "classified_at",
               "added_at", "last_error")


def track_rows(tracks: Iterable[Track]) -> list[dict[str, Any]]:
    """Flat, JSON-ready records; ``path`` is exact (undecodable bytes as surrogate escapes)."""
    rows = []
    for track in tracks:
        found = track.classification
        genres = [
            {"genre": g.genre, "score": round(g.score, 4), "confidence": round(g.confidence, 4)}
            for g in (found.genres if found else [])
        ]
        top: dict[str, Any] = genres[0] if genres else {}
        rows.append({
            "path": track.path,
            "format": track.format,
            "duration": None if track.duration is None else round(track.duration, 3),
            "status": track.status,
            "genre": top.get("genre"),
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
    if fmt == "json":
        json.dump([{**row, **path_fields(row["path"])} for row in rows], stream, indent=2,
                  ensure_ascii=False)
        stream.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(stream, [*CSV_COLUMNS, "path_bytes"], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            flat = {**row, "path_bytes": "", **path_fields(row["path"])}
            flat["genres"] = "; ".join(g["genre"] for g in row["genres"])
            writer.writerow(flat)
    elif fmt == "table":
        write_table(TABLE_COLUMNS, [
            [display_path(row["path"])] + [_cell(row[c]) for c in TABLE_COLUMNS[1:]]
            for row in rows
        ], stream)
    else:
        raise QueryError(f"unknown output format {fmt!r}: expected table, csv or json")


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
