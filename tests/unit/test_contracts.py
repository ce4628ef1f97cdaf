from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from segstream.core.contracts import (
    _FAST_PATHS,
    _VALIDATORS,
    SEGMENT_CHANGE_ADAPTER,
    OrderEvent,
    ProfileEvent,
    Rejection,
    RejectReason,
    SupportEvent,
    SurveyEvent,
    parse_event,
)
from segstream.core.timeutil import parse_timestamp, to_rfc3339
from tests.unit.factories import engine_for, event, order, raw

BASE = {"event_id": "e1", "customer_id": "C1", "occurred_at": "2026-11-22T10:00:00Z"}


def parse(obj: object, **kwargs: object) -> object:
    return parse_event(orjson.dumps(obj), **kwargs)  # type: ignore[arg-type]


def test_each_event_type_parses() -> None:
    assert isinstance(parse({**BASE, "type": "order", "order_id": "o", "amount": 5}), OrderEvent)
    assert isinstance(
        parse(
            {**BASE, "type": "support", "ticket_id": "t", "status": "opened", "priority": "high"}
        ),
        SupportEvent,
    )
    assert isinstance(parse({**BASE, "type": "survey", "score": 9}), SurveyEvent)
    profile = parse({**BASE, "type": "profile", "attributes": {"industry": "x", "size": None}})
    assert isinstance(profile, ProfileEvent)
    assert profile.attributes == {"industry": "x", "size": None}


def test_unknown_fields_are_ignored() -> None:
    parsed = parse({**BASE, "type": "survey", "score": 3, "channel": "email"})
    assert isinstance(parsed, SurveyEvent) and parsed.score == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-22T10:00:00Z", 1795341600000),
        ("2026-11-22T12:00:00+02:00", 1795341600000),
        ("2026-11-22T10:00:00.250Z", 1795341600250),
        (1795341600000, 1795341600000),
    ],
)
def test_timestamps_with_offset_or_epoch_ms(value: object, expected: int) -> None:
    parsed = parse({**BASE, "occurred_at": value, "type": "survey", "score": 1})
    assert isinstance(parsed, SurveyEvent)
    assert parsed.occurred_at == expected
    assert parse_timestamp(to_rfc3339(expected)) == expected


def test_money_is_exact() -> None:
    parsed = parse({**BASE, "type": "order", "order_id": "o", "amount": 0.1})
    assert isinstance(parsed, OrderEvent) and parsed.amount == Decimal("0.1")
    engine = engine_for()
    engine.process(raw(*(order(amount=0.1) for _ in range(10)), order(amount="0.2")))
    values = engine.values(engine.store["C1"])
    assert values["monetary"] == 1.2  # 10 x 0.1 + 0.2 with no float drift
    assert engine.store["C1"].folded_amount + sum(
        o[3] for o in engine.store["C1"].orders.values()
    ) == Decimal("1.2")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"{not json", RejectReason.BAD_JSON),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
        (orjson.dumps({**BASE, "score": 1}), RejectReason.MISSING_TYPE),
        (orjson.dumps({**BASE, "type": "refund"}), RejectReason.UNKNOWN_TYPE),
        (orjson.dumps({**BASE, "type": 7}), RejectReason.UNKNOWN_TYPE),
        (orjson.dumps({**BASE, "type": "survey", "score": 11}), RejectReason.INVALID_FIELD),
        (orjson.dumps({**BASE, "type": "survey", "score": 7.5}), RejectReason.INVALID_FIELD),
        (orjson.dumps({**BASE, "type": "survey", "score": True}), RejectReason.INVALID_FIELD),
        (
            orjson.dumps(
                {**BASE, "occurred_at": "2026-11-22T10:00:00", "type": "survey", "score": 1}
            ),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "occurred_at": True, "type": "survey", "score": 1}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "customer_id": "", "type": "survey", "score": 1}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "event_id": "x" * 129, "type": "survey", "score": 1}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "type": "order", "order_id": "o", "amount": -1}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "type": "order", "order_id": "o", "amount": "1e999"}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "type": "order", "order_id": "o", "amount": "ten"}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "type": "order", "order_id": "o", "amount": 1, "status": "lost"}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps(
                {**BASE, "type": "order", "order_id": "o", "amount": 1, "currency": "EUR"}
            ),
            RejectReason.WRONG_CURRENCY,
        ),
        (
            orjson.dumps({**BASE, "type": "support", "ticket_id": "t", "status": "pending"}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "type": "profile", "attributes": {"a": [1]}}),
            RejectReason.INVALID_FIELD,
        ),
        (
            orjson.dumps({**BASE, "type": "survey", "score": 1, "pad": "x" * 70_000}),
            RejectReason.TOO_LARGE,
        ),
    ],
)
def test_every_invalid_input_has_a_reason(message: bytes, reason: RejectReason) -> None:
    result = parse_event(message)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert result.message


def test_size_limit_and_currency_are_configurable() -> None:
    message = orjson.dumps(
        {**BASE, "type": "order", "order_id": "o", "amount": 1, "currency": "EUR"}
    )
    assert isinstance(parse_event(message, currency="EUR"), OrderEvent)
    assert isinstance(parse_event(message, currency="EUR", max_bytes=10), Rejection)


