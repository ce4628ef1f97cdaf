"""The fence around faust's, mode's and aiokafka's private names (runtime/faust_compat.py), on
the real classes and objects of the installed versions (no broker).

Compared with faust's own code where we copy it: the ack bookkeeping and offset gaps against
faust's drain loop and ``Consumer.ack`` run on an identical consumer, the generation check
against ``Consumer.getmany``."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from segstream.runtime import faust_compat
from segstream.runtime.batching import BatchConsumer, TableWriter
from segstream.runtime.faust_compat import (
    FAUST,
    FENCED_NAMES,
    PRIVATE_NAMES,
    Fetched,
    LowLatencyConsumerThread,
    Private,
    incompatibility,
)
from segstream.runtime.settings import Settings
from segstream.runtime.worker import SegmentWorker
from tests.unit.factories import ROOT

SERVICE = ROOT / "service" / "segstream"
FENCE = SERVICE / "runtime" / "faust_compat.py"


@pytest.fixture
async def worker(tmp_path: Path) -> SegmentWorker:
    """A worker built, never started: no broker is contacted. Built on the test's event loop,
    which faust's services then use."""
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", rules_dir=ROOT / "rules", data_dir=tmp_path
    )
    return SegmentWorker(settings)


def record(tp: TP, offset: int, key: bytes = b"k", value: bytes = b"v") -> Any:
    return ConsumerRecord(
        tp.topic, tp.partition, offset, 0, 0, key, value, None, len(key), len(value), ()
    )


# -- the start-up check ------------------------------------------------------------------------


def test_the_installed_libraries_fit() -> None:
    assert incompatibility() is None


@pytest.mark.parametrize(
    ("package", "version", "message"),
    [
        (FAUST, "0.15.2", "faust-streaming 0.15.2 is not supported (>=0.15.3,<0.16)"),
        (FAUST, "0.16.0", "faust-streaming 0.16.0 is not supported (>=0.15.3,<0.16)"),
        ("aiokafka", "0.13.1", "aiokafka 0.13.1 is not supported (>=0.14.0,<0.15)"),
    ],
)
def test_a_version_out_of_range_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, package: str, version: str, message: str
) -> None:
    real = faust_compat.installed_version
    monkeypatch.setattr(
        faust_compat, "installed_version", lambda p: version if p == package else real(p)
    )
    assert incompatibility() == message


class OlderConsumer:
    """A consumer class from a faust that kept its bookkeeping differently."""

    _acked: dict[TP, list[int]]

    async def _add_gap(self, tp: TP, start: int, end: int) -> None: ...

    def _wait_next_records(self, timeout: float) -> None: ...


OLDER, OLDER_DOTTED = f"{__name__}:OlderConsumer", f"{__name__}.OlderConsumer"


@pytest.mark.parametrize(
    ("private", "missing"),
    [
        (Private(FAUST, OLDER, "_acked"), None),
        (
            Private(FAUST, OLDER, "_acked_index"),
            f"{__name__}.OlderConsumer._acked_index is missing",
        ),
        (
            Private(FAUST, OLDER, "_add_gap", ("self", "tp", "offset_from", "offset_to"), True),
            f"{__name__}.OlderConsumer._add_gap(self, tp, start, end)"
            " is not (self, tp, offset_from, offset_to)",
        ),
        (
            Private(FAUST, OLDER, "_wait_next_records", ("self", "timeout"), coroutine=True),
            f"{__name__}.OlderConsumer._wait_next_records is no longer a coroutine",
        ),
        (Private(FAUST, "faust.nowhere:Consumer", "_acked"), "faust.nowhere.Consumer is missing"),
    ],
)
def test_a_missing_name_or_changed_signature_is_one_line_naming_it(
    private: Private, missing: str | None
) -> None:
    found = incompatibility(names=[private])
    assert found == (None if missing is None else f"faust-streaming 0.15.3: {missing}")


def test_every_private_name_is_found_on_the_installed_classes() -> None:
    for private in PRIVATE_NAMES:
        assert faust_compat._missing(private) is None, private


