from datetime import UTC, datetime, timedelta
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
    _Accepting,
    parse_event,
    validate_event,
)
from segstream.core.timeutil import (
    MAX_OCCURRED_AT_MS,
    MIN_OCCURRED_AT_MS,
    MS_PER_DAY,
    day_of,
    days_between,
    parse_timestamp,
    to_rfc3339,
)
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


# -- implausible timestamps ---------------------------------------------------------------------

NOW = 1_795_341_600_000  # 2026-11-22T10:00:00Z
SOON = {"order": {"order_id": "o", "amount": 5}, "profile": {"attributes": {"a": 1}}}


@pytest.mark.parametrize("kind", sorted(SOON))  # the fast path (order) and pydantic (profile)
@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-01:00",  # valid RFC 3339, past datetime's range once in UTC
        "0001-01-01T00:00:00+01:00",
        "2300-01-01T00:00:00Z",
        "2200-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        -1,
        MAX_OCCURRED_AT_MS + 1,
        2**63,
    ],
)
def test_implausible_timestamps_are_rejected_with_their_own_reason(
    kind: str, value: object
) -> None:
    result = parse({**BASE, "occurred_at": value, "type": kind, **SOON[kind]})
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.OCCURRED_AT_OUT_OF_RANGE
    assert "occurred_at" in result.message


@pytest.mark.parametrize("kind", sorted(SOON))
@pytest.mark.parametrize(
    "value",
    [
        MIN_OCCURRED_AT_MS,
        MAX_OCCURRED_AT_MS,
        "1970-01-01T00:00:00Z",
        "1970-01-01T01:00:00+01:00",
        "2199-12-31T23:59:59.999Z",
        "2200-01-01T00:59:59.999+01:00",
    ],
)
def test_every_accepted_timestamp_is_safe_to_format_and_count(kind: str, value: object) -> None:
    parsed = parse({**BASE, "occurred_at": value, "type": kind, **SOON[kind]})
    assert isinstance(parsed, OrderEvent | ProfileEvent)
    ms = parsed.occurred_at
    assert parse_timestamp(to_rfc3339(ms)) == ms
    assert days_between(ms, MAX_OCCURRED_AT_MS) >= 0 <= days_between(MIN_OCCURRED_AT_MS, ms)
    assert to_rfc3339(day_of(ms) * MS_PER_DAY).endswith("T00:00:00Z")


def test_the_crashing_timestamp_is_now_a_counted_rejection() -> None:
    engine = engine_for()
    late = order(occurred_at="9999-12-31T23:59:59-01:00")
    result = engine.process(raw(late, order()))
    assert [r.reason for _, r in result.rejections] == [RejectReason.OCCURRED_AT_OUT_OF_RANGE]
    assert result.events == 1


def test_future_skew_is_measured_from_the_given_clock() -> None:
    survey = {**BASE, "type": "survey", "score": 1}
    limit = NOW + MS_PER_DAY
    assert isinstance(parse({**survey, "occurred_at": limit}, now_ms=NOW), SurveyEvent)
    late = parse({**survey, "occurred_at": limit + 1}, now_ms=NOW)
    assert isinstance(late, Rejection) and late.reason is RejectReason.OCCURRED_AT_OUT_OF_RANGE
    hour = 3_600_000
    assert isinstance(parse({**survey, "occurred_at": NOW + 2 * hour}, now_ms=NOW), SurveyEvent)
    tight = parse({**survey, "occurred_at": NOW + 2 * hour}, now_ms=NOW, max_future_skew_ms=hour)
    assert isinstance(tight, Rejection)
    # without a clock, only the absolute range applies
    assert isinstance(parse({**survey, "occurred_at": "2150-01-01T00:00:00Z"}), SurveyEvent)


@given(st.integers(-(2**80), 2**80))
def test_formatting_a_timestamp_never_raises(ms: int) -> None:
    assert to_rfc3339(ms).endswith("Z")


@given(st.integers(MIN_OCCURRED_AT_MS, MAX_OCCURRED_AT_MS))
def test_formatting_round_trips_over_the_whole_accepted_range(ms: int) -> None:
    assert parse_timestamp(to_rfc3339(ms)) == ms


@given(st.integers(-(2**50), 2**50))
def test_formatting_writes_what_datetime_isoformat_writes(ms: int) -> None:
    """The arithmetic formatter is byte for byte datetime's text (change ids and outputs rely
    on it), including before the epoch and at datetime's pinned ends."""
    pinned = min(max(ms, -62_135_596_800_000), 253_402_300_799_999)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=pinned)
    spec = "milliseconds" if pinned % 1000 else "seconds"
    assert to_rfc3339(ms) == moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


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
        st.sampled_from(
            [
                "2025-03-04T05:06:07.123Z",
                "2025-03-04T05:06:07+02:00",
                MIN_OCCURRED_AT_MS,
                MAX_OCCURRED_AT_MS,
                NOW + MS_PER_DAY,
            ]
        ),
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
        st.sampled_from([-62_135_596_800_001, 253_402_300_800_000, 2**63, -1]),
        st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]),
        st.sampled_from([MAX_OCCURRED_AT_MS + 1, NOW + MS_PER_DAY + 1, "2300-01-01T00:00:00Z"]),
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


_NOWS = st.one_of(st.none(), st.sampled_from([NOW, MIN_OCCURRED_AT_MS, MAX_OCCURRED_AT_MS]))


@settings(max_examples=1500, deadline=None)
@given(_candidate_events(), _NOWS, st.sampled_from([0, 1, MS_PER_DAY]))
def test_fast_path_accepts_exactly_what_pydantic_accepts_and_builds_the_same_event(
    obj: dict[str, object], now_ms: int | None, skew: int
) -> None:
    accepting = _Accepting.at("USD", now_ms, skew)
    validator = _VALIDATORS[str(obj["type"])]
    try:
        reference = validator.validate_python(obj, context={"accepting": accepting})
    except ValidationError:
        reference = None
    result = validate_event(obj, now_ms=now_ms, max_future_skew_ms=skew)
    assert isinstance(result, Rejection) == (reference is None)
    fast = _FAST_PATHS[str(obj["type"])](obj, accepting)
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
        if fast is not None and fast(body, _Accepting.at("USD", None, 0)) is not None:
            taken += 1
    assert taken > 1500


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(_FIELDS)),
    st.integers(-(2**64), 2**64),
    _NOWS,
    st.integers(0, 10 * MS_PER_DAY),
)
def test_a_timestamp_is_accepted_exactly_inside_its_range_on_both_paths(
    kind: str, ms: int, now_ms: int | None, skew: int
) -> None:
    """The only problem is the time: both paths give the same answer, with the new reason."""
    body: dict[str, object] = {**BASE, "occurred_at": ms, "type": kind}
    body |= {"order": SOON["order"], "support": {"ticket_id": "t", "status": "opened"}}.get(
        kind, {"score": 3}
    )
    high = MAX_OCCURRED_AT_MS if now_ms is None else min(MAX_OCCURRED_AT_MS, now_ms + skew)
    inside = MIN_OCCURRED_AT_MS <= ms <= high
    result = validate_event(body, now_ms=now_ms, max_future_skew_ms=skew)
    fast = _FAST_PATHS[kind](body, _Accepting.at("USD", now_ms, skew))
    if inside:
        assert not isinstance(result, Rejection) and fast == result
    else:
        assert isinstance(result, Rejection) and fast is None
        assert result.reason is RejectReason.OCCURRED_AT_OUT_OF_RANGE
