"""Regressions of issue 10 through real workers: input that used to stop the service, and cut
points that used to churn after the input stopped."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from segstream.runtime.settings import TOPIC_OF_TYPE
from segstream.synth import SynthConfig, generate
from tests.integration.conftest import Deployment, produce, read_all
from tests.integration.test_worker import wait_for

GOOD = {
    "event_id": "ok",
    "type": "order",
    "customer_id": "C1",
    "order_id": "o1",
    "occurred_at": "2026-01-05T10:00:00Z",
    "amount": "20.00",
    "status": "completed",
}
OUT_OF_RANGE = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2300-01-01T00:00:00Z"]


def test_events_dated_out_of_range_go_to_the_dlq_and_the_worker_goes_on(
    deployment: Deployment,
) -> None:
    """The 9999 order crashed the worker that owned its partition, then the one that took the
    partition over; years 0001 and 2300 were accepted (2300 moved the event clock ahead)."""
    deployment.partitions = 2
    first, second = deployment.start_worker(), deployment.start_worker()
    first.wait_ready()
    second.wait_ready()
    bad = [
        GOOD | {"event_id": f"bad{i}", "order_id": f"b{i}", "occurred_at": when}
        for i, when in enumerate(OUT_OF_RANGE)
    ]
    later = GOOD | {"event_id": "later", "order_id": "o2", "occurred_at": "2026-01-06T10:00:00Z"}
    asyncio.run(produce(deployment, [orjson.dumps(e) for e in [*bad, GOOD, later]]))

    dlq = asyncio.run(read_all(deployment, "segstream-dlq", until=lambda r: len(r) >= 3))
    assert (
        sorted(dict(r.headers)["segstream.error.reason"] for r in dlq)
        == [b"occurred_at_out_of_range"] * 3
    )
    changes = asyncio.run(read_all(deployment, "segment-changes", until=lambda r: len(r) >= 1))
    assert changes and all(orjson.loads(r.value)["at"] < "2026-01-07" for r in changes)
    assert first.proc.poll() is None and second.proc.poll() is None
    explained = wait_for(lambda: first.get("/customers/C1").json(), 30)
    assert explained["state"]["orders_total"] == 2
    assert explained["as_of"].startswith("2026-01-06")


def test_cut_points_do_not_churn_after_the_input_stops(deployment: Deployment) -> None:
    """With two workers sharing KLL sketches, 58 customer/family pairs changed two or more
    times with cause `population` after the last event, until the sketches settled. Each
    partition now refreshes from its own values: once its input is processed, at most once."""
    config = SynthConfig(customers=3000, events=40_000, seed=3)
    lines = [orjson.dumps(event) for event in generate(config)]
    workers = [deployment.start_worker(), deployment.start_worker()]
    for worker in workers:
        worker.wait_ready()
    ends = asyncio.run(produce_acknowledged(deployment, lines, per_second=2500))
    asyncio.run(wait_committed(deployment, ends))
    time.sleep(4.0)  # eight refresh periods (0.5 s in tests): any churn would show
    records = asyncio.run(read_all(deployment, "segment-changes", idle=3.0))
    bodies = [(record.timestamp, orjson.loads(record.value)) for record in records]
    last_event = max(t for t, body in bodies if body["cause"]["kind"] == "event")
    visited: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t, body in bodies:
        if t > last_event and body["cause"]["kind"] == "population":
            path = visited[(body["customer_id"], body["family"])]
            path.extend([str(body["from"])] if not path else [])
            path.append(str(body["to"]))
    flips = {key: path for key, path in visited.items() if len(set(path)) < len(path)}
    assert flips == {}, flips
    assert all(w.proc.poll() is None for w in workers)


async def produce_acknowledged(
    dep: Deployment, lines: list[bytes], per_second: float
) -> dict[TopicPartition, int]:
    """Send keyed lines to their type's topic at a pace, as a live feed arrives; the end offset
    of every partition written."""
    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        futures = []
        started = asyncio.get_running_loop().time()
        for n, line in enumerate(lines):
            if n % 100 == 0:
                ahead = started + n / per_second - asyncio.get_running_loop().time()
                await asyncio.sleep(max(ahead, 0))
            body = orjson.loads(line)
            topic = dep.topic(TOPIC_OF_TYPE[body["type"]])
            futures.append(await producer.send(topic, line, key=body["customer_id"].encode()))
        ends: dict[TopicPartition, int] = {}
        for meta in await asyncio.gather(*futures):
            tp = TopicPartition(meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


async def wait_committed(dep: Deployment, ends: dict[TopicPartition, int]) -> None:
    """Until the group committed every input record: all of it processed and written."""
    group = AIOKafkaConsumer(
        bootstrap_servers=dep.bootstrap, group_id=dep.topic("app"), enable_auto_commit=False
    )
    await group.start()
    try:
        deadline = asyncio.get_running_loop().time() + 120
        while asyncio.get_running_loop().time() < deadline:
            committed = {tp: await group.committed(tp) or 0 for tp in ends}
            if all(committed[tp] >= end for tp, end in ends.items()):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"input not committed: {committed} < {ends}")
    finally:
        await group.stop()
