"""The batch handler with in-memory fakes: records in; commits, changes and DLQ records out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from segstream.core.contracts import RejectReason
from segstream.core.engine import Engine
from segstream.core.partitioning import partition_for
from segstream.core.rulelang import load_rules
from segstream.core.state import dump_state, load_state
from segstream.runtime.control import ControlTopics
from segstream.runtime.groups import GroupExchange
from segstream.runtime.handler import BatchHandler, Topics
from segstream.runtime.metrics import Metrics
from segstream.runtime.rulestopic import Latest, Refused
from segstream.runtime.settings import Settings
from segstream.runtime.timers import Progress, Timers
from tests.unit.factories import ROOT, at, default_rules, order, rules_from
from tests.unit.fakes import FakeRecord, Journal, MemoryOutbox, MemoryStateLog
from tests.unit.test_clock_slices import durable_of, recovered, stale_cuts

TOPICS = Topics(changes="segment-changes", dlq="segstream-dlq", source="urn:test")
PARTITIONS = 4
SETTINGS = Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", rules_dir=ROOT / "rules")


def handler_for(
    *, budget: int = 400, rules: Any = None, wall_clock: bool = False
) -> tuple[BatchHandler, Journal, MemoryStateLog]:
    journal = Journal()
    state_log = MemoryStateLog(journal)
    clock = "wall" if wall_clock else "event"
    engine = Engine(rules or default_rules(), clock=clock, partitions=PARTITIONS)
    handler = BatchHandler(
        engine,
        TOPICS,
        state_log,
        MemoryOutbox(journal),
        Metrics(),
        commit_max_items=budget,
        wall_clock=wall_clock,
    )
    return handler, journal, state_log


def records_of(*bodies: dict[str, Any] | bytes, topic: str = "orders") -> list[FakeRecord]:
    """Each body on its customer's partition, keyed by it, with increasing offsets."""
    out = []
    for offset, body in enumerate(bodies):
        if isinstance(body, bytes):
            out.append(FakeRecord(topic, 0, offset, body, headers=(("origin", b"test"),)))
            continue
        customer = str(body["customer_id"])
        partition = partition_for(customer, PARTITIONS)
        out.append(
            FakeRecord(topic, partition, offset, orjson.dumps(body), customer.encode(), 1000)
        )
    return out


def run(handler: BatchHandler, records: list[FakeRecord], day: int = 400) -> None:
    asyncio.run(handler.handle(records, at(day)))


def test_a_batch_writes_its_state_before_it_sends_any_change() -> None:
    handler, journal, _ = handler_for()
    bodies = [order(f"C{i % 50}", day=i % 30, amount="20.00") for i in range(500)]
    run(handler, records_of(*bodies))
    kinds = [kind for kind, _ in journal.entries]
    assert kinds.index("sent") > max(i for i, k in enumerate(kinds) if k == "state")
    written = {st.customer_id for c in journal.commits() for st in c.states}
    assert written == {f"C{i}" for i in range(50)}
    changes = [orjson.loads(r[2]) for r in journal.sent("segment-changes")]
    assert changes == [c for commit in journal.commits() for c in commit.changes]
    assert len({c["event_id"] for c in changes}) == len(changes) > 0
    for _, key, value, _, headers in journal.sent("segment-changes"):
        change = orjson.loads(value)
        assert key == change["customer_id"].encode()
        assert dict(headers)["ce_id"] == change["event_id"].encode()
    for commit in journal.commits():  # confirmed: nothing left to re-send after a crash
        assert handler.engine.lanes[commit.partition].unconfirmed == []


def test_a_large_fetch_is_written_and_sent_slice_by_slice() -> None:
    handler, journal, _ = handler_for(budget=10)
    bodies = [order(f"C{i}", day=1) for i in range(60)]
    run(handler, records_of(*bodies))
    kinds = "".join("w" if kind == "state" else "s" for kind, _ in journal.entries)
    # each slice: its commits, then its changes; never two slices' writes before a send
    assert kinds.count("w") >= 6 and "sw" in kinds
    assert all(len(c.states) <= 10 + PARTITIONS for c in journal.commits())


