"""A bounded hot set (``Engine(hot_customers=N)``): memory for decoding time, nothing else.

What the engine says with a bounded hot set is proven equal to the reference by
tests/unit/test_reference_equality.py (``hot_customers=0``). These tests cover what those
random streams do not reach, and the reason for the option: the memory it saves.
"""

from __future__ import annotations

import orjson
import pytest

from segstream.core import packing
from segstream.core.engine import Engine
from segstream.core.packing import StatePacker
from segstream.synth import SynthConfig, generate
from tests.unit.factories import default_rules
from tests.unit.test_memory import CUSTOMERS, _population, _run, _traced, _warm

# Traced bytes per customer with every customer cold, on test_memory's population: 884
# (CPython 3.11), against 2,767 hot. The bound catches cold customers kept as objects, their
# group sources (window indexes) kept alive, states left unpacked (1,594), or bytes left in
# orjson's or zstandard's own buffers (5,278; 1,662).
COLD_BOUND = 950


def _feed() -> list[bytes]:
    config = SynthConfig(customers=300, events=4000, seed=7, duplicate_rate=0.05)
    return [orjson.dumps(body) for body in generate(config)]


def _engine(hot: int | None) -> Engine:
    return Engine(default_rules(), clock="event", partitions=4, hot_customers=hot)


def test_a_cold_customer_costs_well_under_a_hot_one() -> None:
    _warm()
    raws = _population("C")
    engine = Engine(default_rules(), clock="event", partitions=1, hot_customers=0)
    used = _traced(lambda: _run(engine, raws))
    assert engine.customer_count() == CUSTOMERS
    assert not engine.store and len(engine.cold) == CUSTOMERS
    assert used / CUSTOMERS < COLD_BOUND


def test_the_hot_set_keeps_its_bound_and_the_last_committed() -> None:
    engine = _engine(50)
    raws = _feed()
    for start in range(0, len(raws), 200):
        engine.process(raws[start : start + 200])
        committed = [st.customer_id for c in engine.commits() for st in c.states]
        assert len(engine.store) <= 50
        assert set(committed[-50:]) <= set(engine.store) or len(set(committed)) > 50
    assert engine.customer_count() == len(engine.store) + len(engine.cold)


def test_releasing_a_partition_uncounts_its_cold_customers() -> None:
    """A rebalance releases every customer of a partition, most of them cold: their segments
    leave the member counts without a decode."""
    hot, unbounded = _engine(0), _engine(None)
    raws = _feed()
    for engine in (hot, unbounded):
        engine.process(raws)
        engine.commits()
    assert hot.cold and not hot.store
    assert hot.member_counts() == unbounded.member_counts()
    for engine in (hot, unbounded):
        engine.release_partition(1)
    assert hot.member_counts() == unbounded.member_counts()
    assert hot.customer_ids() == unbounded.customer_ids()
    assert not any(hot.partition_for(c) == 1 for c in hot.customer_ids())


def test_reading_a_cold_customer_leaves_it_cold() -> None:
    engine = _engine(0)
    engine.process(_feed())
    engine.commits()
    customer = engine.customer_ids()[0]
    assert engine.explain(customer) is not None and engine.timeline(customer) is not None
    assert customer in engine.cold and customer not in engine.store


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="hot_customers must be 0 or more, not -1"):
        _engine(-1)


def test_packed_states_come_back_byte_for_byte_in_a_sixth_of_the_bytes() -> None:
    engine = _engine(None)
    engine.process(_feed())
    stored = [orjson.dumps(engine.explain(c)) for c in engine.customer_ids()]
    packer = StatePacker()
    trained = [packer.learn(raw) for raw in stored * (packing.TRAINING_STATES // len(stored) + 1)]
    assert trained.count(True) == 1 and packer.trained
    packed = [packer.pack(raw) for raw in stored]
    assert [packer.unpack(p) for p in packed] == stored
    assert sum(map(len, packed)) * 4 < sum(map(len, stored))


def test_samples_zstd_cannot_learn_from_still_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "TRAINING_STATES", 3)
    packer = StatePacker()
    assert [packer.learn(raw) for raw in (b"a", b"b", b"c")] == [False, False, True]
    assert packer.unpack(packer.pack(b'{"format":4}' * 20)) == b'{"format":4}' * 20
