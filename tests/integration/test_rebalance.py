"""Rebalances through real workers, where the batch path follows faust's own rules: records
fetched in a consumer generation that changed are not processed, recovery ends only once
faust's recovery really ended, and offset gaps are committed past. A worker started by
tests/integration/held_fetch.py holds a fetch back until the generation changes, so that the
rebalance lands while fetched records wait."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from segstream.core.partitioning import partition_for
from tests.faults.checker import check_changes, compare_segments, final_segments
from tests.integration.conftest import Deployment, WorkerProcess, load_events, produce, read_all
from tests.integration.test_worker import SAMPLE, metric, offline_segments, wait_for

HELD = "tests.integration.held_fetch"
HOLDING = re.compile(r"held-fetch: holding (\d+) (input|changelog) records of generation (\d+)")


def _partitions(worker: WorkerProcess) -> list[int]:
    try:
        response = worker.get("/readyz")
    except Exception:
        return []
    return list(response.json().get("partitions", [])) if response.status_code == 200 else []


def _split_over(workers: list[WorkerProcess]) -> bool:
    """Every worker is ready and the four partitions are split between them."""
    owned = [_partitions(worker) for worker in workers]
    return all(owned) and sorted(p for ps in owned for p in ps) == [0, 1, 2, 3]


def _held(worker: WorkerProcess, kind: str) -> tuple[int, int] | None:
    """(records, generation) of the fetch the worker holds back, once it does."""
    for count, held_kind, generation in HOLDING.findall(worker.log.read_text()):
        if held_kind == kind:
            return int(count), int(generation)
    return None


def _changes_settle_on(deployment: Deployment, expected: dict[str, Any]) -> list[Any]:
    def settled(records: list[Any]) -> bool:
        bodies = [orjson.loads(r.value) for r in records]
        got = final_segments(bodies)
        return compare_segments(got, expected, absent_is_default=True).pairs == 0

    records = asyncio.run(read_all(deployment, "segment-changes", until=settled))
    return [orjson.loads(r.value) for r in records]


def test_records_fetched_before_a_rebalance_are_not_processed_and_nothing_is_lost(
    deployment: Deployment,
) -> None:
    """A worker mid-stream holds a fetch of input records while a second worker joins; once the
    rebalance is done, those records are dropped unprocessed (the log says how many), then read
    again from the committed offsets by whichever worker owns them now. Every change arrives,
    duplicates carry the ids of the first delivery, and the final segments equal the replay."""
    lines = load_events(SAMPLE)
    half = len(lines) // 2
    first = deployment.start_worker(module=HELD)
    first.wait_ready()
    asyncio.run(produce(deployment, lines[:half]))
    assert wait_for(lambda: metric(first, "segstream_events_consumed_total") > 0, 60)
    asyncio.run(produce(deployment, lines[half:]))
    held = wait_for(lambda: _held(first, "input"), 60)
    assert held, first.log.read_text()[-3000:]
    count, generation = held

    second = deployment.start_worker()
    dropped = f"not processing {count} input records fetched in consumer generation {generation}"
    assert wait_for(lambda: dropped in first.log.read_text(), 90), first.log.read_text()[-3000:]
    assert wait_for(lambda: _split_over([first, second]), 120)

    expected = offline_segments(SAMPLE)
    report = check_changes(_changes_settle_on(deployment, expected))
    assert report.lost == {} and report.conflicts == {}


def test_a_rebalance_mid_recovery_ends_recovery_only_once_every_customer_is_back(
    deployment: Deployment,
) -> None:
    """A worker joining a deployment holds its first fetch of the changelog it recovers while a
    third worker joins. faust gives up that recovery and still calls the tables' recover
    callbacks (with nothing read) before it recovers again: the worker takes its customers only
    from the recovery that read the changelog to the end, so the three hold every customer.
    Before, it adopted the empty partitions and never looked at them again."""
    lines = load_events(SAMPLE)
    first = deployment.start_worker()
    first.wait_ready()
    asyncio.run(produce(deployment, lines))
    expected = offline_segments(SAMPLE)
    _changes_settle_on(deployment, expected)

    second = deployment.start_worker(module=HELD)
    held = wait_for(lambda: _held(second, "changelog"), 90)
    assert held, second.log.read_text()[-3000:]
    third = deployment.start_worker()
    workers = [first, second, third]
    assert wait_for(lambda: "held-fetch: released" in second.log.read_text(), 90)
    assert "a rebalance interrupted the recovery" in second.log.read_text()
    assert wait_for(lambda: _split_over(workers), 180)

    def held_customers() -> int:
        return sum(int(worker.get("/segments").json()["customers"]) for worker in workers)

    assert wait_for(lambda: held_customers() == len(expected), 30), held_customers()
    for worker in workers:
        owned = set(_partitions(worker))
        want = sum(1 for customer in expected if partition_for(customer, 4) in owned)
        assert worker.get("/segments").json()["customers"] == want


def test_offset_gaps_are_committed_past(deployment: Deployment) -> None:
    """Input partitions whose offsets jump (as compacted or transactional topics do): every
    record is processed once and the committed offsets reach each partition's end."""
    first = deployment.start_worker()
    first.wait_ready()
    orders = [line for line in load_events(SAMPLE) if b'"type":"order"' in line][:400]
    ends = asyncio.run(_send_with_gaps(deployment, orders))
    assert wait_for(lambda: metric(first, "segstream_events_consumed_total") >= len(orders), 60)
    assert wait_for(lambda: asyncio.run(_committed(deployment, list(ends))) == ends, 30)
    assert metric(first, "segstream_events_consumed_total") == len(orders)


async def _send_with_gaps(deployment: Deployment, lines: list[bytes]) -> dict[TopicPartition, int]:
    """Send ``lines`` to the orders topic by customer partition, in record batches of four
    whose offsets skip two after the second record and one between batches (the broker keeps
    the batch's offset deltas). Returns each partition's end offset."""
    topic = deployment.topic("orders")
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for line in lines:
        by_partition[partition_for(orjson.loads(line)["customer_id"], 4)].append(line)
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, enable_idempotence=False)
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        for partition, items in by_partition.items():
            for start in range(0, len(items), 4):
                batch = producer.create_batch()
                for delta, line in zip((0, 1, 4, 5), items[start : start + 4], strict=False):
                    batch._relative_offset = delta  # the offset delta of the next record
                    key = orjson.loads(line)["customer_id"].encode()
                    batch.append(timestamp=None, key=key, value=line, headers=[])
                meta = await (await producer.send_batch(batch, topic, partition=partition))
                ends[TopicPartition(topic, partition)] = meta.offset + delta + 1
    finally:
        await producer.stop()
    return ends


async def _committed(deployment: Deployment, tps: list[TopicPartition]) -> dict[Any, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap,
        group_id=f"{deployment.prefix}app",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
