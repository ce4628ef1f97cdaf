"""The changelog side of the worker: writing commits to it, and taking partitions over from it
after an assignment (faust recovers the table; we adopt what it holds)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import operator
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from faust.types import TP

from segstream.core.engine import Commit, Engine
from segstream.core.partitioning import murmur_partition
from segstream.runtime.batching import TableWriter, items_by_partition, lane_partition
from segstream.runtime.metrics import Metrics
from segstream.runtime.produce import BatchProducer
from segstream.runtime.timers import Progress

log = logging.getLogger("segstream.worker")
EXIT_CLUSTER_LOST = 3  # the cluster lost this worker's writes (docs/runtime.md)


class ChangelogStateLog:
    """The handler's StateLog: each commit as one record batch on the table's changelog, then
    in the local store."""

    def __init__(
        self, writer: TableWriter, producer: BatchProducer, max_bytes: int, metrics: Metrics
    ) -> None:
        self.writer = writer
        self.producer = producer
        self.max_bytes = max_bytes
        self.metrics = metrics
        # partition -> base offset of the last changelog batch this process wrote there
        self.written: dict[int, int] = {}

    async def write(self, commits: list[Commit]) -> None:
        # one commit per partition (Engine.commits), so they are independent: one round trip
        # for all of them, not one per partition in turn
        writer = self.writer
        batches = [writer.commit_records(commit) for commit in commits]
        sent = await asyncio.gather(
            *(
                self.producer.send_atomic(
                    writer.changelog, commit.partition, records, self.max_bytes
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
                    self.max_bytes,
                    len(written),
                )
            writer.persisted(records, written)
            self.written[commit.partition] = written[-1].base_offset


class Recovery:
    def __init__(
        self,
        app: Any,
        table: Any,
        engine: Engine,
        state_log: ChangelogStateLog,
        progress: Progress,
        partitions: int,
        assigned: Callable[[], set[int]],
        sync_rules: Callable[[], Awaitable[int]],
        settle: Callable[[], Awaitable[None]],
        settle_each: Callable[[Iterator[None]], Awaitable[None]],
        commit_max_items: int,
    ) -> None:
        self.app = app
        self.table = table
        self.engine = engine
        self.state_log = state_log
        self.progress = progress
        self.partitions = partitions
        self.assigned = assigned
        self.sync_rules = sync_rules
        self.settle = settle
        self.settle_each = settle_each
        self.commit_max_items = commit_max_items

    async def on_recovered(self) -> None:
        """Tables are recovered: take over the lanes and customers of partitions we now own,
        finish what their last commits left half done, and re-send their unconfirmed changes."""
        await self.sync_rules()  # never take customers under rules about to be replaced
        async with self.progress.lock:
            progress = self.progress
            progress.rebalancing = False
            owned = self.assigned()
            await self._refuse_a_cluster_that_lost_our_writes(owned)
            engine = self.engine
            if progress.half_done:
                log.info(
                    "partitions %s: a rebalance stopped work on them at a pause; reloading"
                    " what was written",
                    sorted(progress.half_done),
                )
            for partition in sorted(progress.half_done):
                # work a rebalance stopped (a clock day, a refresh, a rule switch): what was
                # committed is in the store; reloaded, the settling below finishes it
                engine.release_partition(partition)
            progress.half_done.clear()
            held = set(engine.partitions_held())
            for partition in held - owned:
                engine.release_partition(partition)
            new = owned - held
            lanes, customers = self._load(new)
            budget = self.commit_max_items
            for partition in sorted(new):
                # what the last commit left half done, in commit-sized slices
                had_record = partition in lanes
                await self.settle_each(
                    engine.settle_steps(partition, had_record=had_record, budget=budget)
                )
            for partition in sorted(new):
                # a lane recorded under older rules (its owner died during a switch): every
                # customer again, in commit-sized slices, not one commit of the whole lane
                stale = engine.stale_under_rules(partition)
                await self.settle_each(engine.reevaluate_steps(stale, budget))
                engine.rules_done([partition])
            await self.settle()
            self.progress.ready = True
        log.info(
            "ready: partitions %s, %d customers (%d recovered)",
            sorted(owned),
            engine.customer_count(),
            customers,
        )

    def _load(self, new: set[int]) -> tuple[set[int], int]:
        """Adopt the lane records and customers of the ``new`` partitions from the table;
        returns the partitions that had a lane record and how many customers were adopted."""
        engine = self.engine
        lanes: dict[int, dict[str, Any]] = {}
        customers: list[tuple[int, bytes]] = []
        table = self.table
        # Building a million customers' objects with the cyclic GC on costs several times the
        # loading itself (each collection walks the growing heap); the state holds no
        # reference cycles, so collect nothing while loading, then freeze what was loaded out
        # of every later collection (refcounting still frees it when replaced).
        gc.disable()
        try:
            for stored_in, raw_key, value in items_by_partition(table):
                key = raw_key if isinstance(raw_key, bytes) else str(raw_key).encode()
                lane_of = lane_partition(key)
                if lane_of is not None:
                    if lane_of in new:
                        lanes[lane_of] = orjson.loads(value)
                    continue
                partition = stored_in
                if partition is None:
                    partition = murmur_partition(key, self.partitions)
                if partition in new:
                    customers.append((partition, value))
            for partition in sorted(lanes):
                engine.adopt_lane(partition, lanes[partition])
            # in the order read, a run of one partition's customers at a time
            for partition, run in itertools.groupby(customers, key=operator.itemgetter(0)):
                engine.adopt_stored(partition, (value for _, value in run))
        finally:
            gc.enable()
        gc.freeze()
        return set(lanes), len(customers)

    async def _refuse_a_cluster_that_lost_our_writes(self, owned: set[int]) -> None:
        """A broker that restarted empty (Tansu keeps everything in memory; a Kafka cluster
        whose disks were replaced) rejoins as if nothing happened: faust recovers an empty
        changelog, this worker keeps serving what it holds in memory, and its outputs go to
        topics that no longer exist. When a changelog partition ends before a batch this
        process wrote to it, stop with one line instead: a supervisor restarts the worker,
        which then holds exactly what the cluster holds."""
        written = self.state_log.written
        held = sorted(p for p in owned if p in written)
        if not held:
            return
        changelog = self.state_log.writer.changelog
        tps = [TP(changelog, p) for p in held]
        try:
            ends = await asyncio.wait_for(self.app.consumer.highwaters(*tps), 15)
        except TimeoutError:
            log.warning("could not read the changelog's end offsets; not checked this time")
            return
        except Exception:  # a changelog the cluster cannot describe is gone
            ends = {}
        lost = [p for p, tp in zip(held, tps, strict=True) if (ends.get(tp) or 0) <= written[p]]
        if lost:
            log.critical(
                "the Kafka cluster lost data this worker wrote: changelog %s partitions %s end"
                " before batches written at offsets %s (did the brokers restart empty?);"
                " stopping so that a restart rebuilds from what the cluster holds",
                changelog,
                lost,
                [written[p] for p in lost],
            )
            logging.shutdown()
            os._exit(EXIT_CLUSTER_LOST)
