"""Search the genre database with a short query language (``libtagger query``).

A query is one or more **groups** separated by ``OR`` (or ``|``); a track matches when any group
matches. A group is **terms** separated by spaces; all of them must hold. There are no
parentheses. An empty query matches every track.

A term is ``field:value``. A leading ``-`` (or the word ``NOT`` before it) negates it. A bare
word without a field matches part of the path, ignoring (ASCII) case. Values are tokenised like
a shell: ``path:"~/Music/My Stuff"``, ``genre:'hip hop'``. Only unquoted ``OR``, ``|``, ``NOT``
and ``-`` are keywords, so ``"OR"`` searches for the word.

Fields:

``genre:NAME``
    A genre of the track's current classification, compared ignoring case and punctuation
    (``hiphop`` matches "Hip-Hop"); ``*`` is a wildcard (``genre:*rock``).
``score:N``, ``confidence:N``, ``rank:N``
    Numbers about a genre row. All positive genre-row terms of a group must hold on the
    *same* genre: ``genre:house score:>0.6`` is House scoring above 0.6, ``rank:1 score:<0.3``
    is a weak top genre. A negated one (``-genre:rock``) means no genre row matches it.
``path:FOLDER``
    That file or anything under that folder (``~`` expanded, relative paths made absolute):
    ``path:~/Music/2024`` does not match ``~/Music/2024-old``. With ``*`` or ``?`` it is a glob
    over the whole path (``*`` crosses ``/``), and again matches what lies under a match.
``format:mp3``, ``status:done``
    Equality (format ignores case; status is pending, done, failed or missing).
``model:TEXT``, ``error:TEXT``
    Part of the classifying model's name, or of the track's last error (ignoring case).
``duration:N``
    Seconds; also ``3m``, ``1h30m``, ``90s``, ``4:05``, ``1:02:03``. Like a clock, a value is
    its whole second: ``duration:4:05`` and ``duration:..4:05`` include 245.3 s.
``windows:N``
    Windows the classification looked at.
``added:T``, ``changed:T``, ``classified:T``
    When the track was added, last changed, or classified.

Numbers, durations and times take comparisons and ranges (``>0.6``, ``..4:05``, ``14d..7d``);
:mod:`libtagger.query.values` lists their forms and reads them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    LargeBinary,
    Select,
    Text,
    and_,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from libtagger.query import values
from libtagger.library.db import Classification, FilePath, GenreRow, Track, under_path
from libtagger.errors import LibtaggerError
from libtagger.analysis.vote import normalise_genre

ORDERINGS = ("path", "score", "added", "classified", "genre")

MAX_LIMIT = 2**63 - 1
"""The largest ``LIMIT`` SQLite takes (a signed 64-bit integer)."""

MAX_TERMS = 200
"""Terms a query may have in all: SQLite refuses an expression tree deeper than 1000, which
about 500 ``genre:`` or ``path:`` glob terms reach; a query past this is refused by name."""


class QueryError(LibtaggerError):
    """A query (or an ordering or output format) cannot be understood; the message says why."""


@dataclass(frozen=True)
class Term:
    """One condition: a field (``"text"`` for a bare word), its parsed value, negation."""

    field: str
    value: Any
    negated: bool = False
    source: str = ""
    """The term as written, for messages."""


@dataclass(frozen=True)
class Group:
    """Terms that must all hold."""

    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Query:
    """Groups of which at least one must hold (no groups: everything matches)."""

    groups: tuple[Group, ...]


# --- matching --------------------------------------------------------------------------------


def _within(column: InstrumentedAttribute[Any], bounds: values.Bounds) -> ColumnElement[bool]:
    """``column`` inside ``bounds``."""
    parts = []
    if bounds.low is not None:
        parts.append(column > bounds.low if bounds.low_open else column >= bounds.low)
    if bounds.high is not None:
        parts.append(column < bounds.high if bounds.high_open else column <= bounds.high)
    return and_(*parts)


class _Contains(FunctionElement[bool]):
    """``needle`` occurs in ``haystack``, ignoring case; no wildcards to escape.

    Compiled per database: SQLite's ``instr`` over Python's casefold for text (ASCII ``lower``
    for paths, which are bytes); PostgreSQL's ``strpos`` over ``lower`` for text, and for
    paths (BYTEA) under the "C" collation, read byte for byte as Latin-1 text.
    """

    type = Boolean()
    inherit_cache = True
    name = "libtagger_contains"


@compiles(_Contains)
def _contains_sqlite(element: _Contains, compiler: Any, **kw: Any) -> str:
    def folded(clause: Any) -> str:
        sql = compiler.process(clause, **kw)
        if isinstance(clause.type, (FilePath, LargeBinary)):
            return f"lower({sql})"
        return f"lt_fold({sql})"  # Python's casefold, registered on every connection

    haystack, needle = (folded(c) for c in element.clauses)
    return f"(instr({haystack}, {needle}) > 0)"


@compiles(_Contains, "postgresql")
def _contains_postgresql(element: _Contains, compiler: Any, **kw: Any) -> str:
    def ascii_lower(clause: Any) -> str:
        sql = compiler.process(clause, **kw)
        if not isinstance(clause.type, (FilePath, LargeBinary)):
            return f"lower({sql})"  # text: the database's own, Unicode-aware lower()
        sql = f"convert_from({sql}, 'LATIN1')"
        return f'lower(({sql}) COLLATE "C")'

    haystack, needle = (ascii_lower(c) for c in element.clauses)
    return f"(strpos({haystack}, {needle}) > 0)"


def _contains(column: Any, needle: Any) -> ColumnElement[bool]:
    """``needle`` occurs in ``column``, ignoring case (in any script for text; ASCII for
    paths, which are bytes)."""
    return _Contains(column, needle)


class _PathGlob(FunctionElement[bool]):
    """A path matches a glob (``*`` any run of characters, ``?`` one; ``[`` is literal).

    SQLite: ``GLOB`` over both sides read as text (this SQLite build never GLOBs BLOBs).
    PostgreSQL: ``LIKE`` over the BYTEA path, where ``?`` is one byte (a non-ASCII UTF-8
    character is two to four).
    """

    type = Boolean()
    inherit_cache = True
    name = "libtagger_path_glob"


@compiles(_PathGlob)
def _glob_sqlite(element: _PathGlob, compiler: Any, **kw: Any) -> str:
    column, glob, _like = element.clauses
    return compiler.process(cast(column, Text).op("GLOB")(cast(glob, Text)), **kw)


@compiles(_PathGlob, "postgresql")
def _glob_postgresql(element: _PathGlob, compiler: Any, **kw: Any) -> str:
    column, _glob, like = element.clauses
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(like, **kw)})"


def _glob_as_like(pattern: str) -> str:
    """A glob as a LIKE pattern (backslash escapes LIKE's own wildcards)."""
    out = []
    for char in pattern:
        if char in "%_\\":
            out.append("\\" + char)
        else:
            out.append({"*": "%", "?": "_"}.get(char, char))
    return "".join(out)


def _path_glob(pattern: str) -> ColumnElement[bool]:
    """``Track.path`` matches the glob ``pattern`` (see :class:`_PathGlob`)."""
    return _PathGlob(Track.path, literal(pattern.replace("[", "[[]"), FilePath),
                     literal(_glob_as_like(pattern), FilePath))


def _under(path: str) -> ColumnElement[bool]:
    """The file ``path`` or anything under it; a glob if it has ``*`` or ``?``."""
    if "*" in path or "?" in path:
        below = path.rstrip(os.sep) + os.sep + "*"
        return or_(_path_glob(path), _path_glob(below))
    return under_path(Track.path, path)


@dataclass(frozen=True)
class _Field:
    """How a field's value is read, what it tests, and on which table."""

    parse: Callable[[str, datetime], Any]
    match: Callable[[Any], ColumnElement[bool]]
    table: str
    """"genre" (a genre row), "classification" or "track"."""


_FIELDS: dict[str, _Field] = {
    "genre": _Field(values.genre_pattern, lambda names: GenreRow.genre.in_(names), "genre"),
    "score": _Field(values.numbers, lambda b: _within(GenreRow.score, b), "genre"),
    "confidence": _Field(values.numbers, lambda b: _within(GenreRow.confidence, b), "genre"),
    "rank": _Field(values.numbers, lambda b: _within(GenreRow.rank, b), "genre"),
    "path": _Field(values.folder, _under, "track"),
    "format": _Field(values.file_format, lambda v: func.lower(Track.format) == v, "track"),
    "status": _Field(values.status, lambda v: Track.status == v, "track"),
    "model": _Field(values.as_written, lambda v: _contains(Classification.model, v),
                    "classification"),
    "duration": _Field(values.durations, lambda b: _within(Track.duration, b), "track"),
    "windows": _Field(values.numbers, lambda b: _within(Classification.windows, b),
                      "classification"),
    "added": _Field(values.times, lambda b: _within(Track.added_at, b), "track"),
    "changed": _Field(values.times, lambda b: _within(Track.updated_at, b), "track"),
    "classified": _Field(values.times, lambda b: _within(Classification.created_at, b),
                         "classification"),
    "error": _Field(values.as_written, lambda v: _contains(Track.last_error, v), "track"),
    # What the files themselves say, read at scan time (not libtagger's guesses):
    "tag": _Field(values.as_written, lambda v: _contains(Track.file_genre_key,
                                                          f"|{normalise_genre(v)}|"), "track"),
    "written": _Field(values.as_written, lambda v: _contains(Track.written, v), "track"),
    "artist": _Field(values.as_written, lambda v: _contains(Track.artist, v), "track"),
    "title": _Field(values.as_written, lambda v: _contains(Track.title, v), "track"),
    "album": _Field(values.as_written, lambda v: _contains(Track.album, v), "track"),
}
_BARE_WORD = _Field(values.as_written, lambda v: _contains(Track.path, literal(v, FilePath)),
                    "track")


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    text: str
    quoted_from: int | None
    """Index of the first character that came from quotes or a backslash (None: none did)."""


_PIECES = re.compile(
    r"""
      "((?:[^"\\]|\\.)*)"   # "double quoted", where \" and \\ are escapes
    | '([^']*)'             # 'single quoted'
    | \\(.)                 # \x outside quotes
    | ([^\s|"'\\]+)         # plain text
    | (\|) | (\s+)          # between tokens
    | (.)                   # a quote or backslash left open
    """,
    re.DOTALL | re.VERBOSE,
)


def _tokens(text: str) -> list[_Token]:
    """Split like a POSIX shell (quotes, backslashes); an unquoted ``|`` is its own token."""
    tokens: list[_Token] = []
    chars = ""
    quoted_from: int | None = None
    started = False
    for match in _PIECES.finditer(text):
        double, single, escaped, plain, bar, space, stray = match.groups()
        if stray is not None:
            what = "a backslash at the end" if stray == "\\" else f"an unclosed {stray} quote"
            raise QueryError(f"{what} in query: {text}")
        if bar is None and space is None:
            if plain is None and quoted_from is None:
                quoted_from = len(chars)
            if double is not None:
                double = re.sub(r'\\(["\\])', r"\1", double)
            chars += next(piece for piece in (double, single, escaped, plain) if piece is not None)
            started = True
            continue
        if started:
            tokens.append(_Token(chars, quoted_from))
        chars, quoted_from, started = "", None, False
        if bar:
            tokens.append(_Token("|", None))
    if started:
        tokens.append(_Token(chars, quoted_from))
    return tokens


def _term(token: _Token, negated: bool, now: datetime) -> Term:
    """One token as a term."""
    text, source = token.text, token.text
    plain_upto = len(text) if token.quoted_from is None else token.quoted_from
    if text.startswith("-") and plain_upto > 0 and len(text) > 1:
        text, plain_upto, negated = text[1:], plain_upto - 1, not negated
    name, colon, value = text.partition(":")
    if colon and len(name) < plain_upto and re.fullmatch(r"[A-Za-z]+", name):
        field = _FIELDS.get(name.lower())
        if field is None:
            raise QueryError(
                f'unknown field "{name}:" in "{source}"; fields are ' + ", ".join(_FIELDS)
            )
        if not value:
            raise QueryError(f'"{source}" has no value after the colon')
        try:
            return Term(name.lower(), field.parse(value, now), negated, source)
        except (ValueError, OverflowError) as exc:
            raise QueryError(f'bad term "{source}": expected {exc}') from None
    if not text:
        raise QueryError("empty search word (\"\") in query")
    return Term("text", text, negated, source)


def _aware(now: datetime | None) -> datetime:
    """``now`` as an aware time (naive means UTC, as stored); None: the current time."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def parse_query(text: str, now: datetime | None = None) -> Query:
    """Parse a query; relative times are resolved against ``now`` (aware; default: now).

    Raises:
        QueryError: the query is malformed; the message names the term.
    """
    now = _aware(now)
    groups: list[Group] = []
    terms: list[Term] = []
    negate = False
    count = 0
    for token in _tokens(text):
        keyword = token.text if token.quoted_from is None else ""
        if keyword in ("OR", "|"):
            if not terms or negate:
                raise QueryError(f"{keyword} must stand between two terms: {text}")
            groups.append(Group(tuple(terms)))
            terms = []
        elif keyword == "NOT":
            negate = not negate
        elif keyword.lower() in ("or", "and", "not"):
            # A bare lower-case word would silently search paths for "or": say what works.
            raise QueryError(f'"{keyword}" is not an operator here: write OR (or |) between '
                             'alternatives, NOT (or -) before a term; terms next to each other '
                             f'must all match. Quote it to search paths for the word: {text}')
        elif keyword.startswith("(") or keyword.endswith(")"):
            raise QueryError(f"parentheses are not supported: a query is terms that must all "
                             f"match, with OR between such groups (a b | c): {text}")
        else:
            terms.append(_term(token, negate, now))
            negate = False
            count += 1
            if count > MAX_TERMS:
                raise QueryError(f"the query has more than {MAX_TERMS} terms; split it into "
                                 "several queries")
    if negate:
        raise QueryError(f"NOT must be followed by a term: {text}")
    if groups and not terms:
        raise QueryError(f"OR must stand between two terms: {text}")
    if terms:
        groups.append(Group(tuple(terms)))
    return Query(tuple(groups))


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """The start of a time written as in a query (``2026-11-01``, ``3d``, ``monday``), naive UTC.

    Raises:
        QueryError: ``text`` is not a time.
    """
    try:
        return values.time_start(text.strip(), _aware(now))
    except (ValueError, OverflowError) as exc:
        raise QueryError(f'bad time "{text}": expected {exc}') from None


# --- building SQL ----------------------------------------------------------------------------


def _check_genre_names(query: Query, stored: Sequence[str]) -> None:
    """Refuse a genre no track has and no tree knows (a typo would silently match nothing).

    Raises:
        QueryError: naming the term, with the closest known genre names.
    """
    import difflib

    from libtagger.config import DEFAULT_GENRES

    known = sorted({*stored, *(n.name for n in DEFAULT_GENRES)})
    for group in query.groups:
        for term in group.terms:
            if term.field != "genre":
                continue
            if any(term.value.fullmatch(normalise_genre(name)) for name in known):
                continue
            raw = normalise_genre(term.source.split(":", 1)[-1])
            by_key = {normalise_genre(name): name for name in known}
            close = [by_key[k] for k in difflib.get_close_matches(raw, list(by_key), n=3,
                                                                   cutoff=0.6)]
            hint = f"; did you mean {', '.join(close)}?" if close else \
                f"; genres: {', '.join(known[:12])}…"
            raise QueryError(f'no track has, and no genre tree knows, the genre in '
                             f'"{term.source}"{hint}')


def stored_genres(session: Session) -> list[str]:
    """Every genre name in the database, for :func:`build_filter`.

    One index probe per name (the next name after the last one found, a recursive CTE)
    rather than ``SELECT DISTINCT``, which reads every genre row's index entry: a catalogue
    has a million times more genre rows than genre names.
    """
    genre = GenreRow.__table__.c.genre
    names = select(func.min(genre).label("name")).cte("names", recursive=True)
    following = select(genre).where(genre > names.c.name).order_by(genre).limit(1)
    names = names.union_all(select(following.scalar_subquery()).where(names.c.name.is_not(None)))
    return [name for name in session.scalars(select(names.c.name)) if name is not None]


FEW_MATCHES = 10_000
"""A genre condition met by at most this many tracks is collected first (see _has_genre_row)."""

Probe = Callable[[Select[Any]], bool]
"""Whether a genre-row subquery matches few tracks (at most :data:`FEW_MATCHES`)."""


def _has_genre_row(condition: ColumnElement[bool], few: Probe | None) -> ColumnElement[bool]:
    """The track's current classification has one genre row meeting ``condition``.

    Written as ``id IN (uncorrelated subquery)`` rather than a correlated EXISTS: SQLite runs
    it once, driven by the genre index, instead of probing every genre row for every track.
    When ``few`` finds that few tracks match, the subquery becomes a materialized CTE: the
    database collects those tracks first and sorts them, instead of walking every track in
    the listing's order to find them, which is what PostgreSQL picks when it overestimates how
    many match (it estimates genre and score as if they were independent: a rare
    ``genre:X score:>0.8`` cost a walk of the whole catalogue).
    """
    rows = select(Classification.track_id).join(GenreRow).where(condition)
    if few is not None and few(rows):
        matched = rows.cte().prefix_with("MATERIALIZED")
        return Track.id.in_(select(matched.c.track_id))
    return Track.id.in_(rows)


def _group_filter(group: Group, genres: Sequence[str], few: Probe | None) -> ColumnElement[bool]:
    """All of a group's terms; positive genre-row terms combined on one row."""
    conditions: list[ColumnElement[bool]] = []
    same_row: list[ColumnElement[bool]] = []
    for term in group.terms:
        field = _FIELDS.get(term.field, _BARE_WORD)
        value = term.value
        if term.field == "genre":
            value = [name for name in genres if value.fullmatch(normalise_genre(name))]
        condition = field.match(value)
        if field.table == "genre" and not term.negated:
            same_row.append(condition)
            continue
        if field.table == "genre":
            condition = _has_genre_row(condition, None)
        elif field.table == "classification":
            condition = Track.id.in_(select(Classification.track_id).where(condition))
        elif term.negated:
            condition = func.coalesce(condition, false())  # NULL (no format, no error) is "no"
        conditions.append(not_(condition) if term.negated else condition)
    if same_row:
        conditions.append(_has_genre_row(and_(*same_row), few))
    return and_(*conditions)


def build_filter(query: Query, genres: Iterable[str], few: Probe | None = None) -> ColumnElement[bool]:
    """A where-clause over :class:`Track` for ``query``; values are bound parameters.

    ``genres`` are the genre names stored in the database (:func:`stored_genres`): a
    ``genre:`` term becomes an indexed ``IN`` over the names that match it once normalised.
    ``few`` (see :func:`select_tracks`) tells which genre conditions match few tracks.
    """
    names = sorted(set(genres))
    if not query.groups:
        return true()
    return or_(*(_group_filter(group, names, few) for group in query.groups))


def _top_genre(column: InstrumentedAttribute[Any]) -> Any:
    """``column`` of the track's best-ranked genre (NULL: not classified)."""
    rows = select(column).join(Classification).where(Classification.track_id == Track.id)
    return rows.order_by(GenreRow.rank).limit(1).scalar_subquery()


def _ordering(order_by: str) -> list[Any]:
    """ORDER BY clauses for an ordering name (``-name`` reverses it); path breaks ties."""
    name = order_by.removeprefix("-")
    classified = select(Classification.created_at).where(Classification.track_id == Track.id)
    # name -> (expression, descending by default, may be NULL)
    keys: dict[str, tuple[Any, bool, bool]] = {
        "path": (Track.path, False, False),
        "score": (_top_genre(GenreRow.score), True, True),
        "added": (Track.added_at, True, False),
        "classified": (classified.scalar_subquery(), True, True),
        "genre": (_top_genre(GenreRow.genre), False, True),
    }
    if name not in keys:
        raise QueryError(f"cannot order by {order_by!r}: expected one of " + ", ".join(ORDERINGS))
    expression, descending, nullable = keys[name]
    descending ^= order_by.startswith("-")
    first = expression.desc() if descending else expression.asc()
    if nullable:  # unclassified tracks last either way
        first = first.nulls_last()
    return [first] if name == "path" else [first, Track.path]


def shown_genre(text: str) -> Callable[[str], bool] | None:
    """Which of a track's genres a listing should show for the query ``text``: those its
    genre terms name (None when it names none: the top genre)."""
    patterns = [t.value for g in parse_query(text).groups for t in g.terms
                if t.field == "genre" and not t.negated]
    if not patterns:
        return None
    return lambda name: any(p.fullmatch(normalise_genre(name)) for p in patterns)


def select_tracks(
    session: Session,
    text: str,
    order_by: str = "path",
    limit: int | None = None,
    *,
    now: datetime | None = None,
) -> list[Track]:
    """Tracks matching the query ``text``, with classification and genres loaded.

    ``order_by`` is one of :data:`ORDERINGS` (score, added and classified: highest or newest
    first); a leading ``-`` reverses it.

    Raises:
        QueryError: the query or the ordering is malformed.
    """
    query = parse_query(text, now)
    uses_genre = any(t.field == "genre" for g in query.groups for t in g.terms)
    genres = stored_genres(session) if uses_genre else []
    if uses_genre:
        _check_genre_names(query, genres)
    def few(rows: Select[Any]) -> bool:
        return len(session.execute(rows.limit(FEW_MATCHES + 1)).all()) <= FEW_MATCHES

    # Only a page (a limit) gains from collecting few matches first: a whole listing is read
    # and sorted in full either way, so it is spared the probe.
    statement = (
        select(Track)
        .where(build_filter(query, genres, few if limit is not None else None))
        .order_by(*_ordering(order_by))
        .options(selectinload(Track.classification).selectinload(Classification.genres))
    )
    if limit is not None:
        if not 0 <= limit <= MAX_LIMIT:
            raise QueryError(f"a limit must be between 0 and {MAX_LIMIT}, not {limit}")
        statement = statement.limit(limit)
    try:
        return list(session.scalars(statement))
    except OperationalError as exc:
        # What MAX_TERMS does not foresee (SQLite's own limits on a query's size) is still
        # the query's fault, not the database's.
        reason = str(getattr(exc, "orig", exc))
        if "too large" in reason or "too many" in reason:
            raise QueryError(f"the query is too large for SQLite ({reason}); split it into "
                             "several queries") from None
        raise
