"""Does a replacement recover every customer? The check that found the lost-changelog defect.

    python -m bench.recovery_check 200000     # first N events of the scale file (2.5M ids)

One RocksDB worker consumes the events and is stopped (SIGTERM) as soon as its consumed counter
reaches them, as the scale stage does; then the changelog is read back with a plain consumer
(distinct keys) and a replacement starts on an empty disk. All three counts must agree.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import stream
from bench.common import events_file
from segstream.runtime.broker import EmbeddedBroker


async def changelog_keys(bootstrap: str, topic: str) -> tuple[int, int]:
    """Distinct keys and records in ``topic``, read until 5 s pass without a record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    keys: set[bytes | None] = set()
    records = idle = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(stream.PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while idle < 5:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            idle = 0 if fetched else idle + 1
            for batch in fetched.values():
                keys.update(r.key for r in batch)
                records += len(batch)
    finally:
        await consumer.stop()
    return len(keys), records


def main() -> None:
    count = int(sys.argv[1])
    lines = events_file(2_000_000, 2_500_000).read_bytes().splitlines()[:count]
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedBroker() as broker:
        tmp, boot = Path(tmp_name), broker.bootstrap
        prefix = f"rc-{uuid.uuid4().hex[:6]}-"
        asyncio.run(stream._topics(boot, prefix))
        asyncio.run(stream.produce_lines(boot, lines, stream.prefixed(prefix)))
        own = f"{prefix}own"
        held = stream.consume_then_stop(boot, prefix, tmp, own, count, store="rocksdb://")
        keys, records = asyncio.run(changelog_keys(boot, f"{prefix}app-customers-changelog"))
        seconds, recovered = stream.time_to_ready(
            boot, prefix, tmp, f"{prefix}empty", store="rocksdb://"
        )
        print(
            f"held {held['customers']:,}; changelog {keys:,} distinct keys in {records:,} records; "
            f"replacement recovered {recovered:,} in {seconds:.1f} s",
            "OK" if held["customers"] == keys == recovered else "MISMATCH",
        )


if __name__ == "__main__":
    main()
