"""`libtagger scan` on a real library: new, changed, moved, deleted files, policies, bad files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import audiogen
import mutagen
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from conftest import crash_free

from libtagger.cli import main
from libtagger.library.db import Classification, Library, Run, TagWrite, Track
from libtagger.library.tags import read_genres

FORMATS = ("mp3", "flac", "ogg", "opus", "m4a", "wav", "aiff")


@pytest.fixture(scope="module")
def source_files(tmp_path_factory) -> dict[str, Path]:
    """One short music file per format, made once; tests copy them."""
    folder = tmp_path_factory.mktemp("sources")
    signal = audiogen.music(12.0, seed=11, tempo=124.0)
    return {fmt: audiogen.write(folder / f"src.{fmt}", signal) for fmt in FORMATS}


@pytest.fixture
def tmp_library(tmp_path, source_files) -> Path:
    """A small library: every format, nested folders, a cover image, a symlink loop."""
    root = tmp_path / "Music"
    for i, fmt in enumerate(FORMATS):
        folder = root / f"Artist {i % 2}" / "Album"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source_files[fmt], folder / f"{i:02d} Track.{fmt}")
    (root / "Artist 0" / "Album" / "cover.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "Artist 1" / "loop").symlink_to(root)
    outside = tmp_path / "Elsewhere"
    outside.mkdir()
    shutil.copy(source_files["mp3"], outside / "not mine.mp3")
    (root / "outside-link").symlink_to(outside)
    return root


def scan(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", str(db), "scan", "--jobs", "1", *args])
    crash_free(result)
    return result.exit_code, result.stdout, result.stderr


def tracks(db: Path) -> dict[str, Track]:
    with Library(db).session() as session:
        rows = session.scalars(select(Track)).all()
        for row in rows:
            _ = row.classification and row.classification.genres
        return {row.path: row for row in rows}


def count(db: Path, model) -> int:
    with Library(db).session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_first_scan_classifies_stores_and_tags_every_format(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    code, out, err = scan(db, str(tmp_library))
    assert code == 0, err
    assert "7 files: 7 new" in out
    found = tracks(db)
    assert len(found) == 7  # no cover, nothing through the loop or the outside link
    assert not any("not mine" in p or "loop" in p for p in found)
    for path, track in found.items():
        assert track.status == "done" and track.identity and track.duration > 11
        assert track.classification.genres[0].rank == 1
        written = read_genres(path)
        assert written == [track.classification.genres[0].genre]
        assert os.stat(path).st_size == track.size  # stat refreshed after our write
    assert count(db, TagWrite) == 7
    formats = sorted(t.format for t in found.values())
    assert formats == sorted(["mp3", "flac", "ogg", "opus", "aac", "wav", "aiff"])


def test_second_scan_does_no_audio_work(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    scan(db, str(tmp_library))
    before = {p: (t.classification.created_at, os.stat(p).st_mtime_ns)
              for p, t in tracks(db).items()}
    code, out, _ = scan(db, str(tmp_library))
    assert code == 0
    assert "7 unchanged" in out and "classified 0" in out
    after = {p: (t.classification.created_at, os.stat(p).st_mtime_ns)
             for p, t in tracks(db).items()}
    assert after == before
    with Library(db).session() as session:
        runs = session.scalars(select(Run).order_by(Run.id)).all()
        assert [r.status for r in runs] == ["done", "done"]
        assert runs[1].counts["classified"] == 0 and runs[0].counts["classified"] == 7


def test_changed_audio_is_reclassified(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    scan(db, str(tmp_library))
    target = next(tmp_library.rglob("*.flac"))
    old = tracks(db)[str(target)]
    audiogen.write(target, audiogen.music(15.0, seed=99, tempo=90.0))
    code, out, _ = scan(db, str(tmp_library))
    assert "1 changed" in out and "classified 1" in out
    new = tracks(db)[str(target)]
    assert new.id == old.id and new.identity != old.identity
    assert new.classification.created_at > old.classification.created_at
    assert new.duration == pytest.approx(15.0, abs=0.1)
    assert count(db, Classification) == 7  # the old classification was replaced


def test_edited_tags_only_update_the_stat(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    scan(db, str(tmp_library))
    target = next(tmp_library.rglob("*.mp3"))
    audio = mutagen.File(target, easy=True)
    audio["title"] = "Renamed by the DJ"
    audio.save()
    code, out, _ = scan(db, str(tmp_library))
    assert "with edited tags only" in out and "classified 0" in out
    assert tracks(db)[str(target)].size == target.stat().st_size


def test_moved_and_renamed_files_keep_their_results(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    scan(db, str(tmp_library))
    source = next(tmp_library.rglob("*.ogg"))
    old = tracks(db)[str(source)]
    destination = tmp_library / "Sorted" / "renamed.ogg"
    destination.parent.mkdir()
    source.rename(destination)
    code, out, _ = scan(db, str(tmp_library))
    assert "1 moved" in out and "classified 0" in out and "0 missing" in out
    moved = tracks(db)[str(destination)]
    assert moved.id == old.id
    assert moved.classification.created_at == old.classification.created_at
    assert str(source) not in tracks(db)


def test_deleted_files_are_marked_missing_and_come_back(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    scan(db, str(tmp_library))
    target = next(tmp_library.rglob("*.wav"))
    kept = tmp_path / "kept.wav"
    shutil.move(target, kept)
    _, out, _ = scan(db, str(tmp_library))
    assert "1 missing" in out
    gone = tracks(db)[str(target)]
    assert gone.status == "missing" and gone.missing_since is not None
    assert gone.classification is not None  # history kept
    shutil.move(kept, target)
    _, out, _ = scan(db, str(tmp_library))
    back = tracks(db)[str(target)]
    assert back.status == "done" and back.missing_since is None and "classified 0" in out


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("fill_empty", lambda ours: ["Polka"]), ("replace", lambda ours: ours),
     ("append", lambda ours: ["Polka", *ours])],
)
def test_policies(tmp_path, source_files, policy, expected):
    root = tmp_path / "m"
    root.mkdir()
    tagged = shutil.copy(source_files["flac"], root / "tagged.flac")
    audiogen.set_genre(tagged, ["Polka"])
    untagged = shutil.copy(source_files["flac"], root / "untagged.flac")
    code, out, _ = scan(tmp_path / "lib.db", "--policy", policy, str(root))
    assert code == 0
    ours = read_genres(untagged)
    assert ours and ours != ["Polka"]
    assert read_genres(tagged) == expected(ours)


def _contents(db: Path) -> list[str]:
    """Every row of the database, as SQL: what a dry run must leave exactly as it was. (Its
    bytes may change when an earlier run's connection, closed by the garbage collector,
    checkpoints the write-ahead log into it.)"""
    import sqlite3

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def test_dry_run_and_no_write_change_no_file(tmp_library, tmp_path):
    files = {p: p.read_bytes() for p in tmp_library.rglob("*.*") if p.suffix != ".jpg"}
    db = tmp_path / "lib.db"
    code, out, _ = scan(db, "--dry-run", str(tmp_library))
    assert code == 0 and "would write 7 tags" in out and out.count("; would write ") == 7
    assert not db.exists()  # a dry run touches nothing, not even the database
    code, out, _ = scan(db, "--dry-run", "--no-write", str(tmp_library))
    assert out.count("would store only") == 7 and not db.exists()
    code, out, _ = scan(db, "--no-write", str(tmp_library))
    assert code == 0 and "wrote 0 tags" in out and count(db, Track) == 7
    assert {p: p.read_bytes() for p in files} == files
    # On an existing database the dry run says what a real run would do, and agrees with it.
    before = _contents(db)
    code, out, _ = scan(db, "--dry-run", "--force", str(tmp_library))
    assert "would write 7 tags" in out and _contents(db) == before
    code, out, _ = scan(db, "--force", str(tmp_library))
    assert "wrote 7 tags" in out


def test_bad_and_read_only_files_are_reported_and_the_scan_goes_on(tmp_library, tmp_path):
    (tmp_library / "empty.mp3").write_bytes(b"")
    (tmp_library / "noise.flac").write_bytes(np.random.default_rng(1).bytes(50_000))
    locked = next(tmp_library.rglob("*.m4a"))
    original = locked.read_bytes()
    locked.chmod(0o444)
    db = tmp_path / "lib.db"
    code, out, err = scan(db, str(tmp_library))
    assert code == 1
    assert "empty.mp3: empty file (0 bytes)" in err
    assert "noise.flac" in err
    assert f"later: {locked}: read-only file" in err and "1 left for the next run" in out
    assert locked.read_bytes() == original
    found = tracks(db)
    assert found[str(tmp_library / "empty.mp3")].status == "failed"
    assert found[str(tmp_library / "empty.mp3")].last_error == "empty file (0 bytes)"
    assert found[str(locked)].status == "done"  # classified and stored, just not written
    assert found[str(locked)].last_error.startswith("tag not written: read-only file")
    # A tag that could not be written shows where failures do: stats and `query error:`.
    stats = CliRunner().invoke(main, ["--db", str(db), "stats", "--json"]).stdout
    assert str(locked) in stats and "tag not written" in stats
    listed = CliRunner().invoke(main, ["--db", str(db), "query", "--format", "json",
                                       "error:read-only"]).stdout
    assert [r["path"] for r in json.loads(listed)] == [str(locked)]
    assert sum(t.status == "done" for t in found.values()) == 7
    # Bad files are not retried while unchanged; a read-only file is, once it is writable
    # again (regression: it stayed untagged for good), without being classified again.
    _, out, _ = scan(db, str(tmp_library))
    assert "classified 0" in out and locked.read_bytes() == original
    locked.chmod(0o644)
    _, out, _ = scan(db, str(tmp_library))
    assert "classified 0" in out and read_genres(locked)


def test_audio_found_by_content_without_extension(tmp_path, source_files):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copy(source_files["flac"], root / "no_extension")
    (root / "README").write_text("not audio")
    db = tmp_path / "lib.db"
    code, out, _ = scan(db, str(root))
    assert code == 0 and "1 files: 1 new" in out


def test_worker_pool_scan(tmp_library, tmp_path):
    db = tmp_path / "lib.db"
    result = CliRunner().invoke(main, ["--db", str(db), "scan", "--jobs", "2", str(tmp_library)])
    assert result.exit_code == 0, result.output
    assert all(t.status == "done" for t in tracks(db).values())


def test_reclassifying_updates_our_own_write_but_never_the_users_part(tmp_path, source_files):
    root = tmp_path / "m"
    root.mkdir()
    song = shutil.copy(source_files["flac"], root / "song.flac")
    audiogen.set_genre(song, ["Polka"])
    db = tmp_path / "lib.db"
    code, _, _ = scan(db, "--policy", "append", str(root))
    assert code == 0
    first = read_genres(song)
    assert first[0] == "Polka" and len(first) == 2
    # Pretend our earlier write said something else; a forced rescan must update only our part.
    with Library(db).session() as session:
        write = session.scalars(select(TagWrite)).one()
        write.after = ["Polka", "Ska"]
    audiogen.set_genre(song, ["Polka", "Ska"])
    code, _, _ = scan(db, "--force", "--policy", "append", str(root))
    assert code == 0
    assert read_genres(song) == first  # Polka kept, our Ska replaced by the new result


def test_scan_query_and_stats_on_postgresql(tmp_library, pg_url):
    """The same commands on a real PostgreSQL server: first scan, no-op rescan, a move."""
    code, out, err = scan(pg_url, str(tmp_library))
    assert code == 0, err
    assert "7 files: 7 new" in out
    found = tracks(pg_url)
    assert len(found) == 7 and count(pg_url, TagWrite) == 7
    for path, track in found.items():
        assert track.status == "done" and read_genres(path) == [
            track.classification.genres[0].genre]
    code, out, _ = scan(pg_url, str(tmp_library))
    assert "7 unchanged" in out and "classified 0" in out
    source = next(tmp_library.rglob("*.ogg"))
    destination = tmp_library / "Sorted" / "renamed.ogg"
    destination.parent.mkdir()
    source.rename(destination)
    code, out, _ = scan(pg_url, str(tmp_library))
    assert "1 moved" in out and "classified 0" in out
    assert tracks(pg_url)[str(destination)].id == found[str(source)].id
    runner = CliRunner()
    result = runner.invoke(main, ["--db", pg_url, "query", f"path:{tmp_library}/Sorted",
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [row["path"] for row in json.loads(result.stdout)] == [str(destination)]
    result = runner.invoke(main, ["--db", pg_url, "stats"])
    crash_free(result)
    assert result.exit_code == 0, result.output
