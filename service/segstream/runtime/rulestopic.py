"""The rules topic: how a rule set travels, and which one is running.

Workers and ``segstream rules publish`` must agree on the running rule set, or a restarted
worker and a publisher's removal check would each pick their own: it is the newest *valid*
record of the topic, whatever invalid records follow it. Anyone can write to the topic, so a
record is untrusted input; reading it never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from segstream.core.rulelang import RuleErrors, RuleSet, compile_rules
from segstream.runtime.settings import Settings

_SHAPE = 'a rules message is {"version": ..., "files": {name: yaml text}, "shadow": bool}'


def rules_message(rules: RuleSet, *, shadow: bool = False) -> bytes:
    body: dict[str, object] = {"version": rules.version, "files": rules.source_files}
    if shadow:
        body["shadow"] = True
    return orjson.dumps(body)


def rules_from_message(value: bytes) -> RuleSet:
    return read_message(value)[0]


def read_message(value: bytes) -> tuple[RuleSet, bool]:
    """The rule set of a message, and whether it is a shadow set."""
    body = orjson.loads(value)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ValueError(_SHAPE)
    shadow = body.get("shadow", False)
    if not isinstance(shadow, bool):
        raise ValueError(_SHAPE)
    return compile_rules({str(k): v for k, v in files.items()}), shadow


@dataclass(frozen=True, slots=True)
class Refused:
    offset: int
    reason: str


@dataclass(slots=True)
class Latest:
    """The newest valid rule set of the topic (None if it has none) and where reading stopped."""

    rules: RuleSet | None
    next_offset: int
    refused: list[Refused] = field(default_factory=list)
    # the newest valid shadow set newer than ``rules``, when ``shadow_seen``; a shadow set
    # runs until the next live set is published (promoted or not)
    shadow: RuleSet | None = None
    shadow_seen: bool = False


def newest_valid(records: Sequence[tuple[int, bytes | None]]) -> Latest:
    """Newest first, so older sets are never compiled; the invalid ones newer than the chosen
    set are returned with their reasons."""
    refused: list[Refused] = []
    next_offset = records[-1][0] + 1 if records else 0
    shadow: RuleSet | None = None
    shadow_seen = False
    for offset, value in reversed(records):
        try:
            if value is None:
                raise ValueError("empty record")
            rules, is_shadow = read_message(value)
        except RuleErrors as exc:
            shown = "; ".join(str(e) for e in exc.errors[:5])
            more = f" (and {len(exc.errors) - 5} more)" if len(exc.errors) > 5 else ""
            refused.append(Refused(offset, shown + more))
        except Exception as exc:  # untrusted input: whatever it does, it is refused, not fatal
            refused.append(Refused(offset, f"{type(exc).__name__}: {exc}"[:500]))
        else:
            if is_shadow:
                if not shadow_seen:
                    shadow, shadow_seen = rules, True
                continue
            if shadow is not None and shadow.version == rules.version:
                shadow = None  # published as shadow, then made live
            return Latest(rules, next_offset, refused[::-1], shadow, shadow_seen)
    return Latest(None, next_offset, refused[::-1], shadow, shadow_seen)


def rules_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer outside any group: every worker reads the rules topic whole."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )


async def read_latest_rules(settings: Settings) -> Latest:
    """Read the rules topic from its beginning to its end offset at the time of the call."""
    consumer = rules_consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic_rules, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end: int = (await consumer.end_offsets([tp]))[tp]
        records: list[tuple[int, bytes | None]] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            records += [(r.offset, r.value) for r in batch.get(tp, [])]
        latest = newest_valid(records)
        latest.next_offset = end
        return latest
    finally:
        await consumer.stop()
