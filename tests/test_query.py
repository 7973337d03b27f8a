"""The query language against a real SQLite library: fields, operators, groups, output.

The tests marked ``BOTH`` run on a real PostgreSQL server too (a representative subset: every
field, paths as bytes, globs, times, ordering); the rest run on SQLite only, to keep the
suite quick.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from libtagger.library.db import Classification, GenreRow, Library, Track
from libtagger.query.listing import track_rows, write_report, write_rows
from libtagger.query.language import (
    shown_genre,
    stored_genres,
    QueryError,
    build_filter,
    parse_query,
    parse_when,
    select_tracks,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday; 21:00 in Tokyo
LATIN1 = os.fsdecode(b"/m/caf\xe9/x.mp3")  # not valid UTF-8: a surrogate escape in Python


def utc(*args: int) -> datetime:
    """A naive UTC time, as the database stores it."""
    return datetime(*args)


def ago(**delta: float) -> datetime:
    """``delta`` before NOW, naive UTC."""
    return (NOW - timedelta(**delta)).replace(tzinfo=None)


BOTH = pytest.mark.parametrize("db_location", ["sqlite", "postgresql"], indirect=True)
"""Run a test on SQLite and on PostgreSQL."""


@pytest.fixture
def db_location(request, tmp_path) -> str:
    """SQLite unless a test is marked ``BOTH`` (then also a fresh PostgreSQL database)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return str(tmp_path / "lib.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def library(db_location) -> Iterator[Library]:
    with Library(db_location) as lib:
        yield lib


@pytest.fixture
def tokyo(monkeypatch) -> Iterator[None]:
    """Local time is UTC+9 with no DST (a POSIX TZ string: needs no tz database)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def add(
    lib: Library,
    path: str,
    genres: tuple[tuple[str, float, float], ...] | None = (),
    *,
    status: str = "done",
    fmt: str | None = "mp3",
    duration: float | None = 200.0,
    added: datetime | None = None,
    changed: datetime | None = None,
    classified: datetime | None = None,
    model: str = "msd_musicnn",
    windows: int = 10,
    error: str | None = None,
) -> None:
    """Insert a track; ``genres=None`` leaves it unclassified."""
    with lib.session() as session:
        track = Track(
            path=path, size=1, mtime_ns=0, format=fmt, duration=duration, status=status,
            last_error=error, added_at=added or ago(days=30), updated_at=changed or ago(days=30),
        )
        if genres is not None:
            track.classification = Classification(
                model=model, windows=windows, voting_windows=windows,
                created_at=classified or ago(days=30),
                genres=[GenreRow(rank=i + 1, genre=g, score=s, confidence=c)
                        for i, (g, s, c) in enumerate(genres)],
            )
        session.add(track)


def find(lib: Library, query: str, **kwargs) -> list[str]:
    """Paths of the tracks matching ``query`` at NOW (ordered by path unless told)."""
    with lib.session() as session:
        return [t.path for t in select_tracks(session, query, now=NOW, **kwargs)]


@pytest.fixture
def genres_lib(library: Library) -> Library:
    """Tracks whose genres exercise the same-row rule and the numeric fields."""
    add(library, "/m/mix.mp3", (("Techno", 0.8, 0.7), ("House", 0.4, 0.3)), windows=40)
    add(library, "/m/house.mp3", (("House", 0.7, 0.9),), windows=10)
    add(library, "/m/weak.flac", (("Rock", 0.25, 0.5), ("Hard Rock", 0.2, 0.5)), fmt="FLAC")
    add(library, "/m/rap.mp3", (("Hip-Hop", 0.6000000238418579, 0.55),))  # float32's 0.6
    add(library, "/m/todo.mp3", None, status="pending", fmt=None, duration=None)
    return library


# --- parsing -----------------------------------------------------------------------------------


def test_parse_groups_negation_and_quoting():
    query = parse_query("genre:house -path:'/m/My Stuff' OR NOT 'OR' | \"-live\" x", now=NOW)
    first, second, third = query.groups
    assert [(t.field, t.negated) for t in first.terms] == [("genre", False), ("path", True)]
    assert first.terms[1].value == "/m/My Stuff"
    assert [(t.field, t.value, t.negated) for t in second.terms] == [("text", "OR", True)]
    assert [(t.value, t.negated) for t in third.terms] == [("-live", False), ("x", False)]
    assert parse_query("", now=NOW).groups == ()


def test_tokens_follow_shell_quoting():
    query = parse_query(r"""error:"say \"hi\" \\ \x" 'a\b' x\ y""", now=NOW)
    assert [t.value for t in query.groups[0].terms] == ['say "hi" \\ \\x', "a\\b", "x y"]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("colour:red", r'unknown field "colour:".*genre, score'),
        ("score:abc", r'"score:abc": expected a number'),
        ("score:>", r'"score:>": expected a number'),
        ("score:..", r'"score:..": expected a range'),
        ("rank:1..x", r'"rank:1..x": expected a number'),
        ("duration:3x", r'"duration:3x": expected a duration'),
        ("added:lastweek", r'"added:lastweek": expected a date or time'),
        ("changed:2026-13-45", r'"changed:2026-13-45": expected a date'),
        ("added:2026-13", r'"added:2026-13": expected a month'),
        ("added:7d", r'"added:7d": expected a comparison \(>7d newer'),
        ("status:fail", r'"status:fail": expected one of pending, done, failed, missing'),
        ("genre:", r'"genre:" has no value'),
        ("genre:'!!'", r'"genre:!!": expected a genre name'),
        ("house 'open", r"an unclosed ' quote in query"),
        ("house\\", r"a backslash at the end"),
        ("OR genre:house", r"OR must stand between two terms"),
        ("genre:house |", r"\| must stand between two terms|OR must stand"),
        ("genre:house OR OR x", r"OR must stand between two terms"),
        ("genre:house NOT", r"NOT must be followed by a term"),
        ('""', r"empty search word"),
        # Regression: "expected Python int too large to convert to C int".
        ("added:>99999999999999d", r'"added:>99999999999999d": expected an age the calendar '
                                   r'holds \(at most 7[\d,]+ days\)'),
        ("changed:>9999999w", r"expected an age the calendar holds"),
    ],
)
def test_errors_name_the_bad_term(query, needle):
    with pytest.raises(QueryError, match=needle):
        parse_query(query, now=NOW)


def test_bad_ordering_and_output_format_are_query_errors(library):
    with pytest.raises(QueryError, match="cannot order by 'size'"):
        find(library, "", order_by="size")
    with pytest.raises(QueryError, match="unknown output format 'xml'"):
        write_rows([], "xml", io.StringIO())


# --- genre rows --------------------------------------------------------------------------------


@BOTH
def test_genre_is_normalised_and_takes_wildcards(genres_lib):
    assert find(genres_lib, "genre:hiphop") == ["/m/rap.mp3"]
    assert find(genres_lib, 'genre:"HIP HOP"') == ["/m/rap.mp3"]
    assert find(genres_lib, "genre:*rock") == ["/m/weak.flac"]
    assert find(genres_lib, "genre:hard*") == ["/m/weak.flac"]
    assert find(genres_lib, "genre:ro*") == ["/m/weak.flac"]
    # A whole name, never a part; a name nobody has is an error with a suggestion, not an
    # empty answer (regression: a typo silently matched nothing).
    with pytest.raises(QueryError, match="did you mean Rock"):
        find(genres_lib, "genre:roc")
    assert find(genres_lib, "genre:*") == ["/m/house.mp3", "/m/mix.mp3", "/m/rap.mp3",
                                           "/m/weak.flac"]


@BOTH
def test_lower_case_operators_and_parentheses_are_errors_not_empty_answers(genres_lib):
    with pytest.raises(QueryError, match='"or" is not an operator here'):
        find(genres_lib, "genre:house or genre:techno")
    with pytest.raises(QueryError, match="parentheses are not supported"):
        find(genres_lib, "(genre:house | genre:techno)")
    assert find(genres_lib, "genre:house OR genre:techno") == ["/m/house.mp3", "/m/mix.mp3"]
    assert find(genres_lib, "'or'") == []  # quoted: a path search for the word


@BOTH
def test_genre_row_terms_hold_on_the_same_row(genres_lib):
    assert find(genres_lib, "genre:house score:>0.6") == ["/m/house.mp3"]
    assert find(genres_lib, "genre:techno score:>0.6") == ["/m/mix.mp3"]
    assert find(genres_lib, "genre:house confidence:<0.5") == ["/m/mix.mp3"]
    assert find(genres_lib, "genre:house rank:1") == ["/m/house.mp3"]
    assert find(genres_lib, "genre:house rank:2") == ["/m/mix.mp3"]
    assert find(genres_lib, "rank:1 score:<0.3") == ["/m/weak.flac"]
    assert find(genres_lib, "rank:2 score:<0.5") == ["/m/mix.mp3", "/m/weak.flac"]
    assert find(genres_lib, "rank:2 score:>0.5") == []


@BOTH
def test_negated_genre_row_terms_mean_no_such_row(genres_lib):
    assert find(genres_lib, "genre:house -genre:techno") == ["/m/house.mp3"]
    assert find(genres_lib, "-genre:house") == ["/m/rap.mp3", "/m/todo.mp3", "/m/weak.flac"]
    assert find(genres_lib, "NOT genre:house") == find(genres_lib, "-genre:house")
    assert find(genres_lib, "NOT -genre:house") == find(genres_lib, "genre:house")
    assert find(genres_lib, "status:done -score:<0.5") == ["/m/house.mp3", "/m/rap.mp3"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("score:>0.7", ["/m/mix.mp3"]),
        ("score:>=0.7", ["/m/house.mp3", "/m/mix.mp3"]),
        ("score:<0.25", ["/m/weak.flac"]),
        ("score:<=0.25", ["/m/weak.flac"]),
        ("score:=0.7", ["/m/house.mp3"]),
        ("score:0.6", ["/m/rap.mp3"]),  # float32's 0.6 is 0.6000000238
        ("score:0.600", ["/m/rap.mp3"]),
        ("score:0.61", []),
        ("score:1", []),
        ("score:0.45..0.65", ["/m/rap.mp3"]),
        ("score:0.65..0.45", ["/m/rap.mp3"]),  # ends in either order
        ("score:0.7..0.8", ["/m/house.mp3", "/m/mix.mp3"]),  # inclusive
        ("score:..0.2", ["/m/weak.flac"]),
        ("score:0.75..", ["/m/mix.mp3"]),
        ("confidence:>0.85", ["/m/house.mp3"]),
        ("confidence:0.5", ["/m/weak.flac"]),
        ("rank:>=2", ["/m/mix.mp3", "/m/weak.flac"]),
        ("windows:>20", ["/m/mix.mp3"]),
        ("windows:..10", ["/m/house.mp3", "/m/rap.mp3", "/m/weak.flac"]),
    ],
)
def test_numeric_operators_and_ranges(genres_lib, query, expected):
    assert find(genres_lib, query) == expected


# --- track fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("duration:245", ["/m/b.mp3"]),
        ("duration:4:05", ["/m/b.mp3"]),
        ("duration:>3m", ["/m/b.mp3", "/m/c.mp3"]),
        ("duration:<3m", ["/m/a.mp3"]),
        ("duration:90s", ["/m/a.mp3"]),
        ("duration:1h30m", ["/m/c.mp3"]),
        ("duration:>=1:30:00", ["/m/c.mp3"]),
        ("duration:1m..4:05", ["/m/a.mp3", "/m/b.mp3"]),  # 245.3 s is 4:05
        ("duration:<=4:04", ["/m/a.mp3"]),
        ("duration:>4:05", ["/m/b.mp3", "/m/c.mp3"]),
        ("duration:<4:05", ["/m/a.mp3"]),
        ("duration:1h..", ["/m/c.mp3"]),
        ("-duration:>1m", ["/m/none.mp3"]),  # no duration known: not longer than a minute
    ],
)
def test_duration_forms(library, query, expected):
    add(library, "/m/a.mp3", duration=90.0)
    add(library, "/m/b.mp3", duration=245.3)
    add(library, "/m/c.mp3", duration=5400.0)
    add(library, "/m/none.mp3", duration=None)
    assert find(library, query) == expected


@BOTH
def test_format_status_model_and_error(genres_lib):
    add(genres_lib, "/m/bad.ogg", None, status="failed", fmt="ogg", error="Decode error: EOF")
    add(genres_lib, "/m/vgg.mp3", (("Jazz", 0.9, 0.9),), model="MTT_VGG")
    assert find(genres_lib, "format:flac") == ["/m/weak.flac"]
    assert find(genres_lib, "format:.FLAC") == ["/m/weak.flac"]
    assert "/m/todo.mp3" in find(genres_lib, "-format:mp3")  # no format is not mp3
    assert find(genres_lib, "status:pending") == ["/m/todo.mp3"]
    assert find(genres_lib, "status:FAILED") == ["/m/bad.ogg"]
    assert find(genres_lib, "model:vgg") == ["/m/vgg.mp3"]
    assert find(genres_lib, "-model:musicnn") == ["/m/bad.ogg", "/m/todo.mp3", "/m/vgg.mp3"]
    assert find(genres_lib, "error:decode") == ["/m/bad.ogg"]
    assert len(find(genres_lib, "-error:decode")) == 6  # tracks without an error included


@BOTH
def test_bare_words_match_part_of_the_path_ignoring_case(library):
    add(library, "/m/Daft Punk/One More Time.mp3")
    add(library, "/m/100%/a_b.mp3")
    add(library, "/m/100/ab.mp3")
    assert find(library, "daft time") == ["/m/Daft Punk/One More Time.mp3"]
    assert find(library, '"punk/one"') == ["/m/Daft Punk/One More Time.mp3"]
    assert find(library, "-punk") == ["/m/100%/a_b.mp3", "/m/100/ab.mp3"]
    assert find(library, "%") == ["/m/100%/a_b.mp3"]  # no LIKE wildcards
    assert find(library, "_") == ["/m/100%/a_b.mp3"]


@BOTH
def test_or_groups(genres_lib):
    assert find(genres_lib, "genre:techno OR genre:rock") == ["/m/mix.mp3", "/m/weak.flac"]
    assert find(genres_lib, "genre:techno|status:pending") == ["/m/mix.mp3", "/m/todo.mp3"]
    assert find(genres_lib, "genre:house score:>0.6 | rank:1 score:<0.3") == [
        "/m/house.mp3", "/m/weak.flac"]
    assert find(genres_lib, "genre:techno 'or'") == []  # quoted, "or" is a word in paths


# --- paths -------------------------------------------------------------------------------------


@BOTH
def test_path_is_a_folder_prefix_with_a_boundary(library):
    for path in ("/m/2024", "/m/2024/a.mp3", "/m/2024/sub/b.mp3", "/m/2024-old/x.mp3",
                 "/m/20240/y.mp3", "/m/2023/z.mp3"):
        add(library, path)
    inside = ["/m/2024", "/m/2024/a.mp3", "/m/2024/sub/b.mp3"]
    assert find(library, "path:/m/2024") == inside
    assert find(library, "path:/m/2024/") == inside
    assert find(library, "path:/m/2024/../2024") == inside
    assert find(library, "path:/m/2024/a.mp3") == ["/m/2024/a.mp3"]
    assert find(library, "-path:/m/2024") == ["/m/2023/z.mp3", "/m/2024-old/x.mp3",
                                              "/m/20240/y.mp3"]  # byte order


@BOTH
def test_path_globs(library):
    for path in ("/m/2024/a.mp3", "/m/2025/deep/a.mp3", "/m/[x]/a.mp3", "/m/x/a.mp3",
                 "/m/2024-old/b.mp3"):
        add(library, path)
    assert find(library, "path:/m/*/a.mp3") == ["/m/2024/a.mp3", "/m/2025/deep/a.mp3",
                                                "/m/[x]/a.mp3", "/m/x/a.mp3"]
    assert find(library, "path:/m/202?") == ["/m/2024/a.mp3", "/m/2025/deep/a.mp3"]
    assert find(library, "path:'/m/[x]/*'") == ["/m/[x]/a.mp3"]  # [ is not a character class


def test_path_expands_home_and_makes_relative_paths_absolute(library, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", "/home/dj")
    monkeypatch.chdir(tmp_path)
    add(library, "/home/dj/Music/My Stuff/a.mp3")
    add(library, str(tmp_path / "crate" / "b.mp3"))
    assert find(library, 'path:"~/Music/My Stuff"') == ["/home/dj/Music/My Stuff/a.mp3"]
    assert find(library, "path:crate") == [str(tmp_path / "crate" / "b.mp3")]


@BOTH
def test_non_utf8_path_round_trips_and_matches_its_folder(library):
    add(library, LATIN1, (("Jazz", 0.9, 0.9),))
    add(library, "/m/cafe/y.mp3")
    with library.session() as session:
        stored = session.execute(text("SELECT path FROM tracks ORDER BY path")).scalars().all()
    assert stored == [b"/m/cafe/y.mp3", b"/m/caf\xe9/x.mp3"]
    folder = os.fsdecode(b"/m/caf\xe9")  # as the CLI gets it from argv
    assert find(library, f"path:'{folder}'") == [LATIN1]
    assert find(library, "path:/m/caf") == []
    assert find(library, "path:/m/caf?/*") == ["/m/cafe/y.mp3", LATIN1]
    assert find(library, "path:/m/caf?/x*") == [LATIN1]
    assert find(library, os.fsdecode(b"\xe9/x")) == [LATIN1]
    assert find(library, "genre:jazz") == [LATIN1]


# --- times -------------------------------------------------------------------------------------


@BOTH
def test_relative_ages(library):
    add(library, "/m/new.mp3", added=ago(days=3))
    add(library, "/m/old.mp3", added=ago(days=10))
    add(library, "/m/hour.mp3", added=ago(hours=1))
    assert find(library, "added:>7d") == ["/m/hour.mp3", "/m/new.mp3"]
    assert find(library, "added:<7d") == ["/m/old.mp3"]
    assert find(library, "added:<=1w") == ["/m/old.mp3"]
    assert find(library, "added:>12h") == ["/m/hour.mp3"]
    assert find(library, "added:>2w") == ["/m/hour.mp3", "/m/new.mp3", "/m/old.mp3"]
    assert find(library, "added:2d..4d") == ["/m/new.mp3"]
    assert find(library, "added:4d..2d") == ["/m/new.mp3"]
    assert find(library, "added:..4d") == ["/m/old.mp3"]


@BOTH
def test_iso_dates_are_local_days(library, tokyo):
    add(library, "/m/a.mp3", added=utc(2026, 11, 19, 16, 0))  # 2026-11-20 01:00 in Tokyo
    add(library, "/m/b.mp3", added=utc(2026, 11, 20, 16, 0))  # 2026-11-21 01:00 in Tokyo
    add(library, "/m/c.mp3", added=utc(2026, 11, 19, 14, 0))  # 2026-11-19 23:00 in Tokyo
    assert find(library, "added:2026-11-20") == ["/m/a.mp3"]
    assert find(library, "added:=2026-11-21") == ["/m/b.mp3"]
    assert find(library, "added:>=2026-11-20") == ["/m/a.mp3", "/m/b.mp3"]
    assert find(library, "added:>2026-11-21") == ["/m/b.mp3"]
    assert find(library, "added:<2026-11-20") == ["/m/c.mp3"]
    assert find(library, "added:<=2026-11-20") == ["/m/a.mp3", "/m/c.mp3"]
    assert find(library, "added:2026-11-19..2026-11-20") == ["/m/a.mp3", "/m/c.mp3"]
    assert find(library, "added:2026-11-20T01:00") == ["/m/a.mp3"]
    assert find(library, "added:2026-11-20T01") == ["/m/a.mp3"]
    assert find(library, "added:2026-11-20T01:01") == []
    assert find(library, "added:2026-11-19T16:00Z") == ["/m/a.mp3"]  # explicit offset
    assert find(library, "added:2026-11") == ["/m/a.mp3", "/m/b.mp3", "/m/c.mp3"]
    assert find(library, "added:2025") == []


def test_today_yesterday_and_weekdays(library, tokyo):
    add(library, "/m/mon.mp3", changed=utc(2026, 11, 22, 16, 0))  # Monday 01:00 in Tokyo
    add(library, "/m/sun.mp3", changed=utc(2026, 11, 22, 14, 0))  # Sunday 23:00 in Tokyo
    add(library, "/m/today.mp3", changed=utc(2026, 11, 25, 16, 0))  # Thursday 01:00
    add(library, "/m/yday.mp3", changed=utc(2026, 11, 25, 14, 0))  # Wednesday 23:00
    assert find(library, "changed:>monday") == ["/m/mon.mp3", "/m/today.mp3", "/m/yday.mp3"]
    assert find(library, "changed:>=Mon") == find(library, "changed:>monday")
    assert find(library, "changed:monday") == ["/m/mon.mp3"]
    assert find(library, "changed:sunday") == ["/m/sun.mp3"]
    assert find(library, "changed:thursday") == ["/m/today.mp3"]  # today is Thursday
    assert find(library, "changed:today") == ["/m/today.mp3"]
    assert find(library, "changed:yesterday") == ["/m/yday.mp3"]
    assert find(library, "changed:<yesterday") == ["/m/mon.mp3", "/m/sun.mp3"]
    assert find(library, "changed:sunday..monday") == ["/m/mon.mp3", "/m/sun.mp3"]


def test_weekday_on_that_weekday_is_today(library, tokyo):
    add(library, "/m/a.mp3", added=utc(2026, 11, 22, 16, 0))  # Monday 01:00 in Tokyo
    add(library, "/m/b.mp3", added=utc(2026, 11, 22, 14, 0))  # Sunday 23:00 in Tokyo
    monday_evening = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # 20:00 in Tokyo
    with library.session() as session:
        found = select_tracks(session, "added:>monday", now=monday_evening)
    assert [t.path for t in found] == ["/m/a.mp3"]


def test_parse_when_gives_the_start_as_naive_utc(tokyo):
    assert parse_when("3d", now=NOW) == ago(days=3)
    assert parse_when("2026-11-20", now=NOW) == utc(2026, 11, 19, 15, 0)
    assert parse_when("monday", now=NOW) == utc(2026, 11, 22, 15, 0)
    with pytest.raises(QueryError, match='bad time "soon": expected a date or time'):
        parse_when("soon", now=NOW)


@BOTH
def test_classified_uses_the_classification_time(library):
    add(library, "/m/fresh.mp3", (("Jazz", 0.9, 0.9),), classified=ago(hours=2),
        added=ago(days=20))
    add(library, "/m/stale.mp3", (("Jazz", 0.9, 0.9),), classified=ago(days=20),
        added=ago(hours=2))
    add(library, "/m/never.mp3", None)
    assert find(library, "classified:>1d") == ["/m/fresh.mp3"]
    assert find(library, "-classified:>1d") == ["/m/never.mp3", "/m/stale.mp3"]
    assert find(library, "added:>1d") == ["/m/stale.mp3"]


# --- safety ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "genre:\"x' OR 1=1 --\"",
        "error:\"'; DROP TABLE tracks; --\"",
        "\"' OR ''='\"",
        "path:\"/m/x' OR '1'='1\"",
        "model:\"%' OR 1=1 --\"",
    ],
)
def test_injection_looking_input_is_data(genres_lib, query):
    if query.startswith("genre:"):  # no such genre: refused, as any unknown genre is
        with pytest.raises(QueryError, match="no track has"):
            find(genres_lib, query)
    else:
        assert find(genres_lib, query) == []
    with genres_lib.session() as session:
        assert session.scalar(select(func.count()).select_from(Track)) == 5
        statement = select(Track).where(build_filter(parse_query(query, now=NOW), ["House"]))
        assert "1=1" not in str(statement.compile()) and "DROP" not in str(statement.compile())


# --- ordering and output -----------------------------------------------------------------------


@BOTH
def test_ordering_and_limit(genres_lib):
    assert find(genres_lib, "", order_by="score") == [
        "/m/mix.mp3", "/m/house.mp3", "/m/rap.mp3", "/m/weak.flac", "/m/todo.mp3"]
    assert find(genres_lib, "", order_by="-score") == [
        "/m/weak.flac", "/m/rap.mp3", "/m/house.mp3", "/m/mix.mp3", "/m/todo.mp3"]
    assert find(genres_lib, "", order_by="genre") == [
        "/m/rap.mp3", "/m/house.mp3", "/m/weak.flac", "/m/mix.mp3", "/m/todo.mp3"]
    assert find(genres_lib, "", order_by="-path", limit=2) == ["/m/weak.flac", "/m/todo.mp3"]
    assert find(genres_lib, "status:done", limit=1) == ["/m/house.mp3"]


@BOTH
def test_order_by_added_and_classified_newest_first(library):
    add(library, "/m/a.mp3", (("Jazz", 0.9, 0.9),), added=ago(days=1), classified=ago(days=9))
    add(library, "/m/b.mp3", (("Jazz", 0.9, 0.9),), added=ago(days=2), classified=ago(days=1))
    add(library, "/m/c.mp3", None, added=ago(days=3))
    assert find(library, "", order_by="added") == ["/m/a.mp3", "/m/b.mp3", "/m/c.mp3"]
    assert find(library, "", order_by="classified") == ["/m/b.mp3", "/m/a.mp3", "/m/c.mp3"]
    assert find(library, "", order_by="-added") == ["/m/c.mp3", "/m/b.mp3", "/m/a.mp3"]


def rows_for(lib: Library, query: str) -> list[dict]:
    with lib.session() as session:
        return track_rows(select_tracks(session, query, now=NOW))


@BOTH
def test_track_rows_are_flat_json_ready_records(genres_lib):
    mix, todo = rows_for(genres_lib, "path:/m/mix.mp3 | status:pending")
    assert mix == {
        "path": "/m/mix.mp3", "format": "mp3", "duration": 200.0, "status": "done",
        "genre": "Techno", "rank": 1, "score": 0.8, "confidence": 0.7,
        "genres": [{"genre": "Techno", "score": 0.8, "confidence": 0.7},
                   {"genre": "House", "score": 0.4, "confidence": 0.3}],
        "tag": None, "written": None, "artist": None, "title": None, "album": None,
        "model": "msd_musicnn", "classified_at": "2026-10-27T12:00:00+00:00",
        "added_at": "2026-10-27T12:00:00+00:00", "last_error": None,
    }
    assert todo["genre"] is None and todo["genres"] == [] and todo["classified_at"] is None
    assert todo["rank"] is None
    assert json.loads(json.dumps([mix, todo])) == [mix, todo]


@BOTH
def test_a_listing_shows_the_genre_the_query_asked_about(genres_lib):
    """Regression: `genre:house` listed a track whose House is its second genre with its top
    genre (Techno) beside it, as if it did not match."""
    with genres_lib.session() as session:
        for query, expected in (("genre:house", ("House", 2, 0.4)),
                                ("genre:house score:>0.3 | genre:ambient", ("House", 2, 0.4)),
                                ("path:/m/mix.mp3", ("Techno", 1, 0.8)),
                                ("path:/m/mix.mp3 -genre:ambient", ("Techno", 1, 0.8))):
            rows = track_rows(select_tracks(session, query, now=NOW), shown_genre(query))
            assert [(r["genre"], r["rank"], r["score"]) for r in rows
                    if r["path"] == "/m/mix.mp3"] == [expected], query


def test_write_json_round_trips_even_non_utf8_paths(genres_lib):
    add(genres_lib, LATIN1, (("Jazz", 0.9, 0.8),))
    rows = rows_for(genres_lib, "")
    out = io.StringIO()
    write_rows(rows, "json", out)
    text = out.getvalue()
    text.encode("utf-8")  # valid UTF-8 throughout: no lone surrogates
    parsed = json.loads(text)
    # The one convention: readable text, and the exact bytes (base64) when not UTF-8.
    assert parsed[0]["path"] == "/m/caf\ufffd/x.mp3"
    assert base64.b64decode(parsed[0]["path_bytes"]) == os.fsencode(LATIN1)
    assert all("path_bytes" not in r for r in parsed[1:])
    assert [r["path"] for r in parsed[1:]] == [r["path"] for r in rows[1:]]


def test_write_csv_has_a_header_and_parses_back(genres_lib):
    add(genres_lib, LATIN1, (("Jazz", 0.9, 0.8),), error='says "no", twice')
    rows = rows_for(genres_lib, "")
    out = io.StringIO()
    write_rows(rows, "csv", out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["path"] for r in parsed] == ["/m/caf\ufffd/x.mp3"] + [r["path"] for r in rows[1:]]
    by_path = {r["path"]: r for r in parsed}
    assert by_path["/m/mix.mp3"]["genres"] == "Techno; House"
    assert float(by_path["/m/mix.mp3"]["score"]) == 0.8
    assert by_path["/m/caf\ufffd/x.mp3"]["last_error"] == 'says "no", twice'
    assert base64.b64decode(by_path["/m/caf\ufffd/x.mp3"]["path_bytes"]) == os.fsencode(LATIN1)
    assert by_path["/m/mix.mp3"]["path_bytes"] == ''
    assert by_path["/m/todo.mp3"]["genre"] == "" and by_path["/m/todo.mp3"]["status"] == "pending"


def test_write_table_aligns_columns(genres_lib):
    out = io.StringIO()
    write_rows(rows_for(genres_lib, ""), "table", out)
    lines = out.getvalue().splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["path", "genre", "rank", "score", "confidence",
                                             "status"]
    assert len(lines) == 6
    starts = [lines[0].index(name) for name in ("genre", "rank", "score", "confidence", "status")]
    house = lines[1]
    assert house.startswith("/m/house.mp3")
    assert [house[s:].split()[0] for s in starts] == ["House", "1", "0.70", "0.90", "done"]
    todo = next(line for line in lines if line.startswith("/m/todo.mp3"))
    assert todo[starts[4]:] == "pending"


def test_a_report_keeps_the_path_convention_in_json_and_csv():
    """stats and status: nested reports; their paths are written as listings write them."""
    report = {"tracks": 2, "status": {"done": 1, "failed": 1}, "genres": {},
              "failures": [{"path": LATIN1, "error": "cannot decode"}]}
    out = io.StringIO()
    write_report(report, "json", out)
    out.getvalue().encode("utf-8")  # no lone surrogates
    (failure,) = json.loads(out.getvalue())["failures"]
    assert failure["path"] == "/m/caf\ufffd/x.mp3" and failure["error"] == "cannot decode"
    assert base64.b64decode(failure["path_bytes"]) == os.fsencode(LATIN1)
    out = io.StringIO()
    write_report(report, "csv", out)
    fields = {r["field"]: r["value"] for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert fields == {"tracks": "2", "status.done": "1", "status.failed": "1",
                      "failures.0.path": "/m/caf\ufffd/x.mp3",
                      "failures.0.error": "cannot decode",
                      "failures.0.path_bytes": failure["path_bytes"]}


@BOTH
def test_collecting_few_matches_first_changes_no_answer(genres_lib, monkeypatch):
    """A genre condition that matches few tracks is collected first (a materialized CTE),
    one that matches many is not; both ways give the same tracks in the same order."""
    from libtagger.query import language

    queries = ("genre:house", "genre:house score:>0.5", "genre:house | genre:rock rank:2",
               "genre:*rock -genre:house", "genre:house confidence:<0.5 | format:flac",
               "rank:1 score:<0.3")
    orders = ("path", "-score")
    # A page (limit) is what the probe is for; without one, both ways are the plain query.
    collected = {(q, o): find(genres_lib, q, order_by=o, limit=50) for q in queries
                 for o in orders}
    assert collected["genre:house", "path"] == ["/m/house.mp3", "/m/mix.mp3"]
    assert all(find(genres_lib, q, order_by=o) == paths for (q, o), paths in collected.items())
    monkeypatch.setattr(language, "FEW_MATCHES", 0)  # every condition "matches many"
    assert {(q, o): find(genres_lib, q, order_by=o, limit=50) for q in queries
            for o in orders} == collected


@BOTH
def test_stored_genres_are_every_distinct_name(genres_lib):
    with genres_lib.session() as session:
        names = stored_genres(session)  # in the database's collation
        assert sorted(names) == ["Hard Rock", "Hip-Hop", "House", "Rock", "Techno"]


@BOTH
def test_stats_count_top_genres_and_confidence_buckets_edges_included(library):
    from libtagger.query.report import library_stats

    add(library, "/m/a.mp3", (("House", 0.7, 0.25), ("Techno", 0.6, 0.9)))  # top only
    add(library, "/m/b.mp3", (("House", 0.7, 0.5),))
    add(library, "/m/c.mp3", (("Jazz", 0.7, 0.51),))
    add(library, "/m/d.mp3", (("Jazz", 0.7, 1.0),))
    add(library, "/m/e.mp3", (("Jazz", 0.7, 0.0),))
    add(library, "/m/gone.mp3", (("Polka", 0.9, 0.9),), status="missing")  # not counted
    add(library, "/m/bad.mp3", None, status="failed", error="cannot decode")
    report = library_stats(library)
    assert report["tracks"] == 7 and report["status"] == {"done": 5, "failed": 1, "missing": 1}
    assert report["genres"] == {"Jazz": 3, "House": 2}
    assert report["confidence"] == {"0.00-0.25": 2, "0.25-0.50": 1, "0.50-0.75": 1,
                                    "0.75-1.00": 1}
    assert report["failures"] == [{"path": "/m/bad.mp3", "error": "cannot decode"}]
