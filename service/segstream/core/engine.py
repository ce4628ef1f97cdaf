"""The segmentation engine: apply events, evaluate rules, detect and describe changes.

One :class:`Engine` holds the customers of one process (all of them in ``replay``, the owned
partitions in a worker). Everything here is synchronous and I/O free: the worker hands it whole
Kafka batches and the replay command hands it file lines, and both get the same changes.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from segstream.core.contracts import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Event,
    Rejection,
    RejectReason,
    parse_event,
)
from segstream.core.population import Population
from segstream.core.rulelang import RuleSet
from segstream.core.state import DAY_COUNTERS, WINDOW_GROUPS, CustomerState, Exits
from segstream.core.timeutil import MS_PER_DAY, day_of, to_rfc3339

Change = dict[str, Any]
CLOCK_EVENT = "event"
CLOCK_WALL = "wall"
REFRESH_MIN_UPDATES = 50  # population refresh is O(customers): not for every few updates


@dataclass(slots=True)
class BatchResult:
    changes: list[Change] = field(default_factory=list)
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0


class Engine:
    """Per-customer state plus the compiled rules; the only implementation of every rule."""

    def __init__(
        self,
        rules: RuleSet,
        *,
        store: MutableMapping[str, CustomerState] | None = None,
        clock: str = CLOCK_EVENT,
        currency: str = "USD",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        refresh_fraction: float = 0.05,
    ) -> None:
        if clock not in (CLOCK_EVENT, CLOCK_WALL):
            raise ValueError(f"clock must be 'event' or 'wall', not {clock!r}")
        self.rules = rules
        self.store: MutableMapping[str, CustomerState] = {} if store is None else store
        self.clock = clock
        self.currency = currency
        self.max_message_bytes = max_message_bytes
        self.refresh_fraction = refresh_fraction
        self.clock_ms: int | None = None
        self.clock_day = 0
        self.partition_of: dict[str, int] = {}
        self.rejections: Counter[RejectReason] = Counter()
        # customers whose stored form is out of date: an event applied, a segment changed or a
        # population value moved (recovery indexes the stored value). An evaluation that only
        # moved the due day or compacted is not worth a write: a recovered copy re-evaluates at
        # its older due day (finding nothing) and compacts later.
        self.dirty: set[str] = set()
        self.evaluations = 0
        self._members: Counter[tuple[str, str]] = Counter()  # (segment name, tier) -> customers
        self._due: dict[int, set[str]] = {}
        self._due_days: list[int] = []
        self.populations: dict[str, Population] = {}
        self._configure_rules()

    # -- clock -------------------------------------------------------------------------------

    def _set_clock(self, now_ms: int) -> None:
        self.clock_ms = now_ms
        self.clock_day = day_of(now_ms)

    def advance(self, now_ms: int) -> list[Change]:
        """Move the clock forward; re-evaluate only the customers due by the new day."""
        if self.clock_ms is not None and now_ms <= self.clock_ms:
            return []
        old_day = None if self.clock_ms is None else self.clock_day
        self._set_clock(now_ms)
        new_day = self.clock_day
        changes: list[Change] = []
        if old_day is None or new_day == old_day:
            return changes
        changes += self._run_due(new_day)
        if self.population_stale():
            changes += self.refresh_population()
        return changes

    def _run_due(self, day: int) -> list[Change]:
        changes: list[Change] = []
        at = day * MS_PER_DAY
        for customer_id in self._pop_due(day):
            st = self.store.get(customer_id)
            if st is not None and st.due_day is not None and st.due_day <= day:
                st.due_day = None
                changes += self._evaluate(st, "clock", None, at)
        return changes

    def catch_up(self) -> list[Change]:
        """Evaluate adopted customers that are already due. Their stored copy can predate a
        clock evaluation that changed nothing (not worth a write), so their due day is past."""
        return self._run_due(self.clock_day)

    def _pop_due(self, day: int) -> Iterator[str]:
        while self._due_days and self._due_days[0] <= day:
            d = heapq.heappop(self._due_days)
            yield from sorted(self._due.pop(d, ()))

    def _schedule(self, st: CustomerState, day: int | None) -> None:
        if day == st.due_day:
            return
        if st.due_day is not None:
            members = self._due.get(st.due_day)
            if members is not None:
                members.discard(st.customer_id)
        st.due_day = day
        if day is not None:
            members = self._due.get(day)
            if members is None:
                self._due[day] = members = set()
                heapq.heappush(self._due_days, day)
            members.add(st.customer_id)

    def _next_change_day(self, values: dict[str, Any], exits: Exits) -> int | None:
        """The first day after today on which a rule reading a time-dependent value may flip.

        Window counts compared only with literals matter when they cross a boundary, so a
        customer with 9 recent events and a rule ``activity_30d >= 3`` is due when the 7th of
        them leaves the window, not at each exit. Everything else is due at its next exit.
        """
        today = self.clock_day
        best: int | None = None
        for group in self._every_exit:
            days = exits[group]
            if days:
                first = min(days)
                if best is None or first < best:
                    best = first
        for group, count, bounds in self._boundary_exit:
            days = exits[group]
            value = values[count]
            i = bisect_right(bounds, value)
            if i == 0 or not days:
                continue
            k = value - bounds[i - 1] + 1
            if k <= len(days):
                day = heapq.nsmallest(k, days)[-1]
                if best is None or day < best:
                    best = day
        for counter, every_day, bounds in self._counters:
            value = values[counter]
            if value is None:
                continue
            if every_day:
                candidate = today + 1
            else:
                i = bisect_right(bounds, value)
                if i == len(bounds):
                    continue
                candidate = today + bounds[i] - value
            if best is None or candidate < best:
                best = candidate
        return best

    # -- events ------------------------------------------------------------------------------

    def parse(self, raw: bytes | str) -> Event | Rejection:
        result = parse_event(raw, currency=self.currency, max_bytes=self.max_message_bytes)
        if isinstance(result, Rejection):
            self.rejections[result.reason] += 1
        return result

    def process(
        self, raws: Iterable[bytes | str], *, now_ms: int | None = None, partition: int = 0
    ) -> BatchResult:
        """Parse and apply a batch of raw messages; no await, no I/O."""
        result = BatchResult()
        if now_ms is not None:
            result.changes += self.advance(now_ms)
        for index, raw in enumerate(raws):
            event = self.parse(raw)
            if isinstance(event, Rejection):
                result.rejections.append((index, event))
                continue
            result.events += 1
            changes = self.apply(event, partition=partition)
            if changes is None:
                result.duplicates += 1
            else:
                result.changes += changes
        return result

    def apply(self, event: Event, *, partition: int = 0) -> list[Change] | None:
        """Apply one event; returns its changes, or None when it changed nothing (a duplicate)."""
        changes: list[Change] = []
        if self.clock == CLOCK_EVENT and (
            self.clock_ms is None or event.occurred_at > self.clock_ms
        ):
            changes += self.advance(event.occurred_at)
        customer_id = event.customer_id
        st = self.store.get(customer_id)
        if st is None:
            st = CustomerState(customer_id)
            self.store[customer_id] = st
            self.partition_of[customer_id] = partition
        if not st.apply(event, self.clock_day, self.rules.windows):
            return changes or None
        return changes + self._evaluate(st, "event", event.event_id, self.clock_ms or 0)

    # -- evaluation --------------------------------------------------------------------------

    def values(self, st: CustomerState) -> dict[str, Any]:
        """Everything rules can read for one customer, with derived metrics and segments."""
        return self._values(st)[0]

    def _values(self, st: CustomerState) -> tuple[dict[str, Any], Exits]:
        rules = self.rules
        st.compact(self.clock_day, rules.windows)
        values, exits = st.values(self.clock_day, rules.windows, self._watch)
        values.update(self._attribute_defaults)
        declared = rules.attributes
        for name, item in st.attrs.items():
            attr = declared.get(name)
            if attr is not None and item[2] is not None:
                values[name] = attr.coerce(item[2])
        for score in self._bin_scores:
            values[score.name] = score.from_bins(values[score.field])
        for score, population in self._quantile_scores:
            values[score.name] = score.from_cuts(values[score.field], population.cuts)
        if self._has_rfm:
            values["rfm"] = f"{values['r']}{values['f']}{values['m']}"
        rules.evaluate(values)
        return values, exits

    def _evaluate(
        self, st: CustomerState, cause: str, event_id: str | None, at_ms: int
    ) -> list[Change]:
        self.evaluations += 1
        values, exits = self._values(st)
        partition = self.partition_of.get(st.customer_id, 0)
        for field_name, population in self.populations.items():
            population.set(partition, st.customer_id, values[field_name])
        quantiles_moved = False
        if self._quantile_scores:
            quantiles = {
                s.name: (values[s.field], values[s.name]) for s, _ in self._quantile_scores
            }
            quantiles_moved, st.quantiles = quantiles != st.quantiles, quantiles
        self._schedule(st, self._next_change_day(values, exits))
        changes = self._diff(st, values, cause, event_id, at_ms)
        if changes or quantiles_moved or cause == "event":
            self.dirty.add(st.customer_id)
        return changes

    def _diff(
        self,
        st: CustomerState,
        values: dict[str, Any],
        cause: str,
        event_id: str | None,
        at_ms: int,
    ) -> list[Change]:
        segments = st.segments
        rules = self.rules
        changes: list[Change] = []
        for name, family in rules.families.items():
            old, new = segments.get(name), values[name]
            if old == new:
                continue
            self._count(name, old, -1)
            self._count(name, new, 1)
            if old is None:
                kind = "entered"
            elif new is None:
                kind = "exited"
            else:
                kind = "upgraded" if family.rank(new) < family.rank(old) else "downgraded"
            matched = family.tiers[family.rank(new)].source if new is not None else None
            failed = None
            if old is not None and family.rank(old) < len(family.tiers):
                condition = family.tiers[family.rank(old)]
                failed = None if condition.holds(values) else condition.source
            segments[name] = new
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
        for name, flag in rules.flags.items():
            old_flag, new_flag = bool(segments.get(name, False)), bool(values[name])
            if old_flag == new_flag:
                continue
            self._count(name, new_flag, 1)
            self._count(name, old_flag, -1)
            segments[name] = new_flag
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
                    flag.source if new_flag else None,
                    None if new_flag else flag.source,
                    values,
                )
            )
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
        st.seq += 1
        version = self.rules.version
        parts = (st.customer_id, st.seq, family, old, new, cause, event_id, version)
        key = "\x1f".join(map(str, parts))
        reads = self.rules.reads.get(family, ())
        return {
            "event_id": blake2b(key.encode(), digest_size=16).hexdigest(),
            "customer_id": st.customer_id,
            "family": family,
            "segment": segment,
            "from": old,
            "to": new,
            "change": kind,
            "seq": st.seq,
            "at": to_rfc3339(at_ms),
            "cause": {"kind": cause, "event_id": event_id, "rules_version": version},
            "reason": {"matched": matched, "failed": failed},
            "state": {name: values.get(name) for name in reads},
        }

    # -- population --------------------------------------------------------------------------

    def _configure_rules(self) -> None:
        """Precompute, per rule set, what the per-customer path needs (built once, not per event),
        including which clock-driven changes can matter to the rules."""
        rules = self.rules
        self._attribute_defaults = {a.name: a.default for a in rules.attributes.values()}
        self._segment_set = frozenset(rules.segment_names)
        self._bin_scores = [s for s in rules.scores.values() if not s.quantiles]
        self._has_rfm = {"r", "f", "m"} <= rules.scores.keys()
        used, opaque, bounds = rules.used_fields, rules.opaque_fields, rules.boundaries
        self._every_exit: list[str] = []
        self._boundary_exit: list[tuple[str, str, tuple[int, ...]]] = []
        for group, (count, names) in WINDOW_GROUPS.items():
            read = used & names
            if not read:
                continue
            if count is None or read - {count} or count in opaque:
                self._every_exit.append(group)
            elif count in bounds:
                self._boundary_exit.append((group, count, bounds[count]))
        self._watch = frozenset([*self._every_exit, *(g for g, _, _ in self._boundary_exit)])
        self._counters: list[tuple[str, bool, tuple[int, ...]]] = [
            (c, c in opaque, bounds.get(c, ())) for c in DAY_COUNTERS if c in opaque or c in bounds
        ]
        wanted = {s.field: s.quantiles for s in self.rules.quantile_scores}
        for field_name in list(self.populations):
            if field_name not in wanted:
                del self.populations[field_name]
        for field_name, quantiles in wanted.items():
            population = self.populations.get(field_name)
            if population is None or population.quantiles != quantiles:
                self.populations[field_name] = Population(field_name, quantiles)
        self._quantile_scores = [(s, self.populations[s.field]) for s in rules.quantile_scores]

    def population_stale(self) -> bool:
        """Enough values moved (refresh_fraction of the population) to recompute cut points."""
        for population in self.populations.values():
            threshold = max(REFRESH_MIN_UPDATES, int(self.refresh_fraction * population.size()))
            if population.updates_since_refresh >= threshold:
                return True
        return False

    def refresh_population(self, *, at_ms: int | None = None) -> list[Change]:
        """Recompute quantile cut points; re-evaluate exactly the customers whose score moved."""
        changes: list[Change] = []
        at = self.clock_day * MS_PER_DAY if at_ms is None else at_ms
        affected: set[str] = set()
        for population in self.populations.values():
            population.updates_since_refresh = 0
            old_cuts, new_cuts = population.cuts, population.compute_cuts()
            if old_cuts == new_cuts:
                continue
            population.cuts = new_cuts
            affected.update(population.moved(old_cuts, new_cuts))
        for customer_id in sorted(affected):
            st = self.store.get(customer_id)
            if st is not None:
                changes += self._evaluate(st, "population", None, at)
        return changes

    # -- rules -------------------------------------------------------------------------------

    def set_rules(self, rules: RuleSet) -> None:
        """Switch rule sets; callers then re-evaluate customers (in chunks) with cause 'rules'."""
        self.rules = rules
        self._configure_rules()
        for population in self.populations.values():
            population.cuts = population.compute_cuts()

    def reevaluate(self, customer_ids: Iterable[str], cause: str = "rules") -> list[Change]:
        changes: list[Change] = []
        at = self.clock_ms or 0
        for customer_id in customer_ids:
            st = self.store.get(customer_id)
            if st is not None:
                changes += self._evaluate(st, cause, None, at)
        return changes

    # -- recovery and reading ----------------------------------------------------------------

    def adopt(self, st: CustomerState, partition: int) -> None:
        """Take over a recovered customer: index its schedule and population values, no changes."""
        self.store[st.customer_id] = st
        self.partition_of[st.customer_id] = partition
        for name, value in st.segments.items():
            self._count(name, value, 1)
        if self.clock == CLOCK_EVENT and (
            self.clock_ms is None or st.last_event_ms > self.clock_ms
        ):
            self._set_clock(st.last_event_ms)
        if self.populations:
            known = st.quantiles
            if all(s.name in known for s, _ in self._quantile_scores):
                for s, population in self._quantile_scores:
                    population.set(partition, st.customer_id, known[s.name][0])
            else:  # stored by an older version or under other rules: recompute
                values, _ = st.values(self.clock_day, self.rules.windows, self._watch)
                for field_name, population in self.populations.items():
                    population.set(partition, st.customer_id, values[field_name])
        due, st.due_day = st.due_day, None  # not indexed in this process yet
        self._schedule(st, due)

    def reconcile_population(self) -> list[Change]:
        """After adopting recovered customers: new cut points, then re-evaluate exactly the
        customers whose quantile scores under them differ from the scores their segments were
        computed with (maybe on another worker), instead of every customer."""
        for population in self.populations.values():
            population.updates_since_refresh = 0
            population.cuts = population.compute_cuts()
        moved: list[str] = []
        scores = self._quantile_scores
        for customer_id, st in self.store.items():
            known = st.quantiles
            for s, population in scores:
                item = known.get(s.name)
                if item is None or s.from_cuts(item[0], population.cuts) != item[1]:
                    moved.append(customer_id)
                    break
        return self.reevaluate(sorted(moved), cause="population")

    def release_partition(self, partition: int) -> None:
        """Forget the customers of a partition this process no longer owns."""
        gone = [cid for cid, p in self.partition_of.items() if p == partition]
        for customer_id in gone:
            st = self.store.pop(customer_id, None)
            del self.partition_of[customer_id]
            if st is None:
                continue
            for name, value in st.segments.items():
                self._count(name, value, -1)
            if st.due_day is not None:
                self._due.get(st.due_day, set()).discard(customer_id)
        for population in self.populations.values():
            population.drop_partition(partition)

    def segments_of(self, customer_id: str) -> dict[str, Any] | None:
        st = self.store.get(customer_id)
        if st is None:
            return None
        return {
            name: st.segments.get(name, False if name in self.rules.flags else None)
            for name in self.rules.segment_names
        }

    def explain(self, customer_id: str) -> dict[str, Any] | None:
        """State, segments, and for each family which tier conditions hold."""
        st = self.store.get(customer_id)
        if st is None:
            return None
        values = self.values(st)
        rules = self.rules
        return {
            "customer_id": customer_id,
            "as_of": to_rfc3339(self.clock_ms or 0),
            "rules_version": rules.version,
            "state": {
                k: v for k, v in values.items() if k not in rules.families and k not in rules.flags
            },
            "segments": self.segments_of(customer_id),
            "families": {
                name: [
                    {"tier": t.name, "when": t.source, "holds": t.holds(values)} for t in fam.tiers
                ]
                for name, fam in rules.families.items()
            },
            "flags": {
                name: {"when": f.source, "holds": f.holds(values)}
                for name, f in rules.flags.items()
            },
        }

    def member_counts(self) -> dict[str, dict[str, int]]:
        """Customers per segment, kept as segments change (a /metrics scrape is O(segments))."""
        counts: dict[str, dict[str, int]] = {name: {} for name in self.rules.segment_names}
        for (name, tier), n in self._members.items():
            if n and name in counts:
                counts[name][tier] = n
        return counts
