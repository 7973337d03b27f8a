"""Similar tracks: exact ranking on a real SQLite database, then a real scanned library."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import audiogen
import numpy as np
import pytest
from click.testing import CliRunner

from libtagger.library import similar
from libtagger.cli import main
from libtagger.library.db import Classification, GenreRow, Library, Track
from libtagger.query.language import QueryError
from libtagger.library.similar import (
    Neighbour,
    SimilarError,
    neighbour_rows,
    similar_tracks,
    write_neighbours,
)
from libtagger.analysis.vote import GenreScore


@pytest.fixture
def library(tmp_path) -> Iterator[Library]:
    with Library(tmp_path / "x.db") as lib:
        yield lib


@pytest.fixture
def music(tmp_path) -> Path:
    """A folder for the tracks' paths, resolved (the database holds real paths)."""
    return Path(os.path.realpath(tmp_path)) / "Music"


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def add(library: Library, path: Path, vector: np.ndarray | None, *, status: str = "done",
        model: str = "msd_musicnn", dim: int | None = None,
        genres: tuple[tuple[str, float, float], ...] = (("Rock", 0.8, 0.6),)) -> None:
    """A track row with a classification holding ``vector`` (as float16, like the pipeline)."""
    blob = None if vector is None else np.asarray(vector, dtype=np.float16).tobytes()
    with library.session() as session:
        track = Track(path=str(path), size=1, mtime_ns=1, status=status)
        track.classification = Classification(
            model=model, windows=1, voting_windows=1,
            embedding_dim=dim if dim is not None else (None if vector is None else len(vector)),
            vector=blob,
            genres=[GenreRow(rank=i + 1, genre=g, score=s, confidence=c)
                    for i, (g, s, c) in enumerate(genres)],
        )
        session.add(track)


def names(neighbours: list[Neighbour]) -> list[str]:
    return [Path(nb.path).name for nb in neighbours]


def test_ranks_by_cosine_most_similar_first(library, music):
    # Inserted out of order, so neither insertion order nor id order is the answer.
    add(library, music / "opposite", unit(-1, 0, 0, 0))
    add(library, music / "diagonal", unit(1, 1, 0, 0), genres=(("Jazz", 0.9, 0.75),
                                                                ("Blues", 0.4, 0.25)))
    add(library, music / "query", unit(1, 0, 0, 0))
    add(library, music / "orthogonal", unit(0, 1, 0, 0))
    add(library, music / "close", unit(1, 0.1, 0, 0))

    found = similar_tracks(library, music / "query")

    assert names(found) == ["close", "diagonal", "orthogonal", "opposite"]
    assert [nb.similarity for nb in found] == pytest.approx([0.995, 0.7071, 0.0, -1.0], abs=1e-3)
    diagonal = found[1]
    assert diagonal.path == str(music / "diagonal")
    assert (diagonal.genre, diagonal.score, diagonal.confidence) == ("Jazz", 0.9, 0.75)
    assert diagonal.genres == (GenreScore("Jazz", 0.9, 0.75), GenreScore("Blues", 0.4, 0.25))


@pytest.mark.parametrize(("partition", "in_chunk"), [(4096, 500), (7, 3)])
def test_top_n_matches_a_full_sort(library, music, monkeypatch, partition, in_chunk):
    monkeypatch.setattr(similar, "PARTITION", partition)  # 7: many reads, a short last one
    monkeypatch.setattr(similar, "IN_CHUNK", in_chunk)  # 3: the winners in several queries
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vector in enumerate(vectors):
        add(library, music / f"t{i:03d}", vector)
    stored = vectors.astype(np.float16).astype(np.float32)  # what the database holds
    similarity = stored[1:] @ stored[0]
    expected = [f"t{i + 1:03d}" for i in np.argsort(-similarity)[:7]]

    found = similar_tracks(library, music / "t000", n=7)

    assert names(found) == expected
    assert [nb.similarity for nb in found] == pytest.approx(
        np.sort(similarity)[::-1][:7].tolist(), abs=1e-4)


def test_only_done_tracks_of_the_same_model_and_dimension(library, music):
    query = unit(1, 2, 3, 4)
    add(library, music / "query", query)
    # Each of these is the query's own vector: it would come first if it were not left out.
    for status in ("missing", "failed", "pending"):
        add(library, music / status, query, status=status)
    add(library, music / "other-model", query, model="mtt_vgg")
    add(library, music / "longer", np.concatenate([query, query]) / np.sqrt(2))
    add(library, music / "no-vector", None, dim=4)
    add(library, music / "short", query[:3], dim=4)  # 3 float16s where 4 are declared
    add(library, music / "long", query, dim=8)  # the query's 4 where 8 are declared
    add(library, music / "candidate", unit(4, 3, 2, 1))

    found = similar_tracks(library, music / "query")

    assert names(found) == ["candidate"]
    assert found[0].similarity == pytest.approx(20 / 30, abs=1e-3)


def test_n_larger_than_the_library_returns_all_with_ties_by_track_id(library, music):
    same = unit(1, 2, 3, 4)  # as float16 its norm is 1.0002: a raw dot product says 1.0005
    add(library, music / "query", same)
    add(library, music / "far", unit(4, -3, 2, -1))
    add(library, music / "copy-2", same)
    add(library, music / "copy-1", same)  # added later: a higher track id

    found = similar_tracks(library, music / "query", n=100)

    assert names(found) == ["copy-2", "copy-1", "far"]
    assert [nb.similarity for nb in found[:2]] == [1.0, 1.0]
    assert names(similar_tracks(library, music / "query", n=1)) == ["copy-2"]


