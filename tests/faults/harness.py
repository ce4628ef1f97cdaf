"""Feed a deployment, SIGKILL its workers on a seeded schedule, settle, collect, check.

One run: generate the input (``workload``), start the workers, feed the input at a paced
rate while a chaos task kills and restarts workers at points of the feed, wait until all input
is consumed and ``segment-changes`` has been quiet for a while, then read the change topic and
the DLQ whole, ask the workers for every customer's segments, and judge it all with
``checker`` against the offline replay (``reference``).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.faults.checker import ChangeReport, SegmentDiff, check_changes, compare_segments
from tests.faults.checker import final_segments as segments_from_changes
from tests.faults.reference import Reference, replay_reference
from tests.faults.workload import Workload, generate_lines
from tests.integration.conftest import TOPIC_OF_TYPE, Deployment, WorkerProcess, read_all
from tests.integration.test_worker import wait_for

Ends = dict[TopicPartition, int]  # end offset of every input partition the feed wrote


@dataclass(frozen=True)
class FaultPlan:
    workload: Workload = field(default_factory=Workload)
    name: str = "run"
    rate: float = 2_500.0  # input lines per second
    workers: int = 1
    store: str = "memory://"
    partitions: int = 4
    kills: int = 2  # kill points drawn at random (kill_seed) between 5% and 95% of the feed
    fixed_points: tuple[float, ...] = ()  # more, as fractions of the feed; 1.0 = after the end
    kill_seed: int = 1
    mode: str = "restart"  # restart (same data dir), replace (new data dir), or mixed
    quiet: float = 4.0  # settled: no new change for this long, and no lag
    settle_timeout: float = 180.0

    def without_kills(self, name: str = "never killed") -> FaultPlan:
        return replace(self, name=name, kills=0, fixed_points=())


@dataclass(frozen=True)
class Kill:
    fed: int  # input lines handed to the producer when the kill landed
    slot: int
    mode: str
    seconds: float  # since the feed started


@dataclass
class Slot:
    """A worker position: the process now in it and the data directory it started with."""

    worker: WorkerProcess
    data: int


@dataclass
class Outcome:
    plan: FaultPlan
    lines: int
    kills: list[Kill]
    report: ChangeReport
    topic_vs_replay: SegmentDiff
    worker_vs_replay: SegmentDiff
    topic_vs_worker: SegmentDiff  # the change topic does not end where the workers' state is
    dlq: Counter[str]
    dlq_missing: int  # invalid input lines that never reached the DLQ
    reference: Reference
    worker_segments: dict[str, Any]
    seconds: float
    vs_baseline: SegmentDiff | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.report.lost_changes
            or self.report.conflicts
            or self.report.chain_breaks
            or self.topic_vs_replay.pairs
            or self.worker_vs_replay.pairs
            or self.topic_vs_worker.pairs
            or self.dlq_missing
        )


def kill_points(plan: FaultPlan, total: int) -> list[int]:
    rng = random.Random(f"kill-points-{plan.kill_seed}")
    drawn = [int(total * rng.uniform(0.05, 0.95)) for _ in range(plan.kills)]
    return sorted(drawn + [int(total * f) for f in plan.fixed_points])


def run(plan: FaultPlan, bootstrap: str, tmp: Path) -> Outcome:
    started = time.monotonic()
    tmp.mkdir(parents=True, exist_ok=True)
    lines = generate_lines(plan.workload)
    source = tmp / "input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    dep = Deployment(bootstrap, f"f{uuid.uuid4().hex[:8]}-", tmp, partitions=plan.partitions)
    slots: list[Slot] = []
    try:
        for _ in range(plan.workers):
            data = len(dep.workers)
            slots.append(Slot(dep.start_worker(store=plan.store), data))
        for slot in slots:
            slot.worker.wait_ready()
        assert wait_for(lambda: _assigned(slots, plan.partitions), 60), "partitions not assigned"
        phases = [("start", time.monotonic())]
        kills, ends = asyncio.run(_drive(dep, slots, plan, lines))
        phases.append(("feed+kills", time.monotonic()))
        changes = asyncio.run(_settle(dep, slots, plan, ends))
        phases.append(("settle", time.monotonic()))
        reference = replay_reference(source, partitions=plan.partitions)
        phases.append(("replay", time.monotonic()))
        customers = sorted(set(reference.segments) | {c["customer_id"] for c in changes})
        served = worker_segments(_live(slots).worker, customers)
        dlq = asyncio.run(read_all(dep, "segstream-dlq", idle=1.0))
        phases.append(("collect", time.monotonic()))
    finally:
        for worker in dep.workers:
            worker.stop()
    from_topic = segments_from_changes(changes)
    served_known = {c: s for c, s in served.items() if s is not None}
    reasons = Counter(dict(dlq_headers(r)).get("segstream.error.reason", "?") for r in dlq)
    sources = {_source(r) for r in dlq}
    return Outcome(
        plan=plan,
        lines=len(lines),
        kills=kills,
        report=check_changes(changes),
        topic_vs_replay=compare_segments(from_topic, reference.segments, absent_is_default=True),
        worker_vs_replay=compare_segments(served, reference.segments),
        topic_vs_worker=compare_segments(from_topic, served_known, absent_is_default=True),
        dlq=reasons,
        dlq_missing=max(sum(reference.invalid.values()) - len(sources), 0),
        reference=reference,
        worker_segments=served,
        seconds=time.monotonic() - started,
        notes=[
            "phases: "
            + ", ".join(
                f"{name} {end - start:.1f}s"
                for (name, end), (_, start) in zip(phases, [("", started), *phases], strict=False)
            )
        ],
    )


def compare_with_baseline(outcome: Outcome, baseline: Outcome) -> None:
    """Final segments of a killed run against a never-killed run of the same input."""
    outcome.vs_baseline = compare_segments(outcome.worker_segments, baseline.worker_segments)


# -- feed and chaos ----------------------------------------------------------------------------


class _Progress:
    """How far the feed is; the chaos task waits on it for its kill points."""

    def __init__(self, points: list[int]) -> None:
        self.fed = 0
        self.waiting = {point: asyncio.Event() for point in points}

    def advance(self, fed: int, *, done: bool = False) -> None:
        self.fed = fed
        for point, reached in self.waiting.items():
            if done or point <= fed:
                reached.set()


async def _drive(
    dep: Deployment, slots: list[Slot], plan: FaultPlan, lines: list[bytes]
) -> tuple[list[Kill], Ends]:
    points = kill_points(plan, len(lines))
    progress = _Progress(points)
    chaos = asyncio.create_task(_chaos(dep, slots, plan, points, progress))
    try:
        ends = await _feed(dep, lines, plan.rate, progress)
        return await chaos, ends
    finally:
        chaos.cancel()


async def _feed(dep: Deployment, lines: list[bytes], rate: float, progress: _Progress) -> Ends:
    """Every line to the input topic of its type (unparseable ones to orders), keyed by
    customer_id, ``rate`` lines per second. Returns the end offset of each partition from the
    producer's acks (Tansu's ListOffsets(latest) is not the true end, docs/runtime.md)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=dep.bootstrap, enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        futures = []
        for index, line in enumerate(lines):
            topic, key = _route(dep, line)
            futures.append(await producer.send(topic, line, key=key))
            if index % 25 == 0:
                progress.advance(index + 1)
                await asyncio.sleep(max(begin + index / rate - loop.time(), 0))
        ends: Ends = {}
        for meta in await asyncio.gather(*futures):
            tp = TopicPartition(meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        progress.advance(len(lines), done=True)
        return ends
    finally:
        await producer.stop()


def _route(dep: Deployment, line: bytes) -> tuple[str, bytes | None]:
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return dep.topic("orders"), None
    topic = dep.topic(TOPIC_OF_TYPE.get(str(body.get("type")), "orders"))
    customer = body.get("customer_id")
    return topic, str(customer).encode() if customer else None


async def _chaos(
    dep: Deployment, slots: list[Slot], plan: FaultPlan, points: list[int], progress: _Progress
) -> list[Kill]:
    """SIGKILL a worker at each kill point and start another in its place at once; the next
    kill waits until that one is ready (ready, not caught up: close points kill a worker that
    is still working off its backlog)."""
    rng = random.Random(f"victims-{plan.kill_seed}")
    begin = time.monotonic()
    kills: list[Kill] = []
    for point in points:
        await progress.waiting[point].wait()
        index = rng.randrange(len(slots))
        mode = plan.mode if plan.mode != "mixed" else rng.choice(("restart", "replace"))
        slot = slots[index]
        slot.worker.kill()
        kills.append(Kill(progress.fed, index, mode, time.monotonic() - begin))
        data_of = slot.data if mode == "restart" else None
        data = slot.data if mode == "restart" else len(dep.workers)
        slots[index] = Slot(dep.start_worker(store=plan.store, data_of=data_of), data)
        if point != points[-1]:  # after the last kill, settling waits for it
            await asyncio.to_thread(slots[index].worker.wait_ready, 120)
    return kills


# -- settle and collect ------------------------------------------------------------------------


async def _settle(
    dep: Deployment, slots: list[Slot], plan: FaultPlan, ends: Ends
) -> list[dict[str, Any]]:
    """Read ``segment-changes`` until every partition is assigned, the group has committed
    every input record, and no change has arrived for ``plan.quiet`` seconds; return it all.

    Not the workers' lag gauge: a restarted worker reports a partition it has read nothing
    from since the restart as lagging by its whole high watermark (its position is unset)."""
    consumer = AIOKafkaConsumer(
        dep.topic("segment-changes"),
        bootstrap_servers=dep.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    # reads the group's committed offsets (OffsetFetch) without joining it; aiokafka's admin
    # client cannot parse Tansu's OffsetFetch answer
    group = AIOKafkaConsumer(
        bootstrap_servers=dep.bootstrap, group_id=dep.topic("app"), enable_auto_commit=False
    )
    await consumer.start()
    await group.start()
    changes: list[dict[str, Any]] = []
    behind: dict[TopicPartition, int] = dict(ends)
    try:
        loop = asyncio.get_running_loop()
        deadline, last = loop.time() + plan.settle_timeout, loop.time()
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                changes.extend(orjson.loads(r.value) for r in records)
                last = loop.time() if records else last
            if loop.time() - last > plan.quiet:
                committed = {tp: await group.committed(tp) or 0 for tp in ends}
                behind = {
                    tp: end - committed[tp] for tp, end in ends.items() if committed[tp] < end
                }
                if not behind and await asyncio.to_thread(_assigned, slots, plan.partitions):
                    return changes
            if loop.time() > deadline:
                raise AssertionError(
                    f"not settled in {plan.settle_timeout}s: input not committed {behind}, "
                    f"changes quiet for {loop.time() - last:.1f}s; worker logs in {dep.tmp}"
                )
    finally:
        await consumer.stop()
        await group.stop()


def _assigned(slots: list[Slot], partitions: int) -> bool:
    owned: list[int] = []
    for slot in slots:
        try:
            response = slot.worker.get("/readyz")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        owned += response.json().get("partitions", [])
    return sorted(owned) == list(range(partitions))


def _live(slots: list[Slot]) -> Slot:
    return next(s for s in slots if s.worker.proc.poll() is None)


def worker_segments(worker: WorkerProcess, customers: list[str]) -> dict[str, Any]:
    """Each customer's segments as the workers serve them (faust routes to the owner); None
    for a customer no worker knows."""

    def one(client: httpx.Client, customer: str) -> Any:
        response = client.get(f"{worker.url}/customers/{customer}")
        return response.json().get("segments") if response.status_code == 200 else None

    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        return dict(zip(customers, pool.map(lambda c: one(client, c), customers), strict=True))


def dlq_headers(record: Any) -> list[tuple[str, str]]:
    return [(k, v.decode(errors="replace")) for k, v in record.headers or ()]


def _source(record: Any) -> tuple[str, str, str]:
    headers = dict(dlq_headers(record))
    return (
        headers.get("segstream.source.topic", ""),
        headers.get("segstream.source.partition", ""),
        headers.get("segstream.source.offset", ""),
    )