def test_a_new_days_due_customers_are_committed_in_slices_on_the_wall_clock() -> None:
    """The first batch of a day ran every due customer of a partition inside its first
    record: one commit, which outgrows one record batch in a large partition (a crash
    between its batches loses changes: docs/runtime.md, Determinism)."""
    handler, journal, _ = handler_for(budget=10, wall_clock=True)
    for day in (0, 10, 20):  # three orders in 30 days: cash cows, until they age
        run(handler, records_of(*(order(f"C{i}", day=day) for i in range(100))), day=day)
    journal.entries.clear()
    run(handler, records_of(order("C1", day=60)), day=60)  # 40 days on: every one is due
    commits = journal.commits()
    moved = [c for commit in commits for c in commit.changes if c["cause"]["kind"] == "clock"]
    assert all(len(c.states) + len(c.changes) <= 10 + 6 for c in commits)
    assert len(commits) > 10
    assert len(moved) > 50  # every partition's day, not only those the batch has records of


def test_an_event_that_starts_a_day_commits_the_days_due_customers_in_slices() -> None:
    """On the event clock one record can run its partition's whole day of due customers
    (and a population refresh): the batch path commits inside that record."""
    handler, journal, _ = handler_for(budget=10)
    for day in (0, 10, 20):
        run(handler, records_of(*(order(f"C{i}", day=day) for i in range(100))), day=day)
    journal.entries.clear()
    run(handler, records_of(order("C1", day=60)), day=60)  # one partition's day, at once
    commits = journal.commits()
    assert all(len(c.states) + len(c.changes) <= 10 + 6 for c in commits)
    assert sum(c["cause"]["kind"] == "clock" for k in commits for c in k.changes) > 10


# commits of at most 10 items, for the runtime's own loops (the handler's budget is its own)
SLICED = Settings(
    KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", rules_dir=ROOT / "rules", commit_max_items=10
)


def wall_clock_with_a_day_due() -> tuple[BatchHandler, Journal]:
    """100 customers with orders on three days, on the wall clock: the next tick, years
    later, finds them all due."""
    handler, journal, _ = handler_for(budget=10, wall_clock=True)
    for day in (0, 10, 20):
        run(handler, records_of(*(order(f"C{i}", day=day) for i in range(100))), day=day)
    journal.entries.clear()
    return handler, journal


def test_the_wall_clocks_tick_commits_a_new_days_due_customers_in_slices() -> None:
    handler, journal = wall_clock_with_a_day_due()
    timers = Timers(SLICED, handler.engine, Progress(ready=True), None, set, handler.settle)  # type: ignore[arg-type]
    asyncio.run(timers.tick_clock())  # today: years after the orders
    commits = journal.commits()
    assert all(len(c.states) + len(c.changes) <= 10 + 6 for c in commits)
    assert sum(len(c.changes) for c in commits) > 100


INVALID = {
    RejectReason.TOO_LARGE: b'{"type": "order", "pad": "' + b"x" * 70_000 + b'"}',
    RejectReason.BAD_JSON: b"{not json",
    RejectReason.NOT_AN_OBJECT: b"[1, 2]",
    RejectReason.MISSING_TYPE: orjson.dumps({"customer_id": "C1", "event_id": "e"}),
    RejectReason.UNKNOWN_TYPE: orjson.dumps({"type": "refund", "customer_id": "C1"}),
    RejectReason.INVALID_FIELD: orjson.dumps(order(amount="-5")),
    RejectReason.WRONG_CURRENCY: orjson.dumps(order(currency="EUR")),
    RejectReason.OCCURRED_AT_OUT_OF_RANGE: orjson.dumps(
        order() | {"occurred_at": "9999-12-31T23:59:59-01:00"}
    ),
}


def test_every_reject_reason_goes_to_the_dlq_unchanged_with_its_headers() -> None:
    assert set(INVALID) == set(RejectReason)
    handler, journal, _ = handler_for()
    run(handler, records_of(*INVALID.values()))
    dead = journal.sent("segstream-dlq")
    assert [r[2] for r in dead] == list(INVALID.values())
    for (_, _, _, _, headers), (reason, _) in zip(dead, INVALID.items(), strict=True):
        named = dict(headers)
        assert named["segstream.error.reason"] == reason.value.encode()
        assert named["origin"] == b"test"  # the original headers are kept
        assert named["segstream.source.topic"] == b"orders"
    assert journal.commits() == []  # nothing was decided


def test_a_duplicate_decides_nothing_and_writes_nothing() -> None:
    handler, journal, _ = handler_for()
    first = order("C1", day=1)
    run(handler, records_of(first))
    before = len(journal.entries)
    run(handler, records_of(first))
    assert len(journal.entries) == before