async def test_the_fenced_names_exist_on_real_objects(worker: SegmentWorker) -> None:
    """The names the start-up check finds on the classes are there on the objects, with the
    types the fence's code and Protocols assume."""
    consumer = worker.app.consumer
    assert isinstance(consumer, BatchConsumer)
    assert consumer._acked == {} and consumer._acked_index == {} and consumer._n_acked == 0
    assert consumer._read_offset[TP("t", 0)] is None
    assert consumer._committed_offset[TP("t", 0)] is None
    assert consumer._buffered_partitions == set()
    assert consumer._commit_every == 10_000
    assert consumer._get_active_partitions() == set()
    thread = consumer._thread
    assert isinstance(thread, LowLatencyConsumerThread) and thread._consumer is None
    kafka = thread._create_worker_consumer(consumer.transport)
    assert kafka._fetch_max_wait_ms == worker.settings.fetch_max_wait_ms
    assert kafka._client is not None and kafka._subscription.subscription is None
    await kafka.stop()
    recovery = worker.app.tables.recovery
    assert recovery._active_events_received_at == {} and recovery._last_flush_at is None
    assert recovery._generation_id == 0
    assert worker.table._on_changelog_event is None
    assert faust_compat.kafka_producer(worker.app) is None  # created when the app starts


async def test_the_rocksdb_store_keeps_a_database_per_partition(tmp_path: Path) -> None:
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
        rules_dir=ROOT / "rules",
        data_dir=tmp_path,
        store="rocksdb://",
    )
    store = SegmentWorker(settings).table.data
    assert store._dbs == {}
    assert list(store._dbs_for_actives()) == []
    databases = faust_compat.partition_databases(store)
    assert databases is not None and list(databases) == []


# -- acks and gaps, compared with faust's own drain loop and ack --------------------------------


class _Fetcher:
    """What faust's drain loop reads of the fetcher service."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()
        self.should_stop = False


async def _faust_drains(consumer: FaustConsumer, tp: TP, offsets: list[int]) -> None:
    """faust's own ``_drain_messages`` over one fetch, each message acked by its callback as a
    stream acks it."""
    fetcher = _Fetcher()

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for offset in offsets:
            yield tp, consumer._to_message(tp, record(tp, offset))
        fetcher._stopped.set()

    async def acked(message: Any) -> None:
        consumer.ack(message)

    consumer.getmany = getmany  # type: ignore[method-assign]
    consumer.callback = acked
    await FaustConsumer._drain_messages(consumer, fetcher)  # type: ignore[arg-type]


def _bookkeeping(consumer: FaustConsumer, tp: TP) -> tuple[Any, ...]:
    gaps = sorted((i.begin, i.end) for i in consumer._gap[tp])
    return (
        list(consumer._acked[tp]),
        set(consumer._acked_index[tp]),
        consumer._n_acked,
        consumer._read_offset[tp],
        gaps,
    )


def _two_consumers(tmp_path: Path) -> tuple[FaustConsumer, BatchConsumer, TP]:
    consumers = []
    for n in (1, 2):
        settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
            rules_dir=ROOT / "rules",
            data_dir=tmp_path / str(n),
        )
        app = SegmentWorker(settings).app
        app.topics._acking_topics.add(settings.topic_orders)  # as subscribing the inputs does
        consumers.append(app.consumer)
    faust_side, ours = consumers
    assert isinstance(ours, BatchConsumer)
    return faust_side, ours, TP(settings.topic_orders, 1)


@pytest.mark.parametrize(
    ("committed", "batches"),
    [
        (None, [[0, 1, 2, 3]]),
        (100, [[100, 101, 103, 104, 107], [110, 111], [112]]),  # markers or compacted records
        (100, [[104, 105], [106, 200]]),  # a gap before the first record read
        (50, [[60], [61, 62], [70, 71, 72, 73]]),
    ],
)
async def test_a_batch_ack_keeps_fausts_bookkeeping(
    tmp_path: Path, committed: int | None, batches: list[list[int]]
) -> None:
    """``_acked``, ``_acked_index``, ``_n_acked``, the read offset and the gaps agree after each
    batch with what faust's drain loop and ``ack`` leave for the same records, and so does
    the offset faust would commit."""
    faust_side, ours, tp = _two_consumers(tmp_path)
    for consumer in (faust_side, ours):
        consumer._committed_offset[tp] = committed
        consumer._read_offset[tp] = committed  # as after seeking to the committed offset
    for offsets in batches:
        await _faust_drains(faust_side, tp, offsets)
        await ours.ack_batch(tp, offsets)
        assert _bookkeeping(ours, tp) == _bookkeeping(faust_side, tp)
    assert ours._new_offset(tp) == faust_side._new_offset(tp)
    assert _bookkeeping(ours, tp) == _bookkeeping(faust_side, tp)


async def test_an_offset_below_the_committed_one_or_acked_already_is_not_acked_again(
    tmp_path: Path,
) -> None:
    _, ours, tp = _two_consumers(tmp_path)
    ours._committed_offset[tp] = 10
    await ours.ack_batch(tp, [8, 9, 10, 11])
    await ours.ack_batch(tp, [11, 12])
    assert ours._acked[tp] == [10, 11, 12] and ours._acked_index[tp] == {10, 11, 12}
    assert ours._n_acked == 3


async def test_offset_gaps_are_committed_past(tmp_path: Path) -> None:
    _, ours, tp = _two_consumers(tmp_path)
    ours._committed_offset[tp] = ours._read_offset[tp] = 100
    await ours.ack_batch(tp, [100, 101, 105, 106])
    commits = []
    while (offset := ours._new_offset(tp)) is not None and ours._should_commit(tp, offset):
        ours._committed_offset[tp] = offset  # as a commit records it
        commits.append(offset)
    assert commits[-1] == 107  # the next offset to read: every record and gap passed
    assert ours._acked_index[tp] == set()


# -- records fetched in a generation that changed ---------------------------------------------


def _fetching(consumer: BatchConsumer, batches: list[dict[TP, list[Any]]]) -> _Fetcher:
    """Make ``consumer``'s fetches return ``batches`` (all partitions active), then stop."""
    fetcher = _Fetcher()
    active = {tp for batch in batches for tp in batch}
    pending = list(batches)

    async def wait_next_records(timeout: float) -> Any:  # noqa: ASYNC109
        records = pending.pop(0)
        if not pending:
            fetcher.should_stop = True
        return records, active

    consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 1000  # type: ignore[method-assign]
    return fetcher


