"""Feed a deployment, inject faults on a seeded schedule, settle, collect, check.

One run: generate the input (``workload``), start the workers, feed the input at a paced
rate while a chaos task injects faults at points of the feed, wait until all input is consumed
and ``segment-changes`` has been quiet for a while, then read the change topic and the DLQ
whole, ask the workers for every customer's segments, and judge it all with ``checker``
against the offline replay (``reference``).

Fault kinds (``Fault.kind``):

- ``kill``: SIGKILL a worker at a random point under load (mid-batch, or between a state write
  and an offset commit: wherever it lands) and start another in its place (``FaultPlan.mode``);
- ``recovery``: SIGKILL a worker, start its replacement, and SIGKILL that one too once its HTTP
  server answers and before its ``/readyz`` is 200 (mid-recovery), then start a third;
- ``rules``: ``segstream rules publish FaultPlan.rules_dir``, then SIGKILL a worker as soon as it
  runs the new set (its customers are being re-evaluated) and restart it;
- ``add`` / ``stop``: start one more worker / stop one gracefully (SIGTERM): rebalances;
- ``pause``: SIGSTOP the broker for ``Fault.seconds``, then SIGCONT (needs the broker's pid).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
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

from segstream.core.rulelang import load_rules
from segstream.runtime.broker import EmbeddedBroker
from segstream.runtime.settings import TOPIC_OF_TYPE
from tests.faults.checker import ChangeReport, SegmentDiff, check_changes, compare_segments
from tests.faults.checker import final_segments as segments_from_changes
from tests.faults.reference import RULES, Reference, replay_reference
from tests.faults.workload import Workload, generate_lines
from tests.integration.conftest import Deployment, WorkerProcess, read_all
from tests.integration.test_worker import wait_for

Ends = dict[TopicPartition, int]  # end offset of every input partition the feed wrote
EXPLAIN, EXPLAIN_CHARS = 3, 3000  # customers whose worker state a failed run shows, and how much
KINDS = ("kill", "recovery", "rules", "add", "stop", "pause")


@dataclass(frozen=True)
class Fault:
    at: float  # fraction of the feed; 1.0 = after its end
    kind: str  # one of KINDS
    seconds: float = 0.0  # pause: how long the broker stays stopped

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"unknown fault kind {self.kind!r}"


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
    faults: tuple[Fault, ...] = ()  # the other fault kinds, at fixed points of the feed
    rules_dir: Path | None = None  # what a ``rules`` fault publishes; the replay then uses it

    def without_kills(self, name: str = "never killed") -> FaultPlan:
        return replace(self, name=name, kills=0, fixed_points=(), faults=())


@dataclass(frozen=True)
class Kill:
    """One injected fault (the name is historical: most are kills)."""

    fed: int  # input lines handed to the producer when the fault landed
    slot: int
    mode: str  # restart / replace (kill), or the fault kind
    seconds: float  # since the feed started
    sigkills: int = 1  # worker processes SIGKILLed by this fault
    note: str = ""


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


def schedule(plan: FaultPlan, total: int) -> list[tuple[int, Fault]]:
    """Every fault of the plan at its input line, in feed order (kills first on a tie)."""
    kills = [(point, Fault(point / max(total, 1), "kill")) for point in kill_points(plan, total)]
    others = [(int(total * fault.at), fault) for fault in plan.faults]
    return sorted(kills + others, key=lambda item: (item[0], item[1].kind != "kill"))


def broker_pid(broker: EmbeddedBroker) -> int:
    """The Tansu process's pid: EmbeddedBroker keeps its Popen in a private name."""
    proc = getattr(broker, "_proc", None)
    assert proc is not None and proc.poll() is None, "the broker is not running"
    return int(proc.pid)


def run(plan: FaultPlan, bootstrap: str, tmp: Path, *, broker: int | None = None) -> Outcome:
    """``broker``: the broker's pid, needed by ``pause`` faults only."""
    assert broker is not None or all(f.kind != "pause" for f in plan.faults), "pause needs a pid"
    assert plan.rules_dir is not None or all(f.kind != "rules" for f in plan.faults)
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
        kills, ends = asyncio.run(_drive(dep, slots, plan, lines, broker))
        phases.append(("feed+kills", time.monotonic()))
        changes = asyncio.run(_settle(dep, slots, plan, ends))
        phases.append(("settle", time.monotonic()))
        rules = plan.rules_dir if any(k.mode == "rules" for k in kills) else None
        reference = replay_reference(source, partitions=plan.partitions, rules_dir=rules or RULES)
        phases.append(("replay", time.monotonic()))
        customers = sorted(set(reference.segments) | {c["customer_id"] for c in changes})
        served = worker_segments(_live(slots).worker, customers)
        differ = compare_segments(served, reference.segments).differ
        explained = [
            _explain(_live(slots).worker, c) for c in sorted({c for c, _ in differ})[:EXPLAIN]
        ]
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
            ),
            *(f"{k.mode} at {k.fed}: {k.note}" for k in kills if k.note),
            *explained,
        ],
    )


