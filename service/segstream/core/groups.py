"""Group figures: satisfaction and revenue rolled up by an attribute or a family, per period.

A group (``groups:`` in the rules) adds up its customers' survey answers and orders per value
of ``by`` (an account manager, an industry, a value tier) over calendar quarters in UTC or a
rolling window of days. Figures are kept per partition, incrementally: each customer's
contribution is recomputed from its own state whenever it is evaluated and the difference is
applied to the partition's totals, so the figures are a function of the customers' states
(order-independent, like the states themselves) plus one per-partition decision: the moment a
quarter closes, when the partition's clock passes its end. A closed quarter is frozen (what its
answers and members were at the close) and kept in the partition's lane record.

Partitions' partial figures add up: :func:`merge` sums them into the whole group's figures,
whether they come from one process (``segstream report groups``) or from every worker through
the groups topic. CSI of a group is the ratio of all its customers' answers in the period
(promoters over detractors), never an average of per-customer ratios: a customer who answered
ten times weighs ten answers, one who never answered weighs nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from hashlib import blake2b
from typing import Any

from segstream.core.timeutil import MS_PER_DAY

GROUP_METRICS = (
    "csi",
    "nps",
    "promoters",
    "detractors",
    "responses",
    "members",
    "revenue",
    "orders",
)
OTHER = "(other)"  # the values beyond a group's max_values, added up under one name
EPOCH = date(1970, 1, 1)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One ``groups:`` entry, checked by the rule compiler."""

    name: str
    by: str
    by_family: bool
    metrics: tuple[str, ...]
    rolling_days: int | None = None  # None: calendar quarters (UTC)
    max_values: int = 200
    keep: int = 4  # closed quarters kept and reported

    @property
    def period(self) -> str:
        return "quarter" if self.rolling_days is None else f"rolling {self.rolling_days} days"


@lru_cache(maxsize=4096)
def quarter_of(day: int) -> int:
    """The quarter index (year * 4 + quarter - 1) of a day number (days since 1970-01-01)."""
    d = EPOCH + timedelta(days=day)
    return d.year * 4 + (d.month - 1) // 3


def quarter_label(quarter: int) -> str:
    return f"{quarter // 4}-Q{quarter % 4 + 1}"


def quarter_days(quarter: int) -> tuple[int, int]:
    """First and last day numbers of a quarter."""
    year, q = divmod(quarter, 4)
    start = date(year, 3 * q + 1, 1)
    end = date(year + 1, 1, 1) if q == 3 else date(year, 3 * q + 4, 1)
    return (start - EPOCH).days, (end - EPOCH).days - 1


def day_label(day: int) -> str:
    return (EPOCH + timedelta(days=day)).isoformat()


@dataclass(slots=True)
class Tally:
    """What a set of customers did in a period: answers by kind, orders and revenue."""

    promoters: int = 0  # answers 8-10 (the CSI numerator)
    detractors: int = 0  # answers 1-3 (the CSI denominator)
    responses: int = 0
    nps_promoters: int = 0  # answers 9-10
    nps_detractors: int = 0  # answers 0-6
    orders: int = 0
    revenue: Decimal = ZERO

    def add(self, other: Tally, sign: int = 1) -> None:
        self.promoters += sign * other.promoters
        self.detractors += sign * other.detractors
        self.responses += sign * other.responses
        self.nps_promoters += sign * other.nps_promoters
        self.nps_detractors += sign * other.nps_detractors
        self.orders += sign * other.orders
        self.revenue += sign * other.revenue

    def empty(self) -> bool:
        return not (self.responses or self.orders)

    def dump(self) -> list[Any]:
        return [
            self.promoters,
            self.detractors,
            self.responses,
            self.nps_promoters,
            self.nps_detractors,
            self.orders,
            str(self.revenue),
        ]

    @classmethod
    def load(cls, data: list[Any]) -> Tally:
        p, d, r, np_, nd, orders = (int(v) for v in data[:6])
        return cls(p, d, r, np_, nd, orders, Decimal(data[6]))


# value -> (members, what they did)
Figures = dict[str, tuple[int, Tally]]


