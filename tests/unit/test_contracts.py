from decimal import Decimal

import orjson
import pytest

from segstream.core.contracts import (
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
