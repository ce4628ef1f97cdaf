"""The streaming worker: faust app, batch path, table state, control topics, HTTP views.

The segmentation itself is :class:`segstream.core.engine.Engine`, exactly as ``replay`` uses it;
this module only moves bytes between Kafka and the engine.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from segstream.core.contracts import Rejection
from segstream.core.engine import Change, Engine
from segstream.core.rulelang import RuleSet, load_rules
from segstream.core.state import dump_state, load_state
from segstream.core.timeutil import to_rfc3339
from segstream.runtime.batching import (
    TRANSPORT_SCHEME,
    Record,
    TableWriter,
    install_batch_handler,
    items_by_partition,
)
from segstream.runtime.metrics import Metrics
from segstream.runtime.produce import BatchProducer, OutRecord, murmur_partition
from segstream.runtime.rulestopic import (
    Latest,
    newest_valid,
    read_latest_rules,
    rules_from_message,
    rules_message,
)
from segstream.runtime.settings import Settings

log = logging.getLogger("segstream.worker")


def partition_for(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a customer_id key (murmur2)."""
    return murmur_partition(customer_id.encode(), partitions)


def cloudevent_headers(change: Change, source: str) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 binary-mode headers, so CloudEvents-aware consumers read changes as is."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", change["event_id"].encode()),
        ("ce_source", source.encode()),
        ("ce_type", f"segstream.segment.{change['change']}".encode()),
        ("ce_subject", change["customer_id"].encode()),
        ("ce_time", change["at"].encode()),
        ("content-type", b"application/json"),
    ]


def dlq_headers(record: Record, reason: str, message: str) -> list[tuple[str, bytes]]:
    """The original headers plus context headers modelled on Kafka Connect's DLQ."""
    return [
        *(record.headers or ()),
        ("segstream.error.reason", reason.encode()),
        ("segstream.error.message", message[:1000].encode()),
        ("segstream.source.topic", record.topic.encode()),
        ("segstream.source.partition", str(record.partition).encode()),
        ("segstream.source.offset", str(record.offset).encode()),
    ]


