"""Membership timelines: which segments a customer was in at time T, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream import cli
from segstream.core.engine import Engine
from segstream.core.state import Limits, dump_state, load_state
from tests.unit.factories import at, order, raw, rules_from

RULES = """
version: 1
scores:
  r: {field: recency_days, bins: [10, 30], better: lower}
  f: {field: frequency, bins: [1, 3]}
families:
  value:
    - {name: top, when: "r >= 3 and f >= 3"}
    - {name: active, when: "r >= 2"}
    - {name: lapsed, when: "orders_total >= 1"}
flags:
  regular: {when: "orders_90d >= 3"}
"""


def engine(**limits: int) -> Engine:
    return Engine(rules_from(RULES), limits=Limits(**limits))


def segments_then(days: list[int], until: int) -> dict[str, Any]:
    """The customer's segments at the end of day ``until`` by replaying only what happened
    up to then: the reference the timeline must agree with."""
    reference = engine()
    reference.process(
        raw(*(order("C1", d, order_id=f"o{d}-{i}") for i, d in enumerate(days) if d <= until))
    )
    reference.advance(at(until, 23))
    got = reference.segments_of("C1")
    assert got is not None
    return got


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    days=st.lists(st.integers(0, 120), min_size=1, max_size=12).map(sorted),
    probe=st.integers(0, 200),
)
def test_the_timeline_answers_as_a_replay_up_to_that_time_would(
    days: list[int], probe: int
) -> None:
    full = engine()  # a clock that ticks every day, as a worker's wall clock does
    bodies = [order("C1", d, order_id=f"o{d}-{i}") for i, d in enumerate(days)]
    for day in range(201):
        full.process(
            raw(*(b for b in bodies if b["occurred_at"] // 86_400_000 == at(day) // 86_400_000))
        )
        full.advance(at(day, 23))
    if probe < days[0]:
        return  # the customer did not exist yet
    answer = full.segments_at("C1", at(probe, 23))
    assert answer is not None and answer["complete"]
    then = {name: entry["value"] for name, entry in answer["segments"].items()}
    assert then == segments_then(days, probe)


def test_the_answer_says_since_when_and_which_condition_matched() -> None:
    e = engine()
    e.process(raw(*(order("C1", d) for d in (0, 1, 2))))
    e.advance(at(60))
    answer = e.segments_at("C1", at(5))
    assert answer is not None
    value = answer["segments"]["value"]
    assert value["value"] == "top" and value["matched"] == "r >= 3 and f >= 3"
    assert value["since"].startswith(Engine.__module__ and "20")  # an RFC 3339 time
    later = e.segments_at("C1", at(60))
    assert later is not None and later["segments"]["value"]["cause"] == "clock"


def test_the_timeline_is_bounded_by_length_and_age_and_then_says_it_cannot_tell() -> None:
    e = engine(timeline_length=3)
    e.process(raw(*(order("C1", d) for d in (0, 1, 2))))
    e.advance(at(100))
    st_ = e.store["C1"]
    assert len(st_.timeline) == 3 and st_.seq > 3
    early = e.segments_at("C1", at(0))
    assert early is not None and early["complete"] is False
    assert all(v["value"] is None for v in early["segments"].values())
    aged = engine(timeline_days=30)
    aged.process(raw(order("C1", 0)))
    aged.advance(at(100))
    assert all(t[0] >= at(100) - 30 * 86_400_000 - 86_400_000 for t in aged.store["C1"].timeline)
    off = engine(timeline_length=0)
    off.process(raw(order("C1", 0)))
    assert off.store["C1"].timeline == []


def test_the_timeline_survives_the_state_store_and_an_older_state_loads_without_one() -> None:
    e = engine()
    e.process(raw(order("C1", 0)))
    st_ = e.store["C1"]
    assert load_state(dump_state(st_)).timeline == st_.timeline != []
    older = orjson.loads(dump_state(st_))
    del older["timeline"]
    assert load_state(orjson.dumps(older)).timeline == []


def test_explain_at_prints_the_segments_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(raw(*(order("C1", d) for d in (0, 1, 2, 80)))) + b"\n")
    when = str(at(5))
    args = ["explain", "C1", "--events", str(events), "--rules", str(rules), "--at", when]
    assert cli.main([*args, "--partitions", "1"]) == 0
    text = capsys.readouterr().out
    assert "value" in text and "top" in text and "r >= 3 and f >= 3" in text
    assert cli.main([*args, "--partitions", "1", "--json"]) == 0
    answer = orjson.loads(capsys.readouterr().out)
    assert answer["segments"]["value"]["value"] == "top"