def test_a_record_read_in_another_partition_is_sent_on_to_its_customers_partition() -> None:
    handler, journal, _ = handler_for()
    body = order("C1", day=1)
    home = partition_for("C1", PARTITIONS)
    stray = FakeRecord("orders", (home + 1) % PARTITIONS, 0, orjson.dumps(body), b"other")
    run(handler, [stray])
    (sent,) = journal.sent("orders")
    assert sent[:3] == ("orders", b"C1", stray.value)
    assert journal.commits() == [] and handler.engine.customer_count() == 0


def test_a_tombstone_is_skipped() -> None:
    handler, journal, _ = handler_for()
    run(handler, [FakeRecord("profiles", 0, 0, None, b"C1")])
    assert journal.entries == []


def test_nothing_is_sent_when_the_state_cannot_be_written() -> None:
    handler, journal, state_log = handler_for()
    state_log.fail = True
    with pytest.raises(ConnectionError):
        run(handler, records_of(order("C1", day=1)))
    assert journal.sent() == []


def control_for(handler: BatchHandler, settings: Settings = SETTINGS) -> ControlTopics:
    groups = GroupExchange(settings, lambda: handler.engine, None, handler.metrics)  # type: ignore[arg-type]
    return ControlTopics(
        settings,
        handler.engine,
        asyncio.Lock(),
        handler.metrics,
        groups,
        handler.settle,
        handler.reevaluate,
    )


def test_a_rules_message_switches_rules_and_sends_the_re_evaluations() -> None:
    handler, journal, _ = handler_for()
    run(handler, records_of(*(order(f"C{i}", day=1) for i in range(5))))
    journal.entries.clear()
    stricter = rules_from("version: 1\nflags:\n  big: {when: 'monetary_total >= 5'}\n", "new.yaml")
    refused = Refused(7, "x.yaml:1:1: broken")
    control = control_for(handler)
    asyncio.run(control.accept_rules(Latest(stricter, 8, [refused])))
    changes = [orjson.loads(r[2]) for r in journal.sent("segment-changes")]
    assert handler.engine.rules is stricter
    assert {c["cause"]["kind"] for c in changes} == {"rules"}
    assert {(c["family"], c["to"]) for c in changes if c["family"] == "big"} == {("big", True)}
    assert all(c.lane["rules_version"] == stricter.version for c in journal.commits()[-1:])
    rejected = handler.metrics.rules_rejected._value.get()  # one refused record counted
    assert rejected == 1


STRICTER = "version: 1\nflags:\n  big: {when: 'monetary_total >= 5'}\n"


def test_a_rules_switch_commits_in_slices_of_the_commit_budget() -> None:
    """A commit larger than one record batch is written in several; a crash between them
    keeps customers with segments whose changes were never sent (the lane record that would
    re-send them comes last). The switch re-evaluated 2,000 customers per commit: 617 changes
    were lost that way in the soak."""
    handler, journal, _ = handler_for(budget=10)
    run(handler, records_of(*(order(f"C{i}", day=1) for i in range(120))))
    journal.entries.clear()
    control = control_for(handler)
    asyncio.run(control.accept_rules(Latest(rules_from(STRICTER, "new.yaml"), 8, [])))
    moved = [orjson.loads(r[2]) for r in journal.sent("segment-changes")]
    assert {(c["family"], c["to"]) for c in moved if c["family"] == "big"} == {("big", True)}
    commits = journal.commits()
    assert len(commits) >= 12
    # pending work is checked after each customer: a commit holds at most the budget plus
    # what the last customer added (its state and its changes)
    assert all(len(c.states) + len(c.changes) <= 10 + 4 for c in commits)


