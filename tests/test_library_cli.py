"""After a scan: query, show, stats, export, runs and undo through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import audiogen
import pytest
from click.testing import CliRunner

from conftest import crash_free

from libtagger.cli import main
from libtagger.library.tags import read_genres


@pytest.fixture(scope="module")
def scanned(tmp_path_factory) -> tuple[Path, Path]:
    """A scanned library: three files, one of them already tagged by its owner."""
    root = tmp_path_factory.mktemp("lib") / "Music"
    (root / "2024").mkdir(parents=True)
    (root / "2024-old").mkdir()
    audiogen.write(root / "2024" / "a.flac", audiogen.music(10.0, seed=21))
    audiogen.write(root / "2024" / "b.mp3", audiogen.music(10.0, seed=22, tempo=95.0))
    tagged = audiogen.write(root / "2024-old" / "c.ogg", audiogen.music(10.0, seed=23))
    audiogen.set_genre(tagged, ["Polka"])
    db = root.parent / "lib.db"
    result = CliRunner().invoke(main, ["--db", str(db), "scan", "--jobs", "1", str(root)])
    assert result.exit_code == 0, result.output
    return root, db


def run(db: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_query_by_genre_score_and_path(scanned):
    root, db = scanned
    rows = json.loads(run(db, "query", "--format", "json"))
    assert len(rows) == 3
    top = rows[0]["genre"]
    same = json.loads(run(db, "query", "--format", "json", f"genre:{top}"))
    assert {r["path"] for r in same} == {r["path"] for r in rows if r["genre"] == top or any(
        g["genre"] == top for g in r["genres"])}
    assert {r["genre"] for r in same} == {top}  # each row shows the genre it matched
    none = json.loads(run(db, "query", "--format", "json", "score:>1"))
    assert none == []
    in_folder = json.loads(run(db, "query", "--format", "json", f"path:{root / '2024'}"))
    assert sorted(Path(r["path"]).name for r in in_folder) == ["a.flac", "b.mp3"]
    either = json.loads(run(db, "query", "--format", "json", "format:mp3", "OR", "format:ogg"))
    assert sorted(Path(r["path"]).name for r in either) == ["b.mp3", "c.ogg"]
    table = run(db, "query", "added:>1d", "--sort", "-path")
    assert table.splitlines()[0].split() == ["path", "genre", "rank", "score", "confidence",
                                             "status"]
    lines = table.splitlines()[1:]  # reversed byte order: "2024/" sorts after "2024-old/"
    assert "b.mp3" in lines[0] and "c.ogg" in lines[-1] and len(lines) == 3


def test_bad_query_is_a_clear_error(scanned):
    _, db = scanned
    result = CliRunner().invoke(main, ["--db", str(db), "query", "colour:blue"])
    crash_free(result)
    assert result.exit_code == 2 and "colour" in result.stderr


def test_export_csv_and_json_cover_the_library(scanned):
    _, db = scanned
    rows = list(csv.DictReader(io.StringIO(run(db, "export", "--format", "csv"))))
    assert len(rows) == 3 and all(r["status"] == "done" and r["genre"] for r in rows)
    data = json.loads(run(db, "export"))
    assert [r["path"] for r in data] == sorted(r["path"] for r in data)


def test_show_and_stats(scanned):
    root, db = scanned
    text = run(db, "show", str(root / "2024" / "a.flac"))
    assert "status     done" in text and "genre " in text and "write" in text
    data = json.loads(run(db, "show", "--json", str(root / "2024-old" / "c.ogg")))
    assert data["tag_writes"] == []  # fill_empty: the owner's Polka was kept
    assert data["genres"] and data["identity"]
    # The decision is stored and shown with its reason, whether or not anything was written.
    decision = data["decision"]
    assert decision["reason"] and set(decision["networks"]) == {"musicnn", "efficientat"}
    line = next(li for li in run(db, "show", str(root / "2024-old" / "c.ogg")).splitlines()
                if li.strip().startswith("decision"))
    assert decision["reason"] in line
    assert line.split(None, 1)[1].startswith("write " if decision["genres"] else "nothing to write: ")
    listing = run(db, "show", str(root / "2024"))  # a folder lists its tracks
    assert "a.flac" in listing and "c.ogg" not in listing
    report = json.loads(run(db, "stats", "--json"))
    assert report["tracks"] == 3 and report["status"] == {"done": 3}
    assert sum(report["genres"].values()) == 3 == sum(report["confidence"].values())
    assert "top genre" in run(db, "stats")
    listing = run(db, "runs").splitlines()
    assert listing[0].split() == ["ID", "KIND", "STARTED", "STATUS", "COUNTS"]
    assert "scan" in listing[1] and len(listing) == 2


def test_undo_restores_and_skips_files_changed_since(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    first = audiogen.write(root / "first.flac", audiogen.music(10.0, seed=31))
    second = shutil.copy(first, root / "second.flac")
    third = audiogen.write(root / "third.mp3", audiogen.music(10.0, seed=32))
    audiogen.set_genre(third, ["Bossa Nova"])
    db = tmp_path / "lib.db"
    run(db, "scan", "--jobs", "1", "--policy", "replace", str(root))
    assert read_genres(third) != ["Bossa Nova"]
    audiogen.set_genre(second, ["Changed By Hand"])

    preview = run(db, "undo", "--dry-run", str(root))
    assert preview.count("would restore") == 2 and read_genres(first) != []

    result = CliRunner().invoke(main, ["--db", str(db), "undo", "--since", "1h"])
    assert result.exit_code == 0, result.output
    assert read_genres(first) == []
    assert read_genres(third) == ["Bossa Nova"]
    assert read_genres(second) == ["Changed By Hand"]
    assert "genre changed since our write" in result.stderr
    assert "2 restored, 1 skipped, 0 failed" in result.stdout
    again = run(db, "undo", str(root))
    assert "nothing to undo" in again or "0 restored" in again
    history = json.loads(run(db, "show", "--json", str(first)))
    assert [(w["kind"], w["state"]) for w in history["tag_writes"]] == [
        ("write", "undone"), ("undo", "written")]


def test_undo_by_run(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    song = audiogen.write(root / "song.wav", audiogen.music(10.0, seed=41))
    db = tmp_path / "lib.db"
    run(db, "scan", "--jobs", "1", str(root))
    assert read_genres(song)
    result = CliRunner().invoke(main, ["--db", str(db), "undo", "--run", "1"])
    assert result.exit_code == 0, result.output
    assert read_genres(song) == []
    usage = CliRunner().invoke(main, ["--db", str(db), "undo"])
    assert usage.exit_code == 2


LISTINGS = {  # command -> what a record must hold in every format
    "query": "path", "export": "path", "show-dir": "path", "similar": "path", "runs": "id",
    "models": "name",
}


def test_every_command_spells_machine_output_the_same_way(scanned):
    """--format table|csv|json everywhere, --json its alias; listings are a JSON list or CSV
    rows under a header, reports a JSON object or field,value rows."""
    root, db = scanned
    track = str(root / "2024" / "a.flac")
    argv = {"query": ["query"], "export": ["export"], "show-dir": ["show", str(root / "2024")],
            "similar": ["similar", track], "runs": ["runs"], "models": ["models"],
            "show": ["show", track], "stats": ["stats"], "status": ["status"]}
    for name, args in argv.items():
        as_json = run(db, *args, "--format", "json")
        parsed, alias = json.loads(as_json), json.loads(run(db, *args, "--json"))
        if name == "status":  # it says when it was asked
            parsed.pop("now", None), alias.pop("now", None)
        assert alias == parsed, name
        table = run(db, *args, "--format", "table")
        assert table.strip() and not table.lstrip().startswith(("[", "{")), name
        rows = list(csv.DictReader(io.StringIO(run(db, *args, "--format", "csv"))))
        assert rows, name
        if name in LISTINGS:
            key = LISTINGS[name]
            assert isinstance(parsed, list) and parsed and all(key in r for r in parsed), name
            assert [r[key] for r in rows] == [str(r[key]) for r in parsed], name
        elif name == "show":  # one track: the whole record, or the row query would print
            assert parsed["path"] == track and [r["path"] for r in rows] == [track]
        else:
            assert isinstance(parsed, dict) and list(rows[0]) == ["field", "value"], name
    fields = {r["field"]: r["value"] for r in csv.DictReader(io.StringIO(
        run(db, "stats", "--format", "csv")))}
    assert fields["tracks"] == "3" and fields["status.done"] == "3"
    clash = CliRunner().invoke(main, ["--db", str(db), "query", "--json", "--format", "csv"])
    assert clash.exit_code == 2 and "disagree" in clash.stderr


def test_verbose_is_one_line_per_track_and_very_verbose_adds_only_libtaggers_debug(scanned):
    """-v: one line per track (decision and what happened to its tag); -vv: libtagger's debug
    lines too; never another library's chatter (numba's compiler once printed thousands)."""
    root, db = scanned
    tracks = sorted(str(p) for p in root.rglob("*.*"))
    runner = CliRunner()
    once = runner.invoke(main, ["-v", "--db", str(db), "scan", "--force", "--no-write",
                                "--jobs", "1", str(root)])
    crash_free(once)
    assert once.exit_code == 0, once.output
    lines = [line for line in once.stderr.splitlines() if line.strip()]
    per_track = [line for line in lines if " INFO libtagger.pipeline.scan: " in line]
    assert len(per_track) == len(tracks)
    for track in tracks:  # its genres; what happened to its tag
        (line,) = [line for line in per_track if f"scan: {track}: " in line]
        assert "; " in line.split(f"{track}: ", 1)[1]
    assert not [line for line in lines if " DEBUG " in line]
    twice = runner.invoke(main, ["-vv", "--db", str(db), "scan", "--force", "--no-write",
                                 "--jobs", "1", str(root)])
    crash_free(twice)
    logged = [line for line in twice.stderr.splitlines() if line[:4].isdigit()]
    assert any(" DEBUG libtagger.pipeline.scan: 3 tracks to classify" in line for line in logged)
    assert all(line.split()[3].startswith("libtagger") for line in logged), logged
