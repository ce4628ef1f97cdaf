"""Per-customer state: each window boundary, refunds, tickets, CSI/NPS, attributes."""

import orjson
import pytest

from segstream.core.contracts import Event, Rejection, validate_event
from segstream.core.engine import Engine
from segstream.core.state import (
    ACTIVITY_DAYS,
    COMPACT_EVERY_DAYS,
    LATE_DAYS,
    CustomerState,
    Windows,
    dump_state,
    load_state,
)
from tests.unit.factories import DAY0, engine_for, event, order, raw


def parsed(body: dict) -> Event:  # type: ignore[type-arg]
    result = validate_event(body)
    assert not isinstance(result, Rejection), result
    return result


def values_after(*events: dict, clock_day: int | None = None) -> dict:  # type: ignore[type-arg]
    engine = engine_for()
    engine.process(raw(*events))
    if clock_day is not None:
        from tests.unit.factories import at

        engine.advance(at(clock_day))
    return engine.values(engine.store[events[0]["customer_id"]])


@pytest.mark.parametrize(("age", "inside"), [(0, True), (29, True), (30, False)])
def test_30_day_window_boundary(age: int, inside: bool) -> None:
    values = values_after(order(day=0), event("profile", day=age, attributes={}))
    assert values["orders_30d"] == (1 if inside else 0)


@pytest.mark.parametrize(("age", "inside"), [(89, True), (90, False)])
def test_90_day_window_boundary(age: int, inside: bool) -> None:
    values = values_after(order(day=0), event("survey", day=0, score=5), clock_day=age)
    assert values["orders_90d"] == (1 if inside else 0)
    assert values["surveys_90d"] == (1 if inside else 0)


@pytest.mark.parametrize(("age", "inside"), [(364, True), (365, False)])
def test_rfm_window_boundary(age: int, inside: bool) -> None:
    values = values_after(order(day=0, amount="12.50"), clock_day=age)
    assert values["frequency"] == (1 if inside else 0)
    assert values["monetary"] == (12.5 if inside else 0.0)
    assert values["orders_total"] == 1
    assert values["monetary_total"] == 12.5
    assert values["recency_days"] == age
    assert values["tenure_days"] == age


def test_day_arithmetic_uses_utc_calendar_dates() -> None:
    # 23:59 one day and 00:01 the next are one day apart
    values = values_after(order(day=0, hour=23), event("profile", day=1, hour=0, attributes={}))
    assert values["recency_days"] == 1


def test_refund_removes_the_order_whichever_arrives_first() -> None:
    for events in (
        [order(order_id="o1", amount=50), order(order_id="o1", amount=0, status="refunded", day=3)],
        [
            order(order_id="o1", amount=0, status="cancelled", day=3),
            order(order_id="o1", amount=50),
        ],
    ):
        values = values_after(order(order_id="o0", amount=10), *events)
        assert values["frequency"] == 1
        assert values["monetary"] == 10.0
        assert values["orders_total"] == 1


def test_amounts_whose_sums_round_are_summed_in_the_orders_order() -> None:
    """Decimal keeps 28 digits: a + a rounds, so a running total that adds a twice and takes
    it away twice would keep 1e-13 of nothing. Such amounts are summed afresh, as always."""
    big = "999999999999999.9999999999999"
    values = values_after(
        order(order_id="o1", amount=big),
        order(order_id="o2", amount=big),
        order(order_id="o1", amount=0, status="refunded", day=1),
        order(order_id="o2", amount=0, status="refunded", day=1),
    )
    assert values["monetary_total"] == 0.0 and values["monetary"] == 0.0
    assert values["orders_total"] == 0


def test_duplicate_events_count_once() -> None:
    first = order(order_id="o1", amount=20)
    survey = event("survey", score=9)
    values = values_after(first, first, survey, survey, dict(first))
    assert values["frequency"] == 1
    assert values["monetary"] == 20.0
    assert values["responses"] == 1
    assert values["activity_30d"] == 2


