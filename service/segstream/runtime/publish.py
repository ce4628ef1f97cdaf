"""``segstream rules publish DIR``: validate locally, then send to the rules topic."""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from segstream.core.rulelang import RuleErrors, RuleSet, load_rules
from segstream.runtime.connection import unreachable
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


async def _publish(
    settings: Settings, rules: RuleSet, directory: str, allow_removal: bool, shadow: bool = False
) -> int:
    await ensure_topics(settings)
    running = None if allow_removal or shadow else await running_rules(settings)
    dropped = dropped_segments(running, rules) if running is not None else []
    if running is not None and dropped:
        print(
            f"refused: {directory} drops {', '.join(dropped)} of the running rule set "
            f"{running.version}; pass {ALLOW_REMOVAL} to publish it anyway",
            file=sys.stderr,
        )
        return 2
    await _send(settings, rules_message(rules, shadow=shadow), rules.version)
    return 0


def _cluster_settings() -> Settings | None:
    settings = load_settings()
    if not settings.bootstrap_servers:
        print("set KAFKA_BOOTSTRAP_SERVERS to the cluster the workers use", file=sys.stderr)
        return None
    return settings


def promote_rules(version: str, *, allow_removal: bool = False) -> int:
    """Make the shadow set ``version`` live: republished as a live set (same key: compaction
    keeps the live record)."""
    settings = _cluster_settings()
    if settings is None:
        return 2
    problem = asyncio.run(unreachable(settings))
    if problem is not None:
        print(f"refused: {problem}; nothing was promoted", file=sys.stderr)
        return 1
    latest = asyncio.run(read_latest_rules(settings))
    shadow = latest.shadow
    if shadow is None or shadow.version != version:
        running = f"shadow {shadow.version}" if shadow is not None else "no shadow rule set"
        print(
            f"refused: {version} is not the shadow rule set on {settings.topic_rules}"
            f" ({running}); publish it with `segstream rules publish DIR --shadow` first",
            file=sys.stderr,
        )
        return 2
    try:
        code = asyncio.run(_publish(settings, shadow, f"shadow {version}", allow_removal))
    except KafkaError as exc:
        print(f"refused: {exc}; nothing was promoted", file=sys.stderr)
        return 1
    if code == 0:
        print(f"promoted {version}: it is the live rule set on {settings.topic_rules}")
    return code


def publish_rules(directory: str, *, allow_removal: bool = False, shadow: bool = False) -> int:
    try:
        rules = load_rules(directory)
    except RuleErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print("refused: the rule set is invalid; nothing was published", file=sys.stderr)
        return 2
    settings = _cluster_settings()
    if settings is None:
        return 2
    problem = asyncio.run(unreachable(settings))
    if problem is not None:
        print(f"refused: {problem}; nothing was published", file=sys.stderr)
        return 1
    try:
        code = asyncio.run(_publish(settings, rules, directory, allow_removal, shadow))
    except KafkaError as exc:
        print(f"refused: {exc}; nothing was published", file=sys.stderr)
        return 1
    if code == 0:
        kind = "as the shadow rule set " if shadow else ""
        print(f"published {rules.version} {kind}to {settings.topic_rules}")
    return code
