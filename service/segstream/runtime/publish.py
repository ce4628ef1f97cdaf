"""``segstream rules publish DIR``: validate locally, then send to the rules topic."""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaProducer

from segstream.core.rulelang import RuleErrors, RuleSet, load_rules
from segstream.runtime.rulestopic import read_latest_rules, rules_message
from segstream.runtime.settings import Settings, load_settings
from segstream.runtime.topics import ensure_topics

ALLOW_REMOVAL = "--allow-removal"


async def _send(settings: Settings, value: bytes, version: str) -> None:
    """Keyed by the rules version: the compacted topic keeps the newest record of every set,
    so an invalid record that follows (whatever its key) can never compact the last valid
    set away."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
    )
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_rules, value, key=version.encode(), partition=0)
    finally:
        await producer.stop()


async def running_rules(settings: Settings) -> RuleSet | None:
    """What the workers run: the newest valid set on the topic, else their rules on disk."""
    latest = await read_latest_rules(settings)
    if latest.rules is not None:
        return latest.rules
    try:
        return load_rules(settings.rules_dir)
    except RuleErrors:
        return None


def dropped_segments(running: RuleSet, new: RuleSet) -> list[str]:
    """Families and flags the new set would drop: their members would silently lose them."""
    return [f"family {name!r}" for name in running.families if name not in new.families] + [
        f"flag {name!r}" for name in running.flags if name not in new.flags
    ]


async def _publish(settings: Settings, rules: RuleSet, directory: str, allow_removal: bool) -> int:
    await ensure_topics(settings)
    running = None if allow_removal else await running_rules(settings)
    dropped = dropped_segments(running, rules) if running is not None else []
    if running is not None and dropped:
        print(
            f"refused: {directory} drops {', '.join(dropped)} of the running rule set "
            f"{running.version}; pass {ALLOW_REMOVAL} to publish it anyway",
            file=sys.stderr,
        )
        return 2
    await _send(settings, rules_message(rules), rules.version)
    return 0


def publish_rules(directory: str, *, allow_removal: bool = False) -> int:
    try:
        rules = load_rules(directory)
    except RuleErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print("refused: the rule set is invalid; nothing was published", file=sys.stderr)
        return 2
    settings = load_settings()
    if not settings.bootstrap_servers:
        print("set KAFKA_BOOTSTRAP_SERVERS to the cluster the workers use", file=sys.stderr)
        return 2
    code = asyncio.run(_publish(settings, rules, directory, allow_removal))
    if code == 0:
        print(f"published {rules.version} to {settings.topic_rules}")
    return code
