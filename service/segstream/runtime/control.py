"""Control topics: the rules topic (which rule set runs) and the groups topic (every
partition's group figures). Every worker reads both whole, outside any consumer group."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import TopicPartition

from segstream.core.engine import Engine
from segstream.core.rulelang import RuleSet
from segstream.runtime.groups import GroupExchange
from segstream.runtime.metrics import Metrics
from segstream.runtime.rulestopic import Latest, newest_valid, read_latest_rules, rules_consumer
from segstream.runtime.settings import Settings

log = logging.getLogger("segstream.worker")


class ControlTopics:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        lock: asyncio.Lock,
        metrics: Metrics,
        groups: GroupExchange,
        settle: Callable[[], Awaitable[None]],
        reevaluate: Callable[[Sequence[str]], Awaitable[bool]],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.lock = lock
        self.metrics = metrics
        self.groups = groups
        self.settle = settle
        self.reevaluate = reevaluate
        self.rules_offset: int | None = None  # where the rules topic was read to, once
        self.rules_sync = asyncio.Lock()

    async def sync_rules(self) -> int:
        """Read the rules topic to its end once, before the worker takes any partition (faust
        awaits on_recovered before it resumes them, and starts app tasks only after): after a
        restart the worker runs the newest valid set on the topic, not the set on disk,
        whatever invalid records follow. Returns the offset to follow the topic from."""
        async with self.rules_sync:
            if self.rules_offset is None:
                latest = await read_latest_rules(self.settings)
                if latest.rules is None:
                    log.info(
                        "no valid rule set on %s; running %s",
                        self.settings.topic_rules,
                        self.settings.rules_dir,
                    )
                await self.accept_rules(latest)
                self.rules_offset = latest.next_offset
            return self.rules_offset

    async def follow(self) -> None:
        """Read the rules and groups topics as records arrive, for the worker's lifetime."""
        s = self.settings
        rules_offset = await self.sync_rules()
        consumer = rules_consumer(s)
        await consumer.start()
        try:
            rules_tp = TopicPartition(s.topic_rules, 0)
            groups_tp = TopicPartition(s.topic_groups, 0)
            consumer.assign([rules_tp, groups_tp])
            consumer.seek(rules_tp, rules_offset)
            await consumer.seek_to_beginning(groups_tp)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                rules_records = [(r.offset, r.value) for r in batches.get(rules_tp, ())]
                self.groups.receive(r.value for r in batches.get(groups_tp, ()))
                if rules_records:
                    await self.accept_rules(newest_valid(rules_records))
        finally:
            await consumer.stop()

    async def accept_rules(self, latest: Latest) -> None:
        for refused in latest.refused:
            self.metrics.rules_rejected.inc()
            log.error(
                "ignoring invalid rule set at %s offset %d: %s",
                self.settings.topic_rules,
                refused.offset,
                refused.reason,
            )
        rules = latest.rules
        if rules is not None and rules.version != self.engine.rules.version:
            async with self.lock:
                self.engine.set_shadow(None)  # a live set published ends the shadow run
            await self.switch_rules(rules)
        if latest.shadow_seen:
            shadow = latest.shadow
            running = self.engine.shadow_rules
            if (shadow and shadow.version) != (running and running.version):
                await self.switch_shadow(shadow)

    async def switch_shadow(self, shadow: RuleSet | None) -> None:
        """Run ``shadow`` beside the live set: every customer compared, in chunks."""
        engine = self.engine
        async with self.lock:
            try:
                engine.set_shadow(shadow)
            except ValueError as exc:
                self.metrics.rules_rejected.inc()
                log.error("ignoring shadow rule set: %s", exc)
                return
            customers = engine.customer_ids() if shadow is not None else []
        if shadow is None:
            log.info("no shadow rule set")
            return
        log.info("shadow rules %s: comparing %d customers", shadow.version, len(customers))
        await self.compare_shadow(customers)

    async def compare_shadow(self, customers: list[str]) -> None:
        await compare_with_shadow(self.engine, self.lock, customers, self.settings.rules_chunk_size)

    async def switch_rules(self, rules: RuleSet) -> None:
        """Re-evaluate every customer in chunks, yielding to the batch path between chunks."""
        engine = self.engine
        async with self.lock:
            engine.set_rules(rules)
            self.metrics.set_rules(rules.version, [*rules.segment_names, *rules.derived])
            customers = engine.customer_ids()
            await self.settle()
        log.info("rules %s active; re-evaluating %d customers", rules.version, len(customers))
        size = self.settings.rules_chunk_size
        for start in range(0, len(customers), size):
            async with self.lock:
                if engine.rules is not rules:
                    return  # a newer rule set took over
                if not await self.reevaluate(customers[start : start + size]):
                    return  # a rebalance began: the new assignment's recovery finishes it
            await asyncio.sleep(0)
        async with self.lock:
            if engine.rules is rules:
                engine.rules_done()
                await self.settle()


async def compare_with_shadow(
    engine: Engine, lock: asyncio.Lock, customers: list[str], chunk: int
) -> None:
    """Compare customers with the shadow set in chunks, yielding to the batch path between
    them; stops if the shadow set is replaced meanwhile."""
    shadow = engine.shadow_rules
    for start in range(0, len(customers), chunk):
        async with lock:
            if engine.shadow_rules is not shadow:
                return
            engine.observe_shadow(customers[start : start + chunk])
        await asyncio.sleep(0)