async def test_records_fetched_before_the_generation_changed_are_not_processed(
    worker: SegmentWorker,
) -> None:
    """A rebalance completes while another topic's record of the same fetch is delivered (an
    await): the batch topics' records of that fetch are neither processed nor acked."""
    consumer = worker.app.consumer
    assert isinstance(consumer, BatchConsumer)
    orders = TP(worker.settings.topic_orders, 0)
    other = TP("other", 0)
    processed: list[int] = []

    async def batch(records: list[Any]) -> None:
        processed.extend(r.offset for r in records)

    async def other_topic(message: Any) -> None:
        worker.app.consumer_generation_id += 1  # the rebalance, meanwhile

    consumer.callback = other_topic
    consumer.batch_callback = batch  # type: ignore[assignment]
    worker.app.topics._acking_topics.add(orders.topic)  # as subscribing the inputs does
    fetcher = _fetching(consumer, [{other: [record(other, 0)], orders: [record(orders, 5)]}])
    await consumer.drain(fetcher)  # type: ignore[arg-type]
    assert processed == []
    assert consumer._read_offset[orders] is None and consumer._acked == {}

    # the same fetch in one generation is processed and acked
    fetcher = _fetching(consumer, [{orders: [record(orders, 5), record(orders, 6)]}])
    await consumer.drain(fetcher)  # type: ignore[arg-type]
    assert processed == [5, 6] and consumer._acked[orders] == [5, 6]
    assert consumer._read_offset[orders] == 6


async def test_fausts_getmany_drops_the_same_records(worker: SegmentWorker) -> None:
    """What the batch path copies: ``Consumer.getmany`` hands out no record of a fetch once
    the generation changed."""
    consumer = worker.app.consumer
    orders = TP(worker.settings.topic_orders, 0)
    _fetching(consumer, [{orders: [record(orders, 5), record(orders, 6)]}])  # type: ignore[arg-type]

    seen = []
    async for _, message in consumer.getmany(1.0):
        seen.append(message.offset)
        worker.app.consumer_generation_id += 1
    assert seen == [5]


