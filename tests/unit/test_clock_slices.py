"""A clock day in commit-sized slices (``Engine.advance_steps``): the worker's daily tick and
a batch's first record of a new day made every due customer of a partition one commit, and a
commit that outgrows one record batch can lose its changes in a crash (docs/runtime.md,
Determinism). Sliced, the day says what one ``advance`` says, and a crash at any pause loses
nothing: the recovered lane finishes the day's due customers with the same changes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from segstream.core.engine import Change, Engine, Ingested
from segstream.core.state import dump_state, load_state
from segstream.synth import SynthConfig, generate
from tests.unit.factories import at, default_rules, order, raw

PARTITIONS = 2
BUDGET = 10


def fed() -> Engine:
    """300 customers with orders 20-40 days before the day that makes them due."""
    engine = Engine(default_rules(), clock="wall", partitions=PARTITIONS)
    for i in range(300):
        for d in range(i % 3 + 1):
            ids = {"order_id": f"o{i}-{d}", "event_id": f"e{i}-{d}"}
            body = order(f"C{i:03}", day=d * 10, amount=f"{5 + i}.00", **ids)
            engine.process(raw(body), now_ms=at(d * 10))
    engine.commits()
    engine.confirm()
    return engine


def durable_of(engine: Engine) -> dict[str, Any]:
    return {
        "states": {c: dump_state(st) for c, st in engine.store.items()},
        "lanes": {p: orjson.dumps(lane.record()) for p, lane in engine.lanes.items()},
    }


def recovered(durable: dict[str, Any]) -> Engine:
    engine = Engine(default_rules(), clock="wall", partitions=PARTITIONS)
    for partition, record in sorted(durable["lanes"].items()):
        engine.adopt_lane(partition, orjson.loads(record))
    for raw_state in durable["states"].values():
        st = load_state(raw_state)
        engine.adopt(st, engine.partition_for(st.customer_id))
    return engine


NOW = at(60)


def test_a_sliced_day_says_what_one_advance_says_in_commits_of_the_budget() -> None:
    whole = fed()
    expected = whole.advance(NOW)
    assert len(expected) > 5 * BUDGET  # enough for several slices
    sliced, commits = fed(), []
    for _ in sliced.advance_steps(NOW, BUDGET):
        commits += sliced.commits()
    commits += sliced.commits()
    assert [c for commit in commits for c in commit.changes] == expected
    assert len(commits) > 5
    # a pause comes once a lane's pending work reached the budget: at most the budget plus
    # what the last customer added (its state and its changes)
    assert all(len(c.states) + len(c.changes) <= BUDGET + 6 for c in commits)
    assert durable_of(sliced)["states"] == durable_of(whole)["states"]


@pytest.mark.parametrize("pause", [1, 2, 5])
def test_a_crash_at_any_pause_loses_no_change_and_repeats_none_differently(pause: int) -> None:
    whole = fed()
    expected = whole.advance(NOW)
    engine = fed()
    durable = durable_of(engine)
    emitted: list[Change] = []
    for done, _ in enumerate(engine.advance_steps(NOW, BUDGET), start=1):
        for commit in engine.commits():  # written: its changes are sent or re-sent
            emitted += commit.changes
            durable["states"].update((st.customer_id, dump_state(st)) for st in commit.states)
            durable["lanes"][commit.partition] = orjson.dumps(commit.lane)
        if done == pause:
            break  # the crash
    else:
        pytest.fail("fewer pauses than the crash point")
    engine = recovered(durable)
    for partition in sorted(engine.lanes):
        emitted += engine.settle_adopted(partition, had_record=True)
    emitted += engine.advance(NOW)  # the next tick: lanes the crash came before
    by_seq: dict[tuple[str, int], Change] = {}
    for change in emitted:
        key = (change["customer_id"], change["seq"])
        assert by_seq.setdefault(key, change) == change, f"two changes for {key}"
    assert sorted(by_seq.values(), key=_key) == sorted(expected, key=_key)
    assert {c: dump_state(st) for c, st in engine.store.items()} == durable_of(whole)["states"]


def _key(change: Change) -> tuple[str, int]:
    return change["customer_id"], change["seq"]


def crashed_during_the_day(pause: int) -> dict[str, Any]:
    """What is durable when a sliced day crashed at ``pause``: customers still due."""
    engine = fed()
    durable = durable_of(engine)
    for done, _ in enumerate(engine.advance_steps(NOW, BUDGET), start=1):
        for commit in engine.commits():
            durable["states"].update((st.customer_id, dump_state(st)) for st in commit.states)
            durable["lanes"][commit.partition] = orjson.dumps(commit.lane)
        if done == pause:
            return durable
    raise AssertionError("fewer pauses than the crash point")


def test_a_recovered_lane_finishes_its_day_in_slices_with_the_same_changes() -> None:
    durable = crashed_during_the_day(2)
    whole, sliced = recovered(durable), recovered(durable)
    for partition in sorted(whole.lanes):
        whole.settle_adopted(partition, had_record=True, rules=False)
    # with the changes the crashed commits had not confirmed, re-sent
    expected = [c for commit in whole.commits() for c in commit.changes]
    commits = []
    for partition in sorted(sliced.lanes):
        for _ in sliced.settle_steps(partition, had_record=True, budget=BUDGET):
            commits += sliced.commits()
    commits += sliced.commits()
    assert len(expected) > 2 * BUDGET
    got = [c for commit in commits for c in commit.changes]
    assert sorted(got, key=_key) == sorted(expected, key=_key)
    assert all(len(c.states) + len(c.changes) <= BUDGET + 6 for c in commits)
    assert durable_of(sliced)["states"] == durable_of(whole)["states"]


def stale_cuts() -> Engine:
    """The fed customers a day later, with cut points as if every value had moved since (many
    move) and a refresh pending."""
    engine = fed()
    engine.advance(NOW)
    engine.commits()
    engine.confirm()
    for lane in engine.lanes.values():
        for population in lane.populations.values():
            population.updates_since_refresh = 1
            population.cuts = tuple(0.0 for _ in population.cuts)
    return engine


def test_a_population_refresh_in_slices_says_what_one_refresh_says() -> None:
    whole, sliced = stale_cuts(), stale_cuts()
    expected = whole.refresh_population()
    commits = []
    for partition in sorted(sliced.lanes):
        for _ in sliced.refresh_steps(partition, BUDGET):
            commits += sliced.commits()
    commits += sliced.commits()
    assert expected and len(commits) > 5  # every re-scored customer is written: slices
    assert [c for commit in commits for c in commit.changes] == expected
    assert all(len(c.states) + len(c.changes) <= BUDGET + 6 for c in commits)
    assert durable_of(sliced)["states"] == durable_of(whole)["states"]


@pytest.mark.parametrize("clock", ["event", "wall"])
def test_ingest_in_steps_says_what_ingest_says(clock: str) -> None:
    """The worker's per-record path with pauses: a synthetic feed (duplicates, corrections,
    profile updates, late events; 8,000 events) through ``ingest`` and through
    ``ingest_steps`` with commits at every pause."""
    config = SynthConfig(customers=400, events=8000, seed=3, duplicate_rate=0.05)
    lines = [orjson.dumps(body) for body in generate(config)]
    whole = Engine(default_rules(), clock=clock, partitions=PARTITIONS)
    sliced = Engine(default_rules(), clock=clock, partitions=PARTITIONS)
    expected: list[Change] = []
    commits = []
    pauses = 0
    for line in lines:
        body = orjson.loads(line)
        partition = whole.partition_for(str(body.get("customer_id")))
        now = body["occurred_at"] if isinstance(body.get("occurred_at"), int) else None
        ingested = whole.ingest(line, partition, now_ms=now)
        expected += ingested.changes or []
        steps = sliced.ingest_steps(line, partition, now_ms=now, budget=BUDGET)
        if isinstance(steps, Ingested):
            assert steps.parsed == ingested.parsed
        else:
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    assert done.value.parsed == ingested.parsed
                    break
                pauses += 1
                commits += sliced.commits()
        commits += sliced.commits()
    assert pauses > 10
    assert [c for commit in commits for c in commit.changes] == expected
    assert durable_of(sliced)["states"] == durable_of(whole)["states"]
    assert {p: lane.record() | {"unconfirmed": None} for p, lane in sliced.lanes.items()} == {
        p: lane.record() | {"unconfirmed": None} for p, lane in whole.lanes.items()
    }