def test_tickets_follow_the_latest_status() -> None:
    values = values_after(
        event("support", ticket_id="t1", status="opened", day=0),
        event("support", ticket_id="t1", status="closed", day=2),
        event("support", ticket_id="t2", status="opened", day=1),
        event("support", ticket_id="t2", status="closed", day=2),
        event("support", ticket_id="t2", status="reopened", day=3),
        event("support", ticket_id="t3", status="opened", day=3),
    )
    assert values["tickets_open"] == 2
    assert values["tickets_30d"] == 3


def test_csi_and_nps() -> None:
    scores = [10, 9, 8, 7, 3, 2, 0]
    values = values_after(*(event("survey", score=s, day=i) for i, s in enumerate(scores)))
    assert values["promoters"] == 3
    assert values["detractors"] == 2
    assert values["responses"] == 7
    assert values["csi"] == 1.5
    assert values["nps"] == pytest.approx(100 * (2 - 3) / 7)  # 9-10 minus 0-6
    assert values["last_score"] == 0


def test_no_survey_means_null_csi() -> None:
    values = values_after(order())
    assert values["csi"] is None and values["nps"] is None and values["last_score"] is None


def test_activity_trend_and_days_since_activity() -> None:
    events = [event("profile", day=d, attributes={}) for d in (0, 5, 35, 40, 41)]
    values = values_after(*events, clock_day=45)
    assert values["activity_30d"] == 3  # days 35, 40, 41
    assert values["activity_trend"] == 3 - 2  # minus days 0 and 5 (45-0=45, 45-5=40)
    assert values["days_since_activity"] == 4


def test_profile_null_removes_an_attribute_and_latest_wins() -> None:
    engine = engine_for()
    engine.process(
        raw(
            event("profile", day=2, attributes={"capacity": 5, "industry": "retail"}),
            event("profile", day=1, attributes={"capacity": 1}),  # older: ignored
            event("profile", day=3, attributes={"industry": None}),
        )
    )
    values = engine.values(engine.store["C1"])
    assert values["capacity"] == 5
    assert values["industry"] == ""  # removed: back to the declared default


def test_wrongly_typed_attribute_reads_as_default() -> None:
    engine = engine_for()
    engine.process(raw(event("profile", attributes={"capacity": "huge"})))
    assert engine.values(engine.store["C1"])["capacity"] == 3


def test_old_orders_fold_into_totals_and_memory_stays_bounded() -> None:
    engine: Engine = engine_for()
    first = order(day=0, amount=1, order_id="first")
    engine.process(raw(first, *(order(day=d, amount=1) for d in range(2, 800, 2))))
    st = engine.store["C1"]
    engine.values(st)
    # only the horizon's orders, plus the lateness allowance and at most one compaction
    # period, are kept by id
    assert len(st.orders) <= (365 + LATE_DAYS + COMPACT_EVERY_DAYS) // 2 + 1
    assert len(st.activity) <= (2 * ACTIVITY_DAYS + COMPACT_EVERY_DAYS) // 2 + 1
    values = engine.values(st)
    assert values["orders_total"] == 400
    assert values["monetary_total"] == 400.0
    assert "first" not in st.orders
    # a re-sent copy of a folded order (new event id, same order id) is still recognised
    engine.process(raw({**first, "event_id": "resent"}))
    assert engine.values(st)["orders_total"] == 400


# Stored by format 2 (the release before named fields): one customer with a folded order, a
# refunded order, an open and a closed ticket, two surveys, a tombstone and quantile scores.
FORMAT_2 = (
    b'[2,"C1",[["o1",1762603200000,"a2",20400,"7"],["o2",1762689600000,"a3",20401,"3.10"]],'
    b'{"o2":20402},1,"12.50",20000,20000,[17912710854612426963],'
    b'{"t1":[1762689600000,"a5","opened",20401],"t2":[1762776000000,"a6","closed",-1]},'
    b'{"s1":[1762776000000,"a7",20402,9],"\\u0000a8":[1762862400000,"a8",20403,2]},'
    b'{"industry":[1762862400000,"a9","retail"],"capacity":[1762862400000,"a9",4],'
    b'"size":[1762862400000,"a9",null],"x":[1762862400000,"a9",1.5],"b":[1762862400000,"a9",true]},'
    b'{"a2":20400,"a3":20401,"a4":20402,"a5":20401,"a6":20402,"a7":20402,"a8":20403,"a9":20403},'
    b'20403,1762862400000,20400,{"activity_matrix":"stars","lifecycle":"current",'
    b'"value":"new_customers","satisfaction":"neutral"},12,20431,{"m":[7.0,1]}]'
)
FORMAT_1 = FORMAT_2.replace(b"[2,", b"[1,", 1).rsplit(b',{"m"', 1)[0] + b"]"


