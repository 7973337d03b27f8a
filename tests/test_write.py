"""Decisions the user made stick: `libtagger write` re-applies stored results, undo is remembered."""

from __future__ import annotations

import json
import os
from pathlib import Path

import audiogen
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from libtagger.cli import main
from libtagger.library.db import Classification, Library
from libtagger.library.tags import read_genres


def run(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    # CliRunner keeps an exception out of the output: a traceback shows as result.exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def scanned(tmp_path) -> tuple[Path, Path]:
    """One file the user tagged Polka, scanned with the default policy (Polka is kept)."""
    root = tmp_path / "Music"
    root.mkdir()
    path = audiogen.set_genre(audiogen.write(root / "song.flac", audiogen.music(20.0, seed=3)),
                              ["Polka"])
    db = tmp_path / "lib.db"
    code, out, _ = run(db, "scan", "--jobs", "1", str(root))
    assert code == 0 and "wrote 0 tags" in out and read_genres(path) == ["Polka"]
    return path, db


def classified_at(db: Path):
    with Library(db).reader() as session:
        return session.scalars(select(Classification.created_at)).all()


def test_a_new_policy_is_applied_without_classifying_again(scanned):
    path, db = scanned
    before = classified_at(db)
    code, out, _ = run(db, "write", "--policy", "replace", "--dry-run")
    assert code == 0 and "would write Electronic (now: Polka)" in out
    assert read_genres(path) == ["Polka"]
    code, out, _ = run(db, "write", "--policy", "append")
    assert code == 0 and "wrote Polka; Electronic" in out and "wrote 1" in out
    assert read_genres(path) == ["Polka", "Electronic"]
    assert classified_at(db) == before  # nothing was classified again
    code, out, _ = run(db, "write", "--policy", "append")
    assert "wrote 0" in out and "1 kept" in out  # ours is there already: written once


def tag_line(db: Path, path: Path) -> str:
    """`show`'s line on what happened to the file's genre, and why."""
    code, out, _ = run(db, "show", str(path))
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  tag ")]
    assert json.loads(run(db, "show", "--json", str(path))[1])["tag_state"] == line[13:]
    return line[13:]


def test_an_undone_genre_is_not_written_again_unless_asked(scanned):
    path, db = scanned
    assert tag_line(db, path) == ("not written: the file has its own genre (Polka) and the "
                                  "policy is fill_empty (`libtagger write --policy replace` or "
                                  "`append` changes that)")
    assert "in file    genre Polka" in run(db, "show", str(path))[1]
    run(db, "write", "--policy", "replace")
    assert read_genres(path) == ["Electronic"]
    assert tag_line(db, path).startswith("libtagger wrote Electronic on 20")
    code, out, _ = run(db, "undo", str(path))
    assert code == 0 and read_genres(path) == ["Polka"]
    assert tag_line(db, path).startswith("not written again: you undid libtagger's genre")
    # Regression: scan --force wrote it straight back.
    code, out, _ = run(db, "scan", "--jobs", "1", "--force", "--policy", "replace",
                       str(path.parent))
    assert code == 0 and read_genres(path) == ["Polka"]
    code, out, _ = run(db, "write", "--policy", "replace")
    assert "you undid libtagger's genre" in out and read_genres(path) == ["Polka"]
    code, out, _ = run(db, "write", "--policy", "replace", "--rewrite-undone")
    assert "wrote Electronic" in out and read_genres(path) == ["Electronic"]


def test_show_says_why_a_read_only_file_was_not_written(scanned):
    path, db = scanned
    path.chmod(0o444)
    code, out, _ = run(db, "write", "--policy", "replace")
    assert read_genres(path) == ["Polka"]
    assert tag_line(db, path) == ("not written yet, left for the next scan: read-only file "
                                  "(no write permission); not changed")


def test_a_file_changed_since_classification_is_left_for_a_rescan(scanned):
    path, db = scanned
    audiogen.set_genre(path, ["Waltz"])  # a tag edit changes the file's stat
    code, out, _ = run(db, "write", "--policy", "replace")
    assert "changed since it was classified" in out and read_genres(path) == ["Waltz"]


def test_scan_takes_a_single_file(scanned):
    path, db = scanned
    code, out, _ = run(db, "scan", "--jobs", "1", "--force", str(path))
    assert code == 0 and "1 files:" in out and "classified 1" in out

    # Regression: a named root that is no audio file scanned nothing and said nothing, exit 0.
    fifo, text, link = (path.parent.parent / name for name in ("pipe.mp3", "notes.md", "l.flac"))
    os.mkfifo(fifo)
    text.write_text("not music")
    link.symlink_to(path)
    code, out, err = run(db, "scan", "--jobs", "1", "--force", str(path), str(fifo), "/dev/null",
                         str(text), str(link))
    assert code == 1 and "1 files:" in out and "classified 1" in out  # the song is still done
    assert f"error: {fifo}: a named pipe, not a music file or folder" in err
    assert "error: /dev/null: a device, not a music file or folder" in err
    assert f"error: {text}: not an audio file" in err
    assert f"error: {link}: a symlink, which libtagger never follows" in err


def test_queries_answer_about_the_files_own_tags(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    tagged = audiogen.write(root / "a.mp3", audiogen.music(20.0, seed=4))
    import mutagen

    audio = mutagen.File(tagged, easy=True)
    audio["artist"], audio["title"], audio["album"] = ["Dj Ärtist"], ["Night"], ["Deep Cuts"]
    audio["genre"] = ["Hip Hop"]
    audio.save()
    plain = audiogen.write(root / "b.flac", audiogen.music(20.0, seed=5))
    db = tmp_path / "lib.db"
    assert run(db, "scan", "--jobs", "1", str(root))[0] == 0

    def paths(*query: str) -> list[str]:
        code, out, err = run(db, "query", "--format", "json", *query)
        assert code == 0, err
        return [Path(r["path"]).name for r in json.loads(out)]

    # The user's own "Hip Hop" tag is visible (regression: only libtagger's guesses were).
    assert paths("tag:hip-hop") == ["a.mp3"] and paths("tag:hip") == []
    assert paths("artist:ärtist") == paths("title:night") == paths("album:deep") == ["a.mp3"]
    assert paths("written:electronic") == ["b.flac"]  # what libtagger wrote, and only that
    assert paths("tag:electronic") == ["b.flac"]  # the file carries it now
    assert read_genres(plain) == ["Electronic"]


def with_notes(path: Path, count: int) -> Path:
    """Give a FLAC file ``count`` extra Vorbis comments (the limits count tag items)."""
    from mutagen.flac import FLAC

    audio = FLAC(path)
    for i in range(count):
        audio[f"NOTE{i}"] = ["x"]
    audio.save()
    return path


def limits_config(folder: Path, items: int) -> Path:
    config = folder / f"limits-{items}.toml"
    config.write_text(f"[library]\nsettle_seconds = 0.0\n[limits]\nmax_tag_items = {items}\n")
    return config


def test_a_configured_lower_tag_limit_refuses_a_write_the_default_allows(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    path = audiogen.write(root / "song.flac", audiogen.music(20.0, seed=3))
    with_notes(audiogen.set_genre(path, ["Polka"]), 50)
    db = tmp_path / "lib.db"
    assert run(db, "scan", "--jobs", "1", str(root))[0] == 0
    # The write reads the file's tags again: under the configured limit they are refused.
    tight = limits_config(tmp_path, 20)
    code, out, err = run(db, "--config", str(tight), "write", "--policy", "replace")
    assert "refused unread" in out + err and read_genres(path) == ["Polka"], out + err
    code, out, _ = run(db, "write", "--policy", "replace")
    assert code == 0 and "wrote Electronic" in out and read_genres(path) == ["Electronic"]


def test_a_configured_higher_tag_limit_lets_a_scan_write_what_the_default_refuses(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    path = with_notes(audiogen.write(root / "song.flac", audiogen.music(20.0, seed=3)), 10_050)
    db = tmp_path / "lib.db"
    from mutagen.flac import FLAC

    code, out, err = run(db, "scan", "--jobs", "1", str(root))
    assert code == 1 and "refused unread" in out + err and "genre" not in FLAC(path)
    roomy = limits_config(tmp_path, 20_000)
    code, out, err = run(db, "--config", str(roomy), "scan", "--jobs", "1", "--force", str(root))
    assert code == 0 and "wrote 1 tags" in out, out + err
    assert FLAC(path)["genre"] == ["Electronic"]  # read by mutagen: our reader would refuse it
