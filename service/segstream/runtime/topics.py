"""Create missing topics with the configured partition counts (inputs co-partitioned)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segstream.runtime.settings import Settings

log = logging.getLogger("segstream.topics")


def wanted_topics(s: Settings) -> dict[str, int]:
    """Topic -> partitions. Control topics have one partition: every worker reads them whole."""
    topics = {name: s.partitions for name in s.input_topics}
    topics |= {s.topic_changes: s.partitions, s.topic_dlq: s.partitions}
    topics |= {s.topic_rules: 1, s.topic_population: 1}
    return topics


async def ensure_topics(s: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers, **s.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, s.replication_factor)
            for name, partitions in wanted_topics(s).items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics: %s", ", ".join(t.name for t in missing))
        return [t.name for t in missing]
    finally:
        await admin.close()


def ensure_topics_sync(s: Settings) -> list[str]:
    return asyncio.run(ensure_topics(s))
