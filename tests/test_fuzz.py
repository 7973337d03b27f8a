"""Property tests of the parsers libtagger owns: the query language, the configuration and tag
planning. Each takes whatever a user (or a file) can hand it and either works or fails with
libtagger's own error, never with a stray exception."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libtagger.analysis.vote import normalise_genre
from libtagger.config import Config, config_from_dict
from libtagger.errors import ConfigError
from libtagger.library.db import Library
from libtagger.library.tags import plan_genres
from libtagger.query.language import QueryError, parse_query, select_tracks

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# --- the query language ----------------------------------------------------------------------

FIELDS = ("genre", "score", "confidence", "rank", "path", "format", "status", "model",
          "duration", "windows", "added", "changed", "classified", "error", "GENRE", "nosuch")
PIECES = st.one_of(
    st.sampled_from(FIELDS).map(lambda f: f + ":"),
    st.sampled_from([" ", " OR ", " | ", "NOT ", "-", "\"", "'", "\\", "..", ">", ">=", "<",
                     "<=", "=", "*", "?", "[", "~", "/", ":", "h", "d", "w", "m", "s", "T",
                     "today", "yesterday", "monday", "mon", "pending", "done", "mp3", "1e309",
                     "-0", "nan", "inf", "99999999999999999999", "4:05", "1:02:03", "2026-11",
                     "2026-11-01", "2026-11-01T14:00+01:00", "0000-00-00", "9999-12-31"]),
    st.integers(min_value=-10**25, max_value=10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=4),
)
QUERIES = st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=12).map("".join))


@FAST
@given(QUERIES)
def test_the_query_parser_raises_only_query_errors(text):
    try:
        parse_query(text, NOW)
    except QueryError:
        pass


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    library = Library(tmp_path_factory.mktemp("fuzz") / "library.db")
    yield library
    library.close()


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(QUERIES, st.sampled_from(["path", "-score", "added", "classified", "genre", "x", "-"]),
       st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)))
def test_a_query_run_on_a_database_raises_only_query_errors(library, text, order, limit):
    # Parsing is half of it: values reach SQLite as bound parameters (overflowing integers,
    # infinite floats, far-off dates) and must not break there either.
    try:
        with library.reader() as session:
            select_tracks(session, text, order_by=order, limit=limit, now=NOW)
    except QueryError:
        pass


# --- the configuration -----------------------------------------------------------------------


def _keys(section) -> list[str]:
    return [f.name for f in fields(section)]


SECTIONS = {f.name: f.default_factory() for f in fields(Config) if is_dataclass(f.type) or
            f.name in ("library", "classifier", "tags", "watch", "personal", "limits")}
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-2**63, max_value=2**63 - 1),  # TOML integers are 64-bit
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["fill_empty", "replace", "append", "personal", "fallback", "off",
                     "msd_vgg", "mtt_vgg", "no_such_model", ""]),
    st.datetimes(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _rarely(draw) -> bool:
    """True one time in ten: most of a document is well-formed, so the checks behind the first
    error are reached too."""
    return draw(st.integers(0, 9)) == 0


@st.composite
def config_tables(draw):
    """A TOML-like document: mostly real sections and keys, some strangers, any values."""
    document = {}
    names = [*SECTIONS, "genres"] + (["nosuch"] if _rarely(draw) else [])
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        if name == "genres":
            document[name] = draw(st.one_of(
                VALUES, st.dictionaries(st.text(max_size=6), VALUES, max_size=3),
                st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=6), max_size=3),
                                max_size=3)))
            continue
        if name == "nosuch" or _rarely(draw):
            document[name] = draw(VALUES)
            continue
        known = _keys(type(SECTIONS[name]))
        keys = draw(st.lists(st.sampled_from(known), max_size=3, unique=True))
        if _rarely(draw):
            keys.append(draw(st.text(max_size=5)))
        defaults = SECTIONS[name]
        document[name] = {
            key: draw(VALUES if _rarely(draw) else _like(getattr(defaults, key, None)))
            for key in keys}
    return document


def _like(default):
    """Values of the default's own type, edges included (NaN, infinities, 64-bit limits)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(min_value=-2**63, max_value=2**63 - 1)
    if isinstance(default, float):
        return st.floats(allow_nan=True, allow_infinity=True)
    if isinstance(default, str):
        return SCALARS
    if isinstance(default, tuple):
        return st.lists(st.text(max_size=8), max_size=3)
    return VALUES


def _floats(value):
    """Every float inside a config object."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from _floats(item)
    elif is_dataclass(value):
        for f in fields(value):
            yield from _floats(getattr(value, f.name))


@FAST
@given(config_tables())
def test_config_raises_only_config_errors_and_keeps_numbers_finite(document):
    try:
        config = config_from_dict(document, source="fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")
        return
    assert all(math.isfinite(x) for x in _floats(config)), config


# --- tag planning ----------------------------------------------------------------------------

GENRES = st.lists(
    st.one_of(st.sampled_from(["Rock", "rock", "ROCK", "Hip-Hop", "hiphop", "Hip Hop", "R&B",
                               "RnB", "House", "Drum & Bass", "drum n bass", "Jazz", "Ünïcode",
                               "ß", "SS", "!!!", "-"]),
              st.text(min_size=1, max_size=6)),
    max_size=5,
)


def _normalised(genres) -> list[str]:
    return [normalise_genre(g) for g in genres]


@FAST
@given(GENRES, GENRES)
def test_append_never_writes_a_genre_twice(existing, ours):
    planned = plan_genres(existing, ours, "append")
    if planned is None:  # nothing new: every one of ours is there already
        assert set(_normalised(ours)) <= set(_normalised(existing))
        return
    assert planned[:len(existing)] == list(existing)  # what was there stays, in order
    added = _normalised(planned[len(existing):])
    assert added, planned
    assert len(set(added)) == len(added)
    assert not set(added) & set(_normalised(existing))
    assert set(_normalised(planned)) == set(_normalised(existing)) | set(_normalised(ours))
    if len(set(_normalised(existing))) == len(existing):
        assert len(set(_normalised(planned))) == len(planned)


@FAST
@given(GENRES, GENRES)
def test_fill_empty_never_touches_a_file_with_genres(existing, ours):
    planned = plan_genres(existing, ours, "fill_empty")
    if existing or not ours:
        assert planned is None
    else:
        assert planned == list(ours)


@FAST
@given(GENRES, GENRES)
def test_replace_gives_ours_or_nothing(existing, ours):
    planned = plan_genres(existing, ours, "replace")
    assert planned is None or planned == list(ours)
    if ours and list(existing) != list(ours):
        assert planned == list(ours)
    if not ours:
        assert planned is None


@FAST
@given(GENRES, GENRES, st.text(max_size=10))
def test_an_unknown_policy_is_a_value_error(existing, ours, policy):
    if policy in ("fill_empty", "replace", "append"):
        return
    with pytest.raises(ValueError, match="unknown tag policy"):
        plan_genres(existing, ours, policy)
