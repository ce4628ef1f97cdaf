"""The fault harness's input and kill schedule: reproducible, and with every case it promises."""

from __future__ import annotations

from collections import Counter

import orjson

from segstream.core.timeutil import MS_PER_DAY, parse_timestamp
from tests.faults.harness import FaultPlan, kill_points
from tests.faults.workload import Workload, generate_lines

SMALL = Workload(customers=200, events=3_000, seed=3)


def test_the_same_workload_gives_the_same_lines() -> None:
    assert generate_lines(SMALL) == generate_lines(SMALL)
    assert generate_lines(SMALL) != generate_lines(Workload(customers=200, events=3_000, seed=4))


def test_the_input_mixes_every_case() -> None:
    lines = generate_lines(SMALL)
    bodies = [_body(line) for line in lines]
    events = [b for b in bodies if isinstance(b, dict) and b.get("customer_id")]
    kinds = Counter(b.get("type") for b in events)
    assert {"order", "support", "survey", "profile"} <= set(kinds)
    assert any(b is None or not isinstance(b, dict) for b in bodies)  # not events at all
    assert kinds["refund_request"] > 0  # synth's invalid events
    ids = Counter(b["event_id"] for b in events if b.get("type") in kinds)
    assert any(n > 1 for n in ids.values())  # duplicates
    profiles = Counter(b["customer_id"] for b in events if b.get("type") == "profile")
    assert any(n > 1 for n in profiles.values())  # profile updates


def test_late_cancellations_come_280_to_320_days_after_their_order() -> None:
    events = [b for b in map(_body, generate_lines(SMALL)) if isinstance(b, dict)]
    placed = {
        b["order_id"]: parse_timestamp(b["occurred_at"])
        for b in events
        if b.get("type") == "order" and "status" not in b and _valid_time(b)
    }
    late = [b for b in events if str(b.get("event_id", "")).startswith("L")]
    assert late
    for cancel in late:
        days = (parse_timestamp(cancel["occurred_at"]) - placed[cancel["order_id"]]) // MS_PER_DAY
        assert cancel["status"] == "cancelled" and 280 <= days <= 321


def test_kill_points_are_drawn_from_the_seed_plus_the_fixed_ones() -> None:
    plan = FaultPlan(kills=3, fixed_points=(1.0,), kill_seed=9)
    points = kill_points(plan, 10_000)
    assert points == kill_points(plan, 10_000) and points == sorted(points)
    assert len(points) == 4 and points[-1] == 10_000
    assert all(500 <= p <= 9_500 for p in points[:3])
    assert points != kill_points(FaultPlan(kills=3, fixed_points=(1.0,), kill_seed=10), 10_000)


def _body(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _valid_time(body: dict[str, object]) -> bool:
    try:
        parse_timestamp(body.get("occurred_at"))
    except ValueError:
        return False
    return True
