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

Numbers take ``>x``, ``>=x``, ``<x``, ``<=x``, ``=x`` or ``x``, and inclusive ranges ``a..b``,
``..b``, ``a..``; ``=x`` allows for rounding in the sixth digit (``score:0.6`` matches the
stored 0.6000000238).

Times are ISO dates or times in local time (``2026-11-01``, ``2026-11-01T14:00``; an explicit
offset is honoured), ``2026-11`` or ``2026``, ages (``12h``, ``7d``, ``2w``: that long ago),
``today``, ``yesterday``, or a weekday (``monday``/``mon``: the latest Monday, 00:00 local
time). ``>`` means later: ``added:>7d`` is the last 7 days, ``changed:>monday`` since Monday. A
calendar value stands for its whole period where that matters: ``added:2026-11-01``,
``added:<=2026-11-01`` and ``added:2026-11-01..2026-11-03`` all include the whole named day.
An age is an instant, so it takes a comparison or a range (``added:14d..7d``), not ``=``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

from sqlalchemy import (
    ColumnElement,
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
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from libtagger.db import Classification, FilePath, GenreRow, Track
from libtagger.errors import LibtaggerError, display_path
from libtagger.vote import normalise_genre

STATUSES = ("pending", "done", "failed", "missing")
ORDERINGS = ("path", "score", "added", "classified", "genre")
OUTPUT_FORMATS = ("table", "csv", "json")
TABLE_COLUMNS = ("path", "genre", "score", "confidence", "status")
CSV_COLUMNS = ("path", "format", "duration", "status", "genre", "score", "confidence", "genres",
               "model", "classified_at", "added_at", "last_error")


class QueryError(LibtaggerError):
    """A query (or an ordering or output format) cannot be understood; the message says why."""


@dataclass(frozen=True)
class Bounds:
    """An interval of numbers or UTC times; ``None`` is an open end."""

    low: Any = None
    high: Any = None
    low_open: bool = False
    """True: strictly greater than ``low``."""
    high_open: bool = False


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


# --- reading values --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    """One written value: what ``>``/``<`` compare with, and the span ``=`` and ``<=`` use."""

    value: Any
    upto: tuple[Any, bool]
    """The inclusive upper bound it names: (bound, open)."""
    equal: tuple[Any, Any] | None
    """``=x`` matches [equal[0], equal[1]); None: an instant, no useful equality."""


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d\d(?:\.\d+)?)")
_UNITS = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
_AGE = re.compile(r"(\d+(?:\.\d+)?)([hdw])")
_AGE_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _number(text: str) -> _Point:
    """A plain number; ``=`` allows for float32 rounding (scores are stored from float32)."""
    if not _NUMBER.fullmatch(text):
        raise ValueError("a number, a comparison or a range, like 0.6, >0.6, <=3 or 0.2..0.8")
    value = float(text)
    slack = 1e-6 * max(1.0, abs(value))
    return _Point(value, (value, False), (value - slack, value + slack))


