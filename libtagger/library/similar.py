"""Similar tracks: the nearest neighbours of one track by its embedding (``libtagger similar``).

Every classified track stores one vector (``Classification.vector``): the mean of its
per-window CNN embeddings, L2-normalised, as float16. Cosine similarity is then a dot product,
divided by the norms that float16 rounding left a hair off 1.
Vectors from different model sets do not share a space, so a track is only compared with tracks
classified by the same ``Classification.model`` into vectors of the same dimension.

Ranking reads every comparable vector with one Core select (no ORM objects), a partition of
rows at a time into a float32 matrix (``np.frombuffer`` on the joined blobs) times the query
vector, then takes the best with ``np.argpartition``; paths and genres are loaded only for the
winners. ``bench/similar.py`` measures it on 100k tracks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from sqlalchemy import Connection, Select, func, select

from libtagger.library.db import Classification, GenreRow, Library, Track
from libtagger.errors import LibtaggerError, display_path
from libtagger.query.listing import write_records
from libtagger.analysis.vote import GenreScore

TABLE_COLUMNS = ("path", "similarity", "genre", "score", "confidence")
VECTOR_DTYPE = np.dtype(np.float16)
PARTITION = 4096  # candidate rows per read: 4 MB of float16 vectors, 8 MB as float32
IN_CHUNK = 500  # ids per IN (...) when loading the winners (SQLite caps bound parameters)


class SimilarError(LibtaggerError):
    """A track cannot be compared: it is not in the database, or it has no vector."""


@dataclass(frozen=True)
class Neighbour:
    """A track like the query track, and how alike they are."""

    path: str
    similarity: float
    """Cosine similarity of the two tracks' stored vectors (1: the same audio), to 4 places."""
    genre: str | None
    """The track's top genre (None: its classification found none)."""
    score: float | None
    confidence: float | None
    genres: tuple[GenreScore, ...]
    """Every genre of the track's classification, best first."""


@dataclass(frozen=True)
class _Query:
    """The query track: its id, which vectors it can be compared with, and its own vector."""

    track_id: int
    model: str
    dim: int
    vector: np.ndarray


def similar_tracks(library: Library, path: str | os.PathLike[str], n: int = 20) -> list[Neighbour]:
    """The ``n`` tracks most similar to the one at ``path``, most similar first.

    Candidates are the other tracks with status ``done`` whose classification has a vector
    from the same model set. Equal similarities go by track id (the older track first).

    Raises:
        SimilarError: ``path`` is not in the database or has no vector, or ``n`` is below 1.
    """
    if n < 1:
        raise SimilarError(f"the number of similar tracks must be at least 1, not {n}")
    real = os.path.realpath(os.path.expanduser(os.fspath(path)))
    with library.engine.connect() as connection:
        query = _query_track(connection, real)
        ids, scores = _scores(connection, query)
        if not len(ids):
            return []
        top = _best(ids, scores, n)
        return _neighbours(connection, ids[top].tolist(), scores[top].tolist())


def neighbour_rows(neighbours: Sequence[Neighbour]) -> list[dict[str, Any]]:
    """Flat, JSON-ready records, shaped like ``listing.track_rows`` (``path`` is exact)."""
    return [
        {
            "path": nb.path,
            "similarity": nb.similarity,
            "genre": nb.genre,
            "score": _round(nb.score),
            "confidence": _round(nb.confidence),
            "genres": [
                {"genre": g.genre, "score": round(g.score, 4), "confidence": round(g.confidence, 4)}
                for g in nb.genres
            ],
        }
        for nb in neighbours
    ]


def write_neighbours(rows: Sequence[dict[str, Any]], fmt: str, stream: IO[str]) -> None:
    """Write :func:`neighbour_rows` records as ``table``, ``csv`` or ``json``.

    JSON and CSV write paths as every listing does (``listing.write_records``); the table
    shows the similarity to 4 places, score and confidence to 2.

    Raises:
        QueryError: ``fmt`` is not one of ``listing.OUTPUT_FORMATS``.
    """
    write_records(rows, fmt, stream, (*TABLE_COLUMNS, "genres"), TABLE_COLUMNS, lambda row: [
        display_path(row["path"]), f"{row['similarity']:.4f}", row["genre"] or "",
        _two_places(row["score"]), _two_places(row["confidence"])])


