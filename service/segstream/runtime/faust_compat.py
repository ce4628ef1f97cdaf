"""The fence: the one module of segstream that names a private faust-streaming, mode-streaming
or aiokafka attribute (tests/unit/test_faust_compat.py fails on one anywhere else).

The batch path (batching.py) replaces faust's per-message drain loop and its per-record
changelog recovery. Both need state that faust and aiokafka keep in private names. This module:

- checks at start-up (``incompatibility``, called by runtime/main.py) that the installed
  versions are within SUPPORTED and that every name of PRIVATE_NAMES still exists, a method
  with the parameters it is called with here;
- gives typed views (Protocols) of the objects whose private state is read or written;
- holds the copies of faust's own code that the batch path needs, kept as faust 0.15.3 has
  them: acking a batch with faust's bookkeeping and gaps (``Consumer.ack`` and the gap step of
  ``Consumer._drain_messages``), not processing records fetched in a consumer generation that
  changed (``Consumer.getmany``), faust's per-message path for other topics, and applying a
  fetched changelog run then signalling the end of recovery (``Recovery._slurp_changelogs``);
- lets a table's recover callback run only when faust's recovery really ended
  (``when_recovery_ended``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dis
import importlib
import importlib.metadata
import inspect
import logging
import re
import signal
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeAlias, cast

import faust
from faust import streams as faust_streams
from faust.tables.base import Collection
from faust.tables.manager import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, CollectionT, ConsumerT, EventT, StoreT
from faust.types.tuples import ack_lock
from mode import ServiceT

log = logging.getLogger(__name__)

# aiokafka's ConsumerRecord (aiokafka ships no type information)
Record: TypeAlias = Any
# a key and value of a table store
Item: TypeAlias = tuple[bytes, bytes]

FAUST, MODE, AIOKAFKA = "faust-streaming", "mode-streaming", "aiokafka"

#: package -> (oldest supported version, first unsupported one). pyproject.toml pins the version
#: the tests ran on; a patch release passes if every name below still fits.
SUPPORTED: dict[str, tuple[str, str]] = {
    FAUST: ("0.15.3", "0.16"),
    MODE: ("0.7.1", "0.8"),
    AIOKAFKA: ("0.14.0", "0.15"),
}


@dataclass(frozen=True)
class Private:
    """A private name used here. ``owner`` is ``module:Class`` or a module; ``params`` are a
    method's parameter names (``self`` first), None for data."""

    package: str
    owner: str
    name: str
    params: tuple[str, ...] | None = None
    coroutine: bool = False

    @property
    def where(self) -> str:
        return f"{self.owner.replace(':', '.')}.{self.name}"


_CONSUMER = "faust.transport.consumer:Consumer"
_DRIVER = "faust.transport.drivers.aiokafka"
_THREAD = f"{_DRIVER}:AIOKafkaConsumerThread"
_RECOVERY = "faust.tables.recovery:Recovery"
_ROCKSDB = "faust.stores.rocksdb:Store"
_KAFKA_CONSUMER = "aiokafka.consumer.consumer:AIOKafkaConsumer"

