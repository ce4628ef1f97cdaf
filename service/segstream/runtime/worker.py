"""The streaming worker: faust app, batch path, table state, control topics, HTTP views.

The segmentation itself is :class:`segstream.core.engine.Engine`, exactly as ``replay`` uses it;
this module only moves bytes between Kafka and the engine.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

import faust
import orjson
from aiokafka import TopicPartition
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from segstream.core.contracts import Rejection
from segstream.core.engine import Change, Commit, Engine
from segstream.core.partitioning import murmur_partition, partition_for
from segstream.core.rulelang import RuleSet, load_rules
from segstream.core.state import load_state
from segstream.core.timeutil import to_rfc3339
from segstream.present import describe_change
from segstream.runtime.batching import (
    TRANSPORT_SCHEME,
    Record,
    TableWriter,
    install_batch_handler,
    items_by_partition,
    lane_partition,
)
from segstream.runtime.faust_compat import kafka_producer, when_recovery_ended
from segstream.runtime.health import broker_problem, lag_of, not_ready_reason
from segstream.runtime.http import MAX_REQUEST_BYTES, bearer_token_guard
from segstream.runtime.metrics import Metrics
from segstream.runtime.produce import BatchProducer, OutRecord
from segstream.runtime.rulestopic import (
    Latest,
    newest_valid,
    read_latest_rules,
    rules_consumer,
    rules_from_message,
    rules_message,
)
from segstream.runtime.settings import Settings

log = logging.getLogger("segstream.worker")
EXIT_CLUSTER_LOST = 3  # the cluster lost this worker's writes (docs/runtime.md)


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


def transition_label(tier: str | bool | None) -> str:
    """A transition metric's from/to label: the tier, ``none`` for no tier, ``in``/``out``
    for a flag (docs/runtime.md, Metrics)."""
    if tier is None:
        return "none"
    if isinstance(tier, bool):
        return "in" if tier else "out"
    return tier


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

    def __init__(
        self, settings: Settings, *, rules: RuleSet | None = None, on_change: Any = None
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        rules = rules or load_rules(settings.rules_dir)
        self.engine = Engine(
            rules,
            partitions=settings.partitions,
            clock=settings.clock,
            currency=settings.currency,
            max_message_bytes=settings.max_message_bytes,
            limits=settings.limits(),
            max_future_skew_ms=int(settings.max_future_skew.total_seconds() * 1000),
        )
        self.metrics.set_rules(rules.version)
        self.on_change = on_change
        self.lock = asyncio.Lock()
        self.ready = False
        self.rules_offset: int | None = None  # where the rules topic was read to, once
        self.rules_sync = asyncio.Lock()
        self.next_offset: dict[tuple[str, int], int] = {}
        self.last_batch_at = 0.0
        self.last_input_at: dict[int, float] = {}
        # partition -> base offset of the last changelog batch this process wrote there
        self.changelog_written: dict[int, int] = {}
        self.app = self._build_app()
        self.producer = BatchProducer(lambda: kafka_producer(self.app))

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
            # faust's /router and /table views would serve any table's contents to anyone
            web_router_enabled=False,
            web_tables_enabled=False,
            web_application_options={"client_max_size": MAX_REQUEST_BYTES},
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
        self.writer = TableWriter(self.table, s.topic_orders)
        install_batch_handler(app, list(self.inputs.values()), self.on_batch)
        self.table.on_recover(when_recovery_ended(app, self.on_recovered))
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
        """Apply one fetched batch: pure engine calls, then commits, then the outputs. A large
        fetch goes in slices of about ``SEGSTREAM_COMMIT_MAX_ITEMS``: each slice's changes
        are sent (and confirmed) before the next slice is decided, so a lane record carries
        one slice's unconfirmed changes, not the whole fetch's."""
        async with self.lock:
            consumed: Counter[tuple[str, str]] = Counter()  # one metric update per label
            stamps: list[int] = []
            wall_ms = int(time.time() * 1000)
            start = 0
            while start < len(records):
                started = time.perf_counter()
                outputs: list[OutRecord] = []
                start = self._apply(records, start, outputs, stamps, consumed, wall_ms)
                self.metrics.evaluation.observe(time.perf_counter() - started)
                await self._commit_and_emit(self.engine.commits(), outputs)
            metrics, engine = self.metrics, self.engine
            for limit, n in engine.limit_hits.items():
                metrics.limit_hits.labels(limit=limit).inc(n)
            engine.limit_hits.clear()
            for (topic, kind), n in consumed.items():
                metrics.consumed.labels(topic=topic, type=kind).inc(n)
            now = time.time()
            for stamp in stamps:
                metrics.latency.observe(max(now - stamp / 1000, 0.0))
            moment = time.monotonic()
            for record in records:
                self.next_offset[(record.topic, record.partition)] = record.offset + 1
                self.last_input_at[record.partition] = moment

    def _apply(
        self,
        records: list[Record],
        start: int,
        outputs: list[OutRecord],
        stamps: list[int],
        consumed: Counter[tuple[str, str]],
        wall_ms: int,
    ) -> int:
        """Apply records from ``start`` until one partition's pending work reaches the commit
        budget; returns where it stopped."""
        s, engine, metrics = self.settings, self.engine, self.metrics
        budget = s.commit_max_items
        for index in range(start, len(records)):
            record = records[index]
            if record.value is None:  # a tombstone deletes nothing here: docs/contracts.md
                metrics.tombstones.labels(topic=record.topic).inc()
                continue
            parsed = engine.parse(record.value, wall_ms)
            if isinstance(parsed, Rejection):
                reason = parsed.reason.value
                metrics.invalid.labels(reason=reason).inc()
                consumed[(record.topic, "invalid")] += 1
                outputs.append(
                    (
                        s.topic_dlq,
                        record.key,
                        record.value,
                        None,
                        dlq_headers(record, reason, parsed.message),
                    )
                )
                continue
            consumed[(record.topic, parsed.type)] += 1
            customer = parsed.customer_id
            partition = record.partition
            if engine.partition_of.get(customer) != partition and (
                partition_for(customer, s.partitions) != partition
            ):
                # keyed by something else: send it on to its customer's partition
                metrics.rerouted.labels(topic=record.topic).inc()
                outputs.append(
                    (
                        record.topic,
                        customer.encode(),
                        record.value,
                        None,
                        list(record.headers or ()),
                    )
                )
                continue
            produced = engine.apply(parsed, partition=partition, now_ms=wall_ms)
            if produced:
                stamps.extend(record.timestamp for _ in produced)
            if engine.pending(partition) >= budget:
                return index + 1
        return len(records)

    async def _commit_and_emit(self, commits: list[Commit], outputs: list[OutRecord]) -> None:
        """Write every commit (one record batch each: the customers, then the lane record),
        then send the changes and other outputs. A crash before a commit is written decides
        again from the input; after it, recovery re-sends its changes (same ids) and decides
        nothing twice; an output is never sent before the state that produced it is written."""
        s = self.settings
        # one commit per partition here (Engine.commits), so they are independent: one round
        # trip for all of them, not one per partition in turn
        batches = [self.writer.commit_records(commit) for commit in commits]
        sent = await asyncio.gather(
            *(
                self.producer.send_atomic(
                    self.writer.changelog, commit.partition, records, s.commit_max_bytes
                )
                for commit, records in zip(commits, batches, strict=True)
            )
        )
        for commit, records, (written, whole) in zip(commits, batches, sent, strict=True):
            if not whole:
                self.metrics.commits_split.inc()
                log.warning(
                    "a commit of partition %d did not fit in one record batch of %d bytes"
                    " (SEGSTREAM_COMMIT_MAX_BYTES); written in %d",
                    commit.partition,
                    s.commit_max_bytes,
                    len(written),
                )
            self.writer.persisted(records, written)
            self.changelog_written[commit.partition] = written[-1].base_offset
        transitions: Counter[tuple[str, str, str, str]] = Counter()
        for commit in commits:
            for change in commit.changes:
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
                    (
                        change["family"],
                        transition_label(change["from"]),
                        transition_label(change["to"]),
                        change["change"],
                    )
                ] += 1
                if self.on_change is not None:
                    self.on_change(change)
        for (family, old, new, kind), n in transitions.items():
            self.metrics.transitions.labels(
                family=family, from_segment=old, to_segment=new, change=kind
            ).inc(n)
        await self.producer.send(outputs)
        self.engine.confirm(commit.partition for commit in commits)

    async def _settle(self) -> None:
        """Commit and emit whatever the engine decided outside the batch path."""
        await self._commit_and_emit(self.engine.commits(), [])

    # -- clock, population, rules ------------------------------------------------------------

    async def tick_clock(self) -> None:
        if self.settings.clock != "wall" or not self.ready:
            return
        async with self.lock:
            self.engine.advance(int(time.time() * 1000))  # the lanes this worker holds
            await self._settle()

    async def refresh_population(self) -> None:
        """Under load a partition refreshes its cut points itself (every 5% of its values
        moved); once its input goes quiet, for any change, so its final cut points are those
        of its final values, as a replay's are. Only this partition's values count: no other
        worker can make its customers flip."""
        if not self.ready:
            return
        async with self.lock:
            quiet_since = time.monotonic() - self.settings.population_refresh_seconds
            engine = self.engine
            quiet = [
                p
                for p in sorted(engine.lanes)
                if engine.has_pending_population(p) and self.last_input_at.get(p, 0) < quiet_since
            ]
            if quiet:
                engine.refresh_population(quiet)
                await self._settle()

    async def switch_rules(self, rules: RuleSet) -> None:
        """Re-evaluate every customer in chunks, yielding to the batch path between chunks."""
        async with self.lock:
            self.engine.set_rules(rules)
            self.metrics.set_rules(rules.version)
            customers = sorted(self.engine.store)
            await self._settle()
        log.info("rules %s active; re-evaluating %d customers", rules.version, len(customers))
        size = self.settings.rules_chunk_size
        for start in range(0, len(customers), size):
            async with self.lock:
                if self.engine.rules is not rules:
                    return  # a newer rule set took over
                self.engine.reevaluate(customers[start : start + size])
                await self._settle()
            await asyncio.sleep(0)
        async with self.lock:
            if self.engine.rules is rules:
                self.engine.rules_done()
                await self._settle()

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
        """Every worker reads the rules topic whole (no consumer group)."""
        s = self.settings
        rules_offset = await self.sync_rules()
        consumer = rules_consumer(s)
        await consumer.start()
        try:
            rules_tp = TopicPartition(s.topic_rules, 0)
            consumer.assign([rules_tp])
            consumer.seek(rules_tp, rules_offset)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                rules_records = [
                    (record.offset, record.value)
                    for records in batches.values()
                    for record in records
                ]
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
        """Tables are recovered: take over the lanes and customers of partitions we now own,
        finish what their last commits left half done, and re-send their unconfirmed changes."""
        await self.sync_rules()  # never take customers under rules about to be replaced
        async with self.lock:
            owned = self.assigned_partitions()
            await self._refuse_a_cluster_that_lost_our_writes(owned)
            engine = self.engine
            for partition in set(engine.lanes) - owned:
                engine.release_partition(partition)
            new = owned - set(engine.lanes)
            lanes: dict[int, dict[str, Any]] = {}
            customers: list[tuple[int, bytes]] = []
            n = self.settings.partitions
            # Building a million customers' objects with the cyclic GC on costs several times
            # the loading itself (each collection walks the growing heap); the state holds no
            # reference cycles, so collect nothing while loading, then freeze what was loaded
            # out of every later collection (refcounting still frees it when replaced).
            gc.disable()
            try:
                for stored_in, raw_key, value in items_by_partition(self.table):
                    key = raw_key if isinstance(raw_key, bytes) else str(raw_key).encode()
                    lane_of = lane_partition(key)
                    if lane_of is not None:
                        if lane_of in new:
                            lanes[lane_of] = orjson.loads(value)
                        continue
                    partition = murmur_partition(key, n) if stored_in is None else stored_in
                    if partition in new:
                        customers.append((partition, value))
                for partition in sorted(lanes):
                    engine.adopt_lane(partition, lanes[partition])
                for partition, value in customers:
                    engine.adopt(load_state(value), partition)
            finally:
                gc.enable()
            gc.freeze()
            for partition in sorted(new):
                engine.settle_adopted(partition, had_record=partition in lanes)
            await self._settle()
            self.ready = True
        log.info(
            "ready: partitions %s, %d customers (%d recovered)",
            sorted(owned),
            len(engine.store),
            len(customers),
        )

    async def _refuse_a_cluster_that_lost_our_writes(self, owned: set[int]) -> None:
        """A broker that restarted empty (Tansu keeps everything in memory; a Kafka cluster
        whose disks were replaced) rejoins as if nothing happened: faust recovers an empty
        changelog, this worker keeps serving what it holds in memory, and its outputs go to
        topics that no longer exist. When a changelog partition ends before a batch this
        process wrote to it, stop with one line instead: a supervisor restarts the worker,
        which then holds exactly what the cluster holds."""
        held = sorted(p for p in owned if p in self.changelog_written)
        if not held:
            return
        changelog = self.writer.changelog
        tps = [TP(changelog, p) for p in held]
        try:
            ends = await asyncio.wait_for(self.app.consumer.highwaters(*tps), 15)
        except TimeoutError:
            log.warning("could not read the changelog's end offsets; not checked this time")
            return
        except Exception:  # a changelog the cluster cannot describe is gone
            ends = {}
        lost = [
            p
            for p, tp in zip(held, tps, strict=True)
            if (ends.get(tp) or 0) <= self.changelog_written[p]
        ]
        if lost:
            log.critical(
                "the Kafka cluster lost data this worker wrote: changelog %s partitions %s end"
                " before batches written at offsets %s (did the brokers restart empty?);"
                " stopping so that a restart rebuilds from what the cluster holds",
                changelog,
                lost,
                [self.changelog_written[p] for p in lost],
            )
            logging.shutdown()
            os._exit(EXIT_CLUSTER_LOST)

    # -- HTTP --------------------------------------------------------------------------------

    def _add_views(self, app: Any) -> None:
        """/metrics, /healthz and /readyz stay open for Prometheus and the kubelet; customer
        data (/customers/{id}, /segments) needs the bearer token when one is set."""
        worker = self
        guarded = bearer_token_guard(self.settings.api_token.get_secret_value())

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            worker._update_gauges()
            return web.bytes(worker.metrics.render(), content_type="text/plain; version=0.0.4")

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok"})

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            try:
                partitions = sorted(worker.assigned_partitions())
            except ConsumerNotStarted:
                partitions = []  # starting: not ready, which is no error
            reason = not_ready_reason(worker.ready, await broker_problem(worker.app))
            body: dict[str, Any] = {
                "ready": reason is None,
                "partitions": partitions,
                "rules_version": worker.engine.rules.version,
            }
            if reason is not None:
                body["reason"] = reason
            return web.json(body, status=200 if reason is None else 503)

        @app.page("/segments")
        @guarded
        async def segments(web: Any, request: Any) -> Any:
            return web.json(
                {
                    "rules_version": worker.engine.rules.version,
                    "customers": len(worker.engine.store),
                    "members": worker.engine.member_counts(),
                }
            )

        if not self.settings.customer_api:
            return

        @app.page("/customers/{customer_id}")
        @guarded  # before routing: a request is checked where it arrives and where it is routed
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
        try:
            assignment = consumer.assignment()
        except ConsumerNotStarted:
            return  # starting: no partitions, no lag yet
        for tp in assignment:
            if tp.topic not in self.inputs:
                continue
            lag = lag_of(consumer, tp, self.next_offset.get((tp.topic, tp.partition)))
            if lag is not None:
                metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)


__all__ = [
    "SegmentWorker",
    "describe_change",
    "partition_for",
    "rules_from_message",
    "rules_message",
    "to_rfc3339",
]
