"""Hysteresis and dwell: ``stay_while`` (a looser condition to remain) and ``min_days`` (no exit
before N days in it). No flapping for values oscillating inside the band."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.core.engine import Engine
from segstream.core.rulelang import RuleErrors
from segstream.core.timeutil import MS_PER_DAY, to_rfc3339
from tests.unit.factories import DAY0, event, order, raw, rules_from

RULES = """
version: 1
attributes:
  score: {type: float, default: 0}
families:
  tier:
    - {name: gold, when: "score >= 2", stay_while: "score >= 1.5"}
    - {name: silver, when: "score >= 1"}
flags:
  hot: {when: "score >= 2", stay_while: "score >= 1.5"}
  buyer: {when: "orders_30d >= 1", min_days: 45}
"""


def scored(value: float, day: int, n: int) -> dict[str, Any]:
    return event("profile", "C1", day, attributes={"score": value}, event_id=f"p{n}")


def expected(scores: list[float]) -> tuple[list[bool], list[str | None]]:
    """The hysteresis automaton written out: the flag and the family after each score."""
    hot, tier = False, None
    hots, tiers = [], []
    for s in scores:
        hot = s >= 2 or (hot and s >= 1.5)
        if tier == "gold" and s >= 1.5:
            pass
        else:
            tier = "gold" if s >= 2 else "silver" if s >= 1 else None
        hots.append(hot)
        tiers.append(tier)
    return hots, tiers


@settings(max_examples=80, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from([0.5, 1.2, 1.5, 1.7, 1.9, 2.0, 2.3]), min_size=1, max_size=20))
def test_segments_follow_the_hysteresis_automaton(scores: list[float]) -> None:
    engine = Engine(rules_from(RULES))
    hots, tiers = [], []
    for n, s in enumerate(scores):
        engine.process(raw(scored(s, n, n)))
        now = engine.segments_of("C1")
        assert now is not None
        hots.append(now["hot"])
        tiers.append(now["tier"])
    assert (hots, tiers) == expected(scores)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(st.lists(st.floats(1.5, 2.49), min_size=2, max_size=30))
def test_values_oscillating_inside_the_band_never_flap(band: list[float]) -> None:
    engine = Engine(rules_from(RULES))
    changes = engine.process(raw(scored(2.5, 0, 0))).changes
    for n, s in enumerate(band, 1):
        changes += engine.process(raw(scored(s, n, n))).changes
    hot = [c for c in changes if c["family"] == "hot"]
    assert [c["change"] for c in hot] == ["entered"]  # once, never out and in again


def test_min_days_holds_the_member_and_the_clock_lets_it_go_on_the_day() -> None:
    engine = Engine(rules_from(RULES))
    engine.process(raw(order("C1", 0)))
    assert engine.segments_of("C1")["buyer"] is True  # type: ignore[index]
    engine.process(raw(order("C2", 40)))  # C2 moves the clock: C1's order left the window
    assert engine.segments_of("C1")["buyer"] is True  # type: ignore[index]
    changes = engine.process(raw(order("C2", 46))).changes
    exits = [c for c in changes if c["customer_id"] == "C1" and c["family"] == "buyer"]
    # due on day 45 (its dwell's end); the partition's clock reached day 46 with C2's order
    assert [(c["change"], c["cause"]["kind"], c["at"]) for c in exits] == [
        ("exited", "clock", to_rfc3339((DAY0 + 46) * MS_PER_DAY))
    ]


def test_an_upgrade_is_never_held_back() -> None:
    rules = rules_from(
        RULES.replace(
            '{name: silver, when: "score >= 1"}',
            '{name: silver, when: "score >= 1", stay_while: "score >= 0"}',
        )
    )
    engine = Engine(rules)
    engine.process(raw(scored(1.2, 0, 0)))
    engine.process(raw(scored(2.1, 1, 1)))
    assert engine.segments_of("C1")["tier"] == "gold"  # type: ignore[index]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("min_days: 0", "'min_days' is a whole number of days 1-3650"),
        ("stay_while: 'scor >= 1'", "did you mean 'score'"),
        ("stay_whil: 'score >= 1'", "did you mean 'stay_while'"),
    ],
)
def test_hold_mistakes_are_load_errors_with_their_place(extra: str, message: str) -> None:
    text = RULES + f"  other:\n    when: 'score >= 3'\n    {extra}\n"
    with pytest.raises(RuleErrors) as caught:
        rules_from(text)
    assert any(message in str(e) and e.line >= 14 for e in caught.value.errors), caught.value
