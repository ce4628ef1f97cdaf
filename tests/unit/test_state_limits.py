"""Per-customer state under faults: memory limits, compacted tickets, the event-id memory."""

from __future__ import annotations

import random
from typing import Any

import pytest

from segstream.core.contracts import Event, Rejection, validate_event
from segstream.core.state import (
    COMPACT_EVERY_DAYS,
    LATE_DAYS,
    LIMIT_ATTRIBUTES,
    LIMIT_CLOSED_TICKET_IDS,
    LIMIT_FOLDED_IDS,
    LIMIT_OPEN_TICKETS,
    CustomerState,
    Limits,
    Windows,
    dump_state,
)
from tests.unit.factories import DAY0, engine_for, event, order, raw

WINDOWS = Windows()
HORIZON = WINDOWS.horizon


def parsed(body: dict[str, Any]) -> Event:
    result = validate_event(body)
    assert not isinstance(result, Rejection), result
    return result


def feed(st: CustomerState, bodies: list[dict[str, Any]], clock: int, limits: Limits) -> None:
    for body in bodies:
        st.apply(parsed(body), DAY0 + clock, WINDOWS, limits)


def ticket(ticket_id: str, status: str, day: int, **fields: Any) -> dict[str, Any]:
    return event("support", day=day, ticket_id=ticket_id, status=status, **fields)


# -- attributes --------------------------------------------------------------------------------


def profiles(events: int, names: int) -> list[dict[str, Any]]:
    return [
        event("profile", day=i % 5, attributes={f"a{i:02}_{j:03}": j for j in range(names)})
        for i in range(events)
    ]


def test_attribute_names_per_customer_are_capped() -> None:
    st = CustomerState("C1")
    feed(st, profiles(20, 256), 10, Limits())
    assert len(st.attrs) == 256  # was 5,120
    assert sorted(st.attrs) == sorted(f"a00_{j:03}" for j in range(256))
    assert st.take_limit_hits() == {LIMIT_ATTRIBUTES: 19 * 256}
    assert st.take_limit_hits() == {}


def test_the_kept_attributes_do_not_depend_on_arrival_order() -> None:
    limits = Limits(max_attributes=40, keep_attributes=frozenset({"a09_005", "zz"}))
    bodies = [*profiles(10, 12), event("profile", day=9, attributes={"zz": None, "a00_001": 7})]
    first = CustomerState("C1")
    feed(first, bodies, 10, limits)
    for seed in range(5):
        shuffled = list(bodies)
        random.Random(seed).shuffle(shuffled)
        other = CustomerState("C1")
        feed(other, shuffled, 10, limits)
        assert other.attrs == first.attrs
    assert len(first.attrs) == 40
    assert {"a09_005", "zz"} <= first.attrs.keys()  # declared names are ranked first
    assert first.attrs["a00_001"][2] == 7


def test_declared_attributes_survive_a_flood_in_the_engine() -> None:
    engine = engine_for()
    flood = [event("profile", attributes={f"aux{i:04}": i for i in range(256)}) for _ in range(3)]
    engine.process(raw(event("profile", attributes={"industry": "retail"}), *flood))
    st = engine.store["C1"]
    assert len(st.attrs) <= 256
    assert "industry" in st.attrs  # by name alone "industry" would rank after "aux..."
    assert engine.limit_hits[LIMIT_ATTRIBUTES] > 0
    plain = CustomerState("C1")  # without the rules' names to keep
    for body in [event("profile", attributes={"industry": "retail"}), *flood]:
        plain.apply(parsed(body), engine.lanes[0].clock_day, engine.rules.windows, Limits())
    assert "industry" not in plain.attrs


# -- tickets -----------------------------------------------------------------------------------


