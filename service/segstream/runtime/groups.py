"""Group figures across workers: share each partition's partial, answer for the whole group,
and emit the group-snapshot events of a closed quarter.

Each worker publishes the partials of the partitions it owns to the compacted groups topic
(one key per partition, so the newest partial of every partition is what the topic keeps) and
reads the topic whole, as it reads the rules topic: every worker can answer
``GET /groups/{name}`` for all partitions. The owner of partition 0 emits a closed quarter's
snapshot once every partition has reported and every partition's clock has passed its end,
then records that in partition 0's lane record, so a crash in between emits it again with the
same ids (at least once, never a second set of ids).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from segstream.core.engine import Engine
from segstream.core.groups import Period, holding_back, merge, metrics_of, snapshots
from segstream.runtime.metrics import Metrics
from segstream.runtime.produce import BatchProducer, OutRecord
from segstream.runtime.settings import Settings

log = logging.getLogger("segstream.groups")
SNAPSHOT_PARTITION = 0  # the input partition whose owner emits snapshots


class GroupExchange:
    def __init__(
        self,
        settings: Settings,
        engine: Callable[[], Engine],
        producer: BatchProducer,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self.producer = producer
        self.metrics = metrics
        self.remote: dict[int, dict[str, Any]] = {}  # partition -> newest partial on the topic
        self.published: dict[int, bytes] = {}  # partition -> what this worker last sent
        self._waiting: dict[str, tuple[str, list[int]]] = {}  # group -> period, partitions

    @property
    def engine(self) -> Engine:
        return self._engine()

    def receive(self, values: Iterable[bytes | None]) -> None:
        """Partials read from the groups topic (a record that is not one is skipped)."""
        for value in values:
            try:
                partial = orjson.loads(value) if value is not None else None
                partition = int(partial["partition"])  # type: ignore[index]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                topic = self.settings.topic_groups
                log.warning("skipping a record of %s that is no partial", topic)
                continue
            self.remote[partition] = partial  # type: ignore[assignment]

    def partials(self, owned: set[int]) -> dict[int, dict[str, Any]]:
        """Every partition's partial: live ones for the partitions this worker owns."""
        result = {p: v for p, v in self.remote.items() if p not in owned}
        result |= {p: self.engine.group_partial(p) for p in owned}
        return result

    def periods(self, name: str, owned: set[int]) -> list[Period]:
        spec = self.engine.rules.groups[name]
        partials = self.partials(owned).values()
        periods = merge(spec, (p.get("groups", {}).get(name) for p in partials))
        self.metrics.group_values_folded.labels(group=name).set(periods[0].folded if periods else 0)
        return periods

    def view(self, name: str, owned: set[int]) -> dict[str, Any]:
        """The body of ``GET /groups/{name}``."""
        spec = self.engine.rules.groups[name]
        periods = self.periods(name, owned)
        reporting = len(self.partials(owned))
        return {
            "group": name,
            "by": spec.by,
            "period": spec.period,
            "metrics": list(spec.metrics),
            "rules_version": self.engine.rules.version,
            "partitions": {"reporting": reporting, "of": self.settings.partitions},
            "current": periods[0].period if periods else None,
            "periods": [
                {
                    "period": p.period,
                    "start": p.start,
                    "end": p.end,
                    "closed": p.closed,
                    "values": [
                        {"value": value} | metrics_of(spec, n, tally)
                        for value, (n, tally) in p.figures.items()
                    ],
                }
                for p in periods
            ],
        }

    async def publish(self, owned: set[int], settle: Callable[[], Awaitable[None]]) -> None:
        """Send the partials that changed; then, on partition 0's owner, due snapshots."""
        engine = self.engine
        if not engine.rules.groups:
            return
        topic = self.settings.topic_groups
        out: list[OutRecord] = []
        for partition in sorted(owned):
            value = orjson.dumps(engine.group_partial(partition))
            if self.published.get(partition) != value:
                out.append((topic, str(partition).encode(), value, 0, []))
        if out:
            await self.producer.send(out)
            for _, key, sent, _, _ in out:
                assert key is not None and sent is not None
                self.published[int(key)] = sent
        if SNAPSHOT_PARTITION in owned:
            await self._emit_snapshots(owned, settle)

    async def _emit_snapshots(self, owned: set[int], settle: Callable[[], Awaitable[None]]) -> None:
        partials = self.partials(owned)
        if len(partials) < self.settings.partitions:
            return  # a partition not heard from yet may still hold answers of the quarter
        engine = self.engine
        emitted = engine.snapshots_emitted(SNAPSHOT_PARTITION)
        out: list[OutRecord] = []
        marks: list[tuple[str, str]] = []
        for name, spec in engine.rules.groups.items():
            if spec.rolling_days is not None:
                continue
            last = emitted.get(name)
            due: list[Period] = []
            for p in reversed(self.periods(name, owned)):
                if not p.closed or (last is not None and p.period <= last):
                    continue
                waiting = holding_back(p, partials)
                if not waiting:
                    due.append(p)
                elif self._waiting.get(name) != (p.period, waiting):
                    self._waiting[name] = (p.period, waiting)  # said once, not every publish
                    log.info(
                        "group %s: quarter %s has closed where clocks passed it; its snapshots "
                        "wait for partitions %s (no event yet, or a clock still inside it)",
                        name,
                        p.period,
                        waiting,
                    )
            for period in due:
                for event in snapshots(spec, period, engine.rules.version):
                    out.append(
                        (
                            self.settings.topic_group_snapshots,
                            f"{name}:{event['value']}".encode(),
                            orjson.dumps(event),
                            None,
                            snapshot_headers(event, self.settings.source),
                        )
                    )
                    self.metrics.group_snapshots.labels(group=name).inc()
                marks.append((name, period.period))
        if not marks:
            return
        await self.producer.send(out)
        for name, period_label in marks:
            engine.mark_snapshots(SNAPSHOT_PARTITION, name, period_label)
            log.info("group %s: quarter %s closed; snapshot emitted", name, period_label)
        await settle()


def snapshot_headers(event: dict[str, Any], source: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event["event_id"].encode()),
        ("ce_source", source.encode()),
        ("ce_type", b"segstream.group.snapshot"),
        ("ce_subject", f"{event['group']}:{event['value']}".encode()),
        ("content-type", b"application/json"),
    ]
