"""A partition's four input topics reach the worker interleaved as fetches come, and its state
must not depend on that (docs/runtime.md, Determinism): each topic is read in one order, so
whatever is decided about a late event is decided by its own topic's clock, never by the
partition's clock over all four. The soak found the case that broke it on 2026-12-02:
compaction folded an order by the partition's clock, moved months ahead by another topic, and
the late cancellation of that order then found nothing to cancel."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segstream.core.engine import Engine
from segstream.core.partitioning import partition_for
from segstream.core.timeutil import MS_PER_DAY
from tests.unit.factories import DAY0, default_rules, event, order, raw
from tests.unit.test_reference_equality import RULES as RULE_SETS  # other windows and horizons

RULES = default_rules()


def final_values(stream: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    engine = Engine(RULES, partitions=1)
    engine.process(raw(*stream))
    return {customer: engine.values(st) for customer, st in sorted(engine.store.items())}


# another customer's survey, 520 days on: its topic fetched months ahead of the orders
AHEAD = event("survey", "C2", day=520, survey_id="S1", score=7, event_id="ahead")


def orders_total(survey_first: bool) -> int:
    bought = order("C1", day=0, amount="77.92", order_id="O1", event_id="e1")
    later = order("C1", day=100, amount="63.44", order_id="O2", event_id="e2")
    cancel = order("C1", day=310, amount="0", order_id="O1", event_id="e3", status="cancelled")
    stream = [bought, later, AHEAD, cancel] if survey_first else [bought, later, cancel, AHEAD]
    return int(final_values(stream)["C1"]["orders_total"])


def test_the_cancelled_order_is_not_counted_in_file_order() -> None:
    assert orders_total(survey_first=False) == 1


def test_a_late_cancellation_counts_whichever_topic_is_fetched_first() -> None:
    assert orders_total(survey_first=True) == orders_total(survey_first=False)


def tickets_open(survey_first: bool) -> int:
    opened = event("support", "C1", day=-5, ticket_id="T1", status="opened", event_id="t1")
    closed = event("support", "C1", day=0, ticket_id="T1", status="closed", event_id="t2")
    reopened = event("support", "C1", day=10, ticket_id="T1", status="reopened", event_id="t3")
    head = [opened, closed]
    stream = head + ([AHEAD, reopened] if survey_first else [reopened, AHEAD])
    return int(final_values(stream)["C1"]["tickets_open"])


@pytest.mark.parametrize("survey_first", [False, True])
def test_a_late_reopening_counts_whichever_topic_is_fetched_first(survey_first: bool) -> None:
    assert tickets_open(survey_first) == 1


def refunded_twice(survey_first: bool) -> dict[str, Any]:
    """An exact re-delivery (same event id) of a correction rejected the first time, arriving
    after the earlier correction it lost to is past the order clock's 455 days. Judged again,
    it would count; the event-id memory must catch it or not by the orders topic's clock alone
    (the survey runs the partition's clock 60 days past the correction)."""
    first = order("C1", day=0, amount="0", order_id="O1", event_id="x1", status="cancelled")
    second = order("C1", day=500, amount="0", order_id="O1", event_id="x2", status="refunded")
    bought = order("C1", day=600, amount="50", order_id="O1", event_id="x3")
    survey = event("survey", "C2", day=560, survey_id="S1", score=7, event_id="s")
    orders = [first, second, dict(second), bought]
    return final_values([survey, *orders] if survey_first else [*orders, survey])["C1"]


def test_a_re_delivered_late_correction_counts_whichever_topic_is_fetched_first() -> None:
    assert refunded_twice(survey_first=True) == refunded_twice(survey_first=False)


def activity_on_the_wall_clock(future_first: bool) -> list[int]:
    """On the wall clock a topic's clock can run a day ahead of the partition's (an event
    dated up to a day in the future). Ids must still be forgotten no earlier than the
    partition's clock allows: a survey 59 days old on the wall clock is in activity_trend's
    window, whatever another customer's survey dated tomorrow did to the surveys' clock."""
    wall = 200
    stream = [
        (event("profile", "C1", day=wall - 100, attributes={"capacity": 2}), wall - 100),
        (event("survey", "C1", day=wall - 59, score=9, event_id="s"), wall - 59),
    ]
    today = event("profile", "C1", day=wall, attributes={"capacity": 2})  # C1 evaluated today
    tomorrow = event("survey", "C2", day=wall + 1, hour=0, score=9)
    stream += (
        [(tomorrow, wall), (today, wall)] if future_first else [(today, wall), (tomorrow, wall)]
    )
    engine = Engine(RULE_SETS["counts"], partitions=1, clock="wall")
    for body, day in stream:
        engine.process(raw(body), partition=0, now_ms=(DAY0 + day) * MS_PER_DAY + 60_000)
    values = engine.values(engine.store["C1"])
    return [values["activity_30d"], values["activity_trend"]]


@pytest.mark.parametrize("future_first", [False, True])
def test_an_id_the_activity_windows_count_is_kept_on_the_wall_clock(future_first: bool) -> None:
    assert activity_on_the_wall_clock(future_first) == [1, 0]


# -- any interleaving ---------------------------------------------------------------------------

CUSTOMERS = ("A", "B", "C")
TOPIC_OF = {
    "order": "orders",
    "refund": "orders",
    "support": "support",
    "survey": "surveys",
    "profile": "profiles",
}
# days each event moves time on, and days it is dated before that (late, re-sent): many on the
# horizon (365), the horizon plus the 90 days orders are held (455), and around them
STEPS = (0, 0, 1, 5, 30, 90, 200, 365, 455)
# at most, so the last is dated before day 40 * 455 (the wall clock's time below), and fewer
# than a population refresh needs (50 updates): cut points follow when refreshes run
EVENTS = 40
LATE = (0,) * 10 + (1, 30, 90, 200, 365, 366, 400, 455, 456, 500)


def ms(day: int, minute: int) -> int:
    return (DAY0 + day) * MS_PER_DAY + minute * 60_000


@st.composite
def topics(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    """One partition's input, topic by topic, in each topic's own order. Erasures are left
    out: an erasure removes what the worker holds when it arrives, which is by design
    interleaving-dependent (docs/runtime.md)."""
    out: dict[str, list[dict[str, Any]]] = {topic: [] for topic in TOPIC_OF.values()}
    day = 0
    kinds = ("order",) * 3 + ("refund",) * 2 + ("support",) * 3 + ("survey", "profile", "again")
    sent: list[tuple[str, dict[str, Any]]] = []
    for number in range(draw(st.integers(1, EVENTS))):
        kind = draw(st.sampled_from(kinds))
        if kind == "again":  # an exact re-delivery, later on the same topic
            if sent:
                topic, body = draw(st.sampled_from(sent))
                out[topic].append(dict(body))
            continue
        day += draw(st.sampled_from(STEPS))
        when = day - draw(st.sampled_from(LATE))
        body: dict[str, Any] = {
            "event_id": f"e{number}",
            "customer_id": draw(st.sampled_from(CUSTOMERS)),
            "occurred_at": ms(when, draw(st.integers(0, 24 * 60 - 1))),
        }
        order_id = draw(st.sampled_from(("o1", "o2", "o3")))
        if kind == "order":
            body |= {
                "type": "order",
                "order_id": order_id,
                "amount": str(draw(st.integers(1, 900))),
            }
        elif kind == "refund":
            status = draw(st.sampled_from(("refunded", "cancelled")))
            body |= {"type": "order", "order_id": order_id, "amount": "0", "status": status}
        elif kind == "support":
            status = draw(st.sampled_from(("opened", "closed", "reopened")))
            body |= {
                "type": "support",
                "ticket_id": draw(st.sampled_from(("t1", "t2"))),
                "status": status,
            }
        elif kind == "survey":
            survey_id = draw(st.sampled_from((None, "s1")))
            body |= {"type": "survey", "score": draw(st.integers(0, 10)), "survey_id": survey_id}
        else:
            body |= {"type": "profile", "attributes": {"capacity": draw(st.integers(1, 5))}}
        out[TOPIC_OF[kind]].append(body)
        sent.append((TOPIC_OF[kind], body))
    return out


@st.composite
def interleaving(draw: st.DrawFn, by_topic: dict[str, list[dict[str, Any]]]) -> list[Any]:
    """The topics merged as a consumer's fetches could merge them: each in its own order."""
    queues = {name: list(events) for name, events in by_topic.items() if events}
    merged = []
    while queues:
        name = draw(st.sampled_from(sorted(queues)))
        merged.append(queues[name].pop(0))
        if not queues[name]:
            del queues[name]
    return merged


def settled(stream: list[dict[str, Any]], rules: str, partitions: int, wall: bool) -> Any:
    """Every customer's values after the stream, through the partitions the worker would use;
    on the wall clock, every record applied at one time, after the last event."""
    engine = Engine(RULE_SETS[rules], partitions=partitions, clock="wall" if wall else "event")
    for body in stream:
        partition = partition_for(body["customer_id"], partitions)
        engine.process(
            raw(body), partition=partition, now_ms=ms(EVENTS * STEPS[-1], 0) if wall else None
        )
    return {customer: engine.values(st) for customer, st in sorted(engine.store.items())}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(sorted(RULE_SETS)), st.sampled_from((1, 4)), st.booleans())
def test_state_does_not_depend_on_how_the_topics_interleave(
    data: st.DataObject, rules: str, partitions: int, wall: bool
) -> None:
    by_topic = data.draw(topics())
    one, other = data.draw(interleaving(by_topic)), data.draw(interleaving(by_topic))
    assert settled(one, rules, partitions, wall) == settled(other, rules, partitions, wall)


# -- the topics' clocks in the lane record ------------------------------------------------------


def test_the_lane_record_carries_the_topics_clocks() -> None:
    engine = Engine(RULES, partitions=1)
    engine.process(raw(order("C1", day=3, order_id="O1"), AHEAD))
    commit = engine.commit(0)
    assert commit is not None
    assert commit.lane["topic_days"] == {"order": DAY0 + 3, "survey": DAY0 + 520}
    recovered = Engine(RULES, partitions=1)
    recovered.adopt_lane(0, commit.lane)
    assert recovered.lanes[0].topic_days == {"order": DAY0 + 3, "survey": DAY0 + 520}
    # written before the topics' clocks: its states were compacted by the partition's clock
    older = {k: v for k, v in commit.lane.items() if k != "topic_days"}
    recovered = Engine(RULES, partitions=1)
    recovered.adopt_lane(0, older)
    assert recovered.lanes[0].topic_days == {"order": DAY0 + 520, "support": DAY0 + 520}
