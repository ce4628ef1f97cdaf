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


def day_of(ms: int) -> int:
    """Days since 1970-01-01 (UTC) of an epoch-millisecond timestamp."""
    return ms // MS_PER_DAY


def days_between(a_ms: int, b_ms: int) -> int:
    return day_of(b_ms) - day_of(a_ms)


def parse_timestamp(value: object) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to epoch milliseconds.

    A timestamp without an offset is ambiguous and therefore invalid.
    """
    if isinstance(value, bool):
        raise ValueError("occurred_at must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        if not -62_135_596_800_000 <= value <= 253_402_300_799_999:
            raise ValueError("epoch milliseconds out of range")
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


@lru_cache(maxsize=4096)
def to_rfc3339(ms: int) -> str:
    """Epoch milliseconds to an RFC 3339 UTC string with a ``Z`` suffix."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    spec = "milliseconds" if ms % 1000 else "seconds"
    return dt.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
