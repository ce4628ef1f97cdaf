"""The batch handler: input records in; state writes, change events and DLQ records out.

No faust here. The handler talks to two small interfaces, a :class:`StateLog` that writes a
partition's commit atomically and an :class:`Outbox` that sends records; the worker wires them
to the changelog and the producer, and the unit tests to in-memory fakes, so "what a batch of
500 events does to state and output" is a millisecond test (tests/unit/test_handler.py).

Order of effects, the contract the crash tests check: a slice's commits are written (and
acknowledged) before any of its changes is sent, and the changes are confirmed to the engine
only after the outbox acknowledged them (docs/runtime.md, Determinism).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from segstream.core.contracts import Rejection
from segstream.core.engine import Change, Commit, Engine, Ingested
from segstream.core.timeutil import parse_timestamp
from segstream.runtime.metrics import Metrics
from segstream.runtime.produce import OutRecord

Header = tuple[str, bytes]
LEAVING = ("exited", "downgraded")


async def decide_in_slices(
    steps: Iterator[None], settle: Callable[[], Awaitable[None]], rebalancing: Callable[[], bool]
) -> bool:
    """:meth:`BatchHandler.settle_each` for work a rebalance must be able to stop (clock
    ticks, population refreshes, rule switches): once ``rebalancing()`` says one began, stop
    at the next pause, with everything decided so far written and sent, and return False.
    The caller then has the engine's half-done lanes reloaded from the store once the new
    assignment is recovered, which finishes the work as after a crash at that pause.

    A worker that kept deciding wrote for partitions that another worker may already have
    recovered: the group evicts a member whose revocation waits too long (here for the batch
    that waited for this work's lock), and two workers then decided one customer's next
    changes differently (the soak of 2026-12-02: 2,050 ``seq`` with two ids)."""
    while not rebalancing():
        try:
            next(steps)
        except StopIteration:
            await settle()
            return True
        await settle()
    return False


class InputRecord(Protocol):
    """What the handler reads of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[Header]: ...


class StateLog(Protocol):
    async def write(self, commits: list[Commit]) -> None:
        """Write each commit as one atomic unit; return once all are durable."""


class Outbox(Protocol):
    async def send(self, records: list[OutRecord]) -> object:
        """Send records (topic, key, value, partition or None, headers); return once acked."""


@dataclass(frozen=True, slots=True)
class Topics:
    changes: str
    dlq: str
    source: str  # CloudEvents source


def cloudevent_headers(change: Change, source: str) -> list[Header]:
    """CloudEvents 1.0 binary-mode headers, so CloudEvents-aware consumers read changes as is."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", change["event_id"].encode()),
        ("ce_source", source.encode()),
        ("ce_type", f"segstream.segment.{change['change']}".encode()),
        ("ce_subject", change["customer_id"].encode()),
        ("ce_time", change["at"].encode()),
        ("content-type", b"application/json"),
    ]


def transition_label(tier: str | bool | None) -> str:
    """A transition metric's from/to label: the tier, ``none`` for no tier, ``in``/``out``
    for a flag (docs/runtime.md, Metrics)."""
    if tier is None:
        return "none"
    if isinstance(tier, bool):
        return "in" if tier else "out"
    return tier


def dlq_headers(record: InputRecord, reason: str, message: str) -> list[Header]:
    """The original headers plus context headers modelled on Kafka Connect's DLQ."""
    return [
        *(record.headers or ()),
        ("segstream.error.reason", reason.encode()),
        ("segstream.error.message", message[:1000].encode()),
        ("segstream.source.topic", record.topic.encode()),
        ("segstream.source.partition", str(record.partition).encode()),
        ("segstream.source.offset", str(record.offset).encode()),
    ]


class BatchHandler:
    """Applies fetched batches to the engine and writes what they decided, in order."""

    def __init__(
        self,
        engine: Engine,
        topics: Topics,
        state_log: StateLog,
        outbox: Outbox,
        metrics: Metrics,
        *,
        commit_max_items: int = 400,
        wall_clock: bool = False,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        self.engine = engine
        self.topics = topics
        self.state_log = state_log
        self.outbox = outbox
        self.metrics = metrics
        self.commit_max_items = commit_max_items
        self.wall_clock = wall_clock
        self.on_change = on_change
        # (family, from, to) -> customers moved since this process started (the page's flows)
        self.flows: Counter[tuple[str, str, str]] = Counter()

    async def handle(self, records: Sequence[InputRecord], wall_ms: int) -> None:
        """Apply one fetched batch. A large fetch goes in slices of about
        ``commit_max_items``: each slice's changes are sent (and confirmed) before the next
        slice is decided, so a lane record carries one slice's unconfirmed changes, not the
        whole fetch's."""
        consumed: Counter[tuple[str, str]] = Counter()  # one metric update per label
        stamps: list[int] = []
        if self.wall_clock:
            # a new day's due customers, in commit-sized slices, before any record would
            # run them all inside one (a commit that outgrows one record batch can lose its
            # changes in a crash: docs/runtime.md, Determinism)
            for _ in self.engine.advance_steps(wall_ms, self.commit_max_items):
                await self.settle()  # the rest goes with the first slice of records
        start = 0
        while start < len(records):
            started = time.perf_counter()
            outputs: list[OutRecord] = []
            start = await self._apply(records, start, outputs, stamps, consumed, wall_ms)
            self.metrics.evaluation.observe(time.perf_counter() - started)
            await self.emit(self.engine.commits(), outputs)
        metrics = self.metrics
        for limit, n in self.engine.take_limit_hits().items():
            metrics.limit_hits.labels(limit=limit).inc(n)
        for (topic, kind), n in consumed.items():
            metrics.consumed.labels(topic=topic, type=kind).inc(n)
        now = time.time()
        for stamp in stamps:
            metrics.latency.observe(max(now - stamp / 1000, 0.0))

    async def _apply(
        self,
        records: Sequence[InputRecord],
        start: int,
        outputs: list[OutRecord],
        stamps: list[int],
        consumed: Counter[tuple[str, str]],
        wall_ms: int,
    ) -> int:
        """Apply records from ``start`` until one partition's pending work reaches the commit
        budget; returns where it stopped. A record whose event runs many other evaluations
        (a day's due customers, a population refresh) is committed in slices inside it."""
        engine, metrics, dlq = self.engine, self.metrics, self.topics.dlq
        budget = self.commit_max_items
        for index in range(start, len(records)):
            record = records[index]
            if record.value is None:  # a tombstone deletes nothing here: docs/contracts.md
                metrics.tombstones.labels(topic=record.topic).inc()
                continue
            partition = record.partition
            steps = engine.ingest_steps(
                record.value,
                partition,
                wall_ms=wall_ms,
                now_ms=wall_ms,
                reroute=True,
                budget=budget,
            )
            if isinstance(steps, Ingested):
                ingested = steps
            else:
                ingested = await self._drive(steps, outputs)
            parsed = ingested.parsed
            if isinstance(parsed, Rejection):
                reason = parsed.reason.value
                metrics.invalid.labels(reason=reason).inc()
                consumed[(record.topic, "invalid")] += 1
                headers = dlq_headers(record, reason, parsed.message)
                outputs.append((dlq, record.key, record.value, None, headers))
                continue
            consumed[(record.topic, parsed.type)] += 1
            if ingested.foreign:
                # keyed by something else: send it on to its customer's partition
                metrics.rerouted.labels(topic=record.topic).inc()
                headers = list(record.headers or ())
                key = parsed.customer_id.encode()
                outputs.append((record.topic, key, record.value, None, headers))
                continue
            if ingested.changes:
                stamps.extend(record.timestamp for _ in ingested.changes)
            if engine.pending(partition) >= budget:
                return index + 1
        return len(records)

    async def _drive(
        self, steps: Generator[None, None, Ingested], outputs: list[OutRecord]
    ) -> Ingested:
        """Run a record that runs many evaluations, committing (with the slice's outputs so
        far) at each of its pauses."""
        while True:
            try:
                next(steps)
            except StopIteration as done:
                ingested: Ingested = done.value
                return ingested
            await self.emit(self.engine.commits(), outputs)
            outputs.clear()

    async def emit(self, commits: list[Commit], outputs: list[OutRecord]) -> None:
        """Write the commits, then send their changes and the other outputs, then confirm.
        A crash before a commit is written decides again from the input; after it, recovery
        re-sends its changes (same ids) and decides nothing twice; an output is never sent
        before the state that produced it is written."""
        if commits:
            await self.state_log.write(commits)
        topic, source = self.topics.changes, self.topics.source
        transitions: Counter[tuple[str, str, str, str]] = Counter()
        for commit in commits:
            for change in commit.changes:
                key = change["customer_id"].encode()
                headers = cloudevent_headers(change, source)
                outputs.append((topic, key, orjson.dumps(change), None, headers))
                label = (
                    change["family"],
                    transition_label(change["from"]),
                    transition_label(change["to"]),
                    change["change"],
                )
                transitions[label] += 1
                if self.on_change is not None:
                    self.on_change(change)
        self._health(commits)
        for (family, old, new, kind), n in transitions.items():
            self.flows[(family, old, new)] += n
            self.metrics.transitions.labels(
                family=family, from_segment=old, to_segment=new, change=kind
            ).inc(n)
        if outputs:
            await self.outbox.send(outputs)
        self.engine.confirm(commit.partition for commit in commits)

    def _health(self, commits: list[Commit]) -> None:
        """Segment health: when each segment last moved anyone, how long after their window
        boundary clock-driven exits go out, and rule evaluation errors. One metric update per
        segment and slice, not per change: label lookups cost more than the rest of it."""
        metrics = self.metrics
        now = time.time()
        moved: set[tuple[str, str]] = set()
        for commit in commits:
            for change in commit.changes:
                moved.add((change["family"], change["segment"]))
                if change["cause"]["kind"] == "clock" and change["change"] in LEAVING:
                    due = parse_timestamp(change["at"]) / 1000
                    metrics.exit_delay.labels(family=change["family"]).observe(max(now - due, 0.0))
        for family, segment in moved:
            metrics.segment_last_change.labels(family=family, segment=segment).set(now)
        errors = self.engine.rules.take_errors()
        for segment, n in errors.items():
            metrics.rule_errors.labels(segment=segment).inc(n)
        moved_in_shadow = self.engine.take_shadow_transitions()
        shadow = self.engine.shadow_rules
        if shadow is not None:
            for (family, old, new, kind), n in moved_in_shadow.items():
                metrics.shadow_transitions.labels(
                    ruleset=shadow.version,
                    family=family,
                    from_segment=old,
                    to_segment=new,
                    change=kind,
                ).inc(n)

    async def reevaluate(self, customer_ids: Sequence[str]) -> bool:
        """Re-evaluate customers under the current rules, committing (and sending) whenever a
        lane's pending work reaches the commit budget, as the batch path does: a commit that
        outgrows one record batch is written in several, and a crash between them leaves
        customers stored with segments whose changes are never sent (their lane record, which
        carries the changes to re-send, is written last: docs/runtime.md, Determinism).
        Always to the end (True); the worker's own, which a rebalance stops, returns False
        when stopped."""
        await self.settle_each(self.engine.reevaluate_steps(customer_ids, self.commit_max_items))
        return True

    async def settle_each(self, steps: Iterator[None]) -> None:
        """Run engine work that pauses at the commit budget (its ``*_steps`` methods),
        committing and sending at each pause and once it is done."""
        for _ in steps:
            await self.settle()
        await self.settle()

    async def settle(self) -> None:
        """Commit and emit whatever the engine decided outside the batch path (clock ticks,
        refreshes, rule switches, recovery)."""
        await self.emit(self.engine.commits(), [])