def test_a_lane_adopted_under_older_rules_is_re_evaluated_in_commit_sized_slices() -> None:
    """Its owner died during a rules switch: the adopting worker re-evaluates the lane in
    slices, and ends with what the engine's own whole-lane pass gives."""
    first, _, _ = handler_for()
    run(first, records_of(*(order(f"C{i}", day=1) for i in range(120))))
    source = first.engine
    stricter = rules_from(STRICTER, "new.yaml")

    def adopted() -> Engine:
        engine = Engine(stricter, partitions=PARTITIONS)
        for partition, lane in sorted(source.lanes.items()):
            engine.adopt_lane(partition, orjson.loads(orjson.dumps(lane.record())))
            held = sorted(lane.customers)
            engine.adopt_all(partition, [load_state(dump_state(source.store[c])) for c in held])
        return engine

    whole = adopted()
    for partition in sorted(whole.lanes):
        whole.settle_adopted(partition, had_record=True)
    handler, journal, _ = handler_for(budget=10)
    handler.engine = sliced = adopted()
    for partition, lane in sorted(source.lanes.items()):
        assert sliced.settle_adopted(partition, had_record=True, rules=False) == []
        stale = sliced.stale_under_rules(partition)
        assert stale == sorted(lane.customers)
        asyncio.run(handler.reevaluate(stale))
        sliced.rules_done([partition])
        assert sliced.stale_under_rules(partition) == []
    assert len(journal.commits()) >= 12
    assert all(len(c.states) + len(c.changes) <= 10 + 4 for c in journal.commits())
    segments = {c: sliced.segments_of(c) for c in sliced.customer_ids()}
    assert segments == {c: whole.segments_of(c) for c in whole.customer_ids()}
    assert sum(bool(s and s["big"]) for s in segments.values()) == 120


def test_a_quiet_partitions_population_refresh_sends_its_changes() -> None:
    rules = load_rules(ROOT / "rules")
    handler, journal, _ = handler_for(rules=rules)
    # five orders each (f = 4): only the monetary quintile decides champions from loyal
    spend = [order(f"C{i}", day=d, amount=f"{10 + i}.00") for i in range(40) for d in range(5)]
    run(handler, records_of(*spend), day=6)
    journal.entries.clear()
    progress = Progress(ready=True)
    engine = handler.engine
    refreshing = [p for p in range(PARTITIONS) if engine.has_pending_population(p)]
    # each partition's changes are sent before the next partition is decided: one refresh of
    # a whole worker held the event loop for seconds (a stop signal waited for all of it)
    decided_per_settle: list[list[int]] = []

    async def settle() -> None:
        decided_per_settle.append([p for p in range(PARTITIONS) if engine.pending(p)])
        await handler.settle()

    timers = Timers(SETTINGS, engine, progress, None, set, settle)  # type: ignore[arg-type]
    asyncio.run(timers.refresh_population())
    changes = [orjson.loads(r[2]) for r in journal.sent("segment-changes")]
    assert changes and {c["cause"]["kind"] for c in changes} == {"population"}
    assert not any(engine.has_pending_population(p) for p in range(PARTITIONS))
    assert len(refreshing) > 1
    assert decided_per_settle == [[p] for p in refreshing]


def test_a_population_refresh_stops_deciding_once_a_rebalance_begins() -> None:
    rules = load_rules(ROOT / "rules")
    handler, _, _ = handler_for(rules=rules)
    spend = [order(f"C{i}", day=d, amount=f"{10 + i}.00") for i in range(40) for d in range(5)]
    run(handler, records_of(*spend), day=6)
    engine = handler.engine
    refreshing = [p for p in range(PARTITIONS) if engine.has_pending_population(p)]
    progress = Progress(ready=True)

    async def settle_then_revoke() -> None:
        await handler.settle()
        progress.ready = False  # the partitions are being revoked while that was sent

    timers = Timers(SETTINGS, engine, progress, None, set, settle_then_revoke)  # type: ignore[arg-type]
    asyncio.run(timers.refresh_population())
    assert len(refreshing) > 1
    still_pending = [p for p in range(PARTITIONS) if engine.has_pending_population(p)]
    assert still_pending == refreshing[1:]


def sample(handler: BatchHandler, name: str, **labels: str) -> float | None:
    value = handler.metrics.registry.get_sample_value(name, labels)
    return value


