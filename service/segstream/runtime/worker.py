"""The streaming worker: wires one Engine to Kafka through faust.

Each job lives in its own module, and this one only connects them:

- ``handler``: the batch path (faust-free: records in; commits, changes and DLQ records out);
- ``recovery``: writing commits to the changelog, and adopting partitions after assignment;
- ``control``: the rules and groups topics;
- ``timers``: the wall clock, quiet partitions' population refresh, sharing group figures;
- ``views``: HTTP;
- ``batching``: faust's consumer, delivering whole batches.

The segmentation itself is :class:`segstream.core.engine.Engine`, exactly as ``replay`` uses it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import faust

from segstream.core.engine import Change, Engine
from segstream.core.rulelang import RuleSet, load_rules
from segstream.runtime.batching import (
    TRANSPORT_SCHEME,
    Record,
    TableWriter,
    install_batch_handler,
)
from segstream.runtime.control import ControlTopics
from segstream.runtime.faust_compat import kafka_producer, when_recovery_ended
from segstream.runtime.groups import GroupExchange
from segstream.runtime.handler import BatchHandler, Topics
from segstream.runtime.http import MAX_REQUEST_BYTES
from segstream.runtime.metrics import Metrics
from segstream.runtime.produce import BatchProducer
from segstream.runtime.recovery import ChangelogStateLog, Recovery
from segstream.runtime.settings import Settings
from segstream.runtime.timers import Progress, Timers
from segstream.runtime.views import add_views


class SegmentWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        rules: RuleSet | None = None,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        self.settings = s = settings
        self.metrics = Metrics()
        rules = rules or load_rules(s.rules_dir)
        self.engine = Engine(
            rules,
            partitions=s.partitions,
            clock=s.clock,
            currency=s.currency,
            max_message_bytes=s.max_message_bytes,
            limits=s.limits(),
            max_future_skew_ms=int(s.max_future_skew.total_seconds() * 1000),
            hot_customers=s.hot_customers,
        )
        self.metrics.set_rules(rules.version, [*rules.segment_names, *rules.derived])
        self.progress = Progress()
        self.app = self._build_app()
        self.producer = BatchProducer(lambda: kafka_producer(self.app))
        self.writer = TableWriter(self.table, s.topic_orders)
        self.state_log = ChangelogStateLog(
            self.writer, self.producer, s.commit_max_bytes, self.metrics
        )
        self.handler = BatchHandler(
            self.engine,
            Topics(changes=s.topic_changes, dlq=s.topic_dlq, source=s.source),
            self.state_log,
            self.producer,
            self.metrics,
            commit_max_items=s.commit_max_items,
            wall_clock=s.clock == "wall",
            on_change=on_change,
        )
        settle = self.handler.settle
        self.groups = GroupExchange(s, lambda: self.engine, self.producer, self.metrics)
        self.control = ControlTopics(
            s,
            self.engine,
            self.progress.lock,
            self.metrics,
            self.groups,
            settle,
            self._reevaluate,
        )
        self.timers = Timers(
            s, self.engine, self.progress, self.groups, self.assigned_partitions, settle
        )
        self.recovery = Recovery(
            self.app,
            self.table,
            self.engine,
            self.state_log,
            self.progress,
            s.partitions,
            self.assigned_partitions,
            self.control.sync_rules,
            settle,
            self.handler.settle_each,
            s.commit_max_items,
        )
        self._wire(self.app)

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
        return app

    def _wire(self, app: Any) -> None:
        s = self.settings
        install_batch_handler(app, list(self.inputs.values()), self.on_batch)
        self.table.on_recover(when_recovery_ended(app, self.recovery.on_recovered))
        app.on_partitions_revoked.connect(self._on_revoked)
        app.timer(s.clock_tick_seconds)(self.timers.tick_clock)
        app.timer(s.population_refresh_seconds)(self.timers.refresh_population)
        app.timer(s.groups_publish_seconds)(self.timers.publish_groups)
        app.timer(s.shadow_refresh_seconds)(self.timers.refresh_shadow)
        app.task(self.control.follow)
        add_views(app, self)

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

    async def on_batch(self, records: list[Record]) -> None:
        """One fetched batch, under the lock the timers and control topics also take."""
        progress = self.progress
        async with progress.lock:
            await self.handler.handle(records, int(time.time() * 1000))
            moment = time.monotonic()
            for record in records:
                progress.next_offset[(record.topic, record.partition)] = record.offset + 1
                progress.last_input_at[record.partition] = moment

    async def _on_revoked(self, app: Any, revoked: Iterable[Any], **_: Any) -> None:
        self.progress.ready = False
        self.progress.rebalancing = True

    async def _reevaluate(self, customer_ids: Sequence[str]) -> bool:
        """A rule switch's chunk, stopped by a rebalance: every lane held is then half done
        (earlier chunks re-evaluated some of each), and recovered under the new rules."""
        engine = self.engine
        steps = engine.reevaluate_steps(customer_ids, self.settings.commit_max_items)
        held = set(engine.partitions_held())
        return await self.progress.decide(steps, self.handler.settle, held)

    def assigned_partitions(self) -> set[int]:
        topic = self.settings.topic_orders
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}


__all__ = ["SegmentWorker"]