PRIVATE_NAMES: tuple[Private, ...] = (
    # faust's drain loop, replaced, and what it reads: the fetch, the partitions being fetched
    Private(FAUST, _CONSUMER, "_drain_messages", ("self", "fetcher"), coroutine=True),
    Private(FAUST, _CONSUMER, "_wait_next_records", ("self", "timeout"), coroutine=True),
    Private(FAUST, _CONSUMER, "_get_active_partitions", ("self",)),
    Private(FAUST, _CONSUMER, "_buffered_partitions"),
    Private(FAUST, _CONSUMER, "_to_message", ("self", "tp", "record")),
    # offsets, kept as Consumer.ack and the drain loop keep them
    Private(FAUST, _CONSUMER, "_read_offset"),
    Private(FAUST, _CONSUMER, "_committed_offset"),
    Private(FAUST, _CONSUMER, "_acked"),
    Private(FAUST, _CONSUMER, "_acked_index"),
    Private(FAUST, _CONSUMER, "_n_acked"),
    Private(FAUST, _CONSUMER, "_commit_every"),
    Private(FAUST, _CONSUMER, "_add_gap", ("self", "tp", "offset_from", "offset_to"), True),
    # the aiokafka driver: its consumer thread, the clients it creates
    Private(FAUST, f"{_DRIVER}:Consumer", "_new_consumer_thread", ("self",)),
    Private(FAUST, "faust.transport.consumer:ThreadDelegateConsumer", "_thread"),
    Private(FAUST, _THREAD, "_create_worker_consumer", ("self", "transport")),
    Private(FAUST, _THREAD, "_consumer"),
    Private(FAUST, f"{_DRIVER}:Producer", "_producer"),
    # table recovery: the loop whose steps recover_batch takes, and the state it keeps
    Private(FAUST, _RECOVERY, "_slurp_changelogs", ("self",), coroutine=True),
    Private(FAUST, _RECOVERY, "_set_recovery_ended", ("self",)),
    Private(FAUST, _RECOVERY, "_active_events_received_at"),
    Private(FAUST, _RECOVERY, "_last_flush_at"),
    Private(FAUST, _RECOVERY, "_generation_id"),
    Private(FAUST, "faust.tables.base:Collection", "_on_changelog_event"),
    # table stores: the partition of the current event; RocksDB's databases by partition
    Private(FAUST, "faust.streams", "_current_event"),
    Private(FAUST, _ROCKSDB, "_dbs"),
    Private(FAUST, _ROCKSDB, "_dbs_for_actives", ("self",)),
    Private(FAUST, _ROCKSDB, "_visible_items", ("self", "db")),
    # aiokafka's consumer: the fetch wait, the fetch positions, the connections
    Private(AIOKAFKA, _KAFKA_CONSUMER, "_fetch_max_wait_ms"),
    Private(AIOKAFKA, _KAFKA_CONSUMER, "_subscription"),
    Private(AIOKAFKA, _KAFKA_CONSUMER, "_client"),
    # mode's worker: its SIGINT handler
    Private(MODE, "mode.worker:Worker", "_on_sigint", ("self",)),
    Private(MODE, "mode.worker:Worker", "_schedule_shutdown", ("self", "signal")),
)

#: the private names above, which no module of service/ but this one may name
FENCED_NAMES = frozenset(private.name for private in PRIVATE_NAMES)


# -- the start-up check ------------------------------------------------------------------------


def installed_version(package: str) -> str:
    return importlib.metadata.version(package)


def incompatibility(
    version: Callable[[str], str] | None = None, names: Iterable[Private] = PRIVATE_NAMES
) -> str | None:
    """What of the installed faust-streaming, mode-streaming and aiokafka does not fit, in
    one line naming the package, its version and the missing piece; None when all fits.
    ``version`` looks a package's version up (default: ``installed_version``)."""
    version = version or installed_version
    problems: list[str] = []
    installed: dict[str, str] = {}
    for package, (oldest, first_unsupported) in SUPPORTED.items():
        try:
            installed[package] = found = version(package)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            continue
        if not _release(oldest) <= _release(found) < _release(first_unsupported):
            problems.append(f"{package} {found} is not supported (>={oldest},<{first_unsupported})")
    for private in names:
        missing = _missing(private)
        if missing is not None:
            problems.append(f"{private.package} {installed.get(private.package, '?')}: {missing}")
    return "; ".join(problems) or None


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version string: ``0.15.3rc1`` -> (0, 15, 3)."""
    found = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in found.group().split(".")) if found else ()


def _missing(private: Private) -> str | None:
    module_name, _, class_name = private.owner.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
    except (ImportError, AttributeError):
        return f"{private.owner.replace(':', '.')} is missing"
    if private.params is None:
        found = _has_attribute(owner, private.name) if class_name else hasattr(owner, private.name)
        return None if found else f"{private.where} is missing"
    member = getattr(owner, private.name, None)
    if member is None:
        return f"{private.where} is missing"
    function = getattr(member, "fun", member)  # a mode ServiceTask wraps its function
    try:
        params = tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return f"{private.where} is no longer a function"
    if params != private.params:
        return f"{private.where}({', '.join(params)}) is not ({', '.join(private.params)})"
    if inspect.iscoroutinefunction(function) != private.coroutine:
        return f"{private.where} is {'no longer' if private.coroutine else 'now'} a coroutine"
    return None


def _has_attribute(owner: type, name: str) -> bool:
    """A class, or one it derives from, declares ``name`` or assigns it in a method."""
    for cls in owner.__mro__:
        namespace = vars(cls)
        if name in namespace or name in namespace.get("__annotations__", {}):
            return True
        for member in namespace.values():
            code = getattr(getattr(member, "__func__", member), "__code__", None)
            if code is not None and any(
                i.opname == "STORE_ATTR" and i.argval == name for i in dis.get_instructions(code)
            ):
                return True
    return False


# -- typed views of what is read or written ----------------------------------------------------


class RecoveryState(Protocol):
    """What the batch path uses of faust's table ``Recovery`` service (tables/recovery.py)."""

    in_recovery: bool
    active_tps: set[TP]
    tp_to_table: MutableMapping[TP, CollectionT]
    active_offsets: Counter[TP]
    _active_events_received_at: MutableMapping[TP, float]
    _last_flush_at: float | None
    _generation_id: int

    @property
    def signal_recovery_start(self) -> asyncio.Event: ...

    @property
    def signal_recovery_end(self) -> asyncio.Event: ...

    def need_recovery(self) -> bool: ...

    def flush_buffers(self) -> None: ...

    def _set_recovery_ended(self) -> None: ...


