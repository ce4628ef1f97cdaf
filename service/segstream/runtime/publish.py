"""``segstream rules publish DIR``: validate locally, then send to the rules topic."""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaProducer

from segstream.core.rulelang import RuleErrors, load_rules
from segstream.runtime.settings import Settings
from segstream.runtime.topics import ensure_topics
from segstream.runtime.worker import rules_message


async def _send(settings: Settings, value: bytes) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
    )
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_rules, value, key=b"rules", partition=0)
    finally:
        await producer.stop()


def publish_rules(directory: str) -> int:
    try:
        rules = load_rules(directory)
    except RuleErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print("refused: the rule set is invalid; nothing was published", file=sys.stderr)
        return 2
    settings = Settings()
    if not settings.bootstrap_servers:
        print("set KAFKA_BOOTSTRAP_SERVERS to the cluster the workers use", file=sys.stderr)
        return 2
    asyncio.run(_send(settings, rules_message(rules)))
    print(f"published {rules.version} to {settings.topic_rules}")
    return 0
