"""Issue 15: would a columnar core reach the floor? A measured feasibility study, not an engine.

    python -m bench.columnar_study [--events 300000] [--every 1]

Runs the real engine (default rules, event clock, chunks of 4,096 lines as ``bench.ab`` does)
over the first ``--events`` lines of the 1M-event file. On every ``--every``-th clock day with
customers due, just before the engine evaluates them (``Engine._run_due`` is wrapped), it
takes that day's due customers and computes, outside the engine's timings:

1. their window values twice: (a) ``CustomerState.read`` per customer, as the engine does;
   (b) from columnar item arrays (per item kind, sorted int64 keys ``slot << 20 | day`` with
   signed weight columns and their prefix sums; a window value over the due slots is a few
   ``np.searchsorted`` and a difference). The arrays are kept incrementally: the window index's
   own item changes (``Windowed.order/ticket/survey/activity``, the only places an indexed item
   comes or goes) append signed entries to a log, merged once per clock day into a small
   sorted level, and the small level into a big one when it reaches an eighth of it (two
   levels, as in an LSM tree). Per-customer scalars (first and last order day, folded orders,
   open tickets, last survey score, attributes) are copied from the states of the customers
   touched since the last clock day. Every value is checked equal, monetary included (summed
   in integer cents: exact on this file; see docs/performance.md);
2. the default rules' results twice: (a) ``Reading.fill`` + the compiled ``rules.evaluate``;
   (b) a hand-written numpy version of the default rules over those columns (null masks).

It also times, with the real objects, what stays per event (parse, ``CustomerState.apply``,
the scalar evaluation of the event itself, ``ChangeBuilder.build``), and prints what a core
with columnar clock evaluations would reach on this input, as JSON (``--json FILE`` keeps it).
The plain engine runs first over the same lines, without any hook, for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import events_file
from segstream.core import changes as changes_module
from segstream.core.engine import Engine, Lane
from segstream.core.rulelang import load_rules
from segstream.core.state import CustomerState, Windowed, seen_day

ROOT = Path(__file__).resolve().parent.parent
SHIFT = 20  # key = slot << SHIFT | day (days since 1970 fit in 20 bits until the year 4840)
DAY_MASK = (1 << SHIFT) - 1
CHUNK = 4096
clock = time.perf_counter

# -- the columnar store ---------------------------------------------------------------------


class Level:
    """Sorted keys with weight columns (column 0 the count) and their prefix sums."""

    __slots__ = ("cols", "cums", "keys")

    def __init__(self, keys: np.ndarray, cols: list[np.ndarray], consolidate: bool) -> None:
        order = np.argsort(keys, kind="stable")  # timsort: two sorted runs merge in O(n)
        keys, cols = keys[order], [c[order] for c in cols]
        if consolidate and len(keys):
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            keys, cols = keys[starts], [np.add.reduceat(c, starts) for c in cols]
            keep = np.zeros(len(keys), bool)
            for c in cols:
                keep |= c != 0
            if not keep.all():
                keys, cols = keys[keep], [c[keep] for c in cols]
        self.keys, self.cols = keys, cols
        self.cums = [np.concatenate(([0], np.cumsum(c))) for c in cols]

    def __len__(self) -> int:
        return len(self.keys)


class Kind:
    """One kind of indexed item (orders, opened tickets, surveys, activity) of every customer,
    as signed entries ``(slot << 20 | day, weights)`` (an item gone is a -1 entry): a window
    value is the sum of the weights of a key range, so entries never need to cancel out.

    Two sorted levels, as in a log-structured merge tree: the day's log is merged into the
    small level every clock day (O(small)); the small level into the big one when it reaches
    an eighth of it (O(all), rarely). A read sums both levels."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.big = self._empty()
        self.small = self._empty()
        self.log: list[list[int]] = [[] for _ in range(width + 1)]  # keys, then each weight
        self.logged = 0
        self.big_merges = 0

    def add(self, entry: tuple[int, ...]) -> None:
        for column, value in zip(self.log, entry, strict=True):
            column.append(value)

    def _empty(self) -> Level:
        return Level(np.empty(0, np.int64), [np.empty(0, np.int64)] * self.width, False)

    def merge(self) -> None:
        log = self.log
        if not log[0]:
            return
        self.logged += len(log[0])
        delta = [np.array(column, np.int64) for column in log]
        for column in log:
            column.clear()
        small = self.small
        self.small = Level(
            np.concatenate((small.keys, delta[0])),
            [np.concatenate((c, d)) for c, d in zip(small.cols, delta[1:], strict=True)],
            True,
        )
        if len(self.small) * 8 > len(self.big):
            big, small = self.big, self.small
            self.big = Level(
                np.concatenate((big.keys, small.keys)),
                [np.concatenate((b, s)) for b, s in zip(big.cols, small.cols, strict=True)],
                True,
            )
            self.small = self._empty()
            self.big_merges += 1
            # everything merged: every key left holds items, and no item went twice
            assert (self.big.cols[0] > 0).all(), "an item removed more often than added"

    def window(self, base: np.ndarray, nxt: np.ndarray, days: list[int]) -> list[np.ndarray]:
        """Per column, per window start in ``days``: the weights of each due slot's entries
        dated that day or later (one array per (start, column), starts in the outer order)."""
        sums: list[np.ndarray] = []
        for level in (self.big, self.small):
            keys = level.keys
            end = np.searchsorted(keys, nxt)
            at = 0
            for day in days:
                lo = np.searchsorted(keys, base + day)
                for cum in level.cums:
                    part = cum[end] - cum[lo]
                    if len(sums) > at:
                        sums[at] = sums[at] + part
                    else:
                        sums.append(part)
                    at += 1
        return sums


