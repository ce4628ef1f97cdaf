"""Whole-batch delivery through faust.

faust's consumer awaits once per message (``wait_first(callback(message), ...)``), which caps
an agent at a few thousand events per second. We keep faust for what it does well (consumer
group and partition assignment, tables and their recovery, web, timers) and replace only the
drain loop: records of our input topics are handed to one async callback per fetched batch.

Offsets: once the callback returns (its outputs and changelog writes acknowledged by the
broker), every offset of the batch is marked acked in faust's own bookkeeping, and faust's
commit machinery commits them. A crash before that re-delivers the batch: at-least-once.

This relies on private faust-streaming 0.15.3 internals (``_wait_next_records``, ``_acked``,
``_read_offset``, ``_current_event``); the version is pinned and the integration tests cover it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias, cast

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from faust.streams import _current_event
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from segstream.core.engine import Commit
from segstream.core.state import dump_state
from segstream.runtime.produce import OutRecord, Written

# aiokafka's own records are handed on as they are: no copy per record on the hot path
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"

BatchCallback = Callable[[list[Record]], Awaitable[None]]


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust hard-codes ``fetch_max_wait_ms=1500``; we make it configurable
    (``app.conf.segstream_fetch_max_wait_ms``). Tansu 0.6 may hold a fetch for most of that
    wait although data has arrived (a plain consumer at 50 events/s: p50 385 ms at 1500 ms,
    26 ms at 100 ms), while very short waits flood it with fetches (at 2,000/s: p99 340-570 ms
    at 5 ms, 72-103 ms at 100 ms). docs/performance.md has the measurements."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app.conf, "segstream_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """The aiokafka-driver consumer, delivering whole batches for the batch topics."""

    batch_topics: frozenset[str] = frozenset()
    batch_callback: BatchCallback | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()

    def _new_consumer_thread(self) -> Any:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_empty(self) -> None:
        """On rebalance or stop, let the batch in flight finish so its offsets are acked."""
        await self._batch_idle.wait()
        await super().wait_empty()

    async def highwaters(self, *partitions: TP) -> Any:
        reported = await super().highwaters(*partitions)
        return await fetch_true_highwaters(self.app.conf, reported)

    def _ack_range(self, tp: TP, start: int, last: int) -> None:
        committed = self._committed_offset[tp]
        if committed is not None:
            start = max(start, committed)
        if start <= last:
            self._acked[tp].extend(range(start, last + 1))
            self._n_acked += last + 1 - start

    async def _process(
        self, callback: BatchCallback, batch: list[Record], spans: dict[TP, tuple[int, int]]
    ) -> None:
        try:
            await callback(batch)
            for tp, (first, last) in spans.items():
                self._ack_range(tp, first, last)
                self._read_offset[tp] = last + 1
        finally:
            self._batch_idle.set()

    def _recover_batch(self, tp: TP, records: list[Record]) -> None:
        """A fetched run of an active changelog partition, applied to its table in one write.

        faust's own path queues every changelog record as an event and applies them one by one
        (about 3,500 records/s here); a replacement worker replays its whole changelog, so that
        was most of its recovery time. Offsets and the end of recovery are kept exactly as
        faust's ``Recovery._slurp_changelogs`` keeps them.
        """
        recovery = cast(Any, self.app.tables).recovery
        table = recovery.tp_to_table[tp]
        seen = recovery.active_offsets.get(tp)
        events = [
            _ChangelogEvent(
                r.key, r.value, _ChangelogMessage(tp, r.offset, r.key, r.value, tp.partition)
            )
            for r in records
            if seen is None or r.offset > seen
        ]
        if events:
            table.apply_changelog_batch(events)
            recovery.active_offsets[tp] = events[-1].message.offset
            now = time.monotonic()  # what faust's stall warnings look at
            recovery._active_events_received_at[tp] = recovery._last_flush_at = now
        if not recovery.need_recovery():
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()

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

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        batch_topics = self.batch_topics
        callback = self.callback
        to_message = self._to_message
        recovery = cast(Any, self.app.tables).recovery

        def recovering(tp: TP) -> bool:
            """An active changelog partition being recovered, for a table without hooks."""
            return (
                bool(recovery.in_recovery)
                and tp in recovery.active_tps
                and recovery.tp_to_table[tp]._on_changelog_event is None
            )

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()  # as Consumer.getmany: drop and seek back
                    continue
                batch: list[Record] = []
                spans: dict[TP, tuple[int, int]] = {}
                for tp, recs in records.items():
                    if (
                        active is not None
                        and tp not in active
                        and tp not in self._buffered_partitions
                    ):
                        continue
                    r_off = read_offset[tp]
                    if r_off is not None:
                        recs = [r for r in recs if r.offset >= r_off]
                    if not recs:
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    if tp.topic in batch_topics:
                        first = recs[0].offset
                        if r_off is not None and r_off < first:
                            first = r_off  # offsets skipped by the broker count as done
                        spans[tp] = (first, recs[-1].offset)
                        batch.extend(recs)
                    elif recovering(tp):
                        self._recover_batch(tp, recs)
                        read_offset[tp] = recs[-1].offset + 1
                    else:
                        for r in recs:  # any other topic keeps faust's per-message path
                            await self.wait_first(
                                callback(to_message(tp, r)), self.suspend_flow.wait()
                            )
                            read_offset[tp] = r.offset
                batch_callback = self.batch_callback
                if not batch or batch_callback is None:
                    continue
                self._batch_idle.clear()
                processing = self._process(batch_callback, batch, spans)
                await self._finish(asyncio.ensure_future(processing))
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
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


def install_batch_handler(app: Any, topics: Sequence[Any], callback: BatchCallback) -> None:
    """Subscribe ``topics`` through faust and route their records to ``callback`` in batches."""
    for topic in topics:
        app.topics.add(topic)
    BatchConsumer.batch_topics = frozenset(n for t in topics for n in t.topics)
    BatchConsumer.batch_callback = staticmethod(callback)


class _ChangelogMessage(NamedTuple):
    """What faust's stores read of a changelog message in ``apply_changelog_batch``."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes | None
    partition: int