async def test_a_stopped_flow_drops_the_fetch(worker: SegmentWorker) -> None:
    consumer = worker.app.consumer
    assert isinstance(consumer, BatchConsumer)
    fetched = Fetched({}, None, worker.app.consumer_generation_id)
    assert consumer.current(fetched)
    consumer.stop_flow()
    assert not consumer.current(fetched)
    consumer.resume_flow()
    worker.app.consumer_generation_id += 1
    assert not consumer.current(fetched)


# -- the end of recovery ------------------------------------------------------------------------


Recovering = tuple[SegmentWorker, BatchConsumer, TP]


@pytest.fixture
async def recovering(
    worker: SegmentWorker,
) -> AsyncIterator[tuple[SegmentWorker, BatchConsumer, TP]]:
    """faust's recovery of one active changelog partition, at the point where it waits for
    the end signal: highwaters built (last offset 1), the partition resumed."""
    consumer = worker.app.consumer
    assert isinstance(consumer, BatchConsumer)
    recovery = worker.app.tables.recovery
    tp = TP(TableWriter(worker.table, "orders").changelog, 0)
    worker.app.consumer_generation_id = recovery._generation_id = 3
    recovery.add_active(worker.table, tp)
    recovery.active_highwaters[tp] = 1
    recovery.active_offsets[tp] = -1
    recovery._set_recovery_started()
    consumer.resume_partitions({tp})
    yield worker, consumer, tp


def _fetched(worker: SegmentWorker, tp: TP, offsets: list[int], generation: int) -> Any:
    return Fetched({tp: [record(tp, o, f"C{o}".encode()) for o in offsets]}, {tp}, generation)


async def test_recovery_end_is_signalled_once_the_changelog_was_read_to_its_end(
    recovering: Recovering,
) -> None:
    worker, consumer, tp = recovering
    recovery = worker.app.tables.recovery
    fetched = _fetched(worker, tp, [0], 3)
    assert consumer.recovers_in_bulk(tp)
    consumer.recover(fetched, tp, fetched.records[tp])
    assert recovery.in_recovery and not recovery.signal_recovery_end.is_set()  # offset 1 due
    fetched = _fetched(worker, tp, [1], 3)
    consumer.recover(fetched, tp, fetched.records[tp])
    assert not recovery.in_recovery and recovery.signal_recovery_end.is_set()
    assert recovery.active_offsets[tp] == 1 and consumer._read_offset[tp] == 1
    assert set(worker.table.data.keys()) == {b"C0", b"C1"}


@pytest.mark.parametrize("moment", ["rebalance started", "highwaters being built", "stale fetch"])
async def test_recovery_end_is_not_signalled_outside_fausts_wait_for_it(
    recovering: Recovering, moment: str
) -> None:
    """A signal set outside faust's wait would end the next recovery before it read anything:
    ``_slurp_changelogs`` clears the event only when its loop comes round again."""
    worker, consumer, tp = recovering
    recovery = worker.app.tables.recovery
    generation = 3
    if moment == "rebalance started":
        recovery.signal_recovery_start.set()
    elif moment == "highwaters being built":
        consumer.pause_partitions({tp})  # as faust's assignment leaves them
    else:
        generation = 2
        recovery._generation_id = worker.app.consumer_generation_id = 3
    fetched = _fetched(worker, tp, [0, 1], generation)
    consumer.recover(fetched, tp, fetched.records[tp])
    assert recovery.in_recovery and not recovery.signal_recovery_end.is_set()


