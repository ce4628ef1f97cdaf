"""Property tests: order and duplicates do not matter; incremental equals from scratch;
the compiled rules agree with a plain-Python restatement of them."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segstream.core.engine import Engine
from tests.unit.factories import at, default_rules
from tests.unit.reference import reference_attributes, reference_segments, reference_values

CUSTOMERS = ("A", "B", "C")
ATTRS = {
    "capacity": 3,
    "industry": "",
    "size": "",
    "brand_strength": 1,
    "order_attractiveness": 1,
    "failure_status": 1,
}


@st.composite
def events(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 30))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(("order", "order", "refund", "support", "survey", "profile")))
        base = {
            "event_id": f"e{i}",
            "customer_id": draw(st.sampled_from(CUSTOMERS)),
            "occurred_at": at(draw(st.integers(0, 200)), draw(st.integers(0, 23))),
        }
        if kind == "order":
            amount = draw(st.decimals(0, 500, places=2, allow_nan=False, allow_infinity=False))
            base |= {
                "type": "order",
                "order_id": draw(st.sampled_from(("o1", "o2", "o3", "o4"))),
                "amount": str(amount),
            }
        elif kind == "refund":
            base |= {
                "type": "order",
                "order_id": draw(st.sampled_from(("o1", "o2", "o3"))),
                "amount": "0",
                "status": draw(st.sampled_from(("refunded", "cancelled"))),
            }
        elif kind == "support":
            base |= {
                "type": "support",
                "ticket_id": draw(st.sampled_from(("t1", "t2"))),
                "status": draw(st.sampled_from(("opened", "closed", "reopened"))),
            }
        elif kind == "survey":
            base |= {
                "type": "survey",
                "score": draw(st.integers(0, 10)),
                "survey_id": draw(st.sampled_from((None, "s1", "s2"))),
            }
        else:
            base |= {
                "type": "profile",
                "attributes": {
                    "capacity": draw(st.one_of(st.none(), st.integers(1, 5))),
                    "brand_strength": draw(st.integers(1, 5)),
                    "order_attractiveness": draw(st.integers(1, 5)),
                    "failure_status": draw(st.integers(1, 5)),
                },
            }
        out.append(base)
    return out


def settle(batch: list[dict[str, Any]], as_of_day: int = 230) -> Engine:
    engine = Engine(default_rules())
    engine.process([orjson.dumps(e) for e in batch])
    engine.advance(at(as_of_day))
    engine.refresh_population()
    return engine


def snapshot(engine: Engine) -> dict[str, Any]:
    return {
        cid: (engine.values(s), engine.segments_of(cid)) for cid, s in sorted(engine.store.items())
    }


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(events(), st.randoms(use_true_random=False), st.data())
def test_arrival_order_and_duplicates_do_not_matter(
    batch: list[dict[str, Any]], rng: Any, data: st.DataObject
) -> None:
    shuffled = list(batch)
    rng.shuffle(shuffled)
    extra = data.draw(st.lists(st.sampled_from(batch), max_size=10))
    mixed = shuffled + extra
    rng.shuffle(mixed)
    assert snapshot(settle(mixed)) == snapshot(settle(batch))


@PROPERTY
@given(events(), st.integers(200, 600))
def test_incremental_state_equals_recomputation_from_scratch(
    batch: list[dict[str, Any]], as_of: int
) -> None:
    engine = settle(batch, as_of)
    for customer_id, state in engine.store.items():
        mine = [e for e in batch if e["customer_id"] == customer_id]
        values = engine.values(state)
        expected = reference_values(mine, engine.lanes[0].clock_day)
        assert {k: values[k] for k in expected} == expected


@PROPERTY
@given(events(), st.integers(200, 600))
def test_compiled_rules_match_a_plain_python_reference(
    batch: list[dict[str, Any]], as_of: int
) -> None:
    engine = settle(batch, as_of)
    cuts = engine.lanes[0].populations["monetary"].cuts
    for customer_id in engine.store:
        mine = [e for e in batch if e["customer_id"] == customer_id]
        values = reference_values(mine, engine.lanes[0].clock_day) | reference_attributes(
            mine, ATTRS
        )
        assert engine.segments_of(customer_id) == reference_segments(values, cuts)