class PartitionedStore(Protocol):
    """faust's RocksDB store: one database per partition (rocksdict's are untyped)."""

    _dbs: MutableMapping[int, Any]

    def _dbs_for_actives(self) -> Iterator[Any]: ...

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]: ...


class KafkaConsumerState(Protocol):
    """What is read or set of an aiokafka ``AIOKafkaConsumer`` (untyped)."""

    _fetch_max_wait_ms: int
    _subscription: Any
    _client: Any


class ConsumerThread(Protocol):
    """faust's aiokafka consumer thread, which owns the ``AIOKafkaConsumer``."""

    _consumer: KafkaConsumerState | None

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...


class Fetched(NamedTuple):
    """One fetch: records by partition, the live set of partitions being fetched (None for a
    client-only app), and the consumer generation they were fetched in."""

    records: dict[TP, list[Record]]
    active: set[TP] | None
    generation: int


# -- the consumer --------------------------------------------------------------------------------


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust hard-codes ``fetch_max_wait_ms=1500``; we make it configurable
    (``app.conf.segstream_fetch_max_wait_ms``). Tansu 0.6 may hold a fetch for most of that
    wait although data has arrived (a plain consumer at 50 events/s: p50 385 ms at 1500 ms,
    26 ms at 100 ms), while very short waits flood it with fetches (at 2,000/s: p99 340-570 ms
    at 5 ms, 72-103 ms at 100 ms). docs/performance.md has the measurements."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app.conf, "segstream_fetch_max_wait_ms", None)
        if wait is not None:
            cast(KafkaConsumerState, consumer)._fetch_max_wait_ms = int(wait)
        return consumer


class FencedConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka-driver consumer with the private steps the batch path needs under
    public names. A subclass implements ``drain``, which replaces faust's drain loop."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        await self.drain(fetcher)

    async def drain(self, fetcher: ServiceT) -> None:
        """Read fetched records until this consumer or ``fetcher`` stops."""
        raise NotImplementedError

    async def fetch(self, wait_seconds: float) -> Fetched:
        """The next fetched records, waiting up to ``wait_seconds``. The generation is read
        once the fetch returned, as ``Consumer.getmany`` reads it."""
        records, active = await self._wait_next_records(wait_seconds)
        return Fetched(dict(records or {}), active, self.app.consumer_generation_id)

    def current(self, fetched: Fetched) -> bool:
        """Records of ``fetched`` may still be processed: the flow was not stopped and the
        consumer generation did not change since the fetch. ``Consumer.getmany`` stops handing
        out a fetch's records otherwise: after a rebalance they are read again from the
        committed offsets, maybe by another worker."""
        return self.flow_active and self.app.consumer_generation_id == fetched.generation

    def serves(self, fetched: Fetched, tp: TP) -> bool:
        """``tp`` is still being fetched for this consumer (``Consumer.getmany``'s test)."""
        active = fetched.active
        return active is None or tp in active or tp in self._buffered_partitions

    def unread(self, tp: TP, records: list[Record]) -> list[Record]:
        """``records`` from the read offset on, as the drain loop keeps them."""
        read = self._read_offset[tp]
        return records if read is None else [r for r in records if r.offset >= read]

    async def ack_batch(self, tp: TP, offsets: Sequence[int]) -> None:
        """Mark processed records of ``tp`` (``offsets`` ascending) done as faust's drain loop
        and ``Consumer.ack`` do for each in turn: a jump from the offset read before (compacted
        records, transaction markers) is registered with ``_add_gap`` so that commits pass it;
        each offset not yet committed nor acked joins ``_acked``, ``_acked_index`` and
        ``_n_acked`` together; the read offset ends at the last."""
        if not offsets:
            return
        if self.app.topics.acks_enabled_for(tp.topic):
            previous = self._read_offset[tp]
            for offset in offsets:
                if previous and offset - previous > 1:
                    await self._add_gap(tp, previous + 1, offset)
                previous = offset
            committed = self._committed_offset[tp]
            with ack_lock:
                index = self._acked_index[tp]
                new = [
                    offset
                    for offset in offsets
                    if (committed is None or offset >= committed) and offset not in index
                ]
                index.update(new)
                self._acked[tp].extend(new)
                self._n_acked += len(new)
        self._read_offset[tp] = offsets[-1]

    async def commit_if_due(self) -> None:
        """faust's drain loop commits once ``broker_commit_every`` offsets were acked."""
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    async def deliver_each(self, fetched: Fetched, tp: TP, records: list[Record]) -> None:
        """faust's own per-message path (``Consumer._drain_messages``), for a topic the batch
        path does not take: each record to ``self.callback`` in turn, while ``fetched`` is
        current."""
        callback, read = self.callback, self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        for record in records:
            if not self.current(fetched):
                return
            offset, read_offset = record.offset, read[tp]
            if read_offset is None or offset >= read_offset:
                if read_offset and offset - read_offset > 1 and acks_enabled_for(tp.topic):
                    await self._add_gap(tp, read_offset + 1, offset)
                await self.wait_first(
                    callback(self._to_message(tp, record)), self.suspend_flow.wait()
                )
                read[tp] = offset

    def recovers_in_bulk(self, tp: TP) -> bool:
        """``tp`` is an active changelog partition being recovered, of a table without
        changelog hooks: ``recover`` may apply its records."""
        recovery = recovery_of(self.app)
        return (
            recovery.in_recovery
            and tp in recovery.active_tps
            and cast(Collection, recovery.tp_to_table[tp])._on_changelog_event is None
        )

    def recover(self, fetched: Fetched, tp: TP, records: list[Record]) -> None:
        """Apply a fetched run of an active changelog partition to its table in one write.

        faust's own path queues every changelog record as an event and applies them one by
        one (about 3,500 records/s here); a replacement worker replays its whole changelog, so
        that was most of its recovery time. The offsets are kept as
        ``Recovery._slurp_changelogs`` keeps them, and the end of recovery is signalled under
        its condition, but only while faust's recovery waits for that signal (``_awaited``).

        Only the newest record of each key in the run is applied: a store keeps the last
        value of a key anyway (faust's memory store, too, deletes a key only when its last
        record is a tombstone), and the older ones were most of the bytes written, since every
        commit rewrites its partition's lane record with the changes not yet confirmed as
        sent (three quarters of a changelog's bytes in the scale benchmark). The kept records
        stay in offset order, and the run's last record, whose offset the store persists, is
        always kept."""
        records = self.unread(tp, records)
        if not records:
            return
        recovery = recovery_of(self.app)
        table = recovery.tp_to_table[tp]
        seen = recovery.active_offsets.get(tp)
        events: list[ChangelogEvent] = []
        keys: set[bytes | None] = set()
        for r in reversed(records):  # newest first: the first record seen of a key is kept
            if (seen is None or r.offset > seen) and r.key not in keys:
                keys.add(r.key)
                message = ChangelogMessage(tp, r.offset, r.key, r.value, tp.partition)
                events.append(ChangelogEvent(r.key, r.value, message))
        events.reverse()
        if events:
            table.apply_changelog_batch(cast("list[EventT[Any]]", events))
            recovery.active_offsets[tp] = events[-1].message.offset
            now = time.monotonic()  # what faust's stall warnings look at
            recovery._active_events_received_at[tp] = recovery._last_flush_at = now
        self._read_offset[tp] = records[-1].offset
        if recovery.in_recovery and not recovery.need_recovery() and self._awaited(fetched):
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()

    def _awaited(self, fetched: Fetched) -> bool:
        """faust's recovery (``Recovery._restart_recovery``) is waiting for the end signal of
        the recovery these records belong to. It resumes the active changelog partitions just
        before it waits and pauses them once woken, after it built the highwaters that
        ``need_recovery`` compares with for this generation; a rebalance sets
        ``signal_recovery_start`` and abandons the wait. A signal outside that wait would end
        the next recovery before it read anything, once faust waits again."""
        recovery = recovery_of(self.app)
        return (
            self.current(fetched)
            and recovery._generation_id == fetched.generation
            and not recovery.signal_recovery_start.is_set()
            and recovery.active_tps <= self._get_active_partitions()
        )


