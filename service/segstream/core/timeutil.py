"""UTC calendar-day arithmetic shared by state, scoring and scheduling.

All windows count whole UTC days: an event is inside an N-day window when
``days_between(event, clock) < N``. Times travel as integer epoch milliseconds so the
hot path never builds datetime objects.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

# The range of ``occurred_at`` any deployment accepts, whatever its clock: customer events
# predate neither the epoch nor (for a long while) 2200, and every date arithmetic on a
# timestamp inside it stays far from datetime's year 1..9999 limits.
MIN_OCCURRED_AT_MS = 0  # 1970-01-01T00:00:00Z
MAX_OCCURRED_AT_MS = 7_258_118_399_999  # 2199-12-31T23:59:59.999Z
# How far ahead of the wall clock an event may claim to be (producer clocks drift; a day is
# generous); beyond it the event would drag the event clock, and every window, into the future.
DEFAULT_MAX_FUTURE_SKEW_MS = MS_PER_DAY
_DATETIME_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_DATETIME_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def day_of(ms: int) -> int:
    """Days since 1970-01-01 (UTC) of an epoch-millisecond timestamp."""
    return ms // MS_PER_DAY


def days_between(a_ms: int, b_ms: int) -> int:
    return day_of(b_ms) - day_of(a_ms)


def occurred_at_bounds(
    now_ms: int | None = None, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> tuple[int, int]:
    """The inclusive range of acceptable ``occurred_at`` values.

    ``now_ms`` is a parameter, never read here, so the worker passes its wall clock, ``replay``
    its as-of time, and tests any instant; without it only the absolute range applies.
    """
    if now_ms is None:
        return MIN_OCCURRED_AT_MS, MAX_OCCURRED_AT_MS
    return MIN_OCCURRED_AT_MS, min(MAX_OCCURRED_AT_MS, now_ms + max_future_skew_ms)


def parse_timestamp(value: object) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to epoch milliseconds.

    A timestamp without an offset is ambiguous and therefore invalid. Whether the instant is
    plausible is a separate question (:func:`occurred_at_bounds`), with its own reject reason.
    """
    if isinstance(value, bool):
        raise ValueError("occurred_at must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("timestamp too long")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp without a UTC offset: {value!r}")
        return (parsed - _EPOCH) // _ONE_MS
    raise ValueError("occurred_at must be an RFC 3339 string or epoch milliseconds")


# The time of day in pieces: "HH:MM:" by minute of the day, "SS" by second, ".mmm" by
# millisecond ("" for none, as isoformat leaves them out); 2,500 short strings in all.
_HOUR_MINUTE = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECOND = [f"{s:02d}" for s in range(60)]
_MILLIS = ["", *(f".{m:03d}" for m in range(1, 1000))]


def to_rfc3339(ms: int) -> str:
    """Epoch milliseconds to an RFC 3339 UTC string with a ``Z`` suffix.

    Never raises: a change or an explanation must always be writable. Accepted events keep
    every clock inside datetime's range; anything outside it is pinned to the nearest end.

    Every change event carries one, mostly of a time not seen before (events have their own
    milliseconds), so nothing is cached here (a cache missed 2.5 us a call); the time of day is
    three table lookups and only the date goes through datetime, once per day
    (:func:`_date_text`). The text is exactly what ``datetime.isoformat`` writes (seconds, or
    milliseconds when there are any).
    """
    if not _DATETIME_MIN_MS <= ms <= _DATETIME_MAX_MS:
        ms = min(max(ms, _DATETIME_MIN_MS), _DATETIME_MAX_MS)
    day, rest = divmod(ms, MS_PER_DAY)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    return f"{_date_text(day)}T{_HOUR_MINUTE[minutes]}{_SECOND[second]}{_MILLIS[millis]}Z"


@lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (days since 1970-01-01, UTC)."""
    return (_EPOCH + timedelta(days=day)).date().isoformat()


@lru_cache(maxsize=65536)
def parse_date_day(value: str) -> int | None:
    """An RFC 3339 date (``2027-03-31``) or timestamp with an offset, as days since the epoch
    (UTC); None when it is neither, or outside years 1970-2199 (the accepted event range)."""
    if len(value) > 64:
        return None
    try:
        if len(value) == 10:
            day = (datetime.fromisoformat(value).replace(tzinfo=UTC) - _EPOCH).days
        else:
            day = day_of(parse_timestamp(value))
    except ValueError:
        return None
    return day if 0 <= day < _LAST_DAY else None


_LAST_DAY = (datetime(2200, 1, 1, tzinfo=UTC) - _EPOCH).days