ORDERS, TICKETS, SURVEYS, ACTIVITY = range(4)
# attribute columns the default rules read (int attributes with their defaults, a date)
INT_ATTRIBUTES = ("capacity", "brand_strength", "order_attractiveness", "failure_status")
DATE_ATTRIBUTE = "contract_renewal"
NONE = -(1 << 40)  # a null in an int64 column (masks are derived from it)


class Columns:
    """The lane's items as columnar arrays, kept from the window index's own item changes."""

    def __init__(self, engine: Engine, capacity: int = 1 << 17) -> None:
        self.engine = engine
        self.kinds = [Kind(2), Kind(1), Kind(5), Kind(1)]  # orders: count, cents; surveys: 5
        self.slot_of: dict[str, int] = {}
        self.by_windowed: dict[int, tuple[int, Windowed]] = {}  # id(w) -> slot (w kept alive)
        self.dirty: set[str] = set()
        self.cents = 0  # the amount of the order whose index entry moves next
        self.not_cents = 0  # amounts that are not whole cents (would break exactness)
        self.capacity = capacity
        self.scalars = {
            name: np.full(capacity, NONE, np.int64)
            for name in (
                "folded_count",
                "first_order",
                "last_order",
                "folded_first",
                "folded_last",
                "last_activity",
                "tickets_open",
                "last_score",
                DATE_ATTRIBUTE,
                *INT_ATTRIBUTES,
            )
        }

    # hooks (installed by :func:`install`)

    def register(self, st: CustomerState, w: Windowed) -> None:
        """A customer's window index was built from its items: put every item in the log."""
        slot = self.slot_of.get(st.customer_id)
        if slot is None:
            slot = self.slot_of[st.customer_id] = len(self.slot_of)
            assert slot < self.capacity, "raise Columns capacity"
        self.by_windowed[id(w)] = (slot, w)
        base = slot << SHIFT
        orders, refunds, horizon = st.orders, st.refunds, w.horizon
        for order_id, (_, _, day, amount) in orders.items():
            refunded = refunds.get(order_id)
            if refunded is None or refunded - day >= horizon:
                self.kinds[ORDERS].add((base | day, 1, self.to_cents(amount)))
        for _, _, _, opened in st.tickets.values():
            if opened >= 0:
                self.kinds[TICKETS].add((base | opened, 1))
        for survey in st.surveys.values():
            self.kinds[SURVEYS].add((base | survey[2], *_survey_weights(survey[3], 1)))
        for seen in st.activity.values():
            self.kinds[ACTIVITY].add((base | seen_day(seen), 1))
        self.dirty.add(st.customer_id)

    def to_cents(self, amount: Decimal) -> int:
        cents = amount * 100
        if cents != cents.to_integral_value():
            self.not_cents += 1
        return int(cents)

    # per clock day

    def merge(self) -> None:
        """Merge the day's item changes into the sorted levels (numpy)."""
        for kind in self.kinds:
            kind.merge()

    def refresh(self) -> None:
        """Copy the touched customers' scalars from their states (a Python loop per customer
        touched since the last clock day: a columnar core would write them as events apply)."""
        store, attributes = self.engine.store, self.engine.rules.attributes
        rows: list[int] = []
        columns: dict[str, list[int]] = {name: [] for name in self.scalars}
        for customer_id in self.dirty:
            slot = self.slot_of.get(customer_id)
            st = store.get(customer_id)
            if slot is None or st is None or st.windowed is None:
                continue
            w = st.windowed
            rows.append(slot)
            columns["folded_count"].append(st.folded_count)
            days = w.order_days  # (a columnar core keeps these two per slot as orders move)
            columns["first_order"].append(days[0] if days else NONE)
            columns["last_order"].append(days[-1] if days else NONE)
            columns["folded_first"].append(_int(st.folded_first_day))
            columns["folded_last"].append(_int(st.folded_last_day))
            columns["last_activity"].append(_int(st.last_activity_day))
            columns["tickets_open"].append(w.tickets_open)
            columns["last_score"].append(w.surveys[-1][3] if w.surveys else NONE)
            attrs = st.attrs
            for name in (*INT_ATTRIBUTES, DATE_ATTRIBUTE):
                a = attributes[name]
                item = attrs.get(name)
                v = a.default if item is None or item[2] is None else a.coerce(item[2])
                columns[name].append(_int(v))
        self.dirty.clear()
        if rows:
            at = np.array(rows, np.int64)
            for name, values in columns.items():
                self.scalars[name][at] = values

    def read(self, slots: np.ndarray, day: int) -> dict[str, np.ndarray]:
        """Every window value ``CustomerState.read`` gives (monetary_total aside) for ``slots``
        as of ``day``: int64/float64 columns, nulls as a separate ``<name>_null`` mask."""
        base = slots << SHIFT
        nxt = (slots + 1) << SHIFT
        out: dict[str, np.ndarray] = {}
        s = self.scalars
        # orders: count and cents over all counted ones, then from the RFM window (rfm_days
        # 365), 30 and 90 days
        counted, _, frequency, cents, o30, _, o90, _ = self.kinds[ORDERS].window(
            base, nxt, [0, day - 364, day - 29, day - 89]
        )
        out["frequency"] = frequency
        out["monetary"] = cents / 100.0
        out["orders_30d"], out["orders_90d"] = o30, o90
        first, last = s["first_order"][slots], s["last_order"][slots]
        f_first, f_last = s["folded_first"][slots], s["folded_last"][slots]
        has_f = f_first != NONE
        first = np.where(has_f & ((first == NONE) | (f_first < first)), f_first, first)
        last = np.where(has_f & ((last == NONE) | (f_last > last)), f_last, last)
        out["recency_days_null"] = last == NONE
        out["recency_days"] = np.where(last == NONE, 0, day - last)
        out["tenure_days_null"] = first == NONE
        out["tenure_days"] = np.where(first == NONE, 0, day - first)
        out["orders_total"] = s["folded_count"][slots] + counted
        out["tickets_open"] = s["tickets_open"][slots]
        (out["tickets_30d"],) = self.kinds[TICKETS].window(base, nxt, [day - 29])
        # surveys: the CSI window (csi_days 365), then 90 days
        responses, promoters, detractors, plus, minus, s90, *_ = self.kinds[SURVEYS].window(
            base, nxt, [day - 364, day - 89]
        )
        out["responses"], out["promoters"], out["detractors"] = responses, promoters, detractors
        out["surveys_90d"] = s90
        none = responses == 0
        out["csi_null"] = out["nps_null"] = out["last_score_null"] = none
        out["csi"] = np.where(none, 0.0, promoters / np.maximum(detractors, 1))
        out["nps"] = np.where(none, 0.0, 100.0 * (plus - minus) / np.maximum(responses, 1))
        out["last_score"] = np.where(none, 0, s["last_score"][slots])
        recent, since60 = self.kinds[ACTIVITY].window(base, nxt, [day - 29, day - 59])
        out["activity_30d"] = recent
        out["activity_trend"] = recent - (since60 - recent)
        last_activity = s["last_activity"][slots]
        out["days_since_activity_null"] = last_activity == NONE
        out["days_since_activity"] = np.where(last_activity == NONE, 0, day - last_activity)
        return out


