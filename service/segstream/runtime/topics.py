"""Create missing topics and refuse to run on a topic layout that would lose state.

Kafka keeps a customer on the partition its key hashes to, and faust restores a worker's
state from the changelog partition with the same number as the input partition it owns: when
the input topics, ``segment-changes`` and the changelog disagree on the partition count, a
replacement worker silently recovers only part of its customers. Nothing downstream can detect
that, so the worker checks the layout before it starts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segstream.runtime.settings import Settings

log = logging.getLogger("segstream.topics")

#: Topics read as "latest value per key": compaction keeps them small without losing the
#: rule sets (one key per version), customers' states and partitions' lane records.
COMPACT = {"cleanup.policy": "compact"}
TOPIC_ALREADY_EXISTS = 36


class TopicLayoutError(RuntimeError):
    """The cluster's topics cannot serve this worker; the message says what to change."""


@dataclass(frozen=True)
class TopicSpec:
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def changelog_topic(s: Settings) -> str:
    """faust names a table's changelog ``<app_id>-<table>-changelog``; our table is
    ``customers``."""
    return f"{s.app_id}-customers-changelog"


def copartitioned_topics(s: Settings) -> list[str]:
    """Topics whose partition N must hold the same customers."""
    return [*s.input_topics, s.topic_changes, changelog_topic(s)]


def wanted_topics(s: Settings) -> dict[str, TopicSpec]:
    """Control topics have one partition: every worker reads them whole. The changelog is
    created here, exactly as faust would, so that its partition count is checked before faust
    starts rather than discovered at the first recovery."""
    topics = {name: TopicSpec(s.partitions) for name in s.input_topics}
    topics |= {s.topic_changes: TopicSpec(s.partitions), s.topic_dlq: TopicSpec(s.partitions)}
    topics |= {
        s.topic_rules: TopicSpec(1, COMPACT),
        s.topic_groups: TopicSpec(1, COMPACT),
        s.topic_group_snapshots: TopicSpec(1),
        changelog_topic(s): TopicSpec(s.partitions, COMPACT),
    }
    return topics


def creation_errors(response: Any) -> list[str]:
    """Per-topic errors of a CreateTopics response; a topic another worker created between
    our listing and our request is not an error."""
    return [
        f"{topic}: {message or f'error code {code}'}"
        for topic, code, message, *_ in response.topic_errors
        if code not in (0, TOPIC_ALREADY_EXISTS)
    ]


def partition_mismatches(s: Settings, counts: dict[str, int]) -> str | None:
    """One line naming every co-partitioned topic whose count differs from the setting."""
    wrong = {
        t: counts[t] for t in copartitioned_topics(s) if counts.get(t, s.partitions) != s.partitions
    }
    if not wrong:
        return None
    found = ", ".join(f"{t}={n}" for t, n in wrong.items())
    return (
        f"refusing to start: input topics, {s.topic_changes} and {changelog_topic(s)} must all "
        f"have SEGSTREAM_PARTITIONS={s.partitions} partitions, but {found}; a worker would "
        "recover only part of its customers. Recreate those topics (or set "
        "SEGSTREAM_PARTITIONS to match, if every topic agrees)"
    )


async def ensure_topics(s: Settings, *, check_partitions: bool = False) -> list[str]:
    """Create missing topics; with ``check_partitions``, raise TopicLayoutError unless the
    co-partitioned topics all have ``s.partitions`` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers, **s.kafka_client_options())
    await admin.start()
    try:
        wanted = wanted_topics(s)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, spec.partitions, s.replication_factor, topic_configs=spec.configs)
            for name, spec in wanted.items()
            if name not in existing
        ]
        if missing:
            errors = creation_errors(await admin.create_topics(missing))
            if errors:
                raise TopicLayoutError("could not create topics: " + "; ".join(errors))
            log.info("created topics: %s", ", ".join(t.name for t in missing))
        if check_partitions:
            described = await admin.describe_topics(copartitioned_topics(s))
            counts = {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}
            problem = partition_mismatches(s, counts)
            if problem:
                raise TopicLayoutError(problem)
        return [t.name for t in missing]
    finally:
        await admin.close()


def ensure_topics_sync(s: Settings, *, check_partitions: bool = False) -> list[str]:
    return asyncio.run(ensure_topics(s, check_partitions=check_partitions))
