"""Dates in profiles and renewal windows: checked at load, scheduled without new events."""

from __future__ import annotations

from typing import Any

import pytest

from segstream.core.contracts import Rejection
from segstream.core.rulelang import RuleErrors
from segstream.core.timeutil import to_rfc3339
from tests.unit.factories import DAY0, at, default_rules, engine_for, event, raw, rules_from

RENEWAL = """
version: 1
attributes:
  contract_renewal: {type: date}
flags:
  renewal_window: "0 <= days_until(contract_renewal) <= 120"
  long_customer: "days_since(contract_renewal) >= 30"
"""


def iso(day: int) -> str:
    return to_rfc3339(at(day))[:10]


def renewal(day: int, renews: str | None, customer: str = "C1") -> dict[str, Any]:
    return event("profile", customer, day, attributes={"contract_renewal": renews})


def window(changes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (c["change"], c["cause"]["kind"], c["at"][:10])
        for c in changes
        if c["family"] == "renewal_window"
    ]


def test_the_window_opens_120_days_ahead_and_closes_after_the_date_with_no_new_event() -> None:
    engine = engine_for(RENEWAL, clock="wall")
    engine.process(raw(renewal(0, iso(200))), now_ms=at(0))
    assert engine.store["C1"].due_day == DAY0 + 80  # scheduled, not checked daily
    assert window(engine.advance(at(79))) == []
    evaluations = engine.evaluations
    assert window(engine.advance(at(80))) == [("entered", "clock", iso(80))]
    assert engine.evaluations == evaluations + 1
    assert window(engine.advance(at(200))) == []  # on the day itself: still inside
    assert window(engine.advance(at(201))) == [("exited", "clock", iso(201))]


def test_a_changed_or_removed_date_moves_the_customer_at_once() -> None:
    engine = engine_for(RENEWAL, clock="wall")
    engine.process(raw(renewal(0, iso(300))), now_ms=at(10))
    moved = engine.process(raw(renewal(1, iso(100))), now_ms=at(10)).changes
    assert window(moved) == [("entered", "event", iso(10))]
    removed = engine.process(raw(renewal(2, None)), now_ms=at(10)).changes
    assert window(removed) == [("exited", "event", iso(10))]
    past = engine.process(raw(renewal(3, iso(5))), now_ms=at(10)).changes
    assert window(past) == []  # a date in the past is outside the window


def test_a_timestamp_counts_by_its_utc_day_and_a_bad_date_is_an_invalid_event() -> None:
    engine = engine_for(RENEWAL, clock="wall")
    stamped = f"{iso(100)}T23:30:00-02:00"  # the next UTC day
    engine.process(raw(renewal(0, stamped)), now_ms=at(0))
    assert engine.values(engine.store["C1"])["days_until__contract_renewal"] == 101
    for bad in ("next spring", "2027-02-30", 20270101, "1969-12-31"):
        result = engine.parse(raw(renewal(0, bad))[0])  # type: ignore[arg-type]
        assert isinstance(result, Rejection), bad
        assert result.reason.value == "invalid_field" and "contract_renewal" in result.message


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("contract_renewal > 5", "cannot compare date with num"),
        ("contract_renewal + 1 > 3", "arithmetic needs numbers, this is date"),
        ("days_until(recency_days) <= 120", "days_until() takes one date attribute"),
        ("days_since(contract_renewal, 2) > 1", "days_since() takes one date attribute"),
    ],
)
def test_dates_are_type_checked_at_load(expression: str, message: str) -> None:
    declared = "version: 1\nattributes:\n  contract_renewal: {type: date}\n"
    text = f'{declared}flags:\n  x: "{expression}"\n'
    with pytest.raises(RuleErrors) as caught:
        rules_from(text)
    assert [e.message for e in caught.value.errors] == [message]
    assert str(caught.value).startswith("rules.yaml:5:")


def test_the_default_rules_declare_the_renewal_window() -> None:
    rules = default_rules()
    assert rules.attributes["contract_renewal"].type == "date"
    assert rules.flags["renewal_window"].playbook.owner == "customer_success"
    engine = engine_for(None, clock="wall")
    changes = engine.process(raw(renewal(0, iso(90))), now_ms=at(0)).changes
    assert window(changes) == [("entered", "event", iso(0))]