def _duration(text: str) -> _Point:
    """Seconds written as ``245``, ``90s``, ``3m``, ``1h30m``, ``4:05`` or ``1:02:03``."""
    if _NUMBER.fullmatch(text):
        seconds = float(text)
    elif clock := _CLOCK.fullmatch(text):
        hours, minutes, secs = clock.groups()
        seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    elif (units := _UNITS.fullmatch(text)) and any(units.groups()):
        hours, minutes, secs = (float(part or 0) for part in units.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError("a duration like 245, 90s, 3m, 1h30m or 4:05")
    return _Point(seconds, (seconds + 1, True), (seconds, seconds + 1))  # a whole second


def _to_utc(moment: datetime) -> datetime:
    """A local (naive) or aware time as naive UTC, the way the database stores times."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _period(start: datetime, end: datetime) -> _Point:
    """A local calendar period [start, end) as a point in UTC."""
    start, end = _to_utc(start), _to_utc(end)
    return _Point(start, (end, True), (start, end))


def _day(day: date) -> _Point:
    """One local calendar day."""
    midnight = datetime(day.year, day.month, day.day)
    return _period(midnight, midnight + timedelta(days=1))


def _moment_reader(now: datetime) -> Callable[[str], _Point]:
    """A reader of time values relative to ``now`` (aware)."""
    today = now.astimezone().date()

    def read(text: str) -> _Point:
        word = text.lower()
        if age := _AGE.fullmatch(word):
            moment = _to_utc(now) - float(age.group(1)) * _AGE_UNITS[age.group(2)]
            return _Point(moment, (moment, False), None)
        if word in ("today", "yesterday"):
            return _day(today - timedelta(days=1 if word == "yesterday" else 0))
        for index, name in enumerate(_WEEKDAYS):
            if word in (name, name[:3]):
                return _day(today - timedelta(days=(today.weekday() - index) % 7))
        if re.fullmatch(r"\d{4}(-\d\d)?", text):
            year, month = int(text[:4]), int(text[5:] or 0)
            if month:
                if not 1 <= month <= 12:
                    raise ValueError("a month 01-12")
                end = datetime(year + month // 12, month % 12 + 1, 1)
                return _period(datetime(year, month, 1), end)
            return _period(datetime(year, 1, 1), datetime(year + 1, 1, 1))
        try:
            return _day(date.fromisoformat(text))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                "a date or time (2026-11-01, 2026-11-01T14:00), an age (12h, 7d, 2w), "
                "today, yesterday or a weekday"
            ) from None
        clock = re.match(r"[\d:]*", re.split(r"[T ]", text, maxsplit=1)[-1])
        digits = len(clock.group().replace(":", "")) if clock else 0
        step = {2: "hours", 4: "minutes"}.get(digits, "seconds")
        return _period(moment, moment + timedelta(**{step: 1}))

    return read


def _bounds(text: str, read: Callable[[str], _Point]) -> Bounds:
    """``>x``, ``>=x``, ``<x``, ``<=x``, ``=x``, ``x`` or ``a..b`` read into bounds."""
    if ".." in text:
        low_text, _, high_text = text.partition("..")
        if not low_text and not high_text:
            raise ValueError("a range with at least one end, like 0.2..0.8 or ..0.8")
        low = read(low_text) if low_text else None
        high = read(high_text) if high_text else None
        if low and high and low.value > high.value:
            low, high = high, low
        upper = high.upto if high else (None, False)
        return Bounds(low.value if low else None, upper[0], False, upper[1])
    for op in (">=", "<=", ">", "<", "="):
        if text.startswith(op):
            point = read(text[len(op):])
            break
    else:
        op, point = "=", read(text)
    if op == "=":
        if point.equal is None:
            raise ValueError("a comparison (>7d newer, <7d older) or a range (14d..7d)")
        return Bounds(point.equal[0], point.equal[1], False, True)
    if op == "<=":
        return Bounds(high=point.upto[0], high_open=point.upto[1])
    if op[0] == ">":
        return Bounds(low=point.value, low_open=op == ">")
    return Bounds(high=point.value, high_open=True)


def _genre_pattern(text: str, now: datetime) -> re.Pattern[str]:
    """A genre name (``*`` wildcards allowed) as a pattern over normalised names."""
    pieces = [normalise_genre(piece) for piece in text.split("*")]
    if len(pieces) == 1 and not pieces[0]:
        raise ValueError("a genre name with letters or digits, like house or 'hip hop'")
    return re.compile(".*".join(re.escape(piece) for piece in pieces))


def _folder(text: str, now: datetime) -> str:
    """A path as the user means it: ``~`` expanded, absolute, and (no glob) with symlinks
    resolved, the way scans store paths."""
    path = os.path.expanduser(text)
    return os.path.abspath(path) if any(c in path for c in "*?[") else os.path.realpath(path)


def _status(text: str, now: datetime) -> str:
    if text.lower() not in STATUSES:
        raise ValueError("one of " + ", ".join(STATUSES))
    return text.lower()


# --- matching --------------------------------------------------------------------------------


def _within(column: InstrumentedAttribute[Any], bounds: Bounds) -> ColumnElement[bool]:
    """``column`` inside ``bounds``."""
    parts = []
    if bounds.low is not None:
        parts.append(column > bounds.low if bounds.low_open else column >= bounds.low)
    if bounds.high is not None:
        parts.append(column < bounds.high if bounds.high_open else column <= bounds.high)
    return and_(*parts)


def _contains(column: Any, needle: Any) -> ColumnElement[bool]:
    """``needle`` occurs in ``column``, ignoring ASCII case (instr: no wildcards to escape)."""
    return func.instr(func.lower(column), func.lower(needle)) > 0


def _under(path: str) -> ColumnElement[bool]:
    """The file ``path`` or anything under it; a glob if it has ``*`` or ``?``."""
    folder = path if path.endswith(os.sep) else path + os.sep
    if "*" in path or "?" in path:
        # This SQLite build never GLOBs BLOBs, so both sides are read as text; [ is literal.
        pattern = path.replace("[", "[[]")
        below = pattern.rstrip(os.sep) + os.sep + "*"
        return or_(
            *(cast(Track.path, Text).op("GLOB")(cast(literal(p, FilePath), Text))
              for p in (pattern, below))
        )
    # Byte order is path order: everything under folder/ sorts before folder0 ("0" follows "/").
    after = folder[:-1] + chr(ord(os.sep) + 1)
    return or_(Track.path == path, and_(Track.path >= folder, Track.path < after))


@dataclass(frozen=True)
class _Field:
    """How a field's value is read, what it tests, and on which table."""

    parse: Callable[[str, datetime], Any]
    match: Callable[[Any], ColumnElement[bool]]
    table: str
    """"genre" (a genre row), "classification" or "track"."""


def _numbers(text: str, now: datetime) -> Bounds:
    return _bounds(text, _number)


def _durations(text: str, now: datetime) -> Bounds:
    return _bounds(text, _duration)


def _moments(text: str, now: datetime) -> Bounds:
    return _bounds(text, _moment_reader(now))


def _text(text: str, now: datetime) -> str:
    return text


def _lower(text: str, now: datetime) -> str:
    return text.lower().lstrip(".")


_FIELDS: dict[str, _Field] = {
    "genre": _Field(_genre_pattern, lambda names: GenreRow.genre.in_(names), "genre"),
    "score": _Field(_numbers, lambda b: _within(GenreRow.score, b), "genre"),
    "confidence": _Field(_numbers, lambda b: _within(GenreRow.confidence, b), "genre"),
    "rank": _Field(_numbers, lambda b: _within(GenreRow.rank, b), "genre"),
    "path": _Field(_folder, _under, "track"),
    "format": _Field(_lower, lambda v: func.lower(Track.format) == v, "track"),
    "status": _Field(_status, lambda v: Track.status == v, "track"),
    "model": _Field(_text, lambda v: _contains(Classification.model, v), "classification"),
    "duration": _Field(_durations, lambda b: _within(Track.duration, b), "track"),
    "windows": _Field(_numbers, lambda b: _within(Classification.windows, b), "classification"),
    "added": _Field(_moments, lambda b: _within(Track.added_at, b), "track"),
    "changed": _Field(_moments, lambda b: _within(Track.updated_at, b), "track"),
    "classified": _Field(_moments, lambda b: _within(Classification.created_at, b),
                         "classification"),
    "error": _Field(_text, lambda v: _contains(Track.last_error, v), "track"),
}
_BARE_WORD = _Field(_text, lambda v: _contains(Track.path, literal(v, FilePath)), "track")


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
    for token in _tokens(text):
        keyword = token.text if token.quoted_from is None else ""
        if keyword in ("OR", "|"):
            if not terms or negate:
                raise QueryError(f"{keyword} must stand between two terms: {text}")
            groups.append(Group(tuple(terms)))
            terms = []
        elif keyword == "NOT":
            negate = not negate
        else:
            terms.append(_term(token, negate, now))
            negate = False
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
        return _moment_reader(_aware(now))(text.strip()).value  # type: ignore[no-any-return]
    except (ValueError, OverflowError) as exc:
        raise QueryError(f'bad time "{text}": expected {exc}') from None


# --- building SQL ----------------------------------------------------------------------------


def stored_genres(session: Session) -> list[str]:
    """Every genre name in the database (an index-only scan), for :func:`build_filter`."""
    return list(session.scalars(select(GenreRow.genre).distinct()))


def _has_genre_row(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """The track's current classification has one genre row meeting ``condition``.

    Written as ``id IN (uncorrelated subquery)`` rather than a correlated EXISTS: SQLite runs
    it once, driven by the genre index, instead of probing every genre row for every track.
    """
    return Track.id.in_(select(Classification.track_id).join(GenreRow).where(condition))


def _group_filter(group: Group, genres: Sequence[str]) -> ColumnElement[bool]:
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
            condition = _has_genre_row(condition)
        elif field.table == "classification":
            condition = Track.id.in_(select(Classification.track_id).where(condition))
        elif term.negated:
            condition = func.coalesce(condition, false())  # NULL (no format, no error) is "no"
        conditions.append(not_(condition) if term.negated else condition)
    if same_row:
        conditions.append(_has_genre_row(and_(*same_row)))
    return and_(*conditions)


def build_filter(query: Query, genres: Iterable[str]) -> ColumnElement[bool]:
    """A where-clause over :class:`Track` for ``query``; values are bound parameters.

    ``genres`` are the genre names stored in the database (:func:`stored_genres`): a
    ``genre:`` term becomes an indexed ``IN`` over the names that match it once normalised.
    """
    names = sorted(set(genres))
    if not query.groups:
        return true()
    return or_(*(_group_filter(group, names) for group in query.groups))


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
    statement = (
        select(Track)
        .where(build_filter(query, stored_genres(session) if uses_genre else ()))
        .order_by(*_ordering(order_by))
        .options(selectinload(Track.classification).selectinload(Classification.genres))
    )
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.scalars(statement))


# --- output ----------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with its offset."""
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


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
            "model": found.model if found else None,
            "classified_at": _iso(found.created_at) if found else None,
            "added_at": _iso(track.added_at),
            "last_error": track.last_error,
        })
    return rows


def _cell(value: Any) -> str:
    """A table or CSV cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_rows(rows: Sequence[dict[str, Any]], fmt: str, stream: IO[str]) -> None:
    """Write :func:`track_rows` records as ``table``, ``csv`` or ``json``.

    JSON is ASCII with escapes, so undecodable path bytes survive (as ``\\udcXX``); the table
    and CSV show them as U+FFFD, and CSV lists only the genre names (``; ``-joined).

    Raises:
        QueryError: ``fmt`` is not one of :data:`OUTPUT_FORMATS`.
    """
    if fmt == "json":
        json.dump(list(rows), stream, indent=2)
        stream.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(stream, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            flat = {**row, "path": display_path(row["path"])}
            flat["genres"] = "; ".join(g["genre"] for g in row["genres"])
            writer.writerow(flat)
    elif fmt == "table":
        cells = [list(TABLE_COLUMNS)] + [
            [display_path(row["path"])] + [_cell(row[c]) for c in TABLE_COLUMNS[1:]]
            for row in rows
        ]
        widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
        for line in cells:
            padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            stream.write("  ".join(padded).rstrip() + "\n")
    else:
        raise QueryError(f"unknown output format {fmt!r}: expected table, csv or json")