def test_open_tickets_kept_are_capped_newest_first() -> None:
    st = CustomerState("C1")
    bodies = [ticket(f"t{i:04}", "opened", day=i // 100, hour=i % 24) for i in range(2000)]
    feed(st, bodies, 30, Limits())
    assert len(st.tickets) == 200
    newest = sorted(bodies, key=lambda b: (b["occurred_at"], b["event_id"]))[-200:]
    assert st.tickets.keys() == {b["ticket_id"] for b in newest}
    assert st.take_limit_hits() == {LIMIT_OPEN_TICKETS: 1800}
    # 2,000 open tickets stored 827 KB; the 2,000 remembered event ids are most of the rest
    assert len(dump_state(st)) < 45_000


def test_closed_tickets_do_not_count_against_the_open_cap() -> None:
    st = CustomerState("C1")
    limits = Limits(max_open_tickets=3)
    closed = [ticket(f"c{i}", "closed", day=1) for i in range(10)]
    feed(st, [*closed, *(ticket(f"o{i}", "opened", day=2 + i) for i in range(5))], 10, limits)
    values, _ = st.values(DAY0 + 10, WINDOWS)
    assert values["tickets_open"] == 3
    assert {t for t, r in st.tickets.items() if r[2] != "closed"} == {"o2", "o3", "o4"}


def compacted_closed_ticket() -> tuple[CustomerState, dict[str, Any], int]:
    st = CustomerState("C1")
    opened = ticket("T1", "opened", day=0)
    feed(st, [opened, ticket("T1", "closed", day=1)], 1, Limits())
    clock = DAY0 + 1 + HORIZON + COMPACT_EVERY_DAYS
    st.compact(clock, WINDOWS)
    assert "T1" not in st.tickets
    return st, opened, clock


@pytest.mark.parametrize("event_id", ["same", "new"])
def test_a_ticket_compaction_closed_stays_closed(event_id: str) -> None:
    st, opened, clock = compacted_closed_ticket()
    late = opened if event_id == "same" else {**opened, "event_id": "resent"}
    assert not st.apply(parsed(late), clock, WINDOWS)
    assert not st.apply(parsed(ticket("T1", "reopened", day=0, hour=13)), clock, WINDOWS)
    values, _ = st.values(clock, WINDOWS)
    assert values["tickets_open"] == 0
    assert st.tickets == {}


def test_a_ticket_compaction_closed_can_be_reopened_by_a_new_event() -> None:
    st, _, clock = compacted_closed_ticket()
    assert st.apply(parsed(ticket("T1", "reopened", day=clock - DAY0)), clock, WINDOWS)
    assert st.values(clock, WINDOWS)[0]["tickets_open"] == 1


def test_support_heavy_does_not_flip_back_when_old_tickets_are_re_sent() -> None:
    engine = engine_for()
    tickets = [ticket(f"t{i}", "opened", day=0) for i in range(3)]
    closes = [ticket(f"t{i}", "closed", day=2) for i in range(3)]
    engine.process(raw(*tickets, *closes))
    # tickets are compacted by the support topic's clock: another customer's ticket moves it
    later = HORIZON + COMPACT_EVERY_DAYS + 5
    engine.process(raw(ticket("x", "opened", day=later, customer_id="C2")))
    engine.process(raw(event("profile", day=later + COMPACT_EVERY_DAYS, attributes={})))
    assert engine.segments_of("C1")["support_heavy"] is False
    assert engine.store["C1"].tickets == {}  # compacted
    resent = [{**t, "event_id": f"again-{t['event_id']}"} for t in tickets]
    changes = engine.process(raw(*tickets, *resent)).changes
    assert not [c for c in changes if c["family"] == "support_heavy"]
    assert engine.segments_of("C1")["support_heavy"] is False


def test_closed_ticket_digests_are_a_bounded_order_free_set() -> None:
    limits = Limits(max_closed_ticket_ids=5)
    bodies = [
        b for i in range(12) for b in (ticket(f"t{i}", "opened", 0), ticket(f"t{i}", "closed", 1))
    ]
    states = []
    for seed in range(3):
        random.Random(seed).shuffle(bodies)
        st = CustomerState("C1")
        feed(st, bodies, 1, limits)
        st.compact(DAY0 + 1 + HORIZON, WINDOWS, limits)
        states.append(st.closed_ids)
        assert st.take_limit_hits() == {LIMIT_CLOSED_TICKET_IDS: 7}
    assert states[0] == states[1] == states[2] and len(states[0]) == 5


# -- orders ------------------------------------------------------------------------------------


def test_folded_order_digests_are_bounded() -> None:
    st = CustomerState("C1")
    limits = Limits(max_folded_ids=10)
    feed(st, [order(day=0, amount=1) for _ in range(30)], HORIZON + LATE_DAYS + 1, limits)
    assert len(st.folded_ids) == 10 and st.folded_count == 30
    assert st.take_limit_hits() == {LIMIT_FOLDED_IDS: 20}


def test_a_late_refund_of_a_folded_order_takes_no_memory() -> None:
    st = CustomerState("C1")
    feed(st, [order(day=0, order_id="o1")], HORIZON + 1, Limits())
    refund = order(day=HORIZON, order_id="o1", status="refunded", amount=0)
    st.apply(parsed(refund), DAY0 + HORIZON + 1, WINDOWS)
    assert st.refunds == {}
    assert st.values(DAY0 + HORIZON + 1, WINDOWS)[0]["orders_total"] == 1


# -- the event-id memory -----------------------------------------------------------------------


def test_event_id_memory_is_configurable_and_at_least_the_activity_windows() -> None:
    with pytest.raises(ValueError, match="event_id_memory_days"):
        Limits(event_id_memory_days=59)
    survey = event("survey", day=0, score=9)
    for days, remembered in ((60, False), (120, True)):
        st = CustomerState("C1")
        limits = Limits(event_id_memory_days=days)
        st.apply(parsed(survey), DAY0 + 100, WINDOWS, limits)
        assert (survey["event_id"] in st.activity) is remembered
        st.compact(DAY0 + 100, WINDOWS, limits)
        assert (survey["event_id"] in st.activity) is remembered


def test_a_survey_re_sent_after_its_window_takes_no_memory() -> None:
    st = CustomerState("C1")
    feed(st, [event("survey", day=0, score=2)], 1, Limits())
    st.compact(DAY0 + 400, WINDOWS)
    assert st.surveys == {}
    resent = event("survey", day=0, score=2)
    st.apply(parsed(resent), DAY0 + 400, WINDOWS)
    assert st.surveys == {}


def test_tickets_re_sent_after_the_event_id_memory_change_nothing() -> None:
    st = CustomerState("C1")
    bodies = [ticket("T1", "opened", day=0), ticket("T1", "closed", day=1)]
    feed(st, bodies, 1, Limits())
    clock = DAY0 + 100  # past the 60-day event-id memory, inside the horizon
    st.compact(clock, WINDOWS)
    assert st.activity == {}
    before = st.values(clock, WINDOWS)[0]
    for body in bodies:
        assert not st.apply(parsed(body), clock, WINDOWS)  # known through the ticket's id
        # a new event id is a new event by contract; at the same instant as the ticket's
        # latest event it can replace that record, but an equal status changes no value
        st.apply(parsed({**body, "event_id": "x" + body["event_id"]}), clock, WINDOWS)
        assert st.values(clock, WINDOWS)[0] == before
    assert st.tickets["T1"][2] == "closed"