def test_engine_counts_rejections_and_keeps_going() -> None:
    engine = engine_for()
    result = engine.process([b"junk", *raw(event("survey", score=9)), b"{}"])
    assert result.events == 1
    assert [r.reason for _, r in result.rejections] == [
        RejectReason.BAD_JSON,
        RejectReason.MISSING_TYPE,
    ]
    assert engine.rejections == {RejectReason.BAD_JSON: 1, RejectReason.MISSING_TYPE: 1}


def test_change_events_match_the_contract() -> None:
    engine = engine_for()
    changes = engine.process(raw(order())).changes
    assert changes
    for change in changes:
        model = SEGMENT_CHANGE_ADAPTER.validate_python(change)
        assert model.model_dump(by_alias=True) == change


# -- the fast path agrees with pydantic ---------------------------------------------------------

_anything = st.one_of(st.none(), st.booleans(), st.integers(-5, 15), st.text(max_size=12))


_VALID = {
    "event_id": st.text(min_size=1, max_size=128),
    "customer_id": st.sampled_from(["C1", "c-ü", "x" * 128]),
    "occurred_at": st.one_of(
        st.integers(0, 4_000_000_000_000),
        st.sampled_from(["2025-03-04T05:06:07.123Z", "2025-03-04T05:06:07+02:00"]),
    ),
    "order_id": st.text(min_size=1, max_size=128),
    "amount": st.one_of(
        st.integers(0, 10**15),
        st.floats(0, 1e15),
        st.decimals(0, 10**15, allow_nan=False, places=2).map(str),
    ),
    "currency": st.sampled_from(["USD", None]),
    "ticket_id": st.sampled_from(["T1", "t" * 128]),
    "priority": st.sampled_from(["low", "normal", "high", "urgent", None]),
    "score": st.integers(0, 10),
    "survey_id": st.one_of(st.none(), st.text(min_size=1, max_size=128)),
}
_BAD_IDS = st.sampled_from(["", "x" * 129, 5, None, True, ["a"]])
_INVALID = {
    "event_id": _BAD_IDS,
    "customer_id": _BAD_IDS,
    "occurred_at": st.one_of(
        st.sampled_from([True, None, 1.5, "2025-03-04T05:06:07", "2025-13-04T05:06:07Z", "x"]),
        st.sampled_from([-62_135_596_800_001, 253_402_300_800_000, 2**63]),
    ),
    "order_id": _BAD_IDS,
    "amount": st.sampled_from([-1, -0.01, "-1", 10**15 + 1, "1e16", "NaN", "inf", True, None, "x"]),
    "currency": st.sampled_from(["EUR", "usd", "US", 5, True, ""]),
    "ticket_id": _BAD_IDS,
    "priority": st.sampled_from(["LOW", "", 1, True]),
    "score": st.sampled_from([-1, 11, 10.0, 5.5, True, False, "5", None]),
    "survey_id": st.sampled_from(["", "x" * 129, 5, True]),
    "status": st.sampled_from(["", "Completed", "open", None, 1, True]),
}
_FIELDS = {
    "order": ["event_id", "customer_id", "occurred_at", "order_id", "amount", "currency", "status"],
    "support": ["event_id", "customer_id", "occurred_at", "ticket_id", "status", "priority"],
    "survey": ["event_id", "customer_id", "occurred_at", "score", "survey_id"],
}
_STATUS = {
    "order": st.sampled_from(["completed", "refunded", "cancelled"]),
    "support": st.sampled_from(["opened", "closed", "reopened"]),
    "survey": st.nothing(),
}


@st.composite
def _candidate_events(draw: st.DrawFn) -> dict[str, object]:
    """A valid event of one type, then zero to two fields corrupted, dropped or added."""
    kind = draw(st.sampled_from(sorted(_FIELDS)))
    names = _FIELDS[kind]
    fields: dict[str, object] = {"type": kind}
    for name in names:
        fields[name] = draw(_STATUS[kind] if name == "status" else _VALID[name])
    for name in draw(st.lists(st.sampled_from([*names, "unknown"]), max_size=2)):
        action = draw(st.sampled_from(["corrupt", "drop"]))
        if action == "drop":
            fields.pop(name, None)
        else:
            fields[name] = draw(_INVALID.get(name, _anything))
    return fields


@settings(max_examples=1500, deadline=None)
@given(_candidate_events())
def test_fast_path_accepts_exactly_what_pydantic_accepts_and_builds_the_same_event(
    obj: dict[str, object],
) -> None:
    validator = _VALIDATORS[str(obj["type"])]
    try:
        reference = validator.validate_python(obj, context={"currency": "USD"})
    except ValidationError:
        reference = None
    fast = _FAST_PATHS[str(obj["type"])](obj, "USD")
    if fast is None:
        return  # pydantic decides; the fast path has to be right only when it answers
    assert reference is not None, f"fast path accepted what pydantic rejects: {obj}"
    assert type(fast) is type(reference)
    assert fast == reference
    assert fast.model_dump() == reference.model_dump()
    assert fast.model_fields_set == reference.model_fields_set


def test_fast_path_takes_the_well_formed_events_of_the_generator() -> None:
    from segstream.synth import SynthConfig, generate

    taken = 0
    for body in generate(SynthConfig(customers=50, events=2000, seed=3)):
        fast = _FAST_PATHS.get(str(body.get("type")))
        if fast is not None and fast(body, "USD") is not None:
            taken += 1
    assert taken > 1500