def _int(value: int | None) -> int:
    return NONE if value is None else value


def _survey_weights(score: int, sign: int) -> tuple[int, int, int, int, int]:
    """count, promoter (8-10), detractor (1-3), NPS plus (9-10), NPS minus (0-6)."""
    return (
        sign,
        sign * (score >= 8),
        sign * (1 <= score <= 3),
        sign * (score >= 9),
        sign * (score <= 6),
    )


def install(columns: Columns) -> Callable[[], None]:
    """Hook the window index's item changes into ``columns``; returns the undo."""
    saved = {
        (CustomerState, "_build"): CustomerState._build,
        (CustomerState, "_windowed_order"): CustomerState._windowed_order,
        (CustomerState, "apply"): CustomerState.apply,
        (CustomerState, "compact"): CustomerState.compact,
        (Windowed, "order"): Windowed.order,
        (Windowed, "ticket"): Windowed.ticket,
        (Windowed, "survey"): Windowed.survey,
        (Windowed, "activity"): Windowed.activity,
    }
    by_windowed, kinds, dirty = columns.by_windowed, columns.kinds, columns.dirty
    build, windowed_order = CustomerState._build, CustomerState._windowed_order
    w_order, w_ticket, w_survey, w_activity = (
        Windowed.order,
        Windowed.ticket,
        Windowed.survey,
        Windowed.activity,
    )

    def _build(self: CustomerState, horizon: int) -> Windowed:
        w = build(self, horizon)
        columns.register(self, w)
        return w

    def _windowed_order_hook(self: CustomerState, order_id: str, sign: int) -> None:
        order = self.orders.get(order_id)
        if order is not None and self.windowed is not None:
            columns.cents = columns.to_cents(order[3])
        windowed_order(self, order_id, sign)

    def order(self: Windowed, day: int, sign: int) -> None:
        known = by_windowed.get(id(self))
        if known is not None:
            kinds[ORDERS].add(((known[0] << SHIFT) | day, sign, sign * columns.cents))
        w_order(self, day, sign)

    def ticket(self: Windowed, is_open: bool, opened: int, sign: int) -> None:
        known = by_windowed.get(id(self))
        if known is not None and opened >= 0:
            kinds[TICKETS].add(((known[0] << SHIFT) | opened, sign))
        w_ticket(self, is_open, opened, sign)

    def survey(self: Windowed, item: tuple[int, str, int, int], sign: int) -> None:
        known = by_windowed.get(id(self))
        if known is not None:
            weights = _survey_weights(item[3], sign)
            kinds[SURVEYS].add(((known[0] << SHIFT) | item[2], *weights))
        w_survey(self, item, sign)

    def activity(self: Windowed, day: int, sign: int) -> None:
        known = by_windowed.get(id(self))
        if known is not None:
            kinds[ACTIVITY].add(((known[0] << SHIFT) | day, sign))
        w_activity(self, day, sign)

    apply = timed(CustomerState.apply, "apply", lambda args: dirty.add(args[0].customer_id))
    compact = CustomerState.compact

    def _compact(self: CustomerState, *args: Any, **kwargs: Any) -> None:
        dirty.add(self.customer_id)
        compact(self, *args, **kwargs)

    CustomerState._build = _build  # type: ignore[method-assign]
    CustomerState._windowed_order = _windowed_order_hook  # type: ignore[method-assign]
    CustomerState.apply = apply  # type: ignore[method-assign]
    CustomerState.compact = _compact  # type: ignore[method-assign]
    Windowed.order = order  # type: ignore[method-assign]
    Windowed.ticket = ticket  # type: ignore[method-assign]
    Windowed.survey = survey  # type: ignore[method-assign]
    Windowed.activity = activity  # type: ignore[method-assign]

    def undo() -> None:
        for (owner, name), function in saved.items():
            setattr(owner, name, function)

    return undo


