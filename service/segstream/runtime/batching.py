"""Whole-batch delivery through faust.

faust's consumer awaits once per message (``wait_first(callback(message), ...)``), which caps
an agent at a few thousand events per second. We keep faust for what it does well (consumer
group and partition assignment, tables and their recovery, web, timers) and replace only the
drain loop: records of our input topics are handed to one async callback per fetched batch.

Offsets: once the callback returns (its outputs and changelog writes acknowledged by the
broker), every offset of the batch is acked in faust's own bookkeeping, and faust's commit
machinery commits them. A crash before that re-delivers the batch: at-least-once. Records
fetched before a rebalance (the consumer generation changed) are not processed: they are read
again from the committed offsets, by whichever worker owns them now.

faust's private names are used only through ``faust_compat``, which checks them at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer
from faust.tables.base import Collection
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, StoreT, TableT, TopicT
from mode import ServiceT

from segstream.core.engine import Commit
from segstream.core.state import dump_state
from segstream.runtime.faust_compat import (
    FencedConsumer,
    Fetched,
    partition_databases,
    source_partition,
)
from segstream.runtime.faust_compat import (
    Record as Record,
)
from segstream.runtime.produce import OutRecord, Written

log = logging.getLogger(__name__)

BatchCallback = Callable[[list[Record]], Awaitable[None]]


class BatchConsumer(FencedConsumer):
    """The aiokafka-driver consumer, delivering whole batches for the batch topics."""

    batch_topics: frozenset[str] = frozenset()
    batch_callback: BatchCallback | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()

    async def wait_empty(self) -> None:
        """On rebalance or stop, let the batch in flight finish so its offsets are acked."""
        await self._batch_idle.wait()
        await super().wait_empty()
        if self.should_stop:  # on a rebalance the next owner reads them again: at least once
            await self.commit_after_any_in_flight()

    async def commit_after_any_in_flight(self) -> None:
        """Commit what is acked now. faust's ``commit`` returns without committing when another
        commit is in flight, and that one (the periodic commit, which waits for the producer's
        flush) may have taken its offsets before the last batch was acked: a clean stop then
        left its last batch to be read again. No await between the last wait and the commit,
        so no other commit can start in between."""
        while await self.maybe_wait_for_commit_to_finish():
            pass
        await self.commit_and_end_transactions()

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        reported = await super().highwaters(*partitions)
        return await fetch_true_highwaters(self.app.conf, reported)

    async def drain(self, fetcher: ServiceT) -> None:
        """faust's drain loop, a fetch at a time: batch topics in one callback; changelog
        partitions being recovered in one write each; any other topic per message."""
        batch_topics = self.batch_topics
        try:
            while not (self.should_stop or fetcher.should_stop):
                fetched = await self.fetch(1.0)
                await self.sleep(0)
                if not fetched.records or self.should_stop:
                    continue
                if not self.flow_active:
                    self._not_processed(fetched)
                    await self.perform_seek()  # as Consumer.getmany: drop and seek back
                    continue
                held: list[tuple[TP, list[Record]]] = []
                for tp, records in fetched.records.items():
                    if not self.current(fetched):
                        break
                    if not self.serves(fetched, tp):
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    if tp.topic in batch_topics:
                        held.append((tp, records))
                    elif self.recovers_in_bulk(tp):
                        self.recover(fetched, tp, records)
                    else:
                        await self.deliver_each(fetched, tp, records)
                await self._run_batch(fetched, held)
                await self.commit_if_due()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _run_batch(self, fetched: Fetched, held: list[tuple[TP, list[Record]]]) -> None:
        """The batch topics' records of a fetch, to the callback, if the fetch is still
        current: no await between that check and the callback, so a rebalance either waits
        for the batch (``wait_empty``) or the batch is not processed."""
        callback = self.batch_callback
        if callback is None:
            return
        if not self.current(fetched):
            self._not_processed(fetched)
            return
        if not held:
            return
        batch: list[Record] = []
        spans: dict[TP, list[int]] = {}
        for tp, fetched_records in held:
            records = self.unread(tp, fetched_records) if self.serves(fetched, tp) else []
            if records:
                batch.extend(records)
                spans[tp] = [r.offset for r in records]
        if not batch:
            return
        self._batch_idle.clear()
        await self._finish(asyncio.ensure_future(self._process(callback, batch, spans)))

    def _not_processed(self, fetched: Fetched) -> None:
        if self.app.consumer_generation_id == fetched.generation:
            return  # the flow stopped: faust seeks back before it resumes
        inputs = sum(len(r) for tp, r in fetched.records.items() if tp.topic in self.batch_topics)
        if inputs:
            log.info(
                "not processing %d input records fetched in consumer generation %d (now %d):"
                " they are read again from the committed offsets",
                inputs,
                fetched.generation,
                self.app.consumer_generation_id,
            )

    async def _process(
        self, callback: BatchCallback, batch: list[Record], spans: dict[TP, list[int]]
    ) -> None:
        try:
            await callback(batch)
            for tp, offsets in spans.items():
                await self.ack_batch(tp, offsets)
        finally:
            self._batch_idle.set()

    @staticmethod
    async def _finish(processing: asyncio.Future[None]) -> None:
        """Await a batch; when stopped meanwhile (faust cancels the fetcher before it waits for
        streams), still let it finish, so its outputs, state and offsets stay in step."""
        try:
            await asyncio.shield(processing)
        except asyncio.CancelledError:
            while not processing.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(processing)
            raise


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


TRANSPORT_SCHEME = "segkafka"
TRANSPORTS[TRANSPORT_SCHEME] = f"{__name__}:BatchTransport"


async def fetch_true_highwaters(conf: Any, reported: Mapping[TP, int]) -> dict[TP, int]:
    """Correct end offsets where a broker under-reports them.

    Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1, which would
    make faust stop recovering a changelog early. The high watermark in a Fetch response is
    right, so read one record from (reported end - 1) and take the larger value. On Apache
    Kafka the two agree and this costs one small fetch per partition at recovery.
    """
    result = dict(reported)
    todo = {tp: off for tp, off in reported.items() if off and off > 0}
    if not todo:
        return result
    servers = [f"{u.host}:{u.port or 9092}" for u in conf.broker_consumer]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        **getattr(conf, "segstream_client_options", {}),
    )
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, off in todo.items():
            consumer.seek(tp, off - 1)
        loop = asyncio.get_running_loop()
        pending, deadline = set(todo), loop.time() + 10
        while pending and loop.time() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None:
                    result[tp] = max(result[tp], high)
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return result


def install_batch_handler(app: AppT, topics: Sequence[TopicT], callback: BatchCallback) -> None:
    """Subscribe ``topics`` through faust and route their records to ``callback`` in batches."""
    for topic in topics:
        app.topics.add(topic)
    BatchConsumer.batch_topics = frozenset(n for t in topics for n in t.topics)
    BatchConsumer.batch_callback = staticmethod(callback)


class TableWriter:
    """Table entries for a batch: changelog records first, the local store once they are written.

    The local store must never lead the changelog: a worker restarted on its own disk would
    otherwise hold state (with its event ids) that a replacement rebuilding from the changelog
    lacks, and the events re-read after the crash would be taken for duplicates, so neither
    their changes nor their state would ever be written again.
    """

    def __init__(self, table: TableT[Any, Any], source_topic: str) -> None:
        self.table = table
        self.store = table_store(table)
        self.source_topic = source_topic
        self.changelog = table.changelog_topic.get_topic_name()

    def commit_records(self, commit: Commit) -> list[OutRecord]:
        """A commit's changelog records: one per customer, keyed by the raw customer_id, then
        the lane record. They go out as one record batch, appended whole or not at all."""
        changelog, partition = self.changelog, commit.partition
        records: list[OutRecord] = [
            (changelog, st.customer_id.encode(), dump_state(st), partition, [])
            for st in commit.states
        ]
        records += [(changelog, c.encode(), None, partition, []) for c in commit.erased]
        records.append((changelog, lane_key(partition), orjson.dumps(commit.lane), partition, []))
        return records

    def persisted(self, records: list[OutRecord], written: list[Written]) -> None:
        """The changelog has ``records``: now the local store (RocksDB keeps the offset too).

        The store gets the changelog's own key bytes, as faust's recovery writes them: a str
        key here left the in-memory store holding a customer twice once a recovery had written
        it, and adoption takes whichever entry comes first."""
        store = self.store
        for partition, group in itertools.groupby(records, key=operator.itemgetter(3)):
            with source_partition(self.source_topic, partition):
                for _, key, value, _, _ in group:
                    if value is not None:
                        store[key] = value
                    elif key in store:  # a tombstone: the customer was erased
                        del store[key]
        for batch in written:
            if batch.topic == self.changelog:
                tp = TP(batch.topic, batch.partition)
                store.set_persisted_offset(tp, batch.base_offset + batch.records - 1)


# Customer ids are text, so their UTF-8 keys never contain 0xFF: no customer can collide with
# a lane record's key.
_LANE_KEY_PREFIX = b"\xffsegstream-lane:"


def lane_key(partition: int) -> bytes:
    return _LANE_KEY_PREFIX + str(partition).encode()


def lane_partition(key: bytes) -> int | None:
    """The partition of a lane record's key; None for a customer's key."""
    if not key.startswith(_LANE_KEY_PREFIX):
        return None
    return int(key[len(_LANE_KEY_PREFIX) :])


def table_store(table: TableT[Any, Any]) -> StoreT[Any, Any]:
    """A table's local store (``Collection.data``, which faust's ``TableT`` does not declare)."""
    store: StoreT[Any, Any] = cast(Collection, table).data
    return store


def items_by_partition(table: TableT[Any, Any]) -> Iterator[tuple[int | None, Any, bytes]]:
    """A table's entries with their partition where the store knows it (faust's RocksDB store
    keeps one database per partition), else None: saves hashing every key at recovery."""
    store = table_store(table)
    databases = partition_databases(store)
    if databases is None:
        for key, value in store.items():
            yield None, key, value
        return
    for partition, items in databases:
        for key, value in items:
            yield partition, key, value