def test_segment_health_last_change_exit_delay_and_rule_errors() -> None:
    rules = rules_from(
        """
version: 1
derived:
  per_recent_order: "monetary / orders_30d"
flags:
  active: {when: "orders_30d >= 1"}
  spender: {when: "per_recent_order > 100"}
"""
    )
    handler, journal, _ = handler_for(rules=rules)
    run(handler, records_of(order("C1", day=1, amount="50.00")), day=1)
    stamp = sample(
        handler,
        "segstream_segment_last_change_timestamp_seconds",
        family="active",
        segment="active",
    )
    assert stamp is not None and stamp > 0
    # 40 days later another customer's order moves C1's partition clock: C1's order left the
    # 30-day window on day 31, so its exit is clock-driven and due at the start of that day
    other = next(
        c
        for c in (f"X{i}" for i in range(100))
        if partition_for(c, PARTITIONS) == partition_for("C1", PARTITIONS)
    )
    run(handler, records_of(order(other, day=41)), day=41)
    exits = [orjson.loads(r[2]) for r in journal.sent("segment-changes")]
    assert any(c["customer_id"] == "C1" and c["cause"]["kind"] == "clock" for c in exits)
    observed = sample(handler, "segstream_segment_exit_delay_seconds_count", family="active")
    assert observed == 1
    # C1 has no order in the last 30 days: monetary / 0 raised, counted for the derived metric
    errors = sample(handler, "segstream_rule_errors_total", segment="per_recent_order")
    assert errors is not None and errors >= 1


def test_a_rebalance_stops_a_refresh_at_its_next_pause_and_the_recovery_finishes_it() -> None:
    """A worker whose refresh kept deciding after its partitions were revoked wrote for
    partitions another worker had already recovered (the soak of 2026-12-02: the group evicted
    it while its revocation waited for the batch that waited for the refresh). It stops at the
    first pause after the rebalance began, with that slice written, and the partition is half
    done: reloaded from what was written, the recovery's settling finishes the refresh."""

    whole = stale_cuts()
    whole.refresh_population()
    handler, journal, _ = handler_for(budget=10)
    handler.engine = engine = stale_cuts()
    progress = Progress(ready=True)
    slices = 0

    async def settle_while_revoked() -> None:
        nonlocal slices
        slices += 1
        await handler.settle()
        progress.rebalancing = True  # the partitions were revoked while that slice was sent

    timers = Timers(SLICED, engine, progress, None, set, settle_while_revoked)  # type: ignore[arg-type]
    asyncio.run(timers.refresh_population())
    first = min(engine.lanes)
    assert slices == 1 and progress.half_done == {first}
    assert [c.partition for c in journal.commits()] == [first]
    assert all(engine.has_pending_population(p) for p in engine.lanes if p != first)
    customers = sorted(engine.lanes[first].customers)
    assert [dump_state(engine.store[c]) for c in customers] != [
        dump_state(whole.store[c]) for c in customers
    ]  # half done
    again = recovered(durable_of(engine))
    for _ in again.settle_steps(first, had_record=True, budget=10):
        again.commits()
    assert [dump_state(again.store[c]) for c in customers] == [
        dump_state(whole.store[c]) for c in customers
    ]


def test_a_rebalance_stops_the_wall_clocks_day_and_leaves_every_lane_half_done() -> None:
    handler, journal = wall_clock_with_a_day_due()
    progress = Progress(ready=True)

    async def settle_while_revoked() -> None:
        await handler.settle()
        progress.rebalancing = True

    engine = handler.engine
    timers = Timers(SLICED, engine, progress, None, set, settle_while_revoked)  # type: ignore[arg-type]
    asyncio.run(timers.tick_clock())
    assert len(journal.commits()) == 1  # the first slice, then nothing more is decided
    assert progress.half_done == set(engine.lanes)  # which lane the day stopped in: any


def test_a_rebalance_stops_a_rule_switch_before_its_lanes_are_marked_done() -> None:
    """The switch stops at the chunk the rebalance interrupted; the lanes keep the old rules
    version, so the recovery of the new assignment re-evaluates them (stale_under_rules)."""
    handler, journal, _ = handler_for(budget=10)
    run(handler, records_of(*(order(f"C{i}", day=1) for i in range(120))))
    journal.entries.clear()
    old_version = handler.engine.rules.version
    chunks: list[int] = []

    async def stopped(customer_ids: Sequence[str]) -> bool:
        chunks.append(len(customer_ids))
        await handler.reevaluate(customer_ids)
        return False  # a rebalance began during this chunk

    chunked = Settings(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", rules_dir=ROOT / "rules", rules_chunk_size=40
    )
    control = control_for(handler, chunked)
    control.reevaluate = stopped
    asyncio.run(control.accept_rules(Latest(rules_from(STRICTER, "new.yaml"), 8, [])))
    assert chunks == [40]  # no chunk after the interrupted one (of three)
    records = [c.lane["rules_version"] for c in journal.commits()]
    assert records and set(records) == {old_version}