def metrics_of(spec: GroupSpec, members: int, tally: Tally) -> dict[str, Any]:
    """The declared metrics, by name. CSI and NPS are None for a period without answers."""
    answered = tally.responses > 0
    every = {
        "csi": tally.promoters / max(tally.detractors, 1) if answered else None,
        "nps": (
            100.0 * (tally.nps_promoters - tally.nps_detractors) / tally.responses
            if answered
            else None
        ),
        "promoters": tally.promoters,
        "detractors": tally.detractors,
        "responses": tally.responses,
        "members": members,
        "revenue": float(tally.revenue),
        "orders": tally.orders,
    }
    return {name: every[name] for name in spec.metrics}


def bounded(figures: Figures, max_values: int) -> tuple[Figures, int]:
    """Keep the ``max_values`` values with the most members (then answers, orders, name) and
    add the rest up under ``(other)``; returns the figures and how many values were folded."""
    if len(figures) <= max_values:
        return figures, 0
    ranked = sorted(
        figures.items(),
        key=lambda item: (-item[1][0], -item[1][1].responses, -item[1][1].orders, item[0]),
    )
    kept = dict(ranked[: max_values - 1])
    members, tally = 0, Tally()
    for _, (n, t) in ranked[max_values - 1 :]:
        members += n
        tally.add(t)
    other = kept.get(OTHER)
    if other is not None:
        members += other[0]
        tally.add(other[1])
    kept[OTHER] = (members, tally)
    return kept, len(figures) - (max_values - 1) - (OTHER in figures)


def _ordered(figures: Figures) -> Figures:
    """By value, ``(other)`` last."""
    return dict(sorted(figures.items(), key=lambda item: (item[0] == OTHER, item[0])))


def _dump_figures(figures: Figures) -> dict[str, list[Any]]:
    return {value: [n, *t.dump()] for value, (n, t) in sorted(figures.items())}


def _load_figures(data: dict[str, list[Any]]) -> Figures:
    return {value: (int(row[0]), Tally.load(row[1:])) for value, row in data.items()}


@dataclass(slots=True)
class ClosedPeriod:
    period: str
    bucket: int
    figures: Figures


# what a contribution was computed from: an object whose version counts the changes of what it
# reads (the customer's window index), that version, and the group's first bucket then
Source = tuple[object, int, int | None]