# -- timers around the real objects -----------------------------------------------------------

SPENT: Counter[str] = Counter()  # seconds by part
CALLS: Counter[str] = Counter()
CAUSE = ["event"]  # the cause of the evaluation running (for the builds and group updates)


def timed(
    function: Callable[..., Any], name: str, before: Callable[[tuple[Any, ...]], None] | None = None
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(args)
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += clock() - started
            CALLS[name] += 1

    return wrapper


def install_timers() -> Callable[[], None]:
    saved = {
        (Engine, "parse"): Engine.parse,
        (Engine, "_evaluate"): Engine._evaluate,
        (Engine, "_group_update"): Engine._group_update,
        (changes_module.ChangeBuilder, "build"): changes_module.ChangeBuilder.build,
    }
    evaluate, group_update = Engine._evaluate, Engine._group_update
    build = changes_module.ChangeBuilder.build

    def _evaluate(self: Engine, st: CustomerState, lane: Lane, cause: str, *rest: Any) -> Any:
        CAUSE[0] = cause
        started = clock()
        result = evaluate(self, st, lane, cause, *rest)
        SPENT[f"evaluate:{cause}"] += clock() - started
        CALLS[f"evaluate:{cause}"] += 1
        return result

    def _group_update(self: Engine, st: CustomerState, lane: Lane) -> None:
        started = clock()
        group_update(self, st, lane)
        SPENT[f"group_update:{CAUSE[0]}"] += clock() - started
        CALLS[f"group_update:{CAUSE[0]}"] += 1

    def _build(self: Any, *args: Any) -> Any:
        started = clock()
        result = build(self, *args)
        SPENT[f"build:{CAUSE[0]}"] += clock() - started
        CALLS[f"build:{CAUSE[0]}"] += 1
        return result

    Engine.parse = timed(Engine.parse, "parse")  # type: ignore[method-assign]
    Engine._evaluate = _evaluate  # type: ignore[method-assign]
    Engine._group_update = _group_update  # type: ignore[method-assign]
    changes_module.ChangeBuilder.build = _build  # type: ignore[method-assign]

    def undo() -> None:
        for (owner, name), function in saved.items():
            setattr(owner, name, function)

    return undo


# -- the default rules over columns -----------------------------------------------------------

FAMILIES = {
    "lifecycle": ("current", "churned", "rejected_lead"),
    "activity_matrix": ("stars", "cash_cows", "problem_children", "dogs"),
    "health": ("healthy", "watch", "at_risk"),
    "satisfaction": ("loyal", "neutral", "relationship_reset"),
    "value": ("champions", "loyal", "at_risk", "occasional"),
}
FLAGS = ("renewal_candidate", "onboarding", "renewal_window", "unhappy", "support_heavy")


def rules_over_columns(
    c: dict[str, np.ndarray], a: dict[str, np.ndarray], day: int, cuts: np.ndarray
) -> dict[str, np.ndarray]:
    """The default rules (rules/*.yaml as of 2026-12-01), hand-written over columns: a family
    is an int8 code (its tier's index, -1 for null), a flag a bool, derived metrics float64
    with a ``_null`` mask. Written for this rule set only; a generator from the rule AST would
    have to reproduce the same null semantics (see the docs)."""
    out: dict[str, np.ndarray] = {}
    rec_null, rec = c["recency_days_null"], c["recency_days"]
    r = np.where(rec_null, 0, 5 - np.searchsorted(R_BINS, rec, side="left"))
    f = 1 + np.searchsorted(F_BINS, c["frequency"], side="right")
    monetary = c["monetary"]
    m = np.where(monetary <= 0, 1, 1 + np.searchsorted(cuts, monetary, side="right"))
    out["r"], out["f"], out["m"] = r, f, m
    orders_total = c["orders_total"]
    current = ~rec_null & (rec < 365)
    lifecycle = np.select([current, orders_total >= 1, orders_total == 0], [0, 1, 2], -1)
    out["lifecycle"] = lifecycle
    nps = np.where(c["nps_null"], 0.0, c["nps"])
    satisfaction_points = (100 - nps) / 5
    trend = c["activity_trend"]
    activity_points = 10 * np.minimum(3, np.maximum(0, -trend - 1))
    ticket_points = 10 * np.minimum(3, c["tickets_open"])
    score = 100 - satisfaction_points - activity_points - ticket_points
    out["health_score"], out["health_score_null"] = np.where(current, score, 0.0), ~current
    a30, capacity = c["activity_30d"], a["capacity"]
    out["activity_matrix"] = np.select(
        [(a30 >= 3) & (capacity >= 4), a30 >= 3, capacity >= 4], [0, 1, 2], 3
    )
    out["health"] = np.select(
        [current & (score >= 70), current & (score >= 50), current & (score < 50)], [0, 1, 2], -1
    )
    csi_ok, csi = ~c["csi_null"], c["csi"]
    out["satisfaction"] = np.select(
        [csi_ok & (csi >= 2) & (c["promoters"] >= 1), csi_ok & (csi >= 1), csi_ok & (csi < 1)],
        [0, 1, 2],
        -1,
    )
    out["value"] = np.select(
        [
            (r >= 4) & (f >= 4) & (m >= 4),
            (r >= 3) & (f >= 3) & (m >= 3),
            (r <= 2) & (f >= 3) & (m >= 3),
            orders_total >= 1,
        ],
        [0, 1, 2, 3],
        -1,
    )
    renewal_index = a["brand_strength"] + a["order_attractiveness"] + a["failure_status"]
    out["renewal_candidate"] = (lifecycle == 2) & (renewal_index >= 11)
    out["onboarding"] = ~c["tenure_days_null"] & (c["tenure_days"] < 90)
    renewal = a[DATE_ATTRIBUTE]
    until = (day - renewal) * -1
    out["renewal_window"] = (renewal != NONE) & (until >= 0) & (until <= 120)
    out["unhappy"] = csi_ok & (csi < 1) & (c["responses"] >= 2)
    out["support_heavy"] = (c["tickets_open"] >= 3) | (c["tickets_30d"] >= 5)
    return out


SWEEP = (16, 128, 1024)  # batch sizes timed besides the day's whole batch
R_BINS = np.array([30.0, 90.0, 180.0, 365.0])
F_BINS = np.array([1.0, 2.0, 4.0, 8.0])

# values compared between the scalar read and the columns (nullable ones have a mask)
COMPARED = (
    "recency_days",
    "frequency",
    "monetary",
    "orders_total",
    "tenure_days",
    "orders_30d",
    "orders_90d",
    "tickets_open",
    "tickets_30d",
    "surveys_90d",
    "activity_30d",
    "activity_trend",
    "days_since_activity",
    "promoters",
    "detractors",
    "responses",
    "last_score",
    "csi",
    "nps",
)


def _mismatches(scalar: list[Any], column: np.ndarray, null: np.ndarray | None) -> int:
    """Rows whose value differs, or whose Python type differs once the column is converted
    (an int 1 and a float 1.0 are equal but print differently in a change event)."""
    nulls = [False] * len(scalar) if null is None else null.tolist()
    return sum(
        1
        for s, v, n in zip(scalar, column.tolist(), nulls, strict=True)
        if (s is None) != n or (s is not None and (s != v or type(s) is not type(v)))
    )


# -- the study --------------------------------------------------------------------------------


class Study:
    def __init__(self, engine: Engine, columns: Columns, every: int) -> None:
        self.engine, self.columns, self.every = engine, columns, every
        self.days_seen = 0
        self.spent = 0.0  # study time inside the engine's run (taken out of its figures)
        # (log entries merged, merge seconds, customers refreshed, refresh seconds) per day
        self.maintain: list[tuple[int, float, int, float]] = []
        self.samples: list[dict[str, Any]] = []
        self.read_mismatch: Counter[str] = Counter()
        self.rule_mismatch: Counter[str] = Counter()
        self.compared = 0
        self.sweep = {k: [0.0, 0] for k in SWEEP}  # batch size -> [seconds, customers]

    def on_day(self, lane: Lane, day: int) -> None:
        started = clock()
        try:
            self._on_day(lane, day)
        finally:
            self.spent += clock() - started

    def _on_day(self, lane: Lane, day: int) -> None:
        store = self.engine.store
        ids: list[str] = []
        for d in sorted(x for x in lane.due.by_day if x <= day):
            ids += sorted(lane.due.by_day[d])
        due = [
            st
            for cid in ids
            if (st := store.get(cid)) is not None and st.due_day is not None and st.due_day <= day
        ]
        if not due:
            return
        # in slot order: searchsorted is much faster over sorted queries, and the values do
        # not depend on the order (a columnar core would sort its movers' changes by id)
        slot_of = self.columns.slot_of
        due.sort(key=lambda st: slot_of.get(st.customer_id, -1))
        self.days_seen += 1
        # maintenance runs on every day with customers due (as a columnar core's would)
        logged = sum(len(k.log[0]) for k in self.columns.kinds)
        touched = len(self.columns.dirty)
        t0 = clock()
        self.columns.merge()
        t1 = clock()
        self.columns.refresh()
        self.maintain.append((logged, t1 - t0, touched, clock() - t1))
        if (self.days_seen - 1) % self.every:
            return
        engine, columns = self.engine, self.columns
        reading, windows = engine._reading, engine.rules.windows
        evaluate, schedule = engine.rules.evaluate, engine._schedule_of
        # (a) scalar reads, once (a second pass would find the money caches warm)
        t0 = clock()
        read = [st.read(day, windows) for st in due]
        scalar_read = clock() - t0
        values = [v for v, _ in read]
        # (a) fill + the compiled rules, on copies made beforehand; best of 3
        scalar_rules = []
        filled: list[dict[str, Any]] = []
        for _ in range(3):
            copies = [dict(v) for v in values]
            attrs = [st.attrs for st in due]
            t0 = clock()
            for v, at in zip(copies, attrs, strict=True):
                reading.fill(v, at, day, lane.populations)
                evaluate(v)
            scalar_rules.append(clock() - t0)
            filled = copies
        # the scalar next due day of each (what the engine asks after each evaluation)
        t0 = clock()
        for v, (_, w) in zip(filled, read, strict=True):
            schedule.next_change_day(day, v, w)
        scalar_schedule = clock() - t0
        # (b) columns: slots, reads, attributes, rules; best of 3
        cuts = np.asarray(lane.populations["monetary"].cuts, np.float64)
        vector_read, vector_rules, lookup = [], [], []
        for _ in range(3):
            t0 = clock()
            slots = np.fromiter((slot_of[st.customer_id] for st in due), np.int64, len(due))
            looked_up = clock()
            cols = columns.read(slots, day)
            t1 = clock()
            lookup.append(looked_up - t0)
            attrs_cols = {
                name: columns.scalars[name][slots] for name in (*INT_ATTRIBUTES, DATE_ATTRIBUTE)
            }
            out = rules_over_columns(cols, attrs_cols, day, cuts)
            t2 = clock()
            vector_read.append(t1 - t0)
            vector_rules.append(t2 - t1)
        self._compare(filled, cols, out)
        # the same columnar work on smaller batches (the first k due slots): its fixed cost
        for k in SWEEP:
            if len(due) < k:
                continue
            part = slots[:k]
            best = float("inf")
            for _ in range(3):
                t0 = clock()
                cols = columns.read(part, day)
                attrs_cols = {
                    name: columns.scalars[name][part] for name in (*INT_ATTRIBUTES, DATE_ATTRIBUTE)
                }
                rules_over_columns(cols, attrs_cols, day, cuts)
                best = min(best, clock() - t0)
            self.sweep[k][0] += best
            self.sweep[k][1] += k
        self.samples.append(
            {
                "day": day,
                "due": len(due),
                "scalar_read": scalar_read,
                "scalar_rules": min(scalar_rules),
                "scalar_schedule": scalar_schedule,
                "vector_read": min(vector_read),
                "vector_rules": min(vector_rules),
                "slot_lookup": min(lookup),
            }
        )

    def _compare(
        self, filled: list[dict[str, Any]], cols: dict[str, np.ndarray], out: dict[str, np.ndarray]
    ) -> None:
        self.compared += len(filled)
        for name in COMPARED:
            scalar = [v[name] for v in filled]
            wrong = _mismatches(scalar, cols[name], cols.get(f"{name}_null"))
            if wrong:
                self.read_mismatch[name] += wrong
        for name, tiers in FAMILIES.items():
            names = [tiers[i] if i >= 0 else None for i in out[name].tolist()]
            wrong = sum(1 for v, n in zip(filled, names, strict=True) if v[name] != n)
            if wrong:
                self.rule_mismatch[name] += wrong
        for name in FLAGS:
            wrong = _mismatches([v[name] for v in filled], out[name], None)
            if wrong:
                self.rule_mismatch[name] += wrong
        for name in ("r", "f", "m"):
            wrong = _mismatches([v[name] for v in filled], out[name], None)
            if wrong:
                self.rule_mismatch[name] += wrong
        wrong = _mismatches(
            [v["health_score"] for v in filled], out["health_score"], out["health_score_null"]
        )
        if wrong:
            self.rule_mismatch["health_score"] += wrong


def append_cost(repeats: int = 3) -> float:
    """us per logged entry: what logging an item change costs, timed alone (an order's key,
    sign and cents appended to three lists; an activity entry takes two), best of
    ``repeats``."""
    best = float("inf")
    n = 200_000
    for _ in range(repeats):
        keys: list[int] = []
        signs: list[int] = []
        cents: list[int] = []
        slot, day, sign, amount = 12345, 20000, 1, 27806
        t0 = clock()
        for _ in range(n):
            keys.append((slot << SHIFT) | day)
            signs.append(sign)
            cents.append(sign * amount)
        best = min(best, clock() - t0)
    return best / n * 1e6


def timer_overhead(repeats: int = 3) -> float:
    """us a ``timed`` wrapper adds to a call (the per-part figures include it)."""

    def nothing() -> None:
        return None

    wrapped = timed(nothing, "_overhead")
    n = 200_000
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(n):
            nothing()
        plain = clock() - t0
        t0 = clock()
        for _ in range(n):
            wrapped()
        best = min(best, clock() - t0 - plain)
    del SPENT["_overhead"], CALLS["_overhead"]
    return best / n * 1e6


def plain(lines: list[bytes]) -> dict[str, Any]:
    """The engine as it is, no hook, over the same lines (as ``bench.ab`` runs it)."""
    engine = Engine(load_rules(ROOT / "rules"), clock="event")
    gc.collect()
    gc.set_threshold(50_000, 20, 100)
    started, cpu = clock(), time.process_time()
    for start in range(0, len(lines), CHUNK):
        engine.process(lines[start : start + CHUNK])
        engine.drop_pending()
    wall, cpu = clock() - started, time.process_time() - cpu
    del engine
    gc.collect()
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "events_per_s": round(len(lines) / wall),
        "events_per_cpu_s": round(len(lines) / cpu),
    }


