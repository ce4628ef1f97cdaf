"""Crash determinism of the core: a worker that crashes at any commit and recovers from what it
wrote emits exactly the changes (same seq, same ids, same content) and ends with exactly the
state of a worker that never crashed.

The driver does what the streaming worker does with a fetched batch: apply records to their
partition's lane, commit a lane whenever its pending work reaches the budget (so commits also
fall inside clock days and population refreshes), commit every lane at the end, emit, confirm.
A crash stops right after some commit was written; the input is then re-delivered from a batch
boundary at or before the crashed batch (committed offsets lag behind).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from segstream.core.contracts import Rejection
from segstream.core.engine import Change, Commit, Engine
from segstream.core.state import dump_state, load_state
from segstream.synth import SynthConfig, generate
from tests.unit.factories import default_rules

PARTITIONS = 3


class Crash(Exception):
    pass


@dataclass
class Durable:
    """What the changelog and the output topic hold."""

    states: dict[str, bytes] = field(default_factory=dict)
    lanes: dict[int, bytes] = field(default_factory=dict)
    emitted: list[Change] = field(default_factory=list)
    commits: int = 0
    crash_after: int | None = None

    def write(self, commit: Commit) -> None:
        self.states.update((st.customer_id, dump_state(st)) for st in commit.states)
        self.lanes[commit.partition] = orjson.dumps(commit.lane)
        self.commits += 1
        if self.commits == self.crash_after:
            raise Crash


def handle(engine: Engine, batch: list[bytes], durable: Durable, budget: int) -> None:
    written: list[Commit] = []

    def commit(partition: int) -> None:
        done = engine.commit(partition)
        if done is not None:
            written.append(done)
            durable.write(done)

    for raw in batch:
        parsed = engine.parse(raw)
        if isinstance(parsed, Rejection):
            continue
        partition = engine.partition_for(parsed.customer_id)
        engine.apply(parsed, partition=partition)
        if engine.pending(partition) >= budget:
            commit(partition)
    for partition in sorted(engine.lanes):
        commit(partition)
    durable.emitted += [c for done in written for c in done.changes]
    engine.confirm()


def recover(durable: Durable) -> Engine:
    engine = Engine(default_rules(), partitions=PARTITIONS)
    for partition, record in sorted(durable.lanes.items()):
        engine.adopt_lane(partition, orjson.loads(record))
    for raw in durable.states.values():
        st = load_state(raw)
        engine.adopt(st, engine.partition_for(st.customer_id))
    for partition in sorted(engine.lanes):
        engine.settle_adopted(partition, had_record=partition in durable.lanes)
    return engine


def run(batches: list[list[bytes]], budget: int, crash_after: int | None, rng: random.Random):
    durable = Durable(crash_after=crash_after)
    engine = Engine(default_rules(), partitions=PARTITIONS)
    done = 0
    try:
        for done, batch in enumerate(batches):  # noqa: B007
            handle(engine, batch, durable, budget)
    except Crash:
        durable.crash_after = None
        engine = recover(durable)
        handle(engine, [], durable, budget)  # the recovery's own commit and re-sends
        for batch in batches[rng.randint(max(done - 3, 0), done) :]:
            handle(engine, batch, durable, budget)
    return engine, durable


def by_key(emitted: list[Change]) -> dict[tuple[str, int], Change]:
    seen: dict[tuple[str, int], Change] = {}
    for change in emitted:
        key = (change["customer_id"], change["seq"])
        assert seen.setdefault(key, change) == change, f"two changes for {key}"
    return seen


def lane_records(engine: Engine) -> dict[int, Any]:
    return {p: lane.record() | {"unconfirmed": None} for p, lane in engine.lanes.items()}


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_at_any_commit_changes_nothing_that_is_said(seed: int) -> None:
    rng = random.Random(seed)
    config = SynthConfig(customers=80, events=1500, seed=seed, duplicate_rate=0.05)
    lines = [orjson.dumps(body) for body in generate(config)]
    batches: list[list[bytes]] = []
    while lines:
        size = rng.randint(1, 300)
        batches.append(lines[:size])
        lines = lines[size:]
    budget = rng.choice([3, 20, 200])
    reference, clean = run(batches, budget, None, rng)
    expected = by_key(clean.emitted)
    assert len(expected) == len(clean.emitted) > 50
    for crash_after in sorted(rng.sample(range(1, clean.commits), 3)):
        engine, durable = run(batches, budget, crash_after, rng)
        assert by_key(durable.emitted) == expected, f"crash after commit {crash_after}"
        assert {c: dump_state(st) for c, st in engine.store.items()} == {
            c: dump_state(st) for c, st in reference.store.items()
        }
        assert lane_records(engine) == lane_records(reference)
