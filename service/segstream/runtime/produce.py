"""Batched produce: one aiokafka ``BatchBuilder`` per topic-partition, not one send per record.

``AIOKafkaProducer.send`` costs tens of microseconds per record (metadata lookup, partitioner,
a future per message); a worker batch writes thousands of changes and state records, so the
per-record path was about a third of the worker's time. Records are grouped by topic and
partition (Kafka's default murmur2 partitioner for keyed records, as ``send`` would pick),
appended to builders, and each builder is queued with ``send_batch``: one future per batch.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from aiokafka.producer.message_accumulator import BatchBuilder

from segstream.core.partitioning import murmur_partition

Header = tuple[str, bytes]


# (topic, key, value, partition or None for "by key", headers): a plain tuple, built per record
OutRecord = tuple[str, bytes | None, bytes | None, int | None, list[Header]]


class Written(NamedTuple):
    """Where a batch of records landed: offsets ``base_offset .. base_offset + records - 1``."""

    topic: str
    partition: int
    base_offset: int
    records: int


class BatchProducer:
    """Sends groups of records through a started ``AIOKafkaProducer`` (looked up per call,
    because faust creates its producer when the app starts)."""

    def __init__(self, producer: Callable[[], Any]) -> None:
        self._current = producer
        self._partitions: dict[str, list[int]] = {}

    async def partitions(self, topic: str) -> list[int]:
        known = self._partitions.get(topic)
        if known is None:
            found = await self._current().partitions_for(topic)
            known = self._partitions[topic] = sorted(found)
        return known

    async def send(self, records: Iterable[OutRecord]) -> list[Written]:
        """Queue every record and wait until the broker acknowledged all of them."""
        groups: dict[tuple[str, int], list[OutRecord]] = {}
        for record in records:
            topic, key, _, partition, _ = record
            if partition is None:
                partition = _by_key(key, await self.partitions(topic))
            groups.setdefault((topic, partition), []).append(record)
        if not groups:
            return []
        producer = self._current()
        pending: list[tuple[str, int, int, asyncio.Future[Any]]] = []
        for (topic, partition), items in groups.items():
            batch, count = producer.create_batch(), 0
            for _, key, value, _, headers in items:
                appended = batch.append(timestamp=None, key=key, value=value, headers=headers)
                if appended is None:  # full: queue it and start another
                    future = await producer.send_batch(batch, topic, partition=partition)
                    pending.append((topic, partition, count, future))
                    batch, count = producer.create_batch(), 0
                    if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                        raise ValueError(f"a record for {topic} does not fit in a producer batch")
                count += 1
            future = await producer.send_batch(batch, topic, partition=partition)
            pending.append((topic, partition, count, future))
        results = await asyncio.gather(*(future for *_, future in pending))
        return [
            Written(topic, partition, meta.offset, count)
            for (topic, partition, count, _), meta in zip(pending, results, strict=True)
        ]

    async def send_atomic(
        self, topic: str, partition: int, records: list[OutRecord], max_bytes: int
    ) -> tuple[list[Written], bool]:
        """Send ``records`` to one topic-partition as ONE record batch, which a broker appends
        whole or not at all: a commit that a crash cannot cut in half. Returns where they
        landed and whether they fitted; records beyond ``max_bytes`` go in further batches."""
        producer = self._current()
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        batch, count = BatchBuilder(max_bytes, 0), 0
        for _, key, value, _, headers in records:
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                pending.append(
                    (count, await producer.send_batch(batch, topic, partition=partition))
                )
                batch, count = BatchBuilder(max_bytes, 0), 0
                if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    raise ValueError(f"a record for {topic} does not fit in {max_bytes} bytes")
            count += 1
        pending.append((count, await producer.send_batch(batch, topic, partition=partition)))
        results = await asyncio.gather(*(future for _, future in pending))
        written = [
            Written(topic, partition, meta.offset, n)
            for (n, _), meta in zip(pending, results, strict=True)
        ]
        return written, len(written) == 1


def _by_key(key: bytes | None, partitions: list[int]) -> int:
    """aiokafka's DefaultPartitioner (Java client compatible) for a keyed record."""
    if key is None:
        return random.choice(partitions)  # spreads unkeyed records, as aiokafka does
    return partitions[murmur_partition(key, len(partitions))]


__all__ = ["BatchProducer", "OutRecord", "Written", "murmur_partition"]
