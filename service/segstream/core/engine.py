"""The segmentation engine: apply events, evaluate rules, detect and describe changes.

One :class:`Engine` holds the customers of one process (all of them in ``replay``, the owned
partitions in a worker). Everything here is synchronous and I/O free: the worker hands it whole
Kafka batches and the replay command hands it file lines, and both get the same changes.

Every decision that does not come from a customer's own events (the clock, population cut
points) is taken per partition, in a :class:`Lane`, from that partition's input alone: the
changes of a partition are a function of the order in which its records were applied and of
its recovered lane. A worker writes what a lane decided (customer states, the lane record with
its clock, cut points and the changes not yet known to be emitted) as one atomic commit before
it emits any change, so a crash never makes it decide twice (docs/runtime.md, "Determinism").
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from operator import itemgetter
from typing import Any

from segstream.core.changes import Change as Change  # re-exported: the runtime imports it here
from segstream.core.changes import ChangeBuilder
from segstream.core.contracts import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Event,
    ProfileEvent,
    Rejection,
    RejectReason,
    parse_event,
)
from segstream.core.evaluation import Reading
from segstream.core.groups import GroupLane, GroupSpec, contribution
from segstream.core.packing import StatePacker
from segstream.core.partitioning import partition_for
from segstream.core.population import REFRESH_MIN_UPDATES, Population
from segstream.core.rulelang import RuleSet
from segstream.core.rulelang.ruleset import Condition, Family, Playbook
from segstream.core.scheduling import DueIndex, Schedule
from segstream.core.shadow import ShadowReport, compare, label
from segstream.core.state import (
    CAUSE_KINDS,
    CHANGE_KINDS,
    COMPACT_EVERY_DAYS,
    DEFAULT_LIMITS,
    TRANSITION,
    CustomerState,
    Limits,
    Windowed,
    dump_state,
    load_state,
    shared_day,
)
from segstream.core.timeutil import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    MS_PER_DAY,
    day_of,
    parse_date_day,
    to_rfc3339,
)

CLOCK_EVENT = "event"
CLOCK_WALL = "wall"
LANE_FORMAT = 1


@dataclass(slots=True)
class BatchResult:
    changes: list[Change] = field(default_factory=list)
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class Ingested:
    """What became of one raw message: rejected (``parsed`` is the rejection), parsed and not
    applied because its customer lives on another partition (``foreign``: a worker sends it
    on there), or parsed and applied, with ``changes`` as :meth:`Engine.apply` returns them
    (None when the event changed nothing: a duplicate, or older than its customer's
    erasure; a list, maybe of clock changes only, otherwise)."""

    parsed: Event | Rejection
    changes: list[Change] | None = None
    foreign: bool = False


@dataclass(slots=True)
class Commit:
    """What one partition decided since its previous commit, to be written atomically before
    any of ``changes`` is emitted: the customers it touched and its lane record (which carries
    every change not yet confirmed as emitted, these included)."""

    partition: int
    states: list[CustomerState]
    lane: dict[str, Any]
    changes: list[Change]
    erased: list[str] = field(default_factory=list)  # customers to delete (tombstones)


# a cold customer: its stored bytes (packed: core/packing.py), its quantile scores
# (CustomerState.ranked, read for every customer of a recovered lane) and its segments (pooled:
# read when its partition is released)
Cold = tuple[bytes, tuple[Any, ...], tuple[tuple[str, Any], ...]]


class Lane:
    """The per-partition context of evaluation: clock, due index, population, pending work."""

    __slots__ = (
        "clock_day",
        "clock_ms",
        "customers",
        "dirty",
        "due",
        "erased",
        "erasures",
        "fresh",
        "groups",
        "partition",
        "populations",
        "rules_version",
        "snapshots",
        "topic_days",
        "touched",
        "unconfirmed",
    )

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.clock_ms: int | None = None
        self.clock_day = 0
        # event type -> the day of the newest event of that type applied: each input topic's
        # own clock, by which late orders, corrections and tickets are decided (the clock
        # above is over all four topics, which interleave as fetches come; CustomerState.apply)
        self.topic_days: dict[str, int] = {}
        self.customers: set[str] = set()
        self.due = DueIndex()
        self.populations: dict[str, Population] = {}
        self.dirty: set[str] = set()  # customers changed in any way since the last commit
        self.fresh: list[Change] = []  # changes since the last commit
        self.unconfirmed: list[Change] = []  # committed changes not yet confirmed as emitted
        self.rules_version: str | None = None
        self.erased: set[str] = set()  # customers erased since the last commit: tombstones
        # digest of an erased customer's id -> (erasure time, last seq)
        self.erasures: dict[str, tuple[int, int]] = {}
        self.groups: dict[str, GroupLane] = {}
        # group -> the last closed quarter whose group-snapshot events were emitted (kept in
        # the lane record of the partition whose owner emits them)
        self.snapshots: dict[str, str] = {}
        self.touched = False  # the lane record changed (a quarter closed) since the last commit

    def set_clock(self, now_ms: int) -> None:
        self.clock_ms = now_ms
        self.clock_day = shared_day(day_of(now_ms))  # (held by customers: see shared_day)

    def pending(self) -> int:
        """Work since the last commit (customers to write + changes): the runtime commits in
        slices so one commit stays one producer batch."""
        return len(self.dirty) + len(self.fresh) + len(self.erased) + self.touched

    def record(self) -> dict[str, Any]:
        return {
            "format": LANE_FORMAT,
            "partition": self.partition,
            "clock_ms": self.clock_ms,
            "topic_days": dict(sorted(self.topic_days.items())),
            "rules_version": self.rules_version,
            "populations": {
                name: {"cuts": list(p.cuts), "updates": p.updates_since_refresh}
                for name, p in sorted(self.populations.items())
            },
            "unconfirmed": self.unconfirmed,
            "erasures": {k: list(v) for k, v in sorted(self.erasures.items())},
            "groups": {name: g.record() for name, g in sorted(self.groups.items())},
            "snapshots": dict(sorted(self.snapshots.items())),
        }


_CHANGE_CODE = {kind: i for i, kind in enumerate(CHANGE_KINDS)}
_CAUSE_CODE = {kind: i for i, kind in enumerate(CAUSE_KINDS)}


class Engine:
    """Per-customer state plus the compiled rules; the only implementation of every rule."""

    def __init__(
        self,
        rules: RuleSet,
        *,
        clock: str = CLOCK_EVENT,
        currency: str = "USD",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        refresh_fraction: float = 0.05,
        partitions: int = 1,
        limits: Limits = DEFAULT_LIMITS,
        max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
        hot_customers: int | None = None,
    ) -> None:
        if clock not in (CLOCK_EVENT, CLOCK_WALL):
            raise ValueError(f"clock must be 'event' or 'wall', not {clock!r}")
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        if hot_customers is not None and hot_customers < 0:
            raise ValueError(f"hot_customers must be 0 or more, not {hot_customers}")
        self.rules = rules
        # the customers held as objects (the hot set), least recently committed first
        self.store: dict[str, CustomerState] = {}
        # with a bounded hot set (``hot_customers``), the others: their stored bytes, with
        # what is read of every customer of a lane without a state change (see :meth:`cool`)
        self.cold: dict[str, Cold] = {}
        self.hot_customers = hot_customers
        self._packer = StatePacker()  # cold states packed once it has learned from some
        self._segment_pool: dict[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]] = {}
        self.clock = clock
        self.currency = currency
        self.max_message_bytes = max_message_bytes
        self.refresh_fraction = refresh_fraction
        self.partitions = partitions
        self.base_limits = limits
        self.limits = limits
        self.max_future_skew_ms = max_future_skew_ms
        self.limit_hits: Counter[str] = Counter()
        self.lanes: dict[int, Lane] = {}
        self.partition_of: dict[str, int] = {}
        self.rejections: Counter[RejectReason] = Counter()
        # (cause, whether it moved any segment) -> evaluations: the census that says how many
        # evaluations a smarter schedule could spare (docs/performance.md)
        self.evaluated: Counter[tuple[str, bool]] = Counter()
        self._members: Counter[tuple[str, str]] = Counter()  # (segment name, tier) -> customers
        self._shadow: ShadowReport | None = None
        self._shadow_reading: Reading | None = None
        self._shadow_segments: dict[str, dict[str, Any]] = {}
        # (family, from, to, kind) -> transitions the shadow set made between evaluations
        self.shadow_transitions: Counter[tuple[str, str, str, str]] = Counter()
        self._configure_rules()

    # -- lanes and clock ---------------------------------------------------------------------

    def lane(self, partition: int) -> Lane:
        lane = self.lanes.get(partition)
        if lane is None:
            lane = self.lanes[partition] = Lane(partition)
            lane.rules_version = self.rules.version
            self._configure_lane(lane)
        return lane

    @property
    def evaluations(self) -> int:
        return sum(self.evaluated.values())

    @property
    def clock_ms(self) -> int | None:
        """The latest clock of any partition (for reports; evaluation reads its own lane's)."""
        clocks = [lane.clock_ms for lane in self.lanes.values() if lane.clock_ms is not None]
        return max(clocks) if clocks else None

    def advance(self, now_ms: int, partitions: Iterable[int] | None = None) -> list[Change]:
        """Move the clock of every lane (or of ``partitions``) forward to ``now_ms``."""
        changes: list[Change] = []
        chosen = sorted(self.lanes) if partitions is None else partitions
        for partition in chosen:
            changes += self._advance(self.lane(partition), now_ms)
        return changes

    def advance_steps(self, now_ms: int, budget: int) -> Iterator[None]:
        """:meth:`advance` of every lane, pausing whenever a lane's pending work reaches
        ``budget``, so that the caller can commit in between and every commit stays one
        record batch (a day's due customers of a partition can be thousands). The
        evaluations, their order and their changes are those of :meth:`advance`; a commit
        taken at a pause has the new clock and leaves the rest due, as a recovered lane
        finishes them (:meth:`settle_adopted`)."""
        for partition in sorted(self.lanes):
            lane = self.lanes[partition]
            if not self._new_day(lane, now_ms):
                continue
            yield from self._due_steps(lane, lane.clock_day, budget)
            if self._stale(lane):
                yield from self.refresh_steps(partition, budget)

    def _advance(self, lane: Lane, now_ms: int) -> list[Change]:
        """Re-evaluate only the customers due by the new day; a first clock (a fresh or
        recovered lane) runs everything already due, so a restart catches up at once."""
        if not self._new_day(lane, now_ms):
            return []
        changes = self._run_due(lane, lane.clock_day)
        return changes + self._refresh_if_stale(lane)

    def _new_day(self, lane: Lane, now_ms: int) -> bool:
        """Move a lane's clock to ``now_ms`` (never back); True when it entered a new day (or
        had no clock), with what a new day does before the due customers run."""
        if lane.clock_ms is not None and now_ms <= lane.clock_ms:
            return False
        old_day = None if lane.clock_ms is None else lane.clock_day
        lane.set_clock(now_ms)
        if old_day is not None and lane.clock_day == old_day:
            return False
        if lane.erasures:
            horizon = (lane.clock_day - self.limits.event_id_memory_days) * MS_PER_DAY
            lane.erasures = {k: v for k, v in lane.erasures.items() if v[0] >= horizon}
        if lane.groups:
            self._roll_groups(lane)
        return True

    def _run_due(self, lane: Lane, day: int) -> list[Change]:
        changes: list[Change] = []
        at = day * MS_PER_DAY
        for customer_id in lane.due.pop_through(day):
            st = self.store.get(customer_id) or self._warm(customer_id)
            if st is not None and st.due_day is not None and st.due_day <= day:
                st.due_day = None
                changes += self._evaluate(st, lane, "clock", None, at)
        return changes

    @staticmethod
    def _schedule(lane: Lane, st: CustomerState, day: int | None) -> None:
        if day == st.due_day:
            return
        if day is not None:
            day = shared_day(day)
        lane.due.move(st.customer_id, st.due_day, day)
        st.due_day = day

    # -- events ------------------------------------------------------------------------------

    def parse(self, raw: bytes | str, now_ms: int | None = None) -> Event | Rejection:
        """``now_ms`` is the wall clock the event must not lie too far ahead of."""
        result = parse_event(
            raw,
            currency=self.currency,
            max_bytes=self.max_message_bytes,
            now_ms=now_ms,
            max_future_skew_ms=self.max_future_skew_ms,
        )
        if self._date_attributes and isinstance(result, ProfileEvent):
            result = self._check_dates(result)
        if isinstance(result, Rejection):
            self.rejections[result.reason] += 1
        return result

    def _check_dates(self, event: ProfileEvent) -> ProfileEvent | Rejection:
        """A declared date attribute must hold a date: a bad one is an invalid event, so it
        cannot silently move a customer out of a renewal window."""
        for name in self._date_attributes:
            value = event.attributes.get(name)
            if value is not None and (not isinstance(value, str) or parse_date_day(value) is None):
                return Rejection(
                    RejectReason.INVALID_FIELD,
                    f"attributes.{name}: {value!r} is not an RFC 3339 date (2027-03-31) or"
                    " timestamp between 1970 and 2199",
                )
        return event

    def partition_for(self, customer_id: str) -> int:
        """Where a customer lives: where it already is, else Kafka's default partitioner."""
        known = self.partition_of.get(customer_id)
        if known is not None:
            return known
        return partition_for(customer_id, self.partitions) if self.partitions > 1 else 0

    def belongs(self, customer_id: str, partition: int) -> bool:
        """Whether events of this customer are applied in ``partition``: where it lives, or
        where Kafka's default partitioner puts its key. A record keyed by something else,
        read elsewhere, must be sent on to that partition first."""
        known = self.partition_of.get(customer_id)
        if known == partition:
            return True
        return partition_for(customer_id, self.partitions) == partition

    def partitions_held(self) -> list[int]:
        """The partitions whose lanes this engine holds, in order."""
        return sorted(self.lanes)

    def customer_ids(self) -> list[str]:
        return sorted(itertools.chain(self.store, self.cold))

    def customer_count(self) -> int:
        return len(self.store) + len(self.cold)

    def cold_count(self) -> int:
        """Customers held as their stored bytes (see :meth:`cool`)."""
        return len(self.cold)

    def state_of(self, customer_id: str) -> CustomerState | None:
        """A customer's state to read (None: unknown here). A cold customer is decoded for
        the caller and stays cold: a look at a customer is not a state change."""
        return self._peek(customer_id)

    def take_limit_hits(self) -> dict[str, int]:
        """How often each per-customer memory limit dropped something since the last call."""
        hits = dict(self.limit_hits)
        self.limit_hits.clear()
        return hits

    def process(
        self,
        raws: Iterable[bytes | str],
        *,
        now_ms: int | None = None,
        partition: int | None = None,
        wall_ms: int | None = None,
    ) -> BatchResult:
        """Parse and apply a batch of raw messages; no await, no I/O. Without ``partition``
        each event goes to its customer's partition, as a keyed Kafka producer would send it.
        ``now_ms`` moves the clock (wall clock); ``wall_ms`` bounds how far ahead an event's
        time may be (default ``now_ms``; neither: only the absolute range is checked)."""
        result = BatchResult()
        if now_ms is not None:
            result.changes += self.advance(now_ms)
        checked_against = now_ms if wall_ms is None else wall_ms
        for index, raw in enumerate(raws):
            ingested = self.ingest(raw, partition, wall_ms=checked_against, now_ms=now_ms)
            if isinstance(ingested.parsed, Rejection):
                result.rejections.append((index, ingested.parsed))
                continue
            result.events += 1
            if ingested.changes is None:
                result.duplicates += 1
            else:
                result.changes += ingested.changes
        return result

    def ingest(
        self,
        raw: bytes | str,
        partition: int | None = None,
        *,
        wall_ms: int | None = None,
        now_ms: int | None = None,
        reroute: bool = False,
    ) -> Ingested:
        """One raw message, parsed and applied: the per-record path of both ``replay``
        (:meth:`process`) and the worker's batches. ``partition`` None: the customer's own
        partition (``reroute`` has nothing to do then); given: the lane it is applied in,
        unless ``reroute`` and the customer belongs elsewhere (a record keyed by something
        else), which applies nothing. ``wall_ms`` bounds how far ahead the event's time may
        be (:meth:`parse`); ``now_ms`` is the wall clock it is applied at (:meth:`apply`)."""
        parsed = self.parse(raw, wall_ms)
        if isinstance(parsed, Rejection):
            return Ingested(parsed)
        if partition is None:
            partition = self.partition_for(parsed.customer_id)
        elif reroute and not self.belongs(parsed.customer_id, partition):
            return Ingested(parsed, foreign=True)
        return Ingested(parsed, changes=self.apply(parsed, partition=partition, now_ms=now_ms))

    def ingest_steps(
        self,
        raw: bytes | str,
        partition: int,
        *,
        wall_ms: int | None = None,
        now_ms: int | None = None,
        reroute: bool = False,
        budget: int,
    ) -> Ingested | Generator[None, None, Ingested]:
        """:meth:`ingest`, for a caller that commits whenever a lane's pending work reaches
        ``budget``. Most records run no other evaluation and come back as an
        :class:`Ingested` at once. One that starts its lane's day (its due customers) or sets
        off a population refresh (thousands of customers in a large partition) comes back as
        a generator that pauses at the budget (drive it with ``next`` until StopIteration,
        whose value is the Ingested). The same evaluations in the same order as
        :meth:`ingest`; ``Ingested.changes`` holds the event's own changes only (its day's
        and its refresh's are in the lane's commits, as everything else it decided is)."""
        parsed = self.parse(raw, wall_ms)
        if isinstance(parsed, Rejection):
            return Ingested(parsed)
        if reroute and not self.belongs(parsed.customer_id, partition):
            return Ingested(parsed, foreign=True)
        lane = self.lane(partition)
        at = parsed.occurred_at if self.clock == CLOCK_EVENT else now_ms
        if at is not None and (
            lane.clock_ms is None or (at > lane.clock_ms and day_of(at) != lane.clock_day)
        ):
            return self._ingest_new_day(parsed, lane, at, now_ms, budget)
        changes, evaluated = self._apply(parsed, partition, now_ms)
        if evaluated and self._stale(lane):
            return self._after_refresh(Ingested(parsed, changes=changes), partition, budget)
        return Ingested(parsed, changes=changes)

    def _ingest_new_day(
        self, event: Event, lane: Lane, at: int, now_ms: int | None, budget: int
    ) -> Generator[None, None, Ingested]:
        if self._new_day(lane, at):
            yield from self._due_steps(lane, lane.clock_day, budget)
            if self._stale(lane):
                yield from self.refresh_steps(lane.partition, budget)
        changes, evaluated = self._apply(event, lane.partition, now_ms)
        if evaluated and self._stale(lane):
            yield from self.refresh_steps(lane.partition, budget)
        return Ingested(event, changes=changes)

    def _after_refresh(
        self, ingested: Ingested, partition: int, budget: int
    ) -> Generator[None, None, Ingested]:
        yield from self.refresh_steps(partition, budget)
        return ingested

    def apply(
        self, event: Event, *, partition: int = 0, now_ms: int | None = None
    ) -> list[Change] | None:
        """Apply one event; returns its changes, or None when it changed nothing (a duplicate).
        With the wall clock, ``now_ms`` is the time it is applied at (a lane's first event is
        evaluated on today's date, not on a clock that has not ticked yet)."""
        changes, evaluated = self._apply(event, partition, now_ms)
        if evaluated:
            assert changes is not None
            return changes + self._refresh_if_stale(self.lanes[partition])
        return changes

    def _apply(
        self, event: Event, partition: int, now_ms: int | None
    ) -> tuple[list[Change] | None, bool]:
        """:meth:`apply` without the population refresh an evaluated event may set off; True
        when the event was evaluated (only then may it set one off)."""
        lane = self.lane(partition)
        changes: list[Change] = []
        if self.clock == CLOCK_EVENT:
            if lane.clock_ms is None or event.occurred_at > lane.clock_ms:
                changes += self._advance(lane, event.occurred_at)
        elif now_ms is not None:
            changes += self._advance(lane, now_ms)
        # its topic's clock moves after the day's due customers ran (their compaction must not
        # see this event's time: its own fate is decided by the clock before it)
        kind, day = event.type, day_of(event.occurred_at)
        topic_day = lane.topic_days.get(kind)
        if topic_day is None or day > topic_day:
            lane.topic_days[kind] = shared_day(day)
            lane.touched = True  # the lane record carries it (a crash must not lose it)
        customer_id = event.customer_id
        erased = lane.erasures.get(_digest(customer_id)) if lane.erasures else None
        if erased is not None and event.occurred_at <= erased[0]:
            return changes or None, False  # erased after this event: it stays gone
        st = self.store.get(customer_id) or self._warm(customer_id)
        if isinstance(event, ProfileEvent) and event.erase:
            return changes + self._erase(customer_id, st, lane, event), False
        if st is None:
            st = CustomerState(customer_id)
            if erased is not None:
                st.seq = erased[1]  # its change ids must never repeat an erased one's
            self.store[customer_id] = st
            self.partition_of[customer_id] = partition
            lane.customers.add(customer_id)
        applied = st.apply(
            event,
            lane.clock_day,
            self.rules.windows,
            self.limits,
            day if topic_day is None else topic_day,  # its topic's first: nothing is late yet
        )
        self._take_limit_hits(st)
        if not applied:
            return changes or None, False
        changes += self._evaluate(st, lane, "event", event.event_id, lane.clock_ms or 0)
        return changes, True

    def _erase(
        self, customer_id: str, st: CustomerState | None, lane: Lane, event: ProfileEvent
    ) -> list[Change]:
        """GDPR erasure: the customer exits every segment (cause ``erasure``), then nothing of
        it is kept but a digest of its id, its erasure time and last ``seq`` in the lane record
        (so re-delivered older events cannot bring it back and new ids never repeat), for the
        event-id memory's days."""
        lane.erased.add(customer_id)  # a tombstone, and the lane record with the marker
        known = lane.erasures.get(_digest(customer_id))
        if st is None:  # unknown, or its events are still to come on other topics
            seq = 0 if known is None else known[1]
            lane.erasures[_digest(customer_id)] = (event.occurred_at, seq)
            return []
        at = lane.clock_ms or 0
        changes: list[Change] = []
        for name, old in sorted(st.segments.items(), key=lambda item: item[0]):
            if old is None or old is False:
                continue
            self._count(name, old, -1)
            is_flag = isinstance(old, bool)
            segment = name if is_flag else str(old)
            new: str | bool | None = False if is_flag else None
            changes.append(
                self._change(
                    st,
                    name,
                    segment,
                    old,
                    new,
                    "exited",
                    "erasure",
                    event.event_id,
                    at,
                    None,
                    None,
                    {},
                )
            )
        st.segments.clear()
        lane.erasures[_digest(customer_id)] = (event.occurred_at, st.seq)
        del self.store[customer_id]
        del self.partition_of[customer_id]
        lane.customers.discard(customer_id)
        lane.dirty.discard(customer_id)
        for group in lane.groups.values():
            group.update(customer_id, None, {})
        if self._shadow is not None:
            self._shadow.forget(customer_id)
            self._shadow_segments.pop(customer_id, None)
        if st.due_day is not None:
            lane.due.discard(customer_id, st.due_day)
        for population in lane.populations.values():
            if customer_id in population.by_customer:
                population.discard(customer_id)
                population.updates_since_refresh += 1
        lane.fresh += changes
        return changes

    def _take_limit_hits(self, st: CustomerState) -> None:
        hits = st.take_limit_hits()
        if hits:
            self.limit_hits.update(hits)

    # -- evaluation --------------------------------------------------------------------------

    def values(self, st: CustomerState) -> dict[str, Any]:
        """Everything rules can read for one customer, with derived metrics and segments.
        Reading changes nothing (no compaction): a look at a customer is not a state change."""
        return self._values(st, self.lane(self.partition_for(st.customer_id)), compact=False)[0]

    def _values(
        self, st: CustomerState, lane: Lane, *, compact: bool = True, reading: Reading | None = None
    ) -> tuple[dict[str, Any], Windowed]:
        """Everything ``reading``'s rules (default: the live rules) read for one customer."""
        r = self._reading if reading is None else reading
        rules = r.rules
        day = lane.clock_day
        # compaction runs every COMPACT_EVERY_DAYS: the test is made here, not in a call that
        # nearly always returns at once (and only compaction can have hit a limit since the
        # last take: every other change of the state takes its hits at once)
        if compact and day - st.compacted_day >= COMPACT_EVERY_DAYS:
            st.compact(day, self.rules.windows, self.limits, lane.topic_days)
            self._take_limit_hits(st)
        values, windowed = st.read(day, rules.windows, keep=reading is None)
        r.fill(values, st.attrs, day, lane.populations)
        rules.evaluate(values)
        return values, windowed

    def _evaluate(
        self, st: CustomerState, lane: Lane, cause: str, event_id: str | None, at_ms: int
    ) -> list[Change]:
        values, windowed = self._values(st, lane)
        for field_name, population in lane.populations.items():
            population.set(st.customer_id, values[field_name])
        if self._quantile_scores:
            self._keep_quantiles(st, values)
        if self._held:
            self._hold(st, values, lane.clock_day)
        changes = self._diff(st, values, cause, event_id, at_ms)
        self.evaluated[(cause, bool(changes))] += 1
        due = self._schedule_of.next_change_day(lane.clock_day, values, windowed)
        if self._dwelling:
            until = self._dwell_ends(st, lane.clock_day)
            if until is not None and (due is None or until < due):
                due = until
        self._schedule(lane, st, due)
        if lane.groups:
            self._group_update(st, lane)
        if self._shadow is not None:
            self._observe_shadow(st, lane)
        lane.dirty.add(st.customer_id)
        lane.fresh += changes
        return changes

    def _keep_quantiles(self, st: CustomerState, values: dict[str, Any]) -> None:
        """Store the quantile scores' (field value, score) of this evaluation.

        With one quantile score (the usual rfm ``m``) the stored entry is kept when it holds
        the very same field value object (the window index hands out the float it summed last,
        so an equal value read from elsewhere, a -0.0 or an int, is never mistaken for it) and
        an equal score (ints): the stored bytes are then those a new tuple would give."""
        single = self._single_quantile
        if single is not None:
            known = st.ranked
            name, field_name = single
            if (
                len(known) == 3
                and known[0] == name
                and known[1] is values[field_name]
                and known[2] == values[name]
            ):
                return
        st.ranked = tuple(
            item
            for s in self._quantile_scores
            for item in (s.name, values[s.field], values[s.name])
        )

    def _diff(
        self,
        st: CustomerState,
        values: dict[str, Any],
        cause: str,
        event_id: str | None,
        at_ms: int,
    ) -> list[Change]:
        """The changes between a customer's stored segments and its new values, in order:
        families, flags (both in rule order), then segments the rules no longer have.

        Most evaluations move nothing: the stored segments with their defaults (a family's
        None, a flag's False) are compared with the new values at once, and nothing else is
        done when they are equal and nothing is left of other rules. Equal values are equal
        truth values too (bools, None, tier names), so no flag moved either. Otherwise every
        family and flag is compared as before, with ranks, tiers and conditions prepared per
        rule set (:meth:`_configure_rules`) and the member counts kept inline, in the order
        :meth:`_count` would update them (the counter's key order is what it reports)."""
        segments = st.segments
        known = self._segment_defaults | segments
        if len(known) == len(self._segment_defaults):
            segments_of = self._segments_of
            if segments_of(known) == segments_of(values):
                return []
        members = self._members
        dwelling = self._dwelling
        changes: list[Change] = []
        for name, ranks, last, tiers in self._family_order:
            old, new = segments.get(name), values[name]
            if old == new:
                continue
            if old is not None and old is not False:
                members[(name, name if old is True else str(old))] -= 1
            if new is not None and new is not False:
                members[(name, name if new is True else str(new))] += 1
            if old is None:
                kind = "entered"
            elif new is None:
                kind = "exited"
            else:
                kind = "upgraded" if ranks.get(new, last) < ranks.get(old, last) else "downgraded"
            matched = tiers[ranks.get(new, last)].source if new is not None else None
            failed = None
            if old is not None:
                old_rank = ranks.get(old, last)
                if old_rank < last:
                    condition = tiers[old_rank]
                    failed = None if condition.holds(values) else condition.source
            segments[name] = new
            if name in dwelling:
                self._enter(st, name, new is not None, at_ms)
            changes.append(
                self._change(
                    st,
                    name,
                    new if new is not None else old,
                    old,
                    new,
                    kind,
                    cause,
                    event_id,
                    at_ms,
                    matched,
                    failed,
                    values,
                )
            )
        for name, source in self._flag_order:
            old_flag, new_flag = bool(segments.get(name, False)), bool(values[name])
            if old_flag == new_flag:
                continue
            members[(name, name)] += 1 if new_flag else -1
            segments[name] = new_flag
            if name in dwelling:
                self._enter(st, name, new_flag, at_ms)
            kind = "entered" if new_flag else "exited"
            changes.append(
                self._change(
                    st,
                    name,
                    name,
                    old_flag,
                    new_flag,
                    kind,
                    cause,
                    event_id,
                    at_ms,
                    source if new_flag else None,
                    None if new_flag else source,
                    values,
                )
            )
        if len(known) == len(self._segment_defaults):
            return changes  # no segment of other rules to drop
        for name in [n for n in segments if n not in self._segment_set]:
            old_value = segments.pop(name)
            if old_value is None or old_value is False:
                continue
            self._count(name, old_value, -1)
            segment = name if isinstance(old_value, bool) else str(old_value)
            new_value: str | bool | None = False if isinstance(old_value, bool) else None
            changes.append(
                self._change(
                    st,
                    name,
                    segment,
                    old_value,
                    new_value,
                    "exited",
                    cause,
                    event_id,
                    at_ms,
                    None,
                    None,
                    values,
                )
            )
        return changes

    def _count(self, name: str, value: str | bool | None, delta: int) -> None:
        if value is not None and value is not False:
            self._members[(name, name if value is True else str(value))] += delta

    def _change(
        self,
        st: CustomerState,
        family: str,
        segment: Any,
        old: Any,
        new: Any,
        kind: str,
        cause: str,
        event_id: str | None,
        at_ms: int,
        matched: str | None,
        failed: str | None,
        values: dict[str, Any],
    ) -> Change:
        """One change event (the builder of the current rules writes it), remembered in the
        customer's timeline."""
        st.seq += 1
        self._remember(st, (at_ms, family, old, new, _CHANGE_CODE[kind], _CAUSE_CODE[cause]))
        return self._changes.build(
            st.customer_id,
            st.seq,
            family,
            segment,
            old,
            new,
            kind,
            cause,
            event_id,
            at_ms,
            matched,
            failed,
            values,
        )

    # -- groups ------------------------------------------------------------------------------

    def _group_value(self, st: CustomerState, spec: GroupSpec) -> str | None:
        """The value a customer counts under: its tier of a family, or its attribute (the
        declared default when absent; an empty text or null is no value)."""
        if spec.by_family:
            tier = st.segments.get(spec.by)
            return tier if isinstance(tier, str) else None
        attribute = self.rules.attributes[spec.by]
        item = st.attrs.get(spec.by)
        raw = attribute.default if item is None or item[2] is None else attribute.coerce(item[2])
        if raw is None or raw == "":
            return None
        if isinstance(raw, bool):
            return "true" if raw else "false"
        return str(raw)

    def _group_update(self, st: CustomerState, lane: Lane, *, keep_source: bool = True) -> None:
        """Take the customer's contribution out of its groups and add it again, as it is now.

        A contribution is made of the counted orders and the surveys from the open period on.
        Every evaluation updates it, and most evaluations (the clock's) change none of those:
        the tallies are then the ones added last, computed from the same items for the same
        open period, and are reused rather than computed again from every order and survey.
        The window index, whose item counter moves with every change of them, says so. The
        totals still take the tallies out and in, as they always did (a Decimal sum keeps
        the exponent that arithmetic gives it)."""
        horizon = self.rules.windows.horizon
        customer_id = st.customer_id
        windowed = st.windowed
        for group in lane.groups.values():
            value = self._group_value(st, group.spec)
            if value is None:
                # no value: the update only takes back an earlier contribution, if any
                if customer_id in group.contributions:
                    group.update(customer_id, None, {})
                continue
            source = (
                None
                if windowed is None or windowed.horizon != horizon or not keep_source
                else (windowed, windowed.items, group.first_bucket())
            )
            buckets = None if source is None else group.contribution_from(customer_id, source)
            if buckets is None:
                buckets = contribution(
                    group, st.surveys.values(), st.orders.items(), st.refunds, horizon
                )
            group.update(customer_id, value, buckets, source)

    def _roll_groups(self, lane: Lane) -> None:
        """The clock moved to a new day: close the quarters it passed. A lane's first clock
        gives its groups their first period, so they count its customers from then on."""
        first = [g for g in lane.groups.values() if g.current is None]
        for group in lane.groups.values():
            if group.roll(lane.clock_day):
                lane.touched = True
        if first and lane.customers:
            self._refill_groups(lane)

    def _refill_groups(self, lane: Lane) -> None:
        """Recompute every customer's contribution (a recovered lane, new group definitions)."""
        if lane.clock_ms is None:
            return
        for group in lane.groups.values():
            group.roll(lane.clock_day)
        for customer_id in sorted(lane.customers):
            st = self.store.get(customer_id)
            if st is None:  # cold: its contribution from a decoded copy, no source kept
                self._group_update(self._decoded(customer_id), lane, keep_source=False)
            else:
                self._group_update(st, lane)

    def group_partial(self, partition: int) -> dict[str, Any]:
        """What a partition contributes to every group: the groups topic's value for it, and
        the input of :func:`segstream.core.groups.merge`."""
        lane = self.lanes.get(partition)
        groups = {} if lane is None else {n: g.partial() for n, g in sorted(lane.groups.items())}
        return {
            "format": 1,
            "partition": partition,
            "clock_ms": None if lane is None else lane.clock_ms,
            "rules_version": self.rules.version,
            "groups": groups,
        }

    def snapshots_emitted(self, partition: int) -> dict[str, str]:
        """Group -> the last quarter whose snapshot events this partition's owner emitted."""
        lane = self.lanes.get(partition)
        return {} if lane is None else dict(lane.snapshots)

    def mark_snapshots(self, partition: int, group: str, period: str) -> None:
        """Record that a quarter's snapshot events were emitted (written with the next commit:
        a crash before it emits them again, with the same ids)."""
        lane = self.lane(partition)
        lane.snapshots[group] = period
        lane.touched = True

    # -- shadow rule sets --------------------------------------------------------------------

    def set_shadow(self, rules: RuleSet | None) -> None:
        """Evaluate ``rules`` beside the live set from now on (None: stop). Customers are
        compared as they are evaluated; :meth:`observe_shadow` compares the others."""
        self._shadow = self._shadow_reading = None
        self._shadow_segments = {}
        if rules is None or rules.version == self.rules.version:
            return
        for score in rules.quantile_scores:
            if self._wanted.get(score.field) != score.quantiles:
                raise ValueError(
                    f"shadow rule set {rules.version}: quantile score {score.name!r} ranks"
                    f" {score.field} in {score.quantiles} quantiles, which the live rules do not;"
                    " a shadow set may rank only what the live set ranks, in as many quantiles"
                )
        self._shadow = ShadowReport(self.rules, rules)
        self._shadow_reading = Reading.of(rules)

    @property
    def shadow_rules(self) -> RuleSet | None:
        return None if self._shadow is None else self._shadow.rules

    def observe_shadow(self, customer_ids: Iterable[str]) -> None:
        for customer_id in customer_ids:
            st = self.store.get(customer_id) or self._warm(customer_id)
            if st is not None and self._shadow is not None:
                self._observe_shadow(st, self.lanes[self.partition_of[customer_id]])

    def _observe_shadow(self, st: CustomerState, lane: Lane) -> None:
        shadow, reading = self._shadow, self._shadow_reading
        assert shadow is not None and reading is not None
        values, _ = self._values(st, lane, compact=False, reading=reading)
        segments = {name: values[name] for name in shadow.rules.segment_names}
        before = self._shadow_segments.get(st.customer_id)
        if before is not None:
            for name, old, new, kind in compare(shadow.rules, shadow.rules, before, segments):
                self.shadow_transitions[(name, label(old), label(new), kind)] += 1
        self._shadow_segments[st.customer_id] = segments
        shadow.observe(st.customer_id, st.segments, segments)

    def shadow_report(self) -> dict[str, Any] | None:
        """What promoting the shadow set now would move, per segment (None: no shadow set)."""
        return None if self._shadow is None else self._shadow.summary()

    def take_shadow_transitions(self) -> dict[tuple[str, str, str, str], int]:
        taken = dict(self.shadow_transitions)
        self.shadow_transitions.clear()
        return taken

    # -- hysteresis and dwell ----------------------------------------------------------------

    def _hold(self, st: CustomerState, values: dict[str, Any], day: int) -> None:
        """Keep a member in its segment while the segment's ``stay_while`` holds, or for its
        ``min_days``. Only exits and downgrades are held back: an upgrade always happens."""
        segments = st.segments
        for name, held in self._held:
            current = segments.get(name)
            new = values[name]
            if isinstance(held, Family):
                if not isinstance(current, str) or current == new or current not in held.ranks:
                    continue
                if new is not None and held.rank(new) < held.rank(current):
                    continue
                condition = held.tiers[held.rank(current)]
            else:
                if new or current is not True:
                    continue
                condition = held
            stay = condition.stay
            if (stay is not None and stay.holds(values)) or self._in_dwell(
                st, name, condition.min_days, day
            ):
                values[name] = current

    @staticmethod
    def _in_dwell(st: CustomerState, name: str, min_days: int, day: int) -> bool:
        entered = st.entered.get(name)
        return bool(min_days) and entered is not None and day - entered < min_days

    def _enter(self, st: CustomerState, name: str, member: bool, at_ms: int) -> None:
        if member:
            st.enter(name, day_of(at_ms))
        else:
            st.entered.pop(name, None)  # (no-op on the shared empty mapping)

    def _dwell_ends(self, st: CustomerState, day: int) -> int | None:
        """The first day a dwell of the customer's current segments ends (it may then exit)."""
        best: int | None = None
        for name, entered in st.entered.items():
            min_days = self._min_days_of(name, st.segments.get(name))
            end = entered + min_days
            if min_days and end > day and (best is None or end < best):
                best = end
        return best

    def _min_days_of(self, name: str, value: Any) -> int:
        rules = self.rules
        if name in rules.flags:
            return rules.flags[name].min_days
        family = rules.families.get(name)
        if family is None or not isinstance(value, str) or value not in family.ranks:
            return 0
        return family.tiers[family.rank(value)].min_days

    # -- membership timeline -----------------------------------------------------------------

    def _remember(self, st: CustomerState, entry: tuple[int, str, Any, Any, int, int]) -> None:
        """Append a transition to the customer's timeline, dropping what is too many or too old.

        The timeline is one flat tuple (``st.transitions``, TRANSITION items an entry): the
        smallest it can be held in, at about three appends an event a new tuple of at most
        ``timeline_length`` entries is cheap. Nearly always nothing is dropped: that is two
        comparisons (length, oldest entry's time) before the general trim, which drops exactly
        what it always dropped."""
        keep = self._timeline_keep
        if keep is None:
            return
        length, span = keep
        flat = st.transitions + entry
        entries = len(flat) // TRANSITION
        oldest = entry[0] - span
        if entries <= length and flat[0] >= oldest:
            st.transitions = flat
            return
        drop = max(entries - length, 0)
        while drop < entries and flat[drop * TRANSITION] < oldest:
            drop += 1
        st.transitions = flat[drop * TRANSITION :]

    def _condition_of(self, name: str, value: Any) -> str | None:
        """The current rules' condition of a segment value (what holds for a member)."""
        rules = self.rules
        if name in rules.flags:
            return rules.flags[name].source if value is True else None
        family = rules.families.get(name)
        if family is None or not isinstance(value, str) or value not in family.ranks:
            return None
        return family.tiers[family.rank(value)].source

    def timeline(self, customer_id: str) -> list[dict[str, Any]] | None:
        """A customer's latest transitions, oldest first (None: unknown customer)."""
        st = self._peek(customer_id)
        if st is None:
            return None
        return [
            {
                "at": to_rfc3339(at),
                "segment": name,
                "from": old,
                "to": new,
                "change": CHANGE_KINDS[kind],
                "cause": CAUSE_KINDS[cause],
                "matched": self._condition_of(name, new),
            }
            for at, name, old, new, kind, cause in st.timeline
        ]

    def segments_at(self, customer_id: str, at_ms: int) -> dict[str, Any] | None:
        """Which segments a customer was in at ``at_ms``, and why, from its timeline.

        The timeline keeps the latest transitions, so it answers for any time from its oldest
        entry on (and for any time at all while nothing was dropped): a segment's value then is
        the ``from`` of its first transition after ``at_ms``, or, without one, its value now;
        the transition before ``at_ms``, if kept, says since when and which condition matched.
        For an earlier time ``complete`` is false and every value unknown (null)."""
        st = self._peek(customer_id)
        if st is None:
            return None
        timeline = st.timeline
        full = st.seq == len(timeline)  # no transition was ever dropped
        covered = full or (bool(timeline) and timeline[0][0] <= at_ms)
        segments: dict[str, Any] = {}
        for name in self.rules.segment_names:
            if not covered:
                segments[name] = {"value": None, "known": False}
                continue
            mine = [t for t in timeline if t[1] == name]
            after = next((t for t in mine if t[0] > at_ms), None)
            before = [t for t in mine if t[0] <= at_ms]
            default = False if name in self.rules.flags else None
            value = after[2] if after is not None else st.segments.get(name, default)
            entry: dict[str, Any] = {"value": value, "known": True}
            if before:
                at, _, _, new, kind, cause = before[-1]
                entry |= {"since": to_rfc3339(at), "change": CHANGE_KINDS[kind]}
                entry |= {"cause": CAUSE_KINDS[cause], "matched": self._condition_of(name, new)}
            segments[name] = entry
        return {
            "customer_id": customer_id,
            "at": to_rfc3339(at_ms),
            "complete": covered,
            "segments": segments,
        }

    # -- population --------------------------------------------------------------------------

    def _configure_rules(self) -> None:
        """Precompute, per rule set, what the per-customer path needs (built once, not per event),
        including which clock-driven changes can matter to the rules."""
        rules = self.rules
        self._reading = Reading.of(rules)
        # segments with hysteresis (a tier's or flag's stay_while or min_days), and those
        # whose entry day is kept for a min_days dwell
        self._held: list[tuple[str, Family | Condition]] = [
            (name, family)
            for name, family in rules.families.items()
            if any(t.stay is not None or t.min_days for t in family.tiers)
        ] + [
            (name, flag)
            for name, flag in rules.flags.items()
            if flag.stay is not None or flag.min_days
        ]
        self._dwelling = frozenset(
            [n for n, f in rules.families.items() if any(t.min_days for t in f.tiers)]
            + [n for n, f in rules.flags.items() if f.min_days]
        )
        self._segment_set = frozenset(rules.segment_names)
        # for _diff: every segment's value when absent, all of them read at once, and per family
        # (name, rank by tier, rank of a tier it lacks, tiers) and per flag (name, condition)
        self._segment_defaults: dict[str, bool | None] = dict.fromkeys(rules.families, None)
        self._segment_defaults |= dict.fromkeys(rules.flags, False)
        self._segments_of = _reader(rules.segment_names)
        # (ranks are looked up with any stored value: a tier of other rules, a flag's bool)
        self._family_order: list[tuple[str, dict[Any, int], int, tuple[Condition, ...]]] = [
            (name, family.ranks, len(family.tiers), family.tiers)
            for name, family in rules.families.items()
        ]
        self._flag_order = [(name, flag.source) for name, flag in rules.flags.items()]
        self._schedule_of = Schedule(rules, self._reading.date_counters)
        self._date_attributes = [a.name for a in rules.attributes.values() if a.type == "date"]
        self._changes = ChangeBuilder(rules)
        self._quantile_scores = list(rules.quantile_scores)
        self._single_quantile: tuple[str, str] | None = (
            (self._quantile_scores[0].name, self._quantile_scores[0].field)
            if len(self._quantile_scores) == 1
            else None
        )
        # declared attributes are never the ones a flood of new names pushes out
        self.limits = replace(self.base_limits, keep_attributes=frozenset(rules.attributes))
        # the timeline's bounds (length, span in ms); None: no timeline is kept
        limits = self.limits
        self._timeline_keep: tuple[int, int] | None = (
            (limits.timeline_length, limits.timeline_days * MS_PER_DAY)
            if limits.timeline_length and limits.timeline_days
            else None
        )
        self._wanted = {s.field: s.quantiles for s in self._quantile_scores}
        self._groups = dict(rules.groups)
        for lane in self.lanes.values():
            self._configure_lane(lane)

    def _configure_lane(self, lane: Lane) -> list[str]:
        """Give a lane one population per quantile field of the rules, and its groups; returns
        new population fields. A group whose definition changed starts over (its closed
        quarters were figures of another definition); the caller refills it."""
        for name in [n for n in lane.groups if n not in self._groups]:
            del lane.groups[name]
        for name, spec in self._groups.items():
            group = lane.groups.get(name)
            if group is None or group.spec != spec:
                lane.groups[name] = GroupLane(spec)
        wanted = self._wanted
        for field_name in [f for f in lane.populations if f not in wanted]:
            del lane.populations[field_name]
        added: list[str] = []
        for field_name, quantiles in wanted.items():
            population = lane.populations.get(field_name)
            if population is None or population.quantiles != quantiles:
                lane.populations[field_name] = Population(field_name, quantiles)
                added.append(field_name)
        return added

    def _stale(self, lane: Lane) -> bool:
        """Whether a population needs new cut points: asked after every event, so the cheap
        test of :meth:`Population.stale` (too few updates for any refresh) is made here."""
        fraction = self.refresh_fraction
        for p in lane.populations.values():
            if p.updates_since_refresh >= REFRESH_MIN_UPDATES and p.stale(fraction):
                return True
        return False

    def _refresh_if_stale(self, lane: Lane) -> list[Change]:
        return self._refresh(lane, lane.clock_day * MS_PER_DAY) if self._stale(lane) else []

    def has_pending_population(self, partition: int) -> bool:
        """Values moved since the last refresh (below the refresh threshold)."""
        lane = self.lanes.get(partition)
        return lane is not None and any(p.updates_since_refresh for p in lane.populations.values())

    def refresh_population(self, partitions: Iterable[int] | None = None) -> list[Change]:
        """Recompute the cut points of every lane (or of ``partitions``) from its values."""
        changes: list[Change] = []
        chosen = sorted(self.lanes) if partitions is None else partitions
        for partition in chosen:
            lane = self.lane(partition)
            changes += self._refresh(lane, lane.clock_day * MS_PER_DAY)
        return changes

    def refresh_steps(self, partition: int, budget: int) -> Iterator[None]:
        """:meth:`refresh_population` of one lane, pausing whenever its pending work reaches
        ``budget`` so that the caller can commit in between (a commit taken at a pause has
        the new cut points, and a recovered lane re-scores the rest: :meth:`settle_adopted`)."""
        lane = self.lane(partition)
        moved = self._new_cuts(lane)
        yield from self._evaluate_steps(
            lane, moved, "population", lane.clock_day * MS_PER_DAY, budget
        )

    def _refresh(self, lane: Lane, at: int) -> list[Change]:
        return self._reevaluate(lane, self._new_cuts(lane), "population", at)

    def _new_cuts(self, lane: Lane) -> list[str]:
        """New cut points; the customers whose score moved (to re-evaluate), in id order."""
        affected: set[str] = set()
        for population in lane.populations.values():
            population.updates_since_refresh = 0
            old_cuts, new_cuts = population.cuts, population.compute_cuts()
            if old_cuts == new_cuts:
                continue
            population.cuts = new_cuts
            affected.update(population.moved(old_cuts, new_cuts))
        return sorted(affected)

    def _evaluate_steps(
        self, lane: Lane, customer_ids: Iterable[str], cause: str, at: int, budget: int
    ) -> Iterator[None]:
        """:meth:`_reevaluate`, pausing whenever the lane's pending work reaches ``budget``."""
        store = self.store
        for customer_id in customer_ids:
            st = store.get(customer_id) or self._warm(customer_id)
            if st is not None:
                self._evaluate(st, lane, cause, None, at)
                if lane.pending() >= budget:
                    yield

    def _due_steps(self, lane: Lane, day: int, budget: int) -> Iterator[None]:
        """:meth:`_run_due`, pausing whenever the lane's pending work reaches ``budget``."""
        store, at = self.store, day * MS_PER_DAY
        for customer_id in lane.due.pop_through(day):
            st = store.get(customer_id) or self._warm(customer_id)
            if st is not None and st.due_day is not None and st.due_day <= day:
                st.due_day = None
                self._evaluate(st, lane, "clock", None, at)
                if lane.pending() >= budget:
                    yield

    def _reevaluate(
        self, lane: Lane, customer_ids: Iterable[str], cause: str, at: int
    ) -> list[Change]:
        changes: list[Change] = []
        for customer_id in customer_ids:
            st = self.store.get(customer_id) or self._warm(customer_id)
            if st is not None:
                changes += self._evaluate(st, lane, cause, None, at)
        return changes

    # -- rules -------------------------------------------------------------------------------

    def set_rules(self, rules: RuleSet) -> None:
        """Switch rule sets; callers then re-evaluate customers (in slices) with cause 'rules'.
        A quantile field new to the rules gets every customer's value at once, so its first
        cut points describe the whole partition, not the customers re-evaluated first."""
        self.rules = rules
        self._configure_rules()
        shadow, self._shadow = self._shadow, None
        if shadow is not None and shadow.rules.version != rules.version:
            # the customers' re-evaluation under the new rules compares them again; a set no
            # longer comparable with the new live rules is dropped
            with contextlib.suppress(ValueError):
                self.set_shadow(shadow.rules)
        for lane in self.lanes.values():
            added = self._configure_lane(lane)
            if added:
                for customer_id in sorted(lane.customers):
                    st = self._peek(customer_id)
                    assert st is not None  # every customer of a lane is held, hot or cold
                    values, _ = self._values(st, lane, compact=False)
                    for field_name in added:
                        lane.populations[field_name].load(customer_id, values[field_name])
            for population in lane.populations.values():
                population.cuts = population.compute_cuts()
                population.updates_since_refresh = 0
            if lane.groups:
                self._refill_groups(lane)

    def reevaluate(self, customer_ids: Iterable[str], cause: str = "rules") -> list[Change]:
        """Re-evaluate customers (each in its own lane); a lane whose customers were all
        re-evaluated under the current rules records that version (see :meth:`rules_done`)."""
        changes: list[Change] = []
        for customer_id in customer_ids:
            st = self.store.get(customer_id) or self._warm(customer_id)
            if st is not None:
                lane = self.lanes[self.partition_of[customer_id]]
                changes += self._evaluate(st, lane, cause, None, lane.clock_ms or 0)
        return changes

    def reevaluate_steps(self, customer_ids: Iterable[str], budget: int) -> Iterator[None]:
        """:meth:`reevaluate` (cause ``rules``), pausing whenever the lane of the customer just
        evaluated has pending work of ``budget`` or more, so that the caller can commit."""
        store, partition_of, lanes = self.store, self.partition_of, self.lanes
        for customer_id in customer_ids:
            st = store.get(customer_id) or self._warm(customer_id)
            if st is not None:
                lane = lanes[partition_of[customer_id]]
                self._evaluate(st, lane, "rules", None, lane.clock_ms or 0)
                if lane.pending() >= budget:
                    yield

    def rules_done(self, partitions: Iterable[int] | None = None) -> None:
        """Every customer of these lanes was re-evaluated under the current rules."""
        for partition in sorted(self.lanes) if partitions is None else partitions:
            lane = self.lane(partition)
            if lane.rules_version != self.rules.version:
                lane.rules_version = self.rules.version
                lane.touched = True  # the lane record says so with the next commit

    # -- commits, recovery and reading -------------------------------------------------------

    def commit(self, partition: int) -> Commit | None:
        """Take what a lane decided since its last commit; None when it decided nothing."""
        lane = self.lanes.get(partition)
        if lane is None or not (lane.dirty or lane.fresh or lane.erased or lane.touched):
            return None
        lane.touched = False
        store = self.store
        states = [store[c] for c in sorted(lane.dirty) if c in store]
        erased = sorted(c for c in lane.erased if c not in store)
        if self.hot_customers is not None:  # the last committed are the last to be cooled
            for st in states:
                store[st.customer_id] = store.pop(st.customer_id)
        fresh, lane.fresh, lane.dirty, lane.erased = lane.fresh, [], set(), set()
        lane.unconfirmed += fresh
        return Commit(partition, states, lane.record(), fresh, erased)

    def commits(self) -> list[Commit]:
        """Every lane's :meth:`commit`; then the hot set is brought back to its bound."""
        done = [c for p in sorted(self.lanes) if (c := self.commit(p)) is not None]
        self.cool()
        return done

    def drop_pending(self) -> None:
        """Forget what the lanes decided since their last commit: for callers that keep no
        changelog (``replay``), whose pending work would otherwise grow with the input."""
        for lane in self.lanes.values():
            if self.hot_customers is not None:
                for customer_id in sorted(lane.dirty):
                    st = self.store.pop(customer_id, None)
                    if st is not None:
                        self.store[customer_id] = st
            lane.fresh, lane.dirty, lane.erased = [], set(), set()
            lane.touched = False
        self.cool()

    # -- the hot set -------------------------------------------------------------------------

    def cool(self) -> int:
        """Keep at most ``hot_customers`` customers as objects; the others as their stored
        bytes, packed (about a third of an object's memory), decoded again when an event, a
        due day, a refresh or a rules change needs them. Returns how many were cooled.

        Decoding a customer gives what recovery gives, and a recovered worker says exactly
        what one that never stopped says (the restart and reference-equality tests), so
        cooling changes no change, id or stored byte: only memory against the decoding time.
        Customers with work not yet committed stay hot; the least recently committed go
        first. Called by :meth:`commits` and :meth:`drop_pending`, between batches: no
        evaluation holds a customer while it is cooled."""
        limit = self.hot_customers
        store = self.store
        if limit is None or len(store) <= limit:
            return 0
        excess = len(store) - limit
        dirty = [lane.dirty for lane in self.lanes.values() if lane.dirty]
        chosen: list[str] = []
        for customer_id in store:
            if not any(customer_id in d for d in dirty):
                chosen.append(customer_id)
                if len(chosen) == excess:
                    break
        for customer_id in chosen:
            st = store.pop(customer_id)
            self._keep_cold(st, dump_state(st))
        return len(chosen)

    def _keep_cold(self, st: CustomerState, raw: bytes) -> None:
        """Hold a customer just taken out of the hot set as ``raw``, its stored bytes, packed
        once the packer has learned from the first customers cooled (they are then packed too)."""
        customer_id = st.customer_id
        segments = tuple(st.segments.items())
        segments = self._segment_pool.setdefault(segments, segments)
        packer, cold = self._packer, self.cold
        if packer.trained:
            cold[customer_id] = (packer.pack(raw), st.ranked, segments)
        else:
            cold[customer_id] = (raw, st.ranked, segments)
            if packer.learn(raw):
                for key, (held, ranked, pooled) in cold.items():
                    cold[key] = (packer.pack(held), ranked, pooled)
        for group in self.lanes[self.partition_of[customer_id]].groups.values():
            group.forget_source(customer_id)

    def _stored(self, customer_id: str) -> bytes:
        """A cold customer's stored bytes, unpacked."""
        held = self.cold[customer_id][0]
        packer = self._packer
        return packer.unpack(held) if packer.trained else held

    def adopt_stored(self, partition: int, raws: Iterable[bytes]) -> None:
        """:meth:`adopt_all` of stored states. With a bounded hot set, each customer beyond
        the bound goes cold once adopted, held as the bytes it was read as: a recovery's
        memory stays within the bound, and no state is encoded again."""
        limit = self.hot_customers
        if limit is None:
            self.adopt_all(partition, map(load_state, raws))
            return
        store = self.store
        adopted: list[tuple[CustomerState, bytes]] = []

        def states() -> Iterator[CustomerState]:
            # adopt_all asks for the next state once it is done with the one before
            for raw in raws:
                if adopted and len(store) > limit:
                    self._cool_adopted(*adopted.pop())
                st = load_state(raw)
                adopted.append((st, raw))
                yield st

        self.adopt_all(partition, states())
        if adopted and len(store) > limit:
            self._cool_adopted(*adopted.pop())

    def _cool_adopted(self, st: CustomerState, raw: bytes) -> None:
        if self.store.get(st.customer_id) is st:
            del self.store[st.customer_id]
            self._keep_cold(st, raw)

    def _warm(self, customer_id: str) -> CustomerState | None:
        """A cold customer made hot again (None: not cold)."""
        if customer_id not in self.cold:
            return None
        st = self.store[customer_id] = self._loaded(self._stored(customer_id))
        del self.cold[customer_id]
        return st

    def _peek(self, customer_id: str) -> CustomerState | None:
        """A customer to read without a state change: hot, or decoded and left cold."""
        st = self.store.get(customer_id)
        if st is None and customer_id in self.cold:
            return self._decoded(customer_id)
        return st

    def _decoded(self, customer_id: str) -> CustomerState:
        return self._loaded(self._stored(customer_id))

    @staticmethod
    def _loaded(raw: bytes) -> CustomerState:
        st = load_state(raw)
        if st.due_day is not None:
            st.due_day = shared_day(st.due_day)  # as adoption holds it
        return st

    def confirm(self, partitions: Iterable[int] | None = None) -> None:
        """The changes committed so far were emitted (acknowledged): no longer re-sent."""
        for partition in sorted(self.lanes) if partitions is None else partitions:
            lane = self.lanes.get(partition)
            if lane is not None:
                lane.unconfirmed = []

    def pending(self, partition: int) -> int:
        lane = self.lanes.get(partition)
        return 0 if lane is None else lane.pending()

    def adopt_lane(self, partition: int, record: dict[str, Any]) -> None:
        """Take over a recovered lane record: its clock, cut points, refresh counters, rules
        version and the changes it had not confirmed as emitted (re-sent: same ids)."""
        if record.get("format") != LANE_FORMAT:
            raise ValueError(f"unknown lane record format {record.get('format')!r}")
        lane = self.lane(partition)
        if record["clock_ms"] is not None:
            lane.set_clock(int(record["clock_ms"]))
        if "topic_days" in record:
            lane.topic_days = {k: shared_day(int(v)) for k, v in record["topic_days"].items()}
        elif lane.clock_ms is not None:  # a record from before the topics' clocks: the clock
            # its states were compacted by
            lane.topic_days = {kind: lane.clock_day for kind in ("order", "support")}
        lane.rules_version = record.get("rules_version")
        for name, stored in record.get("populations", {}).items():
            population = lane.populations.get(name)
            if population is not None:
                population.cuts = tuple(float(c) for c in stored["cuts"])
                population.updates_since_refresh = int(stored["updates"])
        lane.unconfirmed = []
        lane.fresh = list(record.get("unconfirmed", ()))  # sent again with the next commit
        lane.erasures = {k: (int(v[0]), int(v[1])) for k, v in record.get("erasures", {}).items()}
        for name, stored_group in record.get("groups", {}).items():
            group = lane.groups.get(name)
            if group is not None:
                group.restore(stored_group)
        for group in lane.groups.values():
            if group.current is None and lane.clock_ms is not None:
                group.roll(lane.clock_day)  # a record written before the group existed
        lane.snapshots = dict(record.get("snapshots", {}))

    def adopt(self, st: CustomerState, partition: int) -> None:
        """Take over a recovered customer: index its schedule and population values, no changes."""
        self.adopt_all(partition, (st,))

    def adopt_all(self, partition: int, states: Iterable[CustomerState]) -> None:
        """:meth:`adopt` each of ``states`` in turn, with what is the same for every customer
        of the lane looked up once: a replacement worker adopts every customer of its
        partitions (a million or more) before it is ready."""
        lane = self.lane(partition)
        store, partition_of, customers = self.store, self.partition_of, lane.customers
        members, move_due = self._members, lane.due.move
        populations, clock_day, windows = lane.populations, lane.clock_day, self.rules.windows
        # (score name, its field's population) of every quantile score
        scores = (
            [(s.name, populations[s.field]) for s in self._quantile_scores] if populations else []
        )
        groups = bool(lane.groups) and lane.clock_ms is not None
        shadow = self._shadow is not None
        segments: list[dict[str, Any]] = []
        cold = self.cold
        for st in states:
            customer_id = st.customer_id
            store[customer_id] = st
            if cold:
                cold.pop(customer_id, None)
            partition_of[customer_id] = partition
            customers.add(customer_id)
            segments.append(st.segments)
            if populations:
                ranked = st.ranked
                if len(scores) == 1 and len(ranked) == 3 and ranked[0] == scores[0][0]:
                    scores[0][1].load(customer_id, ranked[1])  # the usual one score, no dict
                else:
                    known = st.quantiles  # (a dict built per read: read once)
                    if all(name in known for name, _ in scores):
                        for name, population in scores:
                            population.load(customer_id, known[name][0])
                    else:  # stored by an older version or under other rules: recompute
                        values, _ = st.read(clock_day, windows)
                        for field_name, population in populations.items():
                            population.load(customer_id, values[field_name])
            due = st.due_day  # not indexed in this process yet: as _schedule from None
            if due is not None:
                st.due_day = due = shared_day(due)
                move_due(customer_id, None, due)
            if groups:
                self._group_update(st, lane)
            if shadow:
                self._observe_shadow(st, lane)
        # the member counts, as _count(name, value, 1) for each customer's segments, counted
        # in C: a (segment, value) pair first seen earlier is first counted earlier, so the
        # counter's order is the same (values are names, booleans or None: no 1 == True)
        counted = Counter(itertools.chain.from_iterable(map(dict.items, segments)))
        for (name, value), n in counted.items():
            if value is not None and value is not False:
                members[(name, name if value is True else str(value))] += n

    def settle_adopted(
        self, partition: int, *, had_record: bool, rules: bool = True
    ) -> list[Change]:
        """After a lane's customers were adopted: finish what its last commit left half done.

        A commit may end inside a clock day (customers still due) or inside a refresh (cut
        points recorded, some customers not yet re-scored); the uncrashed worker would have
        gone on with exactly those evaluations, in this order, so the recovered one does. A
        lane recovered without its record (written by an older version) takes its clock from
        its customers and computes its cut points. ``rules`` False leaves a lane recorded
        under other rules to the caller (:meth:`stale_under_rules`, then :meth:`rules_done`):
        the worker re-evaluates it in commit-sized slices."""
        lane = self.lane(partition)
        if not had_record:
            self._without_record(lane)
        at = lane.clock_day * MS_PER_DAY
        changes = self._run_due(lane, lane.clock_day) if lane.clock_ms is not None else []
        changes += self._reevaluate(lane, self._off_cuts(lane), "population", at)
        if rules and lane.rules_version != self.rules.version:
            changes += self._reevaluate(lane, sorted(lane.customers), "rules", lane.clock_ms or 0)
            lane.rules_version = self.rules.version
        return changes + self._refresh_if_stale(lane)

    def settle_steps(self, partition: int, *, had_record: bool, budget: int) -> Iterator[None]:
        """:meth:`settle_adopted` without the rules (``rules=False``), pausing whenever the
        lane's pending work reaches ``budget`` so that the caller can commit in between: the
        same evaluations in the same order."""
        lane = self.lane(partition)
        if not had_record:
            self._without_record(lane)
        if lane.clock_ms is not None:
            yield from self._due_steps(lane, lane.clock_day, budget)
        at = lane.clock_day * MS_PER_DAY
        yield from self._evaluate_steps(lane, self._off_cuts(lane), "population", at, budget)
        if self._stale(lane):
            yield from self.refresh_steps(partition, budget)

    def _without_record(self, lane: Lane) -> None:
        """A lane recovered without its record (written by an older version)."""
        if self.clock == CLOCK_EVENT:
            latest = max((self._last_event_ms(c) for c in lane.customers), default=None)
            if latest:
                lane.set_clock(latest)
        for population in lane.populations.values():
            population.cuts = population.compute_cuts()
        if lane.groups:
            self._refill_groups(lane)

    def _last_event_ms(self, customer_id: str) -> int:
        st = self._peek(customer_id)
        return 0 if st is None else st.last_event_ms

    def stale_under_rules(self, partition: int) -> list[str]:
        """The customers of a lane recorded under other rules than the current ones, in id
        order (none when its record has the current version)."""
        lane = self.lanes.get(partition)
        if lane is None or lane.rules_version == self.rules.version:
            return []
        return sorted(lane.customers)

    def _off_cuts(self, lane: Lane) -> list[str]:
        """Customers whose stored quantile scores differ from the lane's current cut points, in
        id order. Asked for every lane taken over, so only those found are sorted: usually
        none, where sorting a partition's ids took longer than checking them."""
        store, cold, populations = self.store, self.cold, lane.populations
        scores = [(s, s.name, populations[s.field].cuts) for s in self._quantile_scores]
        if not scores:
            return []
        moved: list[str] = []
        single = scores[0] if len(scores) == 1 else None
        for customer_id in lane.customers:
            st = store.get(customer_id)
            ranked = st.ranked if st is not None else cold[customer_id][1]
            if single is not None and len(ranked) == 3 and ranked[0] == single[1]:
                if single[0].from_cuts(ranked[1], single[2]) != ranked[2]:  # the usual one score
                    moved.append(customer_id)
                continue
            flat = iter(ranked)  # as CustomerState.quantiles reads it
            known = {name: (v, score) for name, v, score in zip(flat, flat, flat, strict=True)}
            for s, name, cuts in scores:
                item = known.get(name)
                if item is None or s.from_cuts(item[0], cuts) != item[1]:
                    moved.append(customer_id)
                    break
        moved.sort()
        return moved

    def release_partition(self, partition: int) -> None:
        """Forget the customers and the lane of a partition this process no longer owns."""
        lane = self.lanes.pop(partition, None)
        if lane is None:
            return
        if self._shadow is not None:
            self._shadow.forget_all(lane.customers)
            for customer_id in lane.customers:
                self._shadow_segments.pop(customer_id, None)
        for customer_id in lane.customers:
            st = self.store.pop(customer_id, None)
            cold = self.cold.pop(customer_id, None) if self.cold else None
            self.partition_of.pop(customer_id, None)
            segments = st.segments.items() if st is not None else () if cold is None else cold[2]
            for name, value in segments:
                self._count(name, value, -1)

    def segments_of(self, customer_id: str) -> dict[str, Any] | None:
        st = self._peek(customer_id)
        if st is None:
            return None
        return {
            name: st.segments.get(name, False if name in self.rules.flags else None)
            for name in self.rules.segment_names
        }

    def explain(self, customer_id: str) -> dict[str, Any] | None:
        """State, segments, and for each family which tier conditions hold."""
        st = self._peek(customer_id)
        if st is None:
            return None
        values = self.values(st)
        rules = self.rules
        lane = self.lanes[self.partition_of[customer_id]]
        return {
            "customer_id": customer_id,
            "as_of": to_rfc3339(lane.clock_ms or 0),
            "rules_version": rules.version,
            "state": {
                k: v for k, v in values.items() if k not in rules.families and k not in rules.flags
            },
            "segments": self.segments_of(customer_id),
            "families": {
                name: [
                    {"tier": t.name, "when": t.source, "holds": t.holds(values)}
                    | _playbook_fields(t.playbook)
                    for t in fam.tiers
                ]
                for name, fam in rules.families.items()
            },
            "flags": {
                name: {"when": f.source, "holds": f.holds(values)} | _playbook_fields(f.playbook)
                for name, f in rules.flags.items()
            },
            "timeline": self.timeline(customer_id),
        }

    def member_counts(self) -> dict[str, dict[str, int]]:
        """Customers per segment, kept as segments change (a /metrics scrape is O(segments))."""
        counts: dict[str, dict[str, int]] = {name: {} for name in self.rules.segment_names}
        for (name, tier), n in self._members.items():
            if n and name in counts:
                counts[name][tier] = n
        return counts


def _reader(names: list[str]) -> Callable[[dict[str, Any]], Any]:
    """A function reading ``names`` of a dict in one step (a value, or a tuple of them)."""
    return itemgetter(*names) if names else _nothing


def _nothing(_: dict[str, Any]) -> tuple[()]:
    return ()


def _digest(customer_id: str) -> str:
    """What an erased customer leaves behind: 16 hex digits, not its id."""
    return blake2b(customer_id.encode(), digest_size=8).hexdigest()


def _playbook_fields(playbook: Playbook) -> dict[str, str | None]:
    return {"action": playbook.action, "owner": playbook.owner, "touch": playbook.touch}
