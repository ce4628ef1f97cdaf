"""What the worker does on a timer: the wall clock, quiet partitions' population refresh, and
sharing group figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

from segstream.core.engine import Engine
from segstream.runtime.control import compare_with_shadow
from segstream.runtime.groups import GroupExchange
from segstream.runtime.handler import decide_in_slices
from segstream.runtime.settings import Settings

HISTORY_DAYS = 30


@dataclass
class Progress:
    """The worker's readiness and what its batch path has read, shared by its parts."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    # a rebalance revoked this worker's partitions and its new assignment is not recovered
    # yet: work outside the batch path stops deciding at its next pause
    # (Progress.decide), and the partitions it left half done are reloaded
    # from the store when the assignment is recovered
    rebalancing: bool = False
    half_done: set[int] = field(default_factory=set)
    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    last_input_at: dict[int, float] = field(default_factory=dict)  # partition -> monotonic
    # UTC day (YYYY-MM-DD) -> segment sizes at the day's last clock tick, the latest 30 days
    size_history: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    async def decide(
        self,
        steps: Iterator[None],
        settle: Callable[[], Awaitable[None]],
        partitions: Iterable[int],
    ) -> bool:
        """The engine's ``steps`` in committed slices until a rebalance stops them
        (:func:`decide_in_slices`); then ``partitions`` are half done. False when stopped."""
        if await decide_in_slices(steps, settle, lambda: self.rebalancing):
            return True
        self.half_done.update(partitions)
        return False


class Timers:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        progress: Progress,
        groups: GroupExchange,
        assigned: Callable[[], set[int]],
        settle: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.progress = progress
        self.groups = groups
        self.assigned = assigned
        self.settle = settle

    def record_sizes(self) -> None:
        if not self.progress.ready:
            return
        history = self.progress.size_history
        history[time.strftime("%Y-%m-%d", time.gmtime())] = self.engine.member_counts()
        for day in sorted(history)[:-HISTORY_DAYS]:
            del history[day]

    async def tick_clock(self) -> None:
        self.record_sizes()
        if self.settings.clock != "wall" or not self.progress.ready:
            return
        async with self.progress.lock:
            # the lanes this worker holds; a day's due customers in commit-sized slices
            budget = self.settings.commit_max_items
            steps = self.engine.advance_steps(int(time.time() * 1000), budget)
            await self.progress.decide(steps, self.settle, set(self.engine.partitions_held()))

    async def refresh_population(self) -> None:
        """Under load a partition refreshes its cut points itself (every 5% of its values
        moved); once its input goes quiet, for any change, so its final cut points are those
        of its final values, as a replay's are. Only this partition's values count: no other
        worker can make its customers flip.

        One partition at a time, each sent before the next is decided: a refresh re-evaluates
        synchronously, and a worker's whole population at once held the event loop for
        seconds on a loaded machine (no heartbeat, no stop signal handled meanwhile)."""
        progress = self.progress
        if not progress.ready:
            return
        async with progress.lock:
            quiet_since = time.monotonic() - self.settings.population_refresh_seconds
            engine = self.engine
            quiet = [
                p
                for p in engine.partitions_held()
                if engine.has_pending_population(p)
                and progress.last_input_at.get(p, 0) < quiet_since
            ]
            budget = self.settings.commit_max_items
            for partition in quiet:
                # a rebalance may have begun while the previous partition's changes were
                # sent: a partition on its way to another worker is not decided here
                if not progress.ready or partition not in engine.partitions_held():
                    return
                steps = engine.refresh_steps(partition, budget)
                if not await progress.decide(steps, self.settle, {partition}):
                    return

    async def refresh_shadow(self) -> None:
        """Compare every customer with the shadow set again: its time-driven conditions move
        customers with no event, which the live set's schedule does not look for."""
        if not self.progress.ready or self.engine.shadow_rules is None:
            return
        engine = self.engine
        chunk = self.settings.rules_chunk_size
        await compare_with_shadow(engine, self.progress.lock, engine.customer_ids(), chunk)

    async def publish_groups(self) -> None:
        """Share this worker's partitions' group figures; emit snapshots of closed quarters."""
        if not self.progress.ready or not self.engine.rules.groups:
            return
        async with self.progress.lock:
            await self.groups.publish(self.assigned(), self.settle)
