"""The value of each query field (``score:>0.6``, ``added:7d..``, ``path:~/Music``), read.

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

Every reader takes the value as written and the time the query is made (aware; only times use
it) and returns what the field's test compares with: :class:`Bounds` for numbers, durations and
times, a pattern for genre names, a path, a word. Times come out as naive UTC, the way the
database stores them. A reader raises ValueError whose message is what was expected instead
("a duration like 245, 90s, …"); :mod:`libtagger.query.language` turns it into a message naming the term.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from libtagger.analysis.vote import normalise_genre

STATUSES = ("pending", "done", "failed", "missing")


@dataclass(frozen=True)
class Bounds:
    """An interval of numbers or UTC times; ``None`` is an open end."""

    low: Any = None
    high: Any = None
    low_open: bool = False
    """True: strictly greater than ``low``."""
    high_open: bool = False


def numbers(text: str, now: datetime) -> Bounds:
    """A number, a comparison or a range of numbers (``0.6``, ``>0.6``, ``0.2..0.8``)."""
    return _bounds(text, _number)


def durations(text: str, now: datetime) -> Bounds:
    """A duration, a comparison or a range of durations, in seconds (``>3m``, ``..4:05``)."""
    return _bounds(text, _duration)


def times(text: str, now: datetime) -> Bounds:
    """A time, a comparison or a range of times, in naive UTC; ages count back from ``now``."""
    return _bounds(text, _moment_reader(now))


def time_start(text: str, now: datetime) -> datetime:
    """The start of one time (``2026-11-01``, ``3d``, ``monday``) in naive UTC."""
    return _moment_reader(now)(text).value  # type: ignore[no-any-return]


def genre_pattern(text: str, now: datetime) -> re.Pattern[str]:
    """A genre name (``*`` wildcards allowed) as a pattern over normalised names."""
    pieces = [normalise_genre(piece) for piece in text.split("*")]
    if len(pieces) == 1 and not pieces[0]:
        raise ValueError("a genre name with letters or digits, like house or 'hip hop'")
    return re.compile(".*".join(re.escape(piece) for piece in pieces))


def folder(text: str, now: datetime) -> str:
    """A path as the user means it: ``~`` expanded, absolute, and (no glob) with symlinks
    resolved, the way scans store paths."""
    path = os.path.expanduser(text)
    return os.path.abspath(path) if any(c in path for c in "*?[") else os.path.realpath(path)


def status(text: str, now: datetime) -> str:
    """One of :data:`STATUSES`, in any case."""
    if text.lower() not in STATUSES:
        raise ValueError("one of " + ", ".join(STATUSES))
    return text.lower()


def file_format(text: str, now: datetime) -> str:
    """A format name as stored: lower case, without a leading dot (``.MP3`` is ``mp3``)."""
    return text.lower().lstrip(".")


def as_written(text: str, now: datetime) -> str:
    """The value itself (searched for as part of a text, ignoring case)."""
    return text


# --- reading one value -------------------------------------------------------------------------


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
            try:
                moment = _to_utc(now) - float(age.group(1)) * _AGE_UNITS[age.group(2)]
            except OverflowError:  # older than year 1, or past timedelta's range
                oldest = (_to_utc(now) - datetime.min).days
                raise ValueError(f"an age the calendar holds (at most {oldest:,} days)") from None
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