class SegmentWorker:
    """Wires one Engine to Kafka through faust."""

    def __init__(self, settings: Settings, *, on_change: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        rules = load_rules(settings.rules_dir)
        self.engine = Engine(
            rules,
            clock=settings.clock,
            currency=settings.currency,
            max_message_bytes=settings.max_message_bytes,
        )
        self.metrics.set_rules(rules.version)
        self.on_change = on_change
        self.lock = asyncio.Lock()
        self.ready = False
        self.rules_offset: int | None = None  # where the rules topic was read to, once
        self.rules_sync = asyncio.Lock()
        self.next_offset: dict[tuple[str, int], int] = {}
        self.last_batch_at = 0.0
        self.published_sketches: dict[str, bytes] = {}
        self.app = self._build_app()
        self.producer = BatchProducer(lambda: self.app.producer._producer)

    # -- wiring ------------------------------------------------------------------------------

    def _build_app(self) -> Any:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=f"{TRANSPORT_SCHEME}://{s.bootstrap_servers}",
            broker_credentials=self._credentials(),
            store=s.store,
            datadir=str(s.data_dir),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            table_standby_replicas=s.standby_replicas,
            broker_commit_interval=s.commit_interval_seconds,
            broker_commit_every=10_000,
            broker_session_timeout=s.session_timeout_seconds,
            broker_heartbeat_interval=max(s.session_timeout_seconds / 5, 0.5),
            producer_linger_ms=0,  # our batches are built whole (produce.py): nothing to wait for
            producer_max_batch_size=256 * 1024,
            web_bind=s.web_host,
            web_port=s.web_port,
            web_host=s.advertised_host or s.web_host,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.conf.segstream_client_options = s.kafka_client_options()
        app.conf.segstream_fetch_max_wait_ms = s.fetch_max_wait_ms
        self.table = app.Table(
            "customers",
            partitions=s.partitions,
            key_type=bytes,  # raw customer_id: the changelog partitions like the inputs
            value_type=bytes,
        )
        self.inputs = {
            name: app.topic(name, key_type=bytes, value_type=bytes, partitions=s.partitions)
            for name in s.input_topics
        }
        self.writer = TableWriter(app, self.table, s.topic_orders)
        install_batch_handler(app, list(self.inputs.values()), self.on_batch)
        self.table.on_recover(self.on_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.timer(s.clock_tick_seconds)(self.tick_clock)
        app.timer(s.population_refresh_seconds)(self.refresh_population)
        app.task(self.follow_control_topics)
        self._add_views(app)
        return app

    def _credentials(self) -> Any:
        s = self.settings
        options = s.kafka_client_options()
        if s.security_protocol.startswith("SASL"):
            return faust.SASLCredentials(
                username=s.sasl_username,
                password=s.sasl_password.get_secret_value(),
                mechanism=s.sasl_mechanism,
                ssl_context=cast("ssl.SSLContext | None", options.get("ssl_context")),
            )
        if s.security_protocol == "SSL":
            return faust.SSLCredentials(cast("ssl.SSLContext", options["ssl_context"]))
        return None

    # -- the batch path ----------------------------------------------------------------------

    async def on_batch(self, records: list[Record]) -> None:
        """Apply one fetched batch: pure engine calls, then one round of sends."""
        async with self.lock:
            started = time.perf_counter()
            outputs: list[OutRecord] = []
            changes, stamps = self._apply(records, outputs)
            self.metrics.evaluation.observe(time.perf_counter() - started)
            await self._emit(changes, outputs)
            now = time.time()
            for stamp in stamps:
                self.metrics.latency.observe(max(now - stamp / 1000, 0.0))
            for record in records:
                self.next_offset[(record.topic, record.partition)] = record.offset + 1
            self.last_batch_at = time.monotonic()

    def _apply(
        self, records: list[Record], outputs: list[OutRecord]
    ) -> tuple[list[Change], list[int]]:
        s, engine, metrics = self.settings, self.engine, self.metrics
        changes: list[Change] = []
        stamps: list[int] = []
        consumed: Counter[tuple[str, str]] = Counter()  # one metric update per label per batch
        if s.clock == "wall":
            changes += engine.advance(int(time.time() * 1000))
        for record in records:
            parsed = engine.parse(record.value or b"")
            if isinstance(parsed, Rejection):
                reason = parsed.reason.value
                metrics.invalid.labels(reason=reason).inc()
                consumed[(record.topic, "invalid")] += 1
                outputs.append(
                    (
                        s.topic_dlq,
                        record.key,
                        record.value or b"",
                        None,
                        dlq_headers(record, reason, parsed.message),
                    )
                )
                continue
            consumed[(record.topic, parsed.type)] += 1
            customer = parsed.customer_id
            if engine.partition_of.get(customer) != record.partition and (
                partition_for(customer, s.partitions) != record.partition
            ):
                # keyed by something else: send it on to its customer's partition
                metrics.rerouted.labels(topic=record.topic).inc()
                outputs.append(
                    (
                        record.topic,
                        customer.encode(),
                        record.value or b"",
                        None,
                        list(record.headers or ()),
                    )
                )
                continue
            produced = engine.apply(parsed, partition=record.partition)
            if produced:
                changes += produced
                stamps.extend(record.timestamp for _ in produced)
        for (topic, kind), n in consumed.items():
            metrics.consumed.labels(topic=topic, type=kind).inc(n)
        return changes, stamps

    async def _emit(self, changes: list[Change], outputs: list[OutRecord]) -> None:
        """Send outputs first, then state: a crash in between re-emits (same ids), never loses."""
        s = self.settings
        transitions: Counter[tuple[str, str, str, str]] = Counter()
        for change in changes:
            outputs.append(
                (
                    s.topic_changes,
                    change["customer_id"].encode(),
                    orjson.dumps(change),
                    None,
                    cloudevent_headers(change, s.source),
                )
            )
            transitions[
                (change["family"], str(change["from"]), str(change["to"]), change["change"])
            ] += 1
            if self.on_change is not None:
                self.on_change(change)
        for (family, old, new, kind), n in transitions.items():
            self.metrics.transitions.labels(
                family=family, from_segment=old, to_segment=new, change=kind
            ).inc(n)
        await self.producer.send(outputs)
        await self._write_state()

    async def _write_state(self) -> None:
        engine = self.engine
        if not engine.dirty:
            return
        updates: dict[int, dict[str, bytes]] = {}
        for customer_id in engine.dirty:
            st = engine.store.get(customer_id)
            if st is not None:
                partition = engine.partition_of[customer_id]
                updates.setdefault(partition, {})[customer_id] = dump_state(st)
        engine.dirty.clear()
        records = self.writer.changelog_records(updates)
        self.writer.persisted(records, await self.producer.send(records))

    # -- clock, population, rules ------------------------------------------------------------

    async def tick_clock(self) -> None:
        if self.settings.clock != "wall" or not self.ready:
            return
        async with self.lock:
            await self._emit(self.engine.advance(int(time.time() * 1000)), [])

    async def refresh_population(self) -> None:
        if not self.ready or not self.engine.populations:
            return
        async with self.lock:
            # a refresh costs O(customers): under load only when 5% of values moved; once the
            # input goes quiet, for any change, so the final cut points match a replay's
            pending = any(p.updates_since_refresh for p in self.engine.populations.values())
            quiet = time.monotonic() - self.last_batch_at > self.settings.population_refresh_seconds
            if self.engine.population_stale() or (pending and quiet):
                await self._emit(self.engine.refresh_population(), [])
                await self._publish_sketches()

    async def _publish_sketches(self) -> None:
        outputs: list[OutRecord] = []
        for field_name, population in self.engine.populations.items():
            for partition in sorted(population.values):
                key = f"{field_name}:{partition}"
                blob = bytes(population.sketch(partition).serialize())
                if self.published_sketches.get(key) != blob:
                    self.published_sketches[key] = blob
                    outputs.append((self.settings.topic_population, key.encode(), blob, 0, []))
        await self._emit([], outputs)

    def _remote_sketch(self, key: bytes | None, value: bytes | None) -> None:
        if not key or value is None:
            return
        field_name, _, partition = key.decode().partition(":")
        population = self.engine.populations.get(field_name)
        if population is None or not partition.isdigit():
            return
        if int(partition) not in population.values:  # our own partitions use local values
            population.remote[int(partition)] = value
            population.updates_since_refresh += 1

    async def switch_rules(self, rules: RuleSet) -> None:
        """Re-evaluate every customer in chunks, yielding to the batch path between chunks."""
        async with self.lock:
            self.engine.set_rules(rules)
            self.metrics.set_rules(rules.version)
            customers = sorted(self.engine.store)
        log.info("rules %s active; re-evaluating %d customers", rules.version, len(customers))
        size = self.settings.rules_chunk_size
        for start in range(0, len(customers), size):
            async with self.lock:
                if self.engine.rules is not rules:
                    return  # a newer rule set took over
                await self._emit(self.engine.reevaluate(customers[start : start + size]), [])
            await asyncio.sleep(0)

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
                await self._accept_rules(latest)
                self.rules_offset = latest.next_offset
            return self.rules_offset

    async def follow_control_topics(self) -> None:
        """Every worker reads the rules and population topics whole (no consumer group)."""
        s = self.settings
        rules_offset = await self.sync_rules()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            enable_auto_commit=False,
            **s.kafka_client_options(),
        )
        await consumer.start()
        try:
            rules_tp = TopicPartition(s.topic_rules, 0)
            population_tp = TopicPartition(s.topic_population, 0)
            consumer.assign([rules_tp, population_tp])
            consumer.seek(rules_tp, rules_offset)
            await consumer.seek_to_beginning(population_tp)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                rules_records: list[tuple[int, bytes | None]] = []
                for tp, records in batches.items():
                    for record in records:
                        if tp.topic == s.topic_rules:
                            rules_records.append((record.offset, record.value))
                        elif tp.topic == s.topic_population:
                            self._remote_sketch(record.key, record.value)
                if rules_records:
                    await self._accept_rules(newest_valid(rules_records))
        finally:
            await consumer.stop()

    async def _accept_rules(self, latest: Latest) -> None:
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
            await self.switch_rules(rules)

    # -- rebalancing -------------------------------------------------------------------------

    async def _on_revoked(self, app: Any, revoked: Iterable[Any], **_: Any) -> None:
        self.ready = False

    def assigned_partitions(self) -> set[int]:
        topic = self.settings.topic_orders
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    async def on_recovered(self) -> None:
        """Tables are recovered: take over the customers of the partitions we now own."""
        await self.sync_rules()  # never take customers under rules about to be replaced
        async with self.lock:
            owned = self.assigned_partitions()
            engine = self.engine
            for partition in set(engine.partition_of.values()) - owned:
                engine.release_partition(partition)
            adopted = 0
            n = self.settings.partitions
            # Building a million customers' objects with the cyclic GC on costs several times
            # the loading itself (each collection walks the growing heap); the state holds no
            # reference cycles, so collect nothing while loading, then freeze what was loaded
            # out of every later collection (refcounting still frees it when replaced).
            gc.disable()
            try:
                for stored_in, raw_key, value in items_by_partition(self.table):
                    key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                    if key in engine.store:
                        continue
                    partition = partition_for(key, n) if stored_in is None else stored_in
                    if partition in owned:
                        engine.adopt(load_state(value), partition)
                        adopted += 1
            finally:
                gc.enable()
            gc.freeze()
            if adopted:
                changes = engine.catch_up()
                if engine.populations:
                    # their segments were computed with the cut points of that moment (maybe
                    # on another worker): re-evaluate those whose quantile scores differ now
                    changes += engine.reconcile_population()
                await self._emit(changes, [])
            self.ready = True
        log.info(
            "ready: partitions %s, %d customers (%d recovered)",
            sorted(owned),
            len(engine.store),
            adopted,
        )

    # -- HTTP --------------------------------------------------------------------------------

    def _add_views(self, app: Any) -> None:
        worker = self

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            worker._update_gauges()
            return web.bytes(worker.metrics.render(), content_type="text/plain; version=0.0.4")

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok"})

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            body = {
                "ready": worker.ready,
                "partitions": sorted(worker.assigned_partitions()),
                "rules_version": worker.engine.rules.version,
            }
            return web.json(body, status=200 if worker.ready else 503)

        @app.page("/segments")
        async def segments(web: Any, request: Any) -> Any:
            return web.json(
                {
                    "rules_version": worker.engine.rules.version,
                    "customers": len(worker.engine.store),
                    "members": worker.engine.member_counts(),
                }
            )

        @app.page("/customers/{customer_id}")
        @app.table_route(table=self.table, match_info="customer_id")
        async def customer(web: Any, request: Any, customer_id: str) -> Any:
            explained = worker.engine.explain(customer_id)
            if explained is None:
                return web.json({"error": f"unknown customer {customer_id!r}"}, status=404)
            return web.json(explained)

    def _update_gauges(self) -> None:
        engine, metrics = self.engine, self.metrics
        metrics.customers.set(len(engine.store))
        metrics.set_members(engine.member_counts())
        metrics.lag.clear()
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in self.inputs:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = self.next_offset.get((tp.topic, tp.partition), 0)
            metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(high - position, 0)
            )


def describe_change(change: Change) -> str:
    """One line for humans (the demo prints these)."""
    cause = change["cause"]["kind"]
    return (
        f"{change['at'][:19]} {change['customer_id']:<10} {change['family']:<18} "
        f"{change['from']!s:>18} -> {change['to']!s:<18} {change['change']:<10} ({cause})"
    )


__all__ = [
    "SegmentWorker",
    "describe_change",
    "partition_for",
    "rules_from_message",
    "rules_message",
    "to_rfc3339",
]