@dataclass(slots=True)
class GroupLane:
    """One group's partial figures in one partition."""

    spec: GroupSpec
    totals: dict[str, dict[int, Tally]] = field(default_factory=dict)
    members: Counter[str] = field(default_factory=Counter)
    # customer -> (its value, its tallies by bucket, then what they were computed from: the
    # caller's source object and two numbers, see :meth:`contribution_from`) as last added to
    # the totals. Held flat in one tuple: there is one for each customer of the partition.
    contributions: dict[str, tuple[str, dict[int, Tally], object, int, int | None]] = field(
        default_factory=dict
    )
    current: int | None = None  # the open bucket: a quarter index, or the clock day
    closed: list[ClosedPeriod] = field(default_factory=list)

    def first_bucket(self) -> int | None:
        """The oldest bucket a contribution may still add to."""
        if self.current is None:
            return None
        days = self.spec.rolling_days
        return self.current if days is None else self.current - days + 1

    def bucket_of(self, day: int) -> int:
        return quarter_of(day) if self.spec.rolling_days is None else day

    def update(
        self,
        customer_id: str,
        value: str | None,
        buckets: dict[int, Tally],
        source: Source | None = None,
    ) -> None:
        """Replace a customer's contribution (``value`` None: it belongs to no group value).
        ``source`` is kept with it, for :meth:`contribution_from`."""
        old = self.contributions.pop(customer_id, None)
        if old is not None:
            old_value, old_buckets = old[0], old[1]
            self.members[old_value] -= 1
            if not self.members[old_value]:
                del self.members[old_value]
            totals = self.totals.get(old_value, {})
            for bucket, tally in old_buckets.items():
                total = totals.get(bucket)
                if total is not None:  # buckets older than the window are gone already
                    total.add(tally, -1)
                    if total.empty():
                        del totals[bucket]
            if not totals:
                self.totals.pop(old_value, None)
        if value is None:
            return
        origin, version, first = (None, 0, None) if source is None else source
        self.contributions[customer_id] = (value, buckets, origin, version, first)
        self.members[value] += 1
        if buckets:
            totals = self.totals.setdefault(value, {})
            for bucket, tally in buckets.items():
                total = totals.get(bucket)
                if total is None:
                    totals[bucket] = total = Tally()
                total.add(tally)

    def forget_source(self, customer_id: str) -> None:
        """The customer's tallies stay; what they were computed from is no longer held (the
        customer was cooled: its next contribution is computed, not reused)."""
        known = self.contributions.get(customer_id)
        if known is not None and known[2] is not None:
            self.contributions[customer_id] = (known[0], known[1], None, 0, None)

    def contribution_from(self, customer_id: str, source: Source) -> dict[int, Tally] | None:
        """The customer's tallies as last added, if they were computed from ``source``: the
        same object (held, so its identity is never another's), at the same version, for the
        same first bucket."""
        known = self.contributions.get(customer_id)
        if known is None or known[2] is not source[0] or known[2] is None:
            return None
        if known[3] != source[1] or known[4] != source[2]:
            return None
        return known[1]

    def figures(self) -> Figures:
        """The open period's figures (members now, answers and orders in the period)."""
        first, last = self.first_bucket(), self.current
        result: Figures = {}
        for value in sorted(set(self.members) | set(self.totals)):
            tally = Tally()
            for bucket, t in self.totals.get(value, {}).items():
                if first is not None and last is not None and first <= bucket <= last:
                    tally.add(t)
            result[value] = (self.members.get(value, 0), tally)
        return result

    def roll(self, day: int) -> bool:
        """Move to the clock day: close the quarters it passed, drop buckets a rolling window
        left. Returns True when a quarter closed (the lane record changed)."""
        spec = self.spec
        bucket = self.bucket_of(day)
        if self.current is None:
            self.current = bucket
            return False
        if bucket <= self.current:
            return False
        closed_any = False
        if spec.rolling_days is None:
            # a clock that jumped years closes only the latest quarters it would keep
            for quarter in range(max(self.current, bucket - spec.keep), bucket):
                self.current = quarter
                figures, _ = bounded(self.figures(), spec.max_values)
                self.closed.append(ClosedPeriod(quarter_label(quarter), quarter, figures))
                closed_any = True
            del self.closed[: -spec.keep]
        self.current = bucket
        first = self.first_bucket()
        assert first is not None
        for value in list(self.totals):
            totals = self.totals[value]
            for old in [b for b in totals if b < first]:
                del totals[old]
            if not totals:
                del self.totals[value]
        return closed_any

    def record(self) -> dict[str, Any]:
        return {
            "by": self.spec.by,
            "period": self.spec.period,
            "current": self.current,
            "closed": [
                {"period": c.period, "bucket": c.bucket, "figures": _dump_figures(c.figures)}
                for c in self.closed
            ],
        }

    def restore(self, record: dict[str, Any]) -> bool:
        """Take over a recorded state; False (nothing taken) when it was recorded for another
        definition of the group (its closed quarters are figures of something else)."""
        if (record.get("by"), record.get("period")) != (self.spec.by, self.spec.period):
            return False
        self.current = record.get("current")
        self.closed = [
            ClosedPeriod(c["period"], int(c["bucket"]), _load_figures(c["figures"]))
            for c in record.get("closed", ())
        ]
        return True

    def partial(self) -> dict[str, Any]:
        """What this partition contributes to the whole group (the groups topic's value)."""
        figures, folded = bounded(self.figures(), self.spec.max_values)
        return self.record() | {
            "open": _dump_figures(figures) if self.current is not None else {},
            "folded": folded,
        }


def contribution(
    lane: GroupLane,
    surveys: Iterable[tuple[int, str, int, int]],
    orders: Iterable[tuple[str, tuple[int, str, int, Decimal]]],
    refunds: dict[str, int],
    horizon: int,
) -> dict[int, Tally]:
    """A customer's answers and orders per bucket, from the open period on. A refund dated
    within a horizon of its order removes it, as it does from the customer's own monetary."""
    first = lane.first_bucket()
    if first is None:
        return {}
    bucket_of = lane.bucket_of
    buckets: dict[int, Tally] = {}
    for _, _, day, score in surveys:
        bucket = bucket_of(day)
        if bucket < first:
            continue
        t = buckets.get(bucket)
        if t is None:
            buckets[bucket] = t = Tally()
        t.responses += 1
        if score >= 8:
            t.promoters += 1
            if score >= 9:
                t.nps_promoters += 1
        elif 1 <= score <= 3:
            t.detractors += 1
        if score <= 6:
            t.nps_detractors += 1
    for order_id, (_, _, day, amount) in orders:
        refunded = refunds.get(order_id)
        if refunded is not None and refunded - day < horizon:
            continue
        bucket = bucket_of(day)
        if bucket < first:
            continue
        t = buckets.get(bucket)
        if t is None:
            buckets[bucket] = t = Tally()
        t.orders += 1
        t.revenue += amount
    return buckets