# -- tables, stores, clients, the worker ------------------------------------------------------


def recovery_of(app: AppT) -> RecoveryState:
    return cast(TableManager, app.tables).recovery


RecoverCallback = Callable[[], Awaitable[None]]


def when_recovery_ended(app: AppT, callback: RecoverCallback) -> RecoverCallback:
    """``callback`` as a table's recover callback, run only when faust's recovery really ended.

    faust's ``Recovery._restart_recovery`` also completes a recovery whose wait for the end it
    gave up because another rebalance started (it swallows that ``RebalanceAgain``): it calls
    the tables' recover callbacks with a changelog not read to its end, then notices the new
    generation, and the recovery of that rebalance calls them again. The rebalance that
    interrupted it set ``signal_recovery_start``, which faust clears only once it is back in its
    loop, after the callbacks started (the stores' ``on_recovery_completed`` do not await)."""

    async def recovered() -> None:
        if recovery_of(app).signal_recovery_start.is_set():
            log.info("a rebalance interrupted the recovery: the tables are recovered again")
            return
        await callback()

    return recovered


class ChangelogMessage(NamedTuple):
    """What faust's stores read of a changelog message in ``apply_changelog_batch``."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes | None
    partition: int


class ChangelogEvent(NamedTuple):
    key: bytes | None
    value: bytes | None
    message: ChangelogMessage


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
    """Table writes outside a stream go to ``partition``: faust's stores take the partition of
    the current event (``faust.streams._current_event``)."""
    current = faust_streams._current_event
    event = cast("EventT[Any]", _PartitionEvent(topic, partition))
    token = current.set(weakref.ref(event))
    try:
        yield
    finally:
        current.reset(token)


def partition_databases(store: StoreT[Any, Any]) -> Iterator[tuple[int, Iterator[Item]]] | None:
    """The items of each active partition's database of a RocksDB store; None for a store
    that keeps no databases by partition (memory)."""
    if not hasattr(store, "_dbs") or not hasattr(store, "_visible_items"):
        return None
    rocks = cast(PartitionedStore, store)

    def databases() -> Iterator[tuple[int, Iterator[Item]]]:
        active = {id(db) for db in rocks._dbs_for_actives()}
        for partition, db in list(rocks._dbs.items()):
            if id(db) in active:
                yield partition, rocks._visible_items(db)

    return databases()


def read_offset(consumer: ConsumerT, tp: TP) -> int | None:
    """faust's read offset of ``tp``: the committed offset once assigned, then the offset of
    the last record processed."""
    return cast(faust_aiokafka.Consumer, consumer)._read_offset.get(tp)


def committed_offset(consumer: ConsumerT, tp: TP) -> int | None:
    return cast(faust_aiokafka.Consumer, consumer)._committed_offset.get(tp)


def consumer_thread(consumer: ConsumerT) -> ConsumerThread | None:
    return cast("ConsumerThread | None", getattr(consumer, "_thread", None))


def kafka_consumer(consumer: ConsumerT) -> KafkaConsumerState | None:
    """The aiokafka consumer under faust's, once started."""
    thread = consumer_thread(consumer)
    return None if thread is None else thread._consumer


def fetch_position(consumer: ConsumerT, tp: TP) -> int | None:
    """The aiokafka consumer's fetch position of ``tp``, when it has a valid one."""
    client = kafka_consumer(consumer)
    if client is None:
        return None
    state = client._subscription.subscription
    if state is None or state.assignment is None or tp not in state.assignment.tps:
        return None
    tp_state = state.assignment.state_value(tp)
    return int(tp_state.position) if tp_state.has_valid_position else None


def kafka_client(consumer: ConsumerT) -> Any:
    """The aiokafka client (connections) of faust's consumer, once started."""
    client = kafka_consumer(consumer)
    return None if client is None else client._client


def kafka_producer(app: AppT) -> Any:
    """The aiokafka producer faust created for ``app``, None until it started."""
    return getattr(app.producer, "_producer", None)


class Worker(faust.Worker):
    """faust's worker; on Ctrl-C it calls ``on_interrupt`` instead of printing mode's
    ``-INT-`` banner, then shuts down as mode does."""

    def on_interrupt(self) -> None:
        """Called on SIGINT, before the shutdown starts."""

    def _on_sigint(self) -> None:
        self.on_interrupt()
        self._schedule_shutdown(signal.SIGINT)