@pytest.mark.parametrize("stored", [FORMAT_1, FORMAT_2], ids=["format 1", "format 2"])
def test_states_of_older_formats_still_load(stored: bytes) -> None:
    st = load_state(stored)
    values, _ = st.values(20403, Windows())
    assert values["orders_total"] == 2 and values["monetary_total"] == 19.5
    assert values["frequency"] == 1 and values["monetary"] == 7.0
    assert values["tickets_open"] == 1 and values["responses"] == 2
    assert values["last_score"] == 2 and values["activity_30d"] == 8
    assert st.attrs["size"][2] is None and st.attrs["x"][2] == 1.5
    assert st.folded_ids == {17912710854612426963}
    assert (st.seq, st.due_day, st.compacted_day) == (12, 20431, 20400)
    assert st.segments["value"] == "new_customers"
    assert st.quantiles == ({"m": (7.0, 1)} if stored is FORMAT_2 else {})
    assert st.closed_ids == set()
    again = load_state(dump_state(st))
    assert again.values(20403, Windows()) == (values, {})
    assert orjson.loads(dump_state(again))["format"] == 4


def test_an_unknown_state_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown state format"):
        load_state(b'{"format": 5, "customer_id": "C1"}')
    with pytest.raises(ValueError, match="unknown state format"):
        load_state(b'[7, "C1"]')


@pytest.mark.parametrize("rfm_days", [7, 30, 60, 365])
def test_order_windows_do_not_depend_on_the_rfm_window(rfm_days: int) -> None:
    windows = Windows(rfm_days=rfm_days, csi_days=30)
    assert windows.horizon >= 90  # the 90-day count still sees its orders after compaction
    st = CustomerState("C1")
    for age in (0, 20, 45, 80, 120):
        st.apply(parsed(order(day=100 - age)), DAY0 + 100, windows)
    st.compact(DAY0 + 100, windows)
    values, exits = st.values(DAY0 + 100, windows, frozenset({"o30", "o90", "rfm"}))
    assert values["orders_30d"] == 2
    assert values["orders_90d"] == 4
    assert values["frequency"] == sum(age < rfm_days for age in (0, 20, 45, 80, 120))
    assert sorted(exits["o90"]) == [DAY0 + d + 90 for d in (20, 55, 80, 100)]
    assert sorted(exits["o30"]) == [DAY0 + d + 30 for d in (80, 100)]


def test_a_cancellation_dated_within_the_horizon_counts_however_late_it_arrives() -> None:
    """After a restart a partition's topics are consumed unevenly: the event clock can be 75
    days past an order's horizon when a cancellation dated 300 days after the order arrives.
    It was ignored then, and the customer stayed a buyer (found by killing workers)."""
    placed = order(day=0, order_id="o1", amount="80.00")
    cancelled = order(day=300, order_id="o1", status="cancelled", amount="0")
    in_order = engine_for()
    in_order.process(raw(placed, cancelled, event("profile", day=440, attributes={})))
    late = engine_for()
    late.process(raw(placed, event("profile", day=440, attributes={}), cancelled))
    for engine in (in_order, late):
        values = engine.values(engine.store["C1"])
        assert (values["orders_total"], values["monetary_total"]) == (0, 0.0)
    too_late = engine_for()  # dated a horizon after its order: it cannot undo it
    too_late.process(raw(placed, order(day=365, order_id="o1", status="cancelled", amount="0")))
    assert too_late.values(too_late.store["C1"])["orders_total"] == 1