def compare_with_baseline(outcome: Outcome, baseline: Outcome) -> None:
    """Final segments of a killed run against a never-killed run of the same input, over the
    families both know (a ``rules`` fault adds one the baseline never ran)."""
    known = {f for segments in baseline.worker_segments.values() for f in segments or {}}
    mine = {
        customer: None if segments is None else {f: v for f, v in segments.items() if f in known}
        for customer, segments in outcome.worker_segments.items()
    }
    outcome.vs_baseline = compare_segments(mine, baseline.worker_segments)


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
    dep: Deployment, slots: list[Slot], plan: FaultPlan, lines: list[bytes], broker: int | None
) -> tuple[list[Kill], Ends]:
    planned = schedule(plan, len(lines))
    progress = _Progress([point for point, _ in planned])
    chaos = _Chaos(dep, slots, plan, progress, broker)
    task = asyncio.create_task(chaos.run(planned))
    try:
        ends = await _feed(dep, lines, plan.rate, progress)
        return await task, ends
    finally:
        task.cancel()


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


class _Chaos:
    """Injects the plan's faults at their points of the feed. Before each fault every worker is
    ready again (ready, not caught up: close points hit a worker still working off its
    backlog); after the last one, settling waits for them."""

    def __init__(
        self,
        dep: Deployment,
        slots: list[Slot],
        plan: FaultPlan,
        progress: _Progress,
        broker: int | None,
    ) -> None:
        self.dep, self.slots, self.plan, self.progress, self.broker = (
            dep,
            slots,
            plan,
            progress,
            broker,
        )
        self.rng = random.Random(f"victims-{plan.kill_seed}")
        self.begin = time.monotonic()

    async def run(self, planned: list[tuple[int, Fault]]) -> list[Kill]:
        kills: list[Kill] = []
        for n, (point, fault) in enumerate(planned):
            await self.progress.waiting[point].wait()
            if n:
                await self._all_ready()
            kills.append(await getattr(self, f"_{fault.kind}")(fault))
        return kills

    def _record(self, slot: int, mode: str, sigkills: int = 1, note: str = "") -> Kill:
        return Kill(self.progress.fed, slot, mode, time.monotonic() - self.begin, sigkills, note)

    async def _all_ready(self) -> None:
        for slot in list(self.slots):
            await asyncio.to_thread(slot.worker.wait_ready, 120)

    def _replace(self, index: int, mode: str) -> None:
        """SIGKILL the worker in slot ``index`` and start another there at once: on the same
        data directory (restart) or a new one (replace)."""
        slot = self.slots[index]
        slot.worker.kill()
        data_of = slot.data if mode == "restart" else None
        data = slot.data if mode == "restart" else len(self.dep.workers)
        self.slots[index] = Slot(
            self.dep.start_worker(store=self.plan.store, data_of=data_of), data
        )

    def _mode(self) -> str:
        plan = self.plan
        return plan.mode if plan.mode != "mixed" else self.rng.choice(("restart", "replace"))

    async def _kill(self, fault: Fault) -> Kill:
        index, mode = self.rng.randrange(len(self.slots)), self._mode()
        self._replace(index, mode)
        return self._record(index, mode)

    async def _recovery(self, fault: Fault) -> Kill:
        """Kill, then kill the replacement while it starts: once its HTTP server answers
        (it is taking partitions or recovering their state) and before /readyz says 200."""
        index = self.rng.randrange(len(self.slots))
        self._replace(index, "restart")
        starting = self.slots[index].worker
        answered = await asyncio.to_thread(_wait_http, starting, 60)
        await asyncio.sleep(self.rng.uniform(0.0, 0.5))
        status = _status(starting)
        self._replace(index, self._mode())
        note = f"second kill {answered:.1f}s after its HTTP server answered; /readyz was {status}"
        return self._record(index, "recovery", 2, note)

    async def _rules(self, fault: Fault) -> Kill:
        """Publish the plan's rule set, then kill a worker as soon as it runs it."""
        assert self.plan.rules_dir is not None
        version = load_rules(self.plan.rules_dir).version
        published = await asyncio.to_thread(
            self.dep.cli, "rules", "publish", str(self.plan.rules_dir)
        )
        assert published.returncode == 0, published.stderr
        index = self.rng.randrange(len(self.slots))
        victim = self.slots[index].worker
        waited = await asyncio.to_thread(_wait_rules, victim, version, 30)
        self._replace(index, "restart")
        note = f"{version} published; victim ran it {waited:.2f}s later and was killed at once"
        return self._record(index, "rules", 1, note)

    async def _add(self, fault: Fault) -> Kill:
        data = len(self.dep.workers)
        self.slots.append(Slot(self.dep.start_worker(store=self.plan.store), data))
        return self._record(len(self.slots) - 1, "add", 0)

    async def _stop(self, fault: Fault) -> Kill:
        assert len(self.slots) > 1, "a stop fault needs a second worker"
        index = self.rng.randrange(len(self.slots))
        slot = self.slots.pop(index)
        started = time.monotonic()
        await asyncio.to_thread(slot.worker.stop)
        code = slot.worker.proc.returncode
        note = f"SIGTERM: exited {code} in {time.monotonic() - started:.1f}s"
        return self._record(index, "stop", 0, note)

    async def _pause(self, fault: Fault) -> Kill:
        assert self.broker is not None
        os.kill(self.broker, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            os.kill(self.broker, signal.SIGCONT)
        return self._record(-1, f"pause {fault.seconds:g}s", 0)


def _wait_http(worker: WorkerProcess, timeout: float) -> float:
    """Seconds until the worker's HTTP server answers at all (any status)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout and worker.proc.poll() is None:
        try:
            worker.get("/healthz")
            return time.monotonic() - started
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"worker HTTP never answered: {worker.log.read_text()[-2000:]}")


def _status(worker: WorkerProcess) -> str:
    try:
        return str(worker.get("/readyz").status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _wait_rules(worker: WorkerProcess, version: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if worker.get("/segments").json().get("rules_version") == version:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"worker did not switch to rules {version} in {timeout}s")


# -- settle and collect ------------------------------------------------------------------------


async def _settle(
    dep: Deployment, slots: list[Slot], plan: FaultPlan, ends: Ends
) -> list[dict[str, Any]]:
    """Read ``segment-changes`` until every partition is assigned, the group has committed
    every input record, no partition waits for a population refresh, and no change has
    arrived for ``plan.quiet`` seconds since all of that first held; return it all.

    The quiet period is counted again from the moment the workers were all ready: a
    replacement sends what it recovered (re-sent changes, a rules pass) just before it says
    ready, and a check that returned at once then missed those changes, although they were
    on the topic (the fault suite's "final topic != worker state" failures of 2026-12-02,
    once in 11 local runs: every change of the rules fault's victim missing).

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
        settled_since: float | None = None  # when everything last began to hold
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
                if (
                    not behind
                    and await asyncio.to_thread(_assigned, slots, plan.partitions)
                    and await asyncio.to_thread(_refreshed, slots)
                ):
                    if settled_since is None or last > settled_since:
                        settled_since = loop.time()  # read for a whole quiet period more
                    elif loop.time() - settled_since > plan.quiet:
                        return changes
                else:
                    settled_since = None
            if loop.time() > deadline:
                raise AssertionError(
                    f"not settled in {plan.settle_timeout}s: input not committed {behind}, "
                    f"changes quiet for {loop.time() - last:.1f}s; worker logs in {dep.tmp}"
                )
    finally:
        await consumer.stop()
        await group.stop()


PENDING_REFRESH = "segstream_population_refresh_pending"


def _refreshed(slots: list[Slot]) -> bool:
    """No partition waits for its quiet-input population refresh, whose changes are still to
    come and could come after the quiet period on a loaded machine."""
    for slot in slots:
        try:
            text = slot.worker.get("/metrics").text
        except httpx.HTTPError:
            return False
        pending = [line for line in text.splitlines() if line.startswith(PENDING_REFRESH + " ")]
        if not pending or float(pending[0].rsplit(" ", 1)[1]) != 0:
            return False
    return True


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


def _explain(worker: WorkerProcess, customer: str) -> str:
    """What the worker says of a customer whose segments differ from the replay's."""
    response = worker.get(f"/customers/{customer}")
    return f"worker's {customer}: {response.text[:EXPLAIN_CHARS]}"


def dlq_headers(record: Any) -> list[tuple[str, str]]:
    return [(k, v.decode(errors="replace")) for k, v in record.headers or ()]


def _source(record: Any) -> tuple[str, str, str]:
    headers = dict(dlq_headers(record))
    return (
        headers.get("segstream.source.topic", ""),
        headers.get("segstream.source.partition", ""),
        headers.get("segstream.source.offset", ""),
    )
