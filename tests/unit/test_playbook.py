"""The default rule set read as a playbook: concrete customers land in the segments the rule
files describe."""

from __future__ import annotations

from typing import Any

from segstream.core.engine import Change, Engine
from segstream.core.timeutil import to_rfc3339
from tests.unit.factories import at, default_rules, event, order, raw


def settled(*events: dict[str, Any], day: int) -> Engine:
    engine = Engine(default_rules())
    engine.process(raw(*sorted(events, key=lambda e: e["occurred_at"])))
    engine.advance(at(day))
    engine.refresh_population()
    return engine


def segment(engine: Engine, customer: str, name: str) -> Any:
    segments = engine.segments_of(customer)
    assert segments is not None
    return segments[name]


def of(changes: list[Change], customer: str, family: str) -> list[tuple[Any, ...]]:
    return [
        (c["from"], c["to"], c["change"], c["cause"]["kind"], c["at"][:10])
        for c in changes
        if c["customer_id"] == customer and c["family"] == family
    ]


def date(day: int) -> str:
    return to_rfc3339(at(day))[:10]


# --- onboarding: the first 90 days after the first order ------------------------------------


def test_onboarding_is_the_first_90_days_and_ends_on_day_90_with_no_new_event() -> None:
    engine = Engine(default_rules())
    entered = engine.process(raw(order(day=0), order(day=50))).changes
    assert of(entered, "C1", "onboarding") == [(False, True, "entered", "event", date(0))]
    assert of(engine.advance(at(89)), "C1", "onboarding") == []  # day 89: still onboarding
    assert segment(engine, "C1", "onboarding") is True
    on_day_90 = engine.advance(at(90))  # the second order does not extend it
    assert of(on_day_90, "C1", "onboarding") == [(True, False, "exited", "clock", date(90))]
    # a flag, not a tier: lifecycle stays current, and nothing is downgraded
    assert segment(engine, "C1", "lifecycle") == "current"
    assert not [c for c in on_day_90 if c["change"] == "downgraded"]
    [leaving] = [c for c in on_day_90 if c["family"] == "onboarding"]
    assert (leaving["owner"], leaving["touch"]) == ("customer_success", "low")


def test_onboarding_counts_from_the_first_order_even_when_it_arrives_late() -> None:
    engine = Engine(default_rules())
    engine.process(raw(order(day=60)))
    engine.advance(at(80))
    assert segment(engine, "C1", "onboarding") is True
    late = engine.process(raw(order(day=-20))).changes  # an earlier first order, sent late
    assert of(late, "C1", "onboarding") == [(True, False, "exited", "event", date(80))]


def test_a_lead_is_never_onboarding() -> None:
    engine = settled(event("profile", day=0, attributes={"industry": "retail"}), day=10)
    assert segment(engine, "C1", "onboarding") is False