def run(events: int, every: int, with_plain: bool = True) -> dict[str, Any]:
    lines = events_file(1_000_000, 100_000).read_bytes().splitlines()[:events]
    engine_plain = plain(lines) if with_plain else None
    engine = Engine(load_rules(ROOT / "rules"), clock="event")
    assert not engine._held and not engine._dwelling, "the default rules hold nothing"
    columns = Columns(engine)
    study = Study(engine, columns, every)
    undo_columns = install(columns)
    undo_timers = install_timers()
    run_due = Engine._run_due

    def _run_due(self: Engine, lane: Lane, day: int) -> Any:
        study.on_day(lane, day)
        return run_due(self, lane, day)

    Engine._run_due = _run_due  # type: ignore[method-assign]
    SPENT.clear()
    CALLS.clear()
    gc.collect()
    gc.set_threshold(50_000, 20, 100)  # as `segstream replay` and bench.ab run the core
    started = clock()
    try:
        for start in range(0, len(lines), CHUNK):
            engine.process(lines[start : start + CHUNK])
            engine.drop_pending()
    finally:
        Engine._run_due = run_due  # type: ignore[method-assign]
        undo_timers()
        undo_columns()
    wall = clock() - started - study.spent
    result = report(engine, columns, study, len(lines), wall)
    result["engine_plain"] = engine_plain
    # the hooked run's time over the plain one's: what the hooks and timers cost, plus the
    # difference in the machine's load between the two runs (reported, not used)
    result["hook_overhead_us_per_event"] = (
        round(max(0.0, (wall - engine_plain["seconds"]) / len(lines) * 1e6), 3)
        if engine_plain
        else 0.0
    )
    result["implied"] = implied(result)
    return result