def _query_track(connection: Connection, real: str) -> _Query:
    """The track at ``real`` and its vector.

    Raises:
        SimilarError: no such track, or it has no usable vector.
    """
    row = connection.execute(
        select(Track.id, Track.status, Track.last_error, Classification.model,
               Classification.embedding_dim, Classification.vector)
        .outerjoin(Classification, Classification.track_id == Track.id)
        .where(Track.path == real)
    ).first()
    shown = display_path(real)
    if row is None:
        raise SimilarError(f"{shown}: not in the database (scan it first)")
    if row.vector is None or not row.embedding_dim:
        why = {"pending": "it has not been classified yet (scan it first)",
               "failed": f"it could not be classified: {row.last_error}"}.get(
            row.status, "its classification stored no embedding (rescan it with --force)")
        raise SimilarError(f"{shown}: no embedding to compare with: {why}")
    if len(row.vector) != row.embedding_dim * VECTOR_DTYPE.itemsize:
        raise SimilarError(f"{shown}: its stored vector is damaged (rescan it with --force)")
    vector = np.frombuffer(row.vector, dtype=VECTOR_DTYPE).astype(np.float32)
    if not np.isfinite(vector).all() or not vector.any():
        raise SimilarError(f"{shown}: its embedding is empty (silence?); nothing is like it")
    return _Query(row.id, row.model, row.embedding_dim, vector / np.linalg.norm(vector))


def _candidate_vectors(query: _Query) -> Select[int, bytes]:
    """SQL: track id and vector of every track comparable with ``query``, but itself."""
    return (
        select(Classification.track_id, Classification.vector)
        .join(Track, Track.id == Classification.track_id)
        .where(
            Track.status == "done",
            Track.id != query.track_id,
            Classification.model == query.model,
            Classification.embedding_dim == query.dim,
            # A blob of another length would shift every vector after it in the matrix.
            func.length(Classification.vector) == query.dim * VECTOR_DTYPE.itemsize,
        )
    )


def _scores(connection: Connection, query: _Query) -> tuple[np.ndarray, np.ndarray]:
    """Track ids [m] and cosine similarities to ``query`` [m] of every comparable track.

    Rows are read a partition at a time: holding all 100k at once (their 100 MB of blobs, then
    a 200 MB float32 matrix) peaked at 517 MiB RSS against 134 MiB, and was no faster.
    """
    result = connection.execution_options(yield_per=PARTITION).execute(_candidate_vectors(query))
    buffer = np.empty((PARTITION, query.dim), dtype=np.float32)
    ids, scores = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.float32)]
    for rows in result.partitions():
        vectors = buffer[: len(rows)]
        flat = np.frombuffer(b"".join(row[1] for row in rows), dtype=VECTOR_DTYPE)
        vectors[:] = flat.reshape(len(rows), query.dim)
        ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
        # Cosine, not the bare dot product: float16 leaves a norm a hair off 1, which made a
        # copy of a track 1.0001 similar to it.
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # 3x linalg.norm's speed
        scores.append(vectors @ query.vector / np.maximum(norms, 1e-12))
    return np.concatenate(ids), np.concatenate(scores)


def _best(ids: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best scores (fewer if there are fewer), best first, ties by id."""
    k = min(n, len(ids))
    cut = scores[np.argpartition(-scores, k - 1)[k - 1]]
    # Every track tied at the cut competes, so which of them make it does not depend on
    # argpartition's whims.
    best = np.flatnonzero(scores >= cut)
    return best[np.lexsort((ids[best], -scores[best]))][:k]


def _neighbours(connection: Connection, ids: list[int], scores: list[float]) -> list[Neighbour]:
    """Paths and genres of the tracks ``ids`` (in that order), as :class:`Neighbour`."""
    paths: dict[int, str] = {}
    genres: dict[int, list[GenreScore]] = {i: [] for i in ids}
    for chunk in _chunks(ids):
        paths.update(
            connection.execute(select(Track.id, Track.path).where(Track.id.in_(chunk))).all()
        )
        for track_id, genre, score, confidence in connection.execute(
            select(Classification.track_id, GenreRow.genre, GenreRow.score, GenreRow.confidence)
            .join(GenreRow, GenreRow.classification_id == Classification.id)
            .where(Classification.track_id.in_(chunk))
            .order_by(GenreRow.rank)
        ):
            genres[track_id].append(GenreScore(genre, score, confidence))
    found = []
    for track_id, similarity in zip(ids, scores, strict=True):
        if track_id not in paths:  # deleted since the ranking read it
            continue
        best = genres[track_id][0] if genres[track_id] else None
        found.append(Neighbour(
            path=paths[track_id],
            similarity=round(similarity, 4),
            genre=best.genre if best else None,
            score=best.score if best else None,
            confidence=best.confidence if best else None,
            genres=tuple(genres[track_id]),
        ))
    return found


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start:start + IN_CHUNK]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _two_places(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