# -- the whole group, from every partition's partial ------------------------------------------


@dataclass(slots=True)
class Period:
    period: str
    start: str
    end: str
    closed: bool  # closed by every partition that has a clock
    figures: Figures
    # values added up under "(other)": at least this many (a partition folds its own first)
    folded: int = 0


def merge(spec: GroupSpec, partials: Iterable[dict[str, Any] | None]) -> list[Period]:
    """The whole group's periods, newest first: partial figures added up per period label. A
    quarter is closed when every partition with a clock has closed it."""
    sums: dict[int, Figures] = {}
    open_in: set[int] = set()
    folded_before = 0
    for partial in partials:
        if partial is None or partial.get("current") is None:
            continue
        folded_before = max(folded_before, int(partial.get("folded", 0)))
        current = int(partial["current"])
        parts = [(c["bucket"], c["figures"]) for c in partial.get("closed", ())]
        parts.append((current, partial.get("open", {})))
        open_in.add(current)
        for bucket, figures in parts:
            into = sums.setdefault(int(bucket), {})
            for value, (n, tally) in _load_figures(figures).items():
                known = into.get(value)
                if known is None:
                    into[value] = (n, tally)
                else:
                    known[1].add(tally)
                    into[value] = (known[0] + n, known[1])
    periods: list[Period] = []
    for bucket in sorted(sums, reverse=True):
        if not sums[bucket]:
            continue  # no customer has a value of the group: nothing to report
        figures, folded = bounded(sums[bucket], spec.max_values)
        figures = _ordered(figures)
        if bucket == max(sums):
            folded = max(folded, folded_before)
        if spec.rolling_days is None:
            start, end = quarter_days(bucket)
            label, closed = quarter_label(bucket), all(b > bucket for b in open_in)
        else:
            start, end = bucket - spec.rolling_days + 1, bucket
            label, closed = f"{day_label(start)}..{day_label(end)}", False
        periods.append(Period(label, day_label(start), day_label(end), closed, figures, folded))
    if spec.rolling_days is not None:
        return periods[:1]  # partitions' clocks differ: the newest window is the group's
    return periods[: spec.keep + 1]


def holding_back(period: Period, partials: dict[int, dict[str, Any]]) -> list[int]:
    """The partitions whose clock has not passed the period's last day, in order: while any
    remains, the period's snapshots wait. ``Period.closed`` counts only partitions with a
    clock, which is right for a view but not for an event that is never taken back: a
    partition with no clock (no event yet, or its first partial published before its first
    event) may still hold answers of the quarter, and emitting without them made the snapshot
    depend on which worker published first. ``partials`` are whole partials by partition
    (:meth:`Engine.group_partial`)."""
    last_day = (date.fromisoformat(period.end) - EPOCH).days
    return [
        partition
        for partition, p in sorted(partials.items())
        if p.get("clock_ms") is None or int(p["clock_ms"]) // MS_PER_DAY <= last_day
    ]


def rows(spec: GroupSpec, periods: Iterable[Period]) -> list[dict[str, Any]]:
    """One JSON object per value and period: ``group``, ``value``, ``period`` and the metrics."""
    return [
        {"group": spec.name, "value": value, "period": p.period, "closed": p.closed}
        | metrics_of(spec, n, tally)
        for p in periods
        for value, (n, tally) in p.figures.items()
    ]


def snapshot_id(group: str, value: str, period: str) -> str:
    """A group snapshot's id: the same for the same group, value and quarter, whoever emits it
    and however often (consumers de-duplicate on it)."""
    return blake2b(f"{group}\x1f{value}\x1f{period}".encode(), digest_size=16).hexdigest()


def snapshots(spec: GroupSpec, period: Period, rules_version: str) -> list[dict[str, Any]]:
    """The ``group-snapshot`` events of a closed quarter, one per group value."""
    return [
        {
            "event_id": snapshot_id(spec.name, value, period.period),
            "type": "group_snapshot",
            "group": spec.name,
            "by": spec.by,
            "value": value,
            "period": period.period,
            "start": period.start,
            "end": period.end,
            "metrics": metrics_of(spec, n, tally),
            "rules_version": rules_version,
        }
        for value, (n, tally) in sorted(period.figures.items())
    ]
