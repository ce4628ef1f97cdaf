"""Crash recovery: a state loaded from its stored form is the state a never-crashed worker holds,
and stays so as more events arrive."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segstream.core.contracts import Event, Rejection, validate_event
from segstream.core.state import CustomerState, Limits, Windows, dump_state, load_state
from segstream.core.timeutil import MS_PER_DAY
from tests.unit.factories import DAY0, at

IDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)  # "\x00", é, emoji
SMALL = Limits(max_attributes=4, max_open_tickets=2, max_closed_ticket_ids=2, max_folded_ids=2)
WINDOWS = (Windows(), Windows(rfm_days=30, csi_days=30), Windows(rfm_days=500, csi_days=90))
# neither the limit counts nor the running window values (derived from the items) are state
SLOTS = [name for name in CustomerState.__slots__ if name not in ("limit_hits", "windowed")]

amounts = st.one_of(
    st.decimals(0, 10**15, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["0", "0.00", "1E+3", "12.50", "1e15", "0.000000001"]),
    st.integers(0, 10**6),
    st.floats(0, 1e6, allow_nan=False),
)
attribute_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)


@st.composite
def bodies(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 40))):
        body: dict[str, Any] = {
            "event_id": draw(st.one_of(st.just(f"e{i}"), IDS)),
            "customer_id": "C1",
            "occurred_at": at(draw(st.integers(0, 900)), draw(st.integers(0, 23))),
        }
        kind = draw(st.sampled_from(("order", "refund", "support", "survey", "profile")))
        if kind in ("order", "refund"):
            body |= {"type": "order", "order_id": draw(IDS), "amount": draw(amounts)}
            if kind == "refund":
                body["status"] = draw(st.sampled_from(("refunded", "cancelled")))
        elif kind == "support":
            status = draw(st.sampled_from(("opened", "closed", "reopened")))
            body |= {"type": "support", "ticket_id": draw(IDS), "status": status}
        elif kind == "survey":
            survey_id = draw(st.one_of(st.none(), IDS))
            body |= {"type": "survey", "score": draw(st.integers(0, 10)), "survey_id": survey_id}
        else:
            names = st.dictionaries(IDS, attribute_values, max_size=5)
            body |= {"type": "profile", "attributes": draw(names)}
        out.append(body)
    return out


def parsed(body: dict[str, Any]) -> Event:
    result = validate_event(body)
    assert not isinstance(result, Rejection), result
    return result


def run(
    state: CustomerState, events: list[Event], windows: Windows, limits: Limits, clock: int
) -> int:
    """As the engine does it: an event clock, then an evaluation that may compact."""
    for event in events:
        clock = max(clock, event.occurred_at // MS_PER_DAY)
        state.apply(event, clock, windows, limits)
        state.compact(clock, windows, limits)
    return clock


def canonical(value: Any) -> Any:
    """A form in which equal means identical: types, Decimal exponents and float signs count."""
    if isinstance(value, dict):
        return ("dict", sorted((canonical(k), canonical(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return ("set", sorted(canonical(v) for v in value))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canonical(v) for v in value])
    return (type(value).__name__, repr(value))


def fields(state: CustomerState) -> dict[str, Any]:
    return {name: canonical(getattr(state, name)) for name in SLOTS}


RECOVERY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RECOVERY
@given(
    bodies(),
    bodies(),
    st.sampled_from(WINDOWS),
    st.sampled_from([Limits(), SMALL]),
    st.data(),
)
def test_a_recovered_state_is_the_state_and_stays_it(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    windows: Windows,
    limits: Limits,
    data: st.DataObject,
) -> None:
    original = CustomerState("C1")
    clock = run(original, [parsed(b) for b in before], windows, limits, DAY0)
    original.quantiles = data.draw(
        st.dictionaries(
            st.sampled_from(["m", "f"]),
            st.tuples(
                st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
                st.integers(0, 5),
            ),
        )
    )
    original.segments = data.draw(
        st.dictionaries(IDS, st.one_of(st.none(), st.booleans(), IDS), max_size=3)
    )
    original.seq, original.due_day = (
        data.draw(st.integers(0, 10**6)),
        data.draw(st.one_of(st.none(), st.integers(DAY0, DAY0 + 2000))),
    )
    recovered = load_state(dump_state(original))
    assert fields(recovered) == fields(original)
    assert dump_state(recovered) == dump_state(original)

    later = [parsed(b) for b in after]
    end = run(original, later, windows, limits, clock)
    assert run(recovered, later, windows, limits, clock) == end
    assert fields(recovered) == fields(original)
    for day in (end, end + 45, end + 400):
        assert recovered.values(day, windows) == original.values(day, windows)