def test_ties_at_the_cut_go_to_the_lowest_track_ids(library, music):
    add(library, music / "query", unit(1, 0))
    for i in range(12):  # every third one far: argpartition alone picks c01, c02, c05
        add(library, music / f"c{i:02d}", unit(0, 1) if i % 3 == 0 else unit(1, 0))
    assert names(similar_tracks(library, music / "query", n=3)) == ["c01", "c02", "c04"]


def test_alone_in_its_model_finds_nothing(library, music):
    add(library, music / "query", unit(1, 0), model="mtt_vgg")
    add(library, music / "other", unit(1, 0))
    assert similar_tracks(library, music / "query") == []


def test_the_query_is_found_by_its_real_path(library, music, tmp_path):
    music.mkdir()
    (music / "song.flac").write_bytes(b"")
    (tmp_path / "link.flac").symlink_to(music / "song.flac")
    add(library, music / "song.flac", unit(1, 0))
    add(library, music / "other", unit(1, 1))
    assert names(similar_tracks(library, tmp_path / "link.flac")) == ["other"]


def test_unknown_path_is_a_clear_error(library, music):
    add(library, music / "known", unit(1, 0))
    with pytest.raises(SimilarError, match=r"unknown\.flac: not in the database \(scan it first\)"):
        similar_tracks(library, music / "unknown.flac")


@pytest.mark.parametrize(("status", "vector", "message"), [
    ("pending", None, "has not been classified yet"),
    ("failed", None, "could not be classified"),
    ("done", None, "stored no embedding"),
    ("done", np.zeros(4, dtype=np.float32), "embedding is empty"),
])
def test_a_track_without_a_usable_vector_is_a_clear_error(library, music, status, vector,
                                                           message):
    add(library, music / "query", vector, status=status, dim=4)
    add(library, music / "other", unit(1, 0, 0, 0))
    with pytest.raises(SimilarError, match=message):
        similar_tracks(library, music / "query")


def test_n_below_one_is_an_error(library, music):
    add(library, music / "query", unit(1, 0))
    with pytest.raises(SimilarError, match="at least 1"):
        similar_tracks(library, music / "query", n=0)


def test_rows_json_and_table():
    neighbours = [
        Neighbour("/m/b\udcff.flac", 0.98765, "Jazz", 0.91234567, 0.5,
                  (GenreScore("Jazz", 0.91234567, 0.5), GenreScore("Blues", 0.2, 0.1))),
        Neighbour("/m/c.mp3", -0.25, None, None, None, ()),
    ]
    rows = neighbour_rows(neighbours)
    assert rows[0] == {
        "path": "/m/b\udcff.flac", "similarity": 0.98765, "genre": "Jazz", "score": 0.9123,
        "confidence": 0.5, "genres": [{"genre": "Jazz", "score": 0.9123, "confidence": 0.5},
                                      {"genre": "Blues", "score": 0.2, "confidence": 0.1}],
    }
    assert rows[1] == {"path": "/m/c.mp3", "similarity": -0.25, "genre": None, "score": None,
                       "confidence": None, "genres": []}

    out = io.StringIO()
    write_neighbours(rows, "json", out)
    parsed = json.loads(out.getvalue())  # the one path convention: text + exact bytes
    assert parsed[0] == {**rows[0], "path": "/m/b\ufffd.flac",
                         "path_bytes": base64.b64encode(b"/m/b\xff.flac").decode()}
    assert parsed[1] == rows[1]

    out = io.StringIO()
    write_neighbours(rows, "table", out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["path", "similarity", "genre", "score", "confidence"]
    assert lines[1].split() == ["/m/b\ufffd.flac", "0.9877", "Jazz", "0.91", "0.50"]
    assert lines[2].split() == ["/m/c.mp3", "-0.2500"]
    assert lines[1].index("0.9877") == lines[0].index("similarity")

    out = io.StringIO()
    write_neighbours(rows, "csv", out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert parsed[0] == {"path": "/m/b\ufffd.flac", "similarity": "0.98765", "genre": "Jazz",
                         "score": "0.9123", "confidence": "0.5", "genres": "Jazz; Blues",
                         "path_bytes": base64.b64encode(b"/m/b\xff.flac").decode()}
    assert parsed[1]["genres"] == "" and parsed[1]["path_bytes"] == ""

    with pytest.raises(QueryError, match="xml"):
        write_neighbours(rows, "xml", io.StringIO())


def test_a_copy_of_a_scanned_track_is_the_most_similar(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    original = audiogen.write(root / "a.flac", audiogen.music(10.0, seed=41))
    copy = shutil.copy(original, root / "a-copy.flac")
    audiogen.write(root / "b.mp3", audiogen.music(10.0, seed=42, tempo=90.0, root=330.0))
    audiogen.write(root / "c.ogg", audiogen.music(10.0, seed=43, tempo=150.0, root=147.0))
    db = tmp_path / "lib.db"
    result = CliRunner().invoke(main, ["--db", str(db), "scan", "--jobs", "1", str(root)])
    assert result.exit_code == 0, result.output

    with Library(db) as library:
        found = similar_tracks(library, original)

    assert [Path(nb.path).name for nb in found][0] == Path(copy).name
    assert len(found) == 3 and Path(original).name not in {Path(nb.path).name for nb in found}
    assert found[0].similarity == 1.0
    assert all(nb.similarity < 0.999 for nb in found[1:])
    assert found[0].genre is not None and found[0].genres