async def test_a_fetched_run_writes_only_the_newest_record_of_each_key(
    recovering: Recovering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every commit rewrites its lane record, and a busy customer is written again and again:
    the store is given the newest record of each key of a run, in offset order, and holds
    what it held when given all of them (a key whose newest record is a tombstone is gone)."""
    worker, consumer, tp = recovering
    recovery = worker.app.tables.recovery
    recovery.active_highwaters[tp] = 6
    store = worker.table.data
    given: list[tuple[bytes, int]] = []
    apply = store.apply_changelog_batch

    def spy(batch: Any, **kwargs: Any) -> None:
        batch = list(batch)
        given.extend((event.key, event.message.offset) for event in batch)
        apply(batch, **kwargs)

    monkeypatch.setattr(store, "apply_changelog_batch", spy)
    run = [(b"C0", b"a"), (b"L", b"l1"), (b"C1", b"b"), (b"C0", None), (b"L", b"l2")]
    run += [(b"C2", b"c"), (b"C1", b"b2")]
    records = [
        ConsumerRecord(tp.topic, tp.partition, o, 0, 0, k, v, None, len(k), len(v or b""), ())
        for o, (k, v) in enumerate(run)
    ]
    consumer.recover(Fetched({tp: records}, {tp}, 3), tp, records)
    assert given == [(b"C0", 3), (b"L", 4), (b"C2", 5), (b"C1", 6)]
    assert dict(store.items()) == {b"L": b"l2", b"C2": b"c", b"C1": b"b2"}
    assert recovery.active_offsets[tp] == 6 and consumer._read_offset[tp] == 6
    assert recovery.signal_recovery_end.is_set()


async def test_a_recovery_given_up_for_a_new_rebalance_does_not_reach_the_worker(
    worker: SegmentWorker,
) -> None:
    """faust calls the tables' recover callbacks also for a recovery whose wait for the end it
    gave up because another rebalance started; that rebalance's recovery calls them again."""
    calls: list[str] = []

    async def on_recovered() -> None:
        calls.append("adopted")

    callback = faust_compat.when_recovery_ended(worker.app, on_recovered)
    recovery = worker.app.tables.recovery
    recovery.signal_recovery_start.set()  # the rebalance that interrupted the recovery
    await callback()
    assert calls == []
    recovery.signal_recovery_start.clear()  # faust's next round started, and ends
    await callback()
    assert calls == ["adopted"]


# -- no private faust, mode or aiokafka name outside the fence ---------------------------------

#: private names of the standard library that service/ may use
STDLIB_PRIVATE = {"_exit"}


def _modules() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if p != FENCE)


def _own_names(paths: list[Path]) -> set[str]:
    """Every name segstream's own code defines: functions, classes, attributes it assigns,
    variables, parameters and import aliases."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return names


def _private_uses(path: Path, strings: bool = False) -> Iterator[tuple[int, str]]:
    """``x._name`` attribute uses, ``getattr(x, "_name")`` (or has-, set-, delattr), ``from m
    import _name``, and with ``strings`` any string that is such a name; dunders left out."""
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr", "delattr"}
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            names = [node.args[1].value]
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                yield getattr(node, "lineno", 0), name


def test_no_fenced_name_appears_outside_the_fence() -> None:
    found = [
        f"{path.relative_to(SERVICE)}:{line}: {name}"
        for path in _modules()
        for line, name in _private_uses(path, strings=True)
        if name in FENCED_NAMES
    ]
    assert found == []


def test_no_other_foreign_private_name_is_used_outside_the_fence() -> None:
    """A private name that segstream's own code does not define belongs to a library: it goes
    through the fence (and its start-up check), not around it."""
    own = _own_names(_modules()) | STDLIB_PRIVATE
    found = [
        f"{path.relative_to(SERVICE)}:{line}: {name}"
        for path in _modules()
        for line, name in _private_uses(path)
        if name not in own
    ]
    assert found == []


def test_the_fence_checks_every_foreign_private_name_it_uses() -> None:
    """Every private name the fence uses of another library is in PRIVATE_NAMES, so checked at
    start-up; and each one listed is still used (overridden, read, or copied from)."""
    own = _own_names([FENCE]) - FENCED_NAMES  # its overrides define fenced names too
    used = {name for _, name in _private_uses(FENCE)} - own - STDLIB_PRIVATE
    assert used <= FENCED_NAMES, used - FENCED_NAMES
    after_the_list = FENCE.read_text().split("FENCED_NAMES = ", 1)[1]
    assert {name for name in FENCED_NAMES if name not in after_the_list} == set()
