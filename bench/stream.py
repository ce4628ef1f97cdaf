"""Streaming benchmarks against an embedded broker started here: ceiling, faust baseline,
the segstream worker (one and two), produce-to-change latency, recovery."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segstream.runtime.broker import free_port
from segstream.runtime.main import spawn_worker
from segstream.runtime.settings import TOPIC_OF_TYPE, isolated_env

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4


async def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def produce_lines(bootstrap: str, lines: list[bytes], topic_for: Any) -> float:
    """Produce keyed lines; returns seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for line in lines:
            body = orjson.loads(line)
            pending.append(
                await producer.send(topic_for(body), line, key=body["customer_id"].encode())
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def ceiling(bootstrap: str, topic: str, n: int) -> float:
    """Raw aiokafka getmany + orjson.loads: messages per second."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"ceil-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen, started = 0, 0.0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if not started and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def baseline(bootstrap: str, topic: str, n: int, tmp: Path) -> float:
    env = os.environ | {
        "BENCH_BOOTSTRAP": bootstrap,
        "BENCH_TOPIC": topic,
        "BENCH_N": str(n),
        "BENCH_APP_ID": f"baseline-{uuid.uuid4().hex[:6]}",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.baseline_app",
            "--datadir",
            str(tmp / "baseline"),
            "worker",
            "-l",
            "warn",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    found = re.search(r"RESULT (\d+) ([\d.]+)", done.stdout + done.stderr)
    if found:  # faust redirects stdout into its log
        return int(found.group(1)) / float(found.group(2))
    raise RuntimeError(f"baseline failed: {done.stderr[-2000:]}")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    url: str

    def metric(self, name: str) -> float:
        total = 0.0
        try:
            text = httpx.get(self.url + "/metrics", timeout=10).text
        except httpx.HTTPError:
            return -1.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_worker(bootstrap: str, prefix: str, tmp: Path, name: str, **settings: str) -> Worker:
    port = free_port()
    env = isolated_env(
        prefix,
        bootstrap,
        partitions=str(PARTITIONS),
        rules_dir=str(ROOT / "rules"),
        web_port=str(port),
        data_dir=str(tmp / name),
        session_timeout_seconds="6",
        **({"clock": "event"} | settings),
    )
    return Worker(spawn_worker(env, tmp / f"{name}.log"), f"http://127.0.0.1:{port}")


def wait_until(check: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def prefixed(prefix: str) -> Any:
    return lambda body: f"{prefix}{TOPIC_OF_TYPE.get(body.get('type'), 'orders')}"


async def _topics(bootstrap: str, prefix: str) -> None:
    """The input and output topics, so events can wait in them before a worker starts."""
    names = [f"{prefix}{t}" for t in (*TOPIC_OF_TYPE.values(), "segment-changes")]
    await create_topics(bootstrap, names)


def worker_run(bootstrap: str, lines: list[bytes], tmp: Path, workers: int) -> dict[str, Any]:
    """Events already in the topics; time from the workers being ready to the last one consumed."""
    prefix = f"w{workers}-{uuid.uuid4().hex[:6]}-"
    asyncio.run(_topics(bootstrap, prefix))
    asyncio.run(produce_lines(bootstrap, lines, prefixed(prefix)))
    procs = [start_worker(bootstrap, prefix, tmp, f"{prefix}{i}") for i in range(workers)]
    try:
        # the clock starts when the first worker can consume: later joiners' rebalances count
        if not wait_until(lambda: any(p.ready() for p in procs), 120):
            raise RuntimeError("workers not ready")
        started = time.perf_counter()
        total = len(lines)

        def consumed() -> float:
            return sum(max(p.metric("segstream_events_consumed_total"), 0) for p in procs)

        if not wait_until(lambda: consumed() >= total, 3600):
            raise RuntimeError(f"only {consumed()} of {total} consumed")
        seconds = time.perf_counter() - started
        rss = [_rss_kib(p.proc.pid) for p in procs]
        return {
            "events": total,
            "workers": workers,
            "seconds": round(seconds, 2),
            "events_per_second": round(total / seconds),
            "peak_rss_mib": [r // 1024 for r in rss],
            "prefix": prefix,
            "procs": procs,
        }
    except BaseException:
        for p in procs:
            p.stop()
        raise


def time_to_ready(
    bootstrap: str, prefix: str, tmp: Path, name: str, **settings: str
) -> tuple[float, int]:
    """Start a worker on the deployment's state; seconds until it is ready, customers it holds."""
    started = time.perf_counter()
    worker = start_worker(bootstrap, prefix, tmp, name, **settings)
    try:
        if not wait_until(worker.ready, 3600):
            raise RuntimeError(f"{name} did not recover")
        return time.perf_counter() - started, int(worker.metric("segstream_customers_tracked"))
    finally:
        worker.stop()


def recovery_time(bootstrap: str, prefix: str, tmp: Path, procs: list[Worker]) -> float:
    """Stop the workers, start a fresh one on the same state; seconds until it is ready."""
    for p in procs:
        p.stop()
    return time_to_ready(bootstrap, prefix, tmp, f"{prefix}fresh")[0]


def consume_then_stop(
    bootstrap: str, prefix: str, tmp: Path, name: str, total: int, **settings: str
) -> dict[str, Any]:
    """Start a worker on events already in the topics; once it has consumed ``total`` of them,
    read its customers and RSS and stop it (SIGTERM), often while its last batch is still being
    written: the consumed counter moves before a batch's sends."""
    worker = start_worker(bootstrap, prefix, tmp, name, **settings)
    try:
        if not wait_until(worker.ready, 120):
            raise RuntimeError(f"{name} not ready")
        started = time.perf_counter()
        if not wait_until(lambda: worker.metric("segstream_events_consumed_total") >= total, 7200):
            raise RuntimeError(f"{name} did not consume its input")
        return {
            "seconds": time.perf_counter() - started,
            "customers": int(worker.metric("segstream_customers_tracked")),
            "peak_rss_mib": _rss_kib(worker.proc.pid) // 1024,
        }
    finally:
        worker.stop()


def scale_run(bootstrap: str, lines: list[bytes], tmp: Path) -> dict[str, Any]:
    """One worker with the production store (RocksDB) over a feed with many customers: its
    peak RSS, then recovery twice: restarted on its own disk (RocksDB plus the changelog tail,
    as a StatefulSet pod with its volume), and a replacement on an empty disk (the whole
    changelog; Tansu never compacts it, so this replays every state write)."""
    prefix = f"scale-{uuid.uuid4().hex[:6]}-"
    asyncio.run(_topics(bootstrap, prefix))
    asyncio.run(produce_lines(bootstrap, lines, prefixed(prefix)))
    rocksdb = {"store": "rocksdb://"}
    run = consume_then_stop(bootstrap, prefix, tmp, f"{prefix}own-disk", len(lines), **rocksdb)

    restart_seconds, restart_customers = time_to_ready(
        bootstrap, prefix, tmp, f"{prefix}own-disk", **rocksdb
    )
    fresh_seconds, fresh_customers = time_to_ready(
        bootstrap, prefix, tmp, f"{prefix}empty-disk", **rocksdb
    )
    return {
        "events": len(lines),
        "customers": run["customers"],
        "events_per_second": round(len(lines) / run["seconds"]),
        "peak_rss_mib": run["peak_rss_mib"],
        "restart_recovery_seconds": round(restart_seconds, 2),
        "restart_recovered_customers": restart_customers,
        "fresh_recovery_seconds": round(fresh_seconds, 2),
        "fresh_recovered_customers": fresh_customers,
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def _paced_probe(
    bootstrap: str,
    prefix: str,
    lines: list[bytes],
    rate: float,
    read: list[str],
    cause: Any,
    *,
    live: bool = False,
) -> dict[str, Any]:
    """Produce ``lines`` at ``rate``; seconds from each send until a record whose ``cause``
    is that event's id is readable from the ``read`` topics (p50/p99). ``live``: each event
    happens when it is sent (its ``occurred_at`` is the send time, in ms)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )  # the worker's default: 5 ms flooded Tansu with fetches (docs/performance.md, sweep)
    await consumer.start()
    tps = [TopicPartition(topic, p) for topic in read for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    sent: dict[str, float] = {}
    seen: list[float] = []

    async def reader() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event_id = cause(orjson.loads(record.value))
                    if event_id in sent:
                        seen.append(now - sent.pop(event_id))

    reading = asyncio.create_task(reader())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    await producer.start()
    topic_for = prefixed(prefix)
    interval, next_at = 1.0 / rate, time.perf_counter()
    for line in lines:
        body = orjson.loads(line)
        if live:
            body["occurred_at"] = int(time.time() * 1000)
            line = orjson.dumps(body)
        sent[body["event_id"]] = time.perf_counter()
        await producer.send(topic_for(body), line, key=body["customer_id"].encode())
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await producer.stop()
    await asyncio.sleep(3)
    reading.cancel()
    await consumer.stop()
    seen.sort()
    return {
        "rate": rate,
        "events": len(lines),
        "measured": len(seen),
        "p50_ms": round(seen[len(seen) // 2] * 1000, 1),
        "p99_ms": round(seen[int(len(seen) * 0.99)] * 1000, 1),
    }


async def latency_floor(bootstrap: str, lines: list[bytes], rate: float) -> dict[str, Any]:
    """The reference for ``latency``: the same paced feed read back from the input topics by a
    plain aiokafka consumer, no worker. No worker can beat the broker's own round trip."""
    prefix = f"floor-{uuid.uuid4().hex[:6]}-"
    await _topics(bootstrap, prefix)
    inputs = [f"{prefix}{t}" for t in TOPIC_OF_TYPE.values()]
    return await _paced_probe(bootstrap, prefix, lines, rate, inputs, lambda e: e["event_id"])


async def latency_relay_floor(bootstrap: str, lines: list[bytes], rate: float) -> dict[str, Any]:
    """The two-hop floor the worker's latency is held to: a plain relay consumes the inputs and
    produces each record, unchanged, to a relay topic the probe reads (input to relay, relay
    to reader), with the worker's fetch wait. What is left above it is the worker's own."""
    prefix = f"relay-{uuid.uuid4().hex[:6]}-"
    await _topics(bootstrap, prefix)
    relayed = f"{prefix}relayed"
    await create_topics(bootstrap, [relayed])
    inputs = [f"{prefix}{t}" for t in TOPIC_OF_TYPE.values()]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    await consumer.start()
    await producer.start()
    tps = [TopicPartition(topic, p) for topic in inputs for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)

    async def relay() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for record in records:
                    await producer.send(relayed, record.value, partition=tp.partition)

    relaying = asyncio.create_task(relay())
    try:
        return await _paced_probe(
            bootstrap, prefix, lines, rate, [relayed], lambda e: e["event_id"]
        )
    finally:
        relaying.cancel()
        await consumer.stop()
        await producer.stop()


async def latency(bootstrap: str, lines: list[bytes], tmp: Path, rate: float) -> dict[str, Any]:
    """Produce at a steady rate; p50/p99 from send to the change being readable downstream."""
    prefix = f"lat-{uuid.uuid4().hex[:6]}-"
    await _topics(bootstrap, prefix)
    worker = start_worker(bootstrap, prefix, tmp, f"{prefix}0")
    try:
        await asyncio.to_thread(wait_until, worker.ready, 120)
        changes = [f"{prefix}segment-changes"]
        return await _paced_probe(
            bootstrap, prefix, lines, rate, changes, lambda c: c["cause"]["event_id"]
        )
    finally:
        worker.stop()


async def latency_live(
    bootstrap: str, lines: list[bytes], tmp: Path, rate: float
) -> dict[str, Any]:
    """``latency`` for live traffic: each event stamped with the time it is sent, and a worker
    on the wall clock (the production setting). The historical feed on the event clock crosses
    a day every second or so at 2,000 events/s, and each crossing re-evaluates that day's due
    customers in one burst; live traffic crosses one day a day. Both are printed, so the
    share of the gap that comes from compressed time is measured, not argued."""
    prefix = f"live-{uuid.uuid4().hex[:6]}-"
    await _topics(bootstrap, prefix)
    worker = start_worker(bootstrap, prefix, tmp, f"{prefix}0", clock="wall")
    try:
        await asyncio.to_thread(wait_until, worker.ready, 120)
        changes = [f"{prefix}segment-changes"]
        return await _paced_probe(
            bootstrap, prefix, lines, rate, changes, lambda c: c["cause"]["event_id"], live=True
        )
    finally:
        worker.stop()