class _ChangelogEvent(NamedTuple):
    key: bytes | None
    value: bytes | None
    message: _ChangelogMessage


class _PartitionMessage(NamedTuple):
    topic: str
    partition: int


class _PartitionEvent:
    """Stand-in for faust's current event: table stores read only ``.message.partition``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _PartitionMessage(topic, partition)


@contextlib.contextmanager
def source_partition(topic: str, partition: int) -> Iterator[None]:
    event = _PartitionEvent(topic, partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


class TableWriter:
    """Table entries for a batch: changelog records first, the local store once they are written.

    The local store must never lead the changelog: a worker restarted on its own disk would
    otherwise hold state (with its event ids) that a replacement rebuilding from the changelog
    lacks, and the events re-read after the crash would be taken for duplicates, so neither
    their changes nor their state would ever be written again.
    """

    def __init__(self, app: Any, table: Any, source_topic: str) -> None:
        self.app = app
        self.table = table
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
        table = self.table
        for partition, group in itertools.groupby(records, key=operator.itemgetter(3)):
            with source_partition(self.source_topic, partition):
                store = table.data
                for _, key, value, _, _ in group:
                    if value is not None:
                        store[key] = value
                    elif key in store:  # a tombstone: the customer was erased
                        del store[key]
        for batch in written:
            if batch.topic == self.changelog:
                tp = TP(batch.topic, batch.partition)
                table.data.set_persisted_offset(tp, batch.base_offset + batch.records - 1)


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


def items_by_partition(table: Any) -> Iterator[tuple[int | None, Any, bytes]]:
    """A table's entries with their partition where the store knows it (faust's RocksDB store
    keeps one database per partition), else None: saves hashing every key at recovery."""
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is None or not hasattr(store, "_visible_items"):
        for key, value in store.items():
            yield None, key, value
        return
    active = {id(db) for db in store._dbs_for_actives()}
    for partition, db in list(dbs.items()):
        if id(db) in active:
            for key, value in store._visible_items(db):
                yield partition, key, value
