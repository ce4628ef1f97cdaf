"""Round-trip through the embedded Tansu broker with plain aiokafka clients."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

N_MESSAGES = 1000
N_PARTITIONS = 4


async def test_produce_consume_roundtrip(kafka_bootstrap: str) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, N_PARTITIONS, 1)])
        described = await admin.describe_topics([topic])
        assert len(described[0]["partitions"]) == N_PARTITIONS
    finally:
        await admin.close()

    expected = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(N_MESSAGES)}
    # Not idempotent: Tansu rejects InitProducerId.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in expected.items()]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert {m.partition for m in metadata} == set(range(N_PARTITIONS))

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(30):
            while len(received) < N_MESSAGES:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for rec in records:
                        assert rec.key not in received, "duplicate delivery"
                        received[rec.key] = rec.value
        await consumer.commit()
    finally:
        await consumer.stop()

    assert received == expected
