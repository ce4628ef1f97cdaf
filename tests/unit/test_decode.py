"""The msgspec decoder agrees with the reference path (orjson, then the pydantic models).

``parse_event`` tries :mod:`segstream.core.decode` first and falls back to
``parse_event_reference``; every property here compares the two on the same raw message:
equal events (same model, same field values of the same types, same fields set) or equal
rejections (same reason and message). The messages are written as raw JSON text, so they can
hold what no JSON library would write: numbers beyond 64 bits or beyond a double, duplicate
keys, invalid UTF-8, lone surrogates, deep nesting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from segstream.core.contracts import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Rejection,
    parse_event,
    parse_event_reference,
)
from segstream.core.decode import decode_fields
from segstream.core.timeutil import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    MAX_OCCURRED_AT_MS,
    MS_PER_DAY,
    occurred_at_bounds,
)

NOW = 1_764_000_000_000  # 2025-11-24


@dataclass(frozen=True)
class Raw:
    """JSON text written as is."""

    text: bytes


@dataclass(frozen=True)
class Pairs:
    """A JSON object as its key/value pairs, so keys can repeat."""

    items: tuple[tuple[str, Any], ...]


def dump(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return b"{" + b",".join(dump(k) + b":" + dump(v) for k, v in value.items) + b"}"
    if isinstance(value, dict):
        return dump(Pairs(tuple(value.items())))
    if isinstance(value, list | tuple):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()  # any size, unlike orjson
    return orjson.dumps(value)


# -- field values: valid ones, near misses, and garbage -------------------------------------

_GARBAGE = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        1.5,
        "",
        "x",
        [],
        [1, "a"],
        {},
        {"a": {"b": None}},
        Raw(b"1e400"),  # overflows a double: orjson rejects the message
        Raw(b"-1e400"),
        Raw(b"123456789012345678901234567890"),  # beyond 64 bits: orjson gives a float
        Raw(b"18446744073709551615"),
        Raw(b"9223372036854775808"),
        Raw(b"-9223372036854775809"),
        Raw(b'"\xff"'),  # invalid UTF-8
        Raw(b'"\xed\xa0\x80"'),  # an encoded surrogate
        Raw(b'"\xc0\x80"'),  # overlong
        Raw(b'"\\ud800"'),  # lone surrogate escape
        Raw(b'"\\udc00\\ud800"'),
        Raw(b'"a\\u0000b"'),
        Raw(b"[" * 1100 + b"]" * 1100),  # deeper than orjson's limit
        Raw(b'{"k":' * 600 + b"1" + b"}" * 600),
        Raw(b"5.0"),
        Raw(b"1E1"),
        Raw(b"-0"),
        Raw(b"-0.0"),
        Raw(b"0.1e-400"),
        Raw(b"NaN"),
        Raw(b"01"),
        Raw(b'"\x01"'),
    ]
)

_ID_EDGES = st.sampled_from(
    ["a", "x" * 128, "x" * 129, "", "\U0001f600" * 128, "\U0001f600" * 129, "é" * 128, " "]
)
_IDS = st.one_of(_ID_EDGES, st.text(max_size=6), st.text(min_size=125, max_size=130))


def _naive(year: int, month: int, day: int) -> datetime:
    """Hypothesis takes naive bounds, then applies the drawn offset."""
    return datetime(year, month, day, tzinfo=UTC).replace(tzinfo=None)


_OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


def _formatted(moment: datetime, style: int) -> str:
    if style == 0:
        return moment.isoformat()
    if style == 1:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style == 2:
        return moment.isoformat(sep=" ", timespec="seconds")
    if style == 3:
        return moment.replace(tzinfo=None).isoformat()  # no offset: ambiguous, invalid
    if style == 4:
        return moment.isoformat(timespec="microseconds") + "123"  # nanosecond digits
    return moment.isoformat().replace("+00:00", "z")


_TIMESTAMPS = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers(-2, 8_000_000_000_000),
    st.sampled_from(
        [
            0,
            -1,
            MAX_OCCURRED_AT_MS,
            MAX_OCCURRED_AT_MS + 1,
            NOW,
            NOW + 1,
            NOW + MS_PER_DAY,
            NOW + MS_PER_DAY + 1,
            2**63 - 1,
            2**63,
        ]
    ),
    st.builds(
        _formatted,
        st.datetimes(_naive(1, 1, 2), _naive(9999, 12, 30), timezones=_OFFSETS),
        st.integers(0, 5),
    ),
    st.builds(
        _formatted,
        st.datetimes(_naive(1969, 12, 30), _naive(2200, 1, 2), timezones=_OFFSETS),
        st.integers(0, 5),
    ),
    st.sampled_from(
        [
            "2025-03-04T05:06:07.123Z",
            "9999-12-31T23:59:59-01:00",
            "9999-12-31T23:59:59.999999+23:59",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00-23:59",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00+00:01",
            "2199-12-31T23:59:59.999Z",
            "2199-12-31T23:59:59.9999Z",
            "2200-01-01T00:00:00Z",
            "2025-11-25T00:00:00.000Z",
            "2025-11-25T00:00:00.001Z",
            "2025-01-01T00:00:00.9999999Z",
            "2025-01-01T00:00:00,5Z",
            "2025-01-01T00:00Z",
            "2025-01-01T00Z",
            "2025-W01-1T00:00Z",
            "20250101T000000Z",
            "2025-01-01T00:00:00+0100",
            "2025-01-01T00:00:00+01:00:30",
            "2025-01-01T00:00:60Z",
            "2025-01-01T24:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-01-01",
            "2025-01-01T00:00:00",
            "2025-01-01t00:00:00Z",
            "2025-01-01T00:00:00+24:00",
            "",
            "now",
            "1735689600000",
            "2025-01-01T00:00:00Z" + " " * 45,
            "2025-01-01T00:00:00.000000000000000000000Z",
        ]
    ),
    st.text(max_size=30),
    st.sampled_from([Raw(b"1735689600000.0"), Raw(b"1.7e12"), True, None, []]),
)

_AMOUNTS = st.one_of(
    st.integers(-10, 10**16),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 10**15, 10**15 + 1, 2**63, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(0, 1e15),
    st.floats(999_999_999_999_999.0, 1_000_000_000_000_001.0),
    st.decimals(-1, 10**16, allow_nan=False, allow_infinity=False).map(str),
    st.decimals(0, 10_000, places=2).map(str),
    st.sampled_from(
        [
            " 5 ",
            "\t5\n",
            "\xa05",
            "\x1c5",
            "1_000",
            "NaN",
            "sNaN",
            "-NaN",
            "Infinity",
            "-inf",
            "-0",
            "-0.00",
            "0E-7",
            "1e15",
            "1E+15",
            "1.000000000000000000000000001e15",
            "1e16",
            "1e999999999999999999",
            "+5",
            ".5",
            "5.",
            "\u0665",  # an Arabic-Indic digit: Decimal accepts it
            "",
            "abc",
            "0x10",
        ]
    ),
    st.sampled_from(
        [
            Raw(b"1E2"),
            Raw(b"5.0"),
            Raw(b"40.160"),
            Raw(b"-0"),
            Raw(b"-0.0"),
            Raw(b"1e15"),
            Raw(b"1000000000000000.0000000001"),
            Raw(b"0.1e-400"),
            Raw(b"4.35"),
            Raw(b"0.30000000000000004"),
            Raw(b"1.00000000000000000001"),
            Raw(b"123456789012345678901234567890"),
        ]
    ),
)

_ATTRIBUTE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**66), 2**66),
    st.integers(-100, 100),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["x" * 1024, "x" * 1025, "\U0001f600" * 1024, "\U0001f600" * 1025]),
    _GARBAGE,
)
_ATTRIBUTE_NAMES = st.one_of(
    st.sampled_from(["industry", "size", "", "k" * 64, "k" * 65, "\U0001f600" * 64]),
    st.text(max_size=4),
)
_ATTRIBUTES = st.one_of(
    st.dictionaries(_ATTRIBUTE_NAMES, _ATTRIBUTE_VALUES, max_size=6),
    st.lists(st.tuples(_ATTRIBUTE_NAMES, _ATTRIBUTE_VALUES), max_size=6).map(
        lambda items: Pairs(tuple(items))  # repeated keys
    ),
    st.sampled_from([256, 257]).map(lambda n: {f"a{i}": i for i in range(n)}),
    st.sampled_from([256, 257]).map(lambda n: Pairs(tuple((f"a{i % 200}", i) for i in range(n)))),
    _GARBAGE,
)

_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "order": {
        "order_id": _IDS,
        "amount": _AMOUNTS,
        "currency": st.sampled_from(["USD", "EUR", None, "usd", "US", "USD\n", "", 5]),
        "status": st.sampled_from(["completed", "refunded", "cancelled", "Completed", None, 1]),
    },
    "support": {
        "ticket_id": _IDS,
        "status": st.sampled_from(["opened", "closed", "reopened", "open", "", None]),
        "priority": st.sampled_from(["low", "normal", "high", "urgent", None, "LOW", 1]),
    },
    "survey": {
        "score": st.one_of(
            st.integers(-2, 12),
            st.sampled_from([2**64, True, False, "5", None, 5.5, Raw(b"5.0"), Raw(b"1E1")]),
        ),
        "survey_id": st.one_of(st.none(), _IDS),
    },
    "profile": {
        "attributes": _ATTRIBUTES,
        "erase": st.sampled_from([True, False, None, 1, 0, "true", "no", 1.0]),
    },
}
_COMMON: dict[str, st.SearchStrategy[Any]] = {
    "event_id": _IDS,
    "customer_id": _IDS,
    "occurred_at": _TIMESTAMPS,
}

# well-formed values (edges included), so that the decoder has something to answer for
_GOOD_IDS = st.one_of(
    st.text(min_size=1, max_size=12), st.sampled_from(["x" * 128, "\U0001f600" * 128, "é"])
)
_GOOD: dict[str, st.SearchStrategy[Any]] = {
    "event_id": _GOOD_IDS,
    "customer_id": _GOOD_IDS,
    "occurred_at": st.one_of(
        st.integers(0, NOW + 2 * MS_PER_DAY),
        st.sampled_from([0, MAX_OCCURRED_AT_MS, NOW, NOW + MS_PER_DAY]),
        st.builds(
            _formatted,
            st.datetimes(_naive(1970, 1, 2), _naive(2199, 12, 30), timezones=_OFFSETS),
            st.sampled_from([0, 1, 2, 4]),
        ),
    ),
    "order_id": _GOOD_IDS,
    "amount": st.one_of(
        st.integers(0, 10**15),
        st.floats(0, 1e15),
        st.decimals(0, 10**15, allow_nan=False, allow_infinity=False).map(str),
        st.decimals(0, 1000, places=2).map(lambda d: f" {d}"),
        st.sampled_from([Raw(b"1E2"), Raw(b"40.160"), Raw(b"-0.0"), Raw(b"1e15"), "-0", "1_0"]),
    ),
    "currency": st.sampled_from(["USD", "USD", None, "EUR"]),
    "ticket_id": _GOOD_IDS,
    "priority": st.sampled_from(["low", "normal", "high", "urgent", None]),
    "score": st.integers(0, 10),
    "survey_id": st.one_of(st.none(), _GOOD_IDS),
    "attributes": st.dictionaries(
        st.text(min_size=1, max_size=6),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
        ),
        max_size=5,
    ),
    "erase": st.booleans(),
}
_GOOD_STATUS = {
    "order": st.sampled_from(["completed", "refunded", "cancelled"]),
    "support": st.sampled_from(["opened", "closed", "reopened"]),
}
_OPTIONAL = {"currency", "status", "priority", "survey_id", "attributes", "erase"}


@st.composite
def _events(draw: st.DrawFn) -> Pairs:
    """An event of one type: well formed (a third of the time), with one field drawn from
    anything (a third), or with every field drawn from anything; then, sometimes, fields
    dropped, garbled, repeated or added."""
    kind = draw(st.sampled_from(sorted(_FIELDS)))
    fields = {**_COMMON, **_FIELDS[kind]}
    mode = draw(st.integers(0, 2))
    wild = draw(st.sampled_from(sorted(fields))) if mode == 1 else None
    items: list[tuple[str, Any]] = [("type", kind)]
    for name, values in fields.items():
        if mode < 2 and name != wild:
            if name in _OPTIONAL and draw(st.booleans()):
                continue  # left to its default
            values = _GOOD_STATUS[kind] if name == "status" else _GOOD[name]
        elif draw(st.integers(0, 9)) == 0:
            continue  # dropped
        items.append((name, draw(values)))
    items = draw(st.permutations(items))
    for _ in range(draw(st.integers(0, 2)) if mode == 2 else 0):
        action = draw(st.sampled_from(["garble", "repeat", "extra", "type"]))
        name = draw(st.sampled_from([*fields, "type"]))
        if action == "garble":
            items = [(k, draw(_GARBAGE) if k == name else v) for k, v in items]
        elif action == "repeat":  # the last one wins, for orjson as for msgspec
            items.append((name, draw(fields.get(name, st.sampled_from(sorted(_FIELDS))))))
        elif action == "extra":
            items.append((draw(st.sampled_from(["channel", "Type", "TYPE", ""])), draw(_GARBAGE)))
        else:
            value = draw(st.sampled_from([*_FIELDS, "ORDER", "refund", None, 5, ["order"]]))
            items = [(k, value if k == "type" else v) for k, v in items]
    return Pairs(tuple(items))


def _encodings(body: bytes, draw: st.DrawFn) -> bytes | str:
    how = draw(st.integers(0, 9))
    if how == 0:  # as text, when it is text
        try:
            return body.decode()
        except UnicodeDecodeError:
            return body
    if how == 1:
        return body.decode(errors="replace")[:-1] + "\ud800"  # a lone surrogate in a str
    if how == 2:
        cut = draw(st.integers(0, max(len(body) - 1, 0)))
        return body[:cut]
    if how == 3:
        return draw(st.sampled_from([b"\xef\xbb\xbf", b" \n\t", b""])) + body + b" \r\n"
    if how == 4:
        return body + draw(st.sampled_from([b"x", b"{}", b",", b"\x00"]))
    return body


@st.composite
def messages(draw: st.DrawFn) -> bytes | str:
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return draw(st.binary(max_size=40))
    if shape == 1:
        return dump(draw(st.one_of(_GARBAGE, st.lists(_GARBAGE, max_size=3))))
    return _encodings(dump(draw(_events())), draw)


@st.composite
def parameters(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "currency": draw(st.sampled_from(["USD", "EUR", "usd"])),
        "now_ms": draw(st.sampled_from([None, NOW, 0, MAX_OCCURRED_AT_MS])),
        "max_future_skew_ms": draw(st.sampled_from([0, 1, MS_PER_DAY])),
    }


def assert_same(new: object, reference: object) -> None:
    if isinstance(reference, Rejection):
        assert new == reference  # the reason, and the message too: the reference wrote both
        return
    assert isinstance(new, BaseModel) and isinstance(reference, BaseModel), (new, reference)
    assert type(new) is type(reference)
    # field by field, in the model's order, with types: 1 == 1.0 == True and
    # Decimal("1.0") == Decimal("1.00"), but they are not the same event
    typed = [(k, type(v), repr(v)) for k, v in new.__dict__.items()]
    assert typed == [(k, type(v), repr(v)) for k, v in reference.__dict__.items()]
    assert new.model_fields_set == reference.model_fields_set
    assert new.__pydantic_extra__ == reference.__pydantic_extra__
    assert new.__pydantic_private__ == reference.__pydantic_private__
    assert new == reference
    assert new.model_dump_json() == reference.model_dump_json()


DETERMINISTIC = settings(
    max_examples=400,
    derandomize=True,  # the same examples on every run: CI cannot flake on a new one
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@DETERMINISTIC
@given(messages(), parameters())
def test_the_decoder_gives_what_the_reference_path_gives(
    raw: bytes | str, kwargs: dict[str, Any]
) -> None:
    assert_same(parse_event(raw, **kwargs), parse_event_reference(raw, **kwargs))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.data(), parameters())
def test_the_decoder_alone_never_accepts_what_the_reference_rejects(
    data: st.DataObject, kwargs: dict[str, Any]
) -> None:
    """Mostly valid events, so the decoder answers often; where it answers, it is right."""
    body = data.draw(_events())
    raw = dump(body)
    low = 0
    high = MAX_OCCURRED_AT_MS
    if kwargs["now_ms"] is not None:
        high = min(high, kwargs["now_ms"] + kwargs["max_future_skew_ms"])
    decoded = decode_fields(raw, kwargs["currency"], low, high)
    reference = parse_event_reference(raw, **kwargs)
    if decoded is None:
        return
    assert not isinstance(reference, Rejection), f"decoder accepted: {raw!r}"
    kind, fields, given_fields = decoded
    assert kind == reference.type
    assert given_fields == reference.model_fields_set
    assert [(k, type(v), repr(v)) for k, v in fields.items()] == [
        (k, type(v), repr(v)) for k, v in reference.__dict__.items()
    ]


# -- every edge of every field, one field at a time ------------------------------------------
# Random combinations rarely land exactly on a bound; here each field of a valid event takes
# each of its edge values in turn, under every deployment setting below.

_BASES: dict[str, dict[str, Any]] = {
    "order": {"order_id": "o", "amount": "19.90", "currency": "USD", "status": "completed"},
    "support": {"ticket_id": "t", "status": "opened", "priority": "high"},
    "survey": {"score": 7, "survey_id": "s"},
    "profile": {"attributes": {"industry": "retail", "capacity": 3}, "erase": False},
}
_ID_VALUES = ["a", "x" * 128, "x" * 129, "", "\U0001f600" * 128, "\U0001f600" * 129, 5, None]
_BELOW_1E15 = Raw(b"999999999999999.9")
_ABOVE_1E15 = Raw(b"1000000000000000.2")  # the next double above 1e15 is 1e15 + 0.125
_EDGES: dict[str, list[Any]] = {
    "event_id": _ID_VALUES,
    "customer_id": _ID_VALUES,
    "order_id": _ID_VALUES,
    "ticket_id": _ID_VALUES,
    "survey_id": [*_ID_VALUES, True],
    "occurred_at": [
        0,
        -1,
        MAX_OCCURRED_AT_MS,
        MAX_OCCURRED_AT_MS + 1,
        NOW,
        NOW + 1,
        NOW + MS_PER_DAY,
        NOW + MS_PER_DAY + 1,
        2**63 - 1,
        2**63,
        -(2**63) - 1,
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:59:59.999+01:00",
        "2199-12-31T23:59:59.999Z",
        "2199-12-31T23:59:59.999999Z",
        "2200-01-01T00:00:00Z",
        "2200-01-01T00:59:59+01:00",
        "2025-11-25T16:00:00Z",  # NOW + 1 day is 2025-11-25T16:00:00Z
        "2025-11-25T16:00:00.001Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "2025-01-01T00:00:00",
        "2025-01-01T00:00:00z",
        "x" * 65,
        "2025-01-01T00:00:00.000Z" + " " * 41,
        Raw(b"1735689600000.0"),
        True,
    ],
    "amount": [
        0,
        -1,
        10**15,
        10**15 + 1,
        1e15,
        _BELOW_1E15,
        _ABOVE_1E15,
        0.0,
        Raw(b"-0.0"),
        Raw(b"-0"),
        Raw(b"-0.001"),
        Raw(b"1E2"),
        Raw(b"40.160"),
        "1e15",
        "1000000000000000",
        "1000000000000000.0000001",
        "-0",
        "-0.001",
        " 5 ",
        "\x1c5",
        "NaN",
        "Infinity",
        "1_0",
        "",
        True,
        None,
    ],
    "currency": ["USD", "EUR", "usd", "USD\n", "US", "", None, 5],
    "status": [
        "completed",
        "refunded",
        "cancelled",
        "opened",
        "closed",
        "reopened",
        "open",
        "",
        None,
    ],
    "priority": ["low", "urgent", "LOW", "", None, 1],
    "score": [0, 10, -1, 11, True, Raw(b"5.0"), "5", None],
    "attributes": [
        {},
        {"": 1},
        {"k" * 64: 1},
        {"k" * 65: 1},
        {"a": "x" * 1024},
        {"a": "x" * 1025},
        {"a": "\U0001f600" * 1024},
        {"a": "\U0001f600" * 1025},
        {f"a{i}": i for i in range(256)},
        {f"a{i}": i for i in range(257)},
        Pairs(tuple((f"a{i % 256}", i) for i in range(300))),  # 256 keys, some repeated
        {"a": 2**63 - 1, "b": -(2**63)},
        {"a": 2**63},
        {"a": -(2**63) - 1},
        {"a": 2**64 - 1},
        {"a": Raw(b"1.0"), "b": Raw(b"1E400")},
        {"a": [1]},
        {"a": {"b": 1}},
        None,
        [],
    ],
    "erase": [True, False, None, 1, 0, "true"],
}
_SETTINGS = [
    {},
    {"currency": "EUR"},
    {"currency": "usd"},
    {"now_ms": NOW},
    {"now_ms": NOW, "max_future_skew_ms": 0},
    {"now_ms": MAX_OCCURRED_AT_MS},
]


def _one_field_cases() -> list[tuple[str, str, Any]]:
    cases = []
    for kind, fields in _BASES.items():
        for name in ["event_id", "customer_id", "occurred_at", *fields]:
            cases += [(kind, name, value) for value in [*_EDGES[name], "<absent>"]]
    return cases


@pytest.mark.parametrize(("kind", "name", "value"), _one_field_cases())
def test_each_edge_of_each_field_gives_what_the_reference_gives(
    kind: str, name: str, value: Any
) -> None:
    body = {"type": kind, "event_id": "e", "customer_id": "c", "occurred_at": NOW}
    body |= _BASES[kind]
    if value == "<absent>":
        del body[name]
    else:
        body[name] = value
    if kind == "profile" and name == "attributes":
        body["erase"] = value == "<absent>"  # attributes may be left out on an erasure only
    raw = dump(body)
    for kwargs in _SETTINGS:
        reference = parse_event_reference(raw, **kwargs)
        assert_same(parse_event(raw, **kwargs), reference)
        if isinstance(reference, Rejection) or _reference_only(name, value):
            continue
        # the decoder answers for every valid edge itself: its bounds are the models' bounds
        low, high = occurred_at_bounds(
            kwargs.get("now_ms"), kwargs.get("max_future_skew_ms", DEFAULT_MAX_FUTURE_SKEW_MS)
        )
        assert decode_fields(raw, kwargs.get("currency", "USD"), low, high) is not None


def _reference_only(name: str, value: Any) -> bool:
    """Valid, but left to pydantic by design: lax coercions, integers beyond int64."""
    if name == "erase":
        return type(value) is not bool
    return isinstance(value, dict) and any(
        type(v) is int and not -(2**63) <= v < 2**63 for v in value.values()
    )


def test_the_size_limit_comes_first() -> None:
    raw = b'{"type": "survey"}'
    assert parse_event(raw, max_bytes=len(raw) - 1) == parse_event_reference(
        raw, max_bytes=len(raw) - 1
    )
    assert parse_event(raw, max_bytes=len(raw)) == parse_event_reference(raw)


_SURVEY = b'"type":"survey","event_id":"e","customer_id":"c","occurred_at":0,"score":3'


@pytest.mark.parametrize(
    "raw",
    [
        b"{" + _SURVEY + b',"x":1e400}',  # msgspec skips unknown fields unchecked
        b"{" + _SURVEY + b',"x":"\xff"}',
        b"{" + _SURVEY + b',"x":"\xed\xa0\x80"}',
        b"{" + _SURVEY + b',"x":' + b"[" * 1100 + b"]" * 1100 + b"}",
        b"{" + _SURVEY + b',"x":1}',
        b"{" + _SURVEY + b',"type":"order"}',
        b"{" + _SURVEY + b',"type":"survey"}',
        b"{" + _SURVEY + b',"score":4}',
        b"{" + _SURVEY + b',"score":"4"}',
        b'{"score":"4",' + _SURVEY + b"}",
        b"{" + _SURVEY.replace(b"0,", b'"9999-12-31T23:59:59-01:00",') + b"}",
        b"{" + _SURVEY.replace(b"0,", b"1.0,") + b"}",
        b"{" + _SURVEY.replace(b"0,", b"18446744073709551616,") + b"}",
        b"{" + _SURVEY.replace(b":3", b":5.0") + b"}",
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,'
        b'"attributes":{"n":123456789012345678901234567890}}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,'
        b'"attributes":{"n":18446744073709551615,"m":-9223372036854775808}}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,'
        b'"attributes":{"n":1,"n":true}}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,"erase":true}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,"erase":false}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,"erase":1}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0}',
        b'{"type":"profile","event_id":"e","customer_id":"c","occurred_at":0,"attributes":{}}',
        b'{"type":"order","event_id":"e","customer_id":"c","occurred_at":0,"order_id":"o",'
        b'"amount":1E2,"currency":"USD"}',
        b'{"type":"order","event_id":"e","customer_id":"c","occurred_at":0,"order_id":"o",'
        b'"amount":"\\u0665","status":"refunded"}',
        b'{"type":"order","event_id":"e","customer_id":"c","occurred_at":0,"order_id":"o",'
        b'"amount":-0.0,"currency":null}',
        b"[]",
        b"null",
        b'"order"',
        b"",
        b"\xef\xbb\xbf{}",
        b'{"type":null}',
        b'{"type":"refund"}',
        '{"type":"survey","event_id":"\ud800","customer_id":"c","occurred_at":0,"score":1}',
        '{"type":"survey","event_id":"é","customer_id":"c","occurred_at":0,"score":1}',
    ],
)
def test_known_differences_between_msgspec_and_orjson_are_covered(raw: bytes | str) -> None:
    for kwargs in ({}, {"now_ms": 0, "max_future_skew_ms": 0}, {"currency": "EUR"}):
        assert_same(parse_event(raw, **kwargs), parse_event_reference(raw, **kwargs))


def test_the_decoder_takes_the_synthetic_feed() -> None:
    """The hot path is the decoder: every well-formed event of the generator goes through it."""
    from segstream.synth import SynthConfig, generate

    bodies = [orjson.dumps(b) for b in generate(SynthConfig(customers=50, events=2000, seed=3))]
    taken = [decode_fields(raw, "USD", 0, MAX_OCCURRED_AT_MS) for raw in bodies]
    assert all(t is not None for t in taken)
    assert {t[0] for t in taken if t is not None} == {"order", "support", "survey", "profile"}
    for raw in bodies[:300]:
        assert_same(parse_event(raw), parse_event_reference(raw))


def test_default_limit_is_the_reference_one() -> None:
    big = b'{"type":"survey","x":"' + b"a" * DEFAULT_MAX_MESSAGE_BYTES + b'"}'
    assert parse_event(big) == parse_event_reference(big)
    assert isinstance(parse_event(big), Rejection)


_AMOUNTS = [
    Raw(b"0.0"),
    Raw(b"-0.0"),
    Raw(b"0.0"),
    Raw(b"5"),
    Raw(b"5.0"),
    Raw(b"5.00"),
    Raw(b"5"),
    Raw(b"5e0"),
    "5",
    "5.0",
    " 5 ",
    "5",
    "0",
    "0",
    "-0",
    "0.00",
    "1e15",
    "1E+15",
    "1e15",
    "1e16",
    "1e16",
    "NaN",
    "NaN",
    Raw(b"85.9"),
    Raw(b"85.90"),
    Raw(b"85.9"),
    "85.90",
    "85.9",
    "85.90",
]


def _order_of(amount: Any, occurred_at: Any = NOW) -> bytes:
    """One order carrying ``amount``: the amount-cache tests vary nothing else."""
    body = {"type": "order", "event_id": "e", "customer_id": "c", "occurred_at": occurred_at}
    return dump(body | {"order_id": "o", "amount": amount})


def test_amounts_seen_before_give_what_the_reference_gives() -> None:
    """Amounts are remembered (text and float apart, never a zero float): a value seen
    again, or one equal to it but written differently, is still exactly the reference's."""
    for _ in range(2):
        for amount in _AMOUNTS:
            raw = _order_of(amount)
            assert_same(parse_event(raw), parse_event_reference(raw))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(_AMOUNTS) | st.floats(0, 1e15) | st.decimals(0, 10**15).map(str)))
def test_any_sequence_of_amounts_gives_what_the_reference_gives(amounts: list[Any]) -> None:
    for amount in amounts:
        raw = _order_of(amount, "2025-01-01T00:00:07.627Z")
        assert_same(parse_event(raw), parse_event_reference(raw))


def test_the_remembered_amounts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from segstream.core import decode

    monkeypatch.setattr(decode, "_AMOUNTS_KEPT", 4)
    for n in range(1, 20):
        for amount in (Raw(str(n + 0.5).encode()), f"{n}.25"):
            raw = _order_of(amount)
            assert_same(parse_event(raw), parse_event_reference(raw))
    assert len(decode._TEXT_AMOUNTS) <= 4 and len(decode._FLOAT_AMOUNTS) <= 4