def _us(seconds: float, count: int) -> float:
    return seconds / count * 1e6 if count else 0.0


def report(
    engine: Engine, columns: Columns, study: Study, events: int, wall: float
) -> dict[str, Any]:
    ev = Counter[str]()
    for (cause, _), n in engine.evaluated.items():
        ev[cause] += n
    samples = study.samples
    due_total = sum(s["due"] for s in samples)
    sizes = sorted(s["due"] for s in samples)
    per = {
        name: _us(sum(s[name] for s in samples), due_total)
        for name in (
            "scalar_read",
            "scalar_rules",
            "scalar_schedule",
            "vector_read",
            "vector_rules",
            "slot_lookup",
        )
    }
    buckets: dict[str, dict[str, float]] = {}
    for low, high in ((1, 10), (10, 100), (100, 1000), (1000, 10_000), (10_000, 10**9)):
        chosen = [s for s in samples if low <= s["due"] < high]
        n = sum(s["due"] for s in chosen)
        if chosen:
            buckets[f"{low}-{high - 1}"] = {
                "days": len(chosen),
                "customers": n,
                **{
                    name: round(_us(sum(s[name] for s in chosen), n), 3)
                    for name in ("scalar_read", "scalar_rules", "vector_read", "vector_rules")
                },
            }
    merged = sum(m[0] for m in study.maintain)
    merge_seconds = sum(m[1] for m in study.maintain)
    refreshed = sum(m[2] for m in study.maintain)
    refresh_seconds = sum(m[3] for m in study.maintain)
    clock_days = len(study.maintain)
    items = [len(k.big) + len(k.small) for k in columns.kinds]
    parts = {
        "parse": _us(SPENT["parse"], CALLS["parse"]),
        "apply": _us(SPENT["apply"], CALLS["apply"]),
        "evaluate_event": _us(SPENT["evaluate:event"], CALLS["evaluate:event"]),
        "evaluate_clock": _us(SPENT["evaluate:clock"], CALLS["evaluate:clock"]),
        "evaluate_population": _us(SPENT["evaluate:population"], CALLS["evaluate:population"]),
        "build": _us(
            sum(v for k, v in SPENT.items() if k.startswith("build:")),
            sum(v for k, v in CALLS.items() if k.startswith("build:")),
        ),
        "group_update": _us(
            sum(v for k, v in SPENT.items() if k.startswith("group_update:")),
            sum(v for k, v in CALLS.items() if k.startswith("group_update:")),
        ),
    }
    changes_by_cause = {
        cause: CALLS[f"build:{cause}"] for cause in ("event", "clock", "population")
    }
    accounted = (
        SPENT["parse"]
        + SPENT["apply"]
        + sum(v for k, v in SPENT.items() if k.startswith("evaluate:"))
    )
    result: dict[str, Any] = {
        "events": events,
        "engine_seconds": round(wall, 2),
        "engine_events_per_s": round(events / wall),
        "evaluations_per_event": {k: round(v / events, 3) for k, v in ev.items()},
        "changes_per_event": {k: round(v / events, 3) for k, v in changes_by_cause.items()},
        "clock_days": clock_days,
        "sampled_days": len(samples),
        "due_compared": study.compared,
        "due_per_day": {
            "median": statistics.median(sizes) if sizes else 0,
            "p10": sizes[len(sizes) // 10] if sizes else 0,
            "p90": sizes[len(sizes) * 9 // 10] if sizes else 0,
            "max": sizes[-1] if sizes else 0,
            "mean": round(due_total / len(sizes), 1) if sizes else 0,
        },
        "read_mismatches": dict(study.read_mismatch),
        "rule_mismatches": dict(study.rule_mismatch),
        "amounts_not_whole_cents": columns.not_cents,
        "us_per_due_customer": {k: round(v, 3) for k, v in per.items()},
        "us_per_due_customer_by_batch": buckets,
        "columnar_us_per_customer_by_batch_size": {
            str(k): round(_us(t, n), 3) for k, (t, n) in study.sweep.items()
        },
        "maintenance": {
            "log_entries_per_event": round(merged / events, 3),
            "merge_ms_per_clock_day_mean": round(merge_seconds / max(clock_days, 1) * 1e3, 3),
            "merge_ms_per_clock_day_last_10": round(
                sum(m[1] for m in study.maintain[-10:]) / max(len(study.maintain[-10:]), 1) * 1e3,
                3,
            ),
            "merge_us_per_event": round(_us(merge_seconds, events), 3),
            "refresh_us_per_touched_customer": round(_us(refresh_seconds, refreshed), 3),
            "refresh_us_per_event": round(_us(refresh_seconds, events), 3),
            "append_us_per_entry": round(append_cost(), 4),
            "big_merges": sum(k.big_merges for k in columns.kinds),
            "entries_held": dict(
                zip(("orders", "tickets", "surveys", "activity"), items, strict=True)
            ),
            "customers": len(columns.slot_of),
        },
        "us_per_call": {k: round(v, 3) for k, v in parts.items()},
        "timer_overhead_us": round(timer_overhead(), 3),
        "other_us_per_event": round(_us(wall - accounted, events), 3),
    }
    return result


def implied(r: dict[str, Any]) -> dict[str, Any]:
    """us per event of a core whose clock evaluations run over columns, everything else as
    measured; two variants (see the docs for what both leave out)."""
    e = r["evaluations_per_event"]
    c = r["changes_per_event"]
    u = r["us_per_call"]
    d = r["us_per_due_customer"]
    m = r["maintenance"]
    clock_evals = e.get("clock", 0.0)
    parts = {
        "parse": u["parse"],
        "apply": u["apply"],
        "event evaluation (scalar, with its changes)": u["evaluate_event"] * e.get("event", 0),
        "population re-evaluations (scalar)": u["evaluate_population"] * e.get("population", 0),
        "rest of the per-event path": r["other_us_per_event"],
        "column log appends": m["append_us_per_entry"] * m["log_entries_per_event"],
        "column merge, once per clock day": m["merge_us_per_event"],
        "scalar columns of touched customers": m["refresh_us_per_event"],
        "clock: columnar reads": d["vector_read"] * clock_evals,
        "clock: columnar rules": d["vector_rules"] * clock_evals,
        "clock: change events for movers": u["build"] * c.get("clock", 0),
    }
    extra = {
        "clock: scalar next due day": d["scalar_schedule"] * clock_evals,
        "clock: scalar group update": u["group_update"] * clock_evals,
    }
    lean = sum(parts.values())
    full = lean + sum(extra.values())
    today_clock = u["evaluate_clock"] * clock_evals
    # the same parts with today's scalar clock evaluations in place of the columnar ones: the
    # study's own run, hooks and timers included (its time by construction: the rest of the
    # per-event path is what the timed parts leave); the speed-ups are taken against it
    scalar_today = (
        sum(v for k, v in parts.items() if not k.startswith(("clock:", "column", "scalar col")))
        + today_clock
    )
    plain = r.get("engine_plain") or {}
    anchored = plain.get("events_per_s")
    return {
        "model_of_today_us_per_event": round(scalar_today, 2),
        "model_of_today_events_per_s": round(1e6 / scalar_today),
        "optimistic_us_per_event": round(lean, 2),
        "optimistic_events_per_s": round(1e6 / lean),
        "with_scalar_schedule_and_groups_us_per_event": round(full, 2),
        "with_scalar_schedule_and_groups_events_per_s": round(1e6 / full),
        # the plain engine's rate times the model's ratio (the study's run and the plain one
        # may see different loads on a shared machine; the ratio comes from one run)
        "optimistic_speedup": round(scalar_today / lean, 3),
        "with_scalar_schedule_and_groups_speedup": round(scalar_today / full, 3),
        "optimistic_events_per_s_from_plain": round(anchored * scalar_today / lean)
        if anchored
        else None,
        "with_scalar_schedule_and_groups_events_per_s_from_plain": round(
            anchored * scalar_today / full
        )
        if anchored
        else None,
        "shares_optimistic": {k: round(v / lean, 3) for k, v in parts.items()},
        "us_per_event": {k: round(v, 3) for k, v in {**parts, **extra}.items()},
        "clock_evaluations_today_us_per_event": round(today_clock, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--every", type=int, default=1, help="sample every n-th clock day")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain engine run")
    args = parser.parse_args()
    result = run(args.events, args.every, not args.no_plain)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
