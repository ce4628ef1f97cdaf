"""Frozen reference copy (see tests/reference/__init__.py) of segstream.core.state.

Per-customer state, kept incrementally and independent of arrival order and duplicates.

Every collection is keyed by a natural id (order, ticket, survey, attribute, event) and
resolved last-writer-wins on ``(occurred_at, event_id)``, so applying the same set of events in
any order, any number of times, gives the same state. Memory stays bounded because
:meth:`CustomerState.compact` folds orders older than the retention horizon into totals and
drops items that no window can see any more; :class:`Limits` caps what a misbehaving producer
could otherwise grow without end (attribute names, open tickets, remembered ids).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from decimal import Decimal
from hashlib import blake2b
from typing import Any

import orjson

from segstream.core.contracts import Event, OrderEvent, ProfileEvent, SupportEvent, SurveyEvent
from segstream.core.timeutil import day_of

ACTIVITY_DAYS = 30
COMPACT_EVERY_DAYS = 90  # compaction only bounds memory; reads filter windows by age anyway
# Days, beyond the horizon, that an order is held for a late correction: a refund dated within
# a horizon of its order undoes it whenever it arrives, up to this long after the order left
# every window (partitions' input topics are consumed unevenly, most after a restart)
LATE_DAYS = 90
ZERO = Decimal(0)
# an event id's record in ``activity``: day * 8 + the kind of event it came with (0: stored in
# format 3 or older, forgotten by the partition's clock)
SEEN_KINDS = {"order": 1, "support": 2, "survey": 3, "profile": 4}

# Every name a rule can read from a customer's state, with its type (used by the rule checker).
STATE_FIELDS: dict[str, str] = {
    "recency_days": "int?",
    "frequency": "int",
    "monetary": "float",
    "orders_total": "int",
    "monetary_total": "float",
    "tenure_days": "int?",
    "orders_30d": "int",
    "orders_90d": "int",
    "tickets_open": "int",
    "tickets_30d": "int",
    "surveys_90d": "int",
    "activity_30d": "int",
    "activity_trend": "int",
    "days_since_activity": "int?",
    "promoters": "int",
    "detractors": "int",
    "responses": "int",
    "last_score": "int?",
    "csi": "float?",
    "nps": "float?",
}
# A timeline entry's change and cause, by index (docs/contracts.md, segment-change events).
CHANGE_KINDS = ("entered", "exited", "upgraded", "downgraded")
CAUSE_KINDS = ("event", "clock", "rules", "population", "erasure")
# Counters that grow by one every day; the scheduler treats them specially.
DAY_COUNTERS = ("recency_days", "tenure_days", "days_since_activity")


# Windows whose items leave with time: group -> (the count it decrements, every name it feeds).
WINDOW_GROUPS: dict[str, tuple[str | None, frozenset[str]]] = {
    "rfm": ("frequency", frozenset({"frequency", "monetary"})),
    "o30": ("orders_30d", frozenset({"orders_30d"})),
    "o90": ("orders_90d", frozenset({"orders_90d"})),
    "t30": ("tickets_30d", frozenset({"tickets_30d"})),
    "s90": ("surveys_90d", frozenset({"surveys_90d"})),
    "csi": (
        "responses",
        frozenset({"responses", "promoters", "detractors", "last_score", "csi", "nps"}),
    ),
    "a30": ("activity_30d", frozenset({"activity_30d", "activity_trend"})),
    "a60": (None, frozenset({"activity_trend"})),
}
# Int fields whose rule outcomes can be predicted from literal comparisons.
TRACKED_FIELDS = frozenset(DAY_COUNTERS) | frozenset(
    count for count, _ in WINDOW_GROUPS.values() if count is not None
)
Exits = dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class Windows:
    rfm_days: int = 365
    csi_days: int = 365

    @property
    def horizon(self) -> int:
        """Days after which no window can see an item; older orders fold into totals."""
        return max(self.rfm_days, self.csi_days, 90, 2 * ACTIVITY_DAYS)


# Names of the limits, as counted in ``CustomerState.limit_hits`` (stable metric labels).
LIMIT_ATTRIBUTES = "attributes"
LIMIT_OPEN_TICKETS = "open_tickets"
LIMIT_CLOSED_TICKET_IDS = "closed_ticket_ids"
LIMIT_FOLDED_IDS = "folded_ids"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one customer's memory. A producer can send any number of attribute names or
    never close its tickets; without these a single customer's stored state grows without end.

    Every policy keeps a set that depends on which events arrived, not on their order, so
    replicas and recoveries agree (the open-ticket cap is the exception, see ``max_open_tickets``).
    """

    # Attribute names kept (tombstones included). Over it, names are ranked: ``keep_attributes``
    # (the rule set's declared attributes) first, then by name; the lowest-ranked are dropped.
    max_attributes: int = 256
    keep_attributes: frozenset[str] = field(default_factory=frozenset)
    # Open tickets kept. Over it, the open tickets whose latest event is oldest are dropped
    # (ties by event id, then ticket id). A later close of one they can no longer see is
    # then the ticket's first event: this cap alone depends on arrival order.
    max_open_tickets: int = 200
    # 64-bit digests of the closed tickets compaction removed, so an old event of one cannot
    # reopen it. Over it, the largest digests go (a bottom-k set: order-independent).
    max_closed_ticket_ids: int = 1024
    # 64-bit digests of folded orders, so a re-sent old order is not counted twice; same policy.
    max_folded_ids: int = 4096
    # Days an event id is remembered, measured from its occurred_at; an older duplicate is
    # recognised only through the natural id of its order/ticket/survey/attribute. At least
    # the 60 days the activity counts read.
    event_id_memory_days: int = 2 * ACTIVITY_DAYS
    # A customer's membership timeline (its latest transitions, for "which segments was it in
    # at time T, and why"): at most this many, none older than ``timeline_days`` (0: none).
    timeline_length: int = 16
    timeline_days: int = 400

    def __post_init__(self) -> None:
        counts = (
            self.max_attributes,
            self.max_open_tickets,
            self.max_closed_ticket_ids,
            self.max_folded_ids,
            self.timeline_length,
            self.timeline_days,
        )
        if min(counts) < 0:
            raise ValueError("limits must not be negative")
        if self.event_id_memory_days < 2 * ACTIVITY_DAYS:
            raise ValueError(
                f"event_id_memory_days must be at least {2 * ACTIVITY_DAYS} (the activity windows)"
            )


DEFAULT_LIMITS = Limits()


class CustomerState:
    """What segstream remembers about one customer."""

    __slots__ = (
        "activity",
        "attrs",
        "closed_ids",
        "compacted_day",
        "customer_id",
        "due_day",
        "entered",
        "folded_amount",
        "folded_count",
        "folded_first_day",
        "folded_ids",
        "folded_last_day",
        "last_activity_day",
        "last_event_ms",
        "limit_hits",
        "orders",
        "quantiles",
        "refunds",
        "segments",
        "seq",
        "surveys",
        "tickets",
        "timeline",
    )

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        # order_id -> (occurred_at, event_id, day, amount)
        self.orders: dict[str, tuple[int, str, int, Decimal]] = {}
        # order_id -> day of the earliest refund/cancel seen
        self.refunds: dict[str, int] = {}
        self.folded_count = 0
        self.folded_amount = ZERO
        self.folded_first_day: int | None = None
        self.folded_last_day: int | None = None
        # 64-bit digests of folded order ids: keeps duplicates of old orders out, 8 bytes each
        self.folded_ids: set[int] = set()
        # ticket_id -> (occurred_at, event_id, status, opened_day or -1)
        self.tickets: dict[str, tuple[int, str, str, int]] = {}
        # 64-bit digests of closed tickets compaction removed: they stay closed
        self.closed_ids: set[int] = set()
        # survey key -> (occurred_at, event_id, day, score)
        self.surveys: dict[str, tuple[int, str, int, int]] = {}
        # attribute -> (occurred_at, event_id, value); value None is a tombstone
        self.attrs: dict[str, tuple[int, str, Any]] = {}
        # event_id -> day, for events young enough to count as activity (the de-dup record)
        self.activity: dict[str, int] = {}
        self.last_activity_day: int | None = None
        self.last_event_ms = 0
        self.compacted_day = -(10**9)
        self.segments: dict[str, str | bool | None] = {}
        # segment name -> the day the customer entered its current value, for segments with
        # a min_days dwell (docs/rules.md, Hysteresis and dwell)
        self.entered: dict[str, int] = {}
        self.seq = 0
        self.due_day: int | None = None
        # quantile score name -> (field value, score) at the last evaluation: what the
        # population held for this customer and which score its segments were computed with,
        # so a recovered customer is indexed without recomputing its state
        self.quantiles: dict[str, tuple[float | None, int]] = {}
        # the latest transitions, oldest first: (at ms, segment name, from, to, index of the
        # change in CHANGE_KINDS, of the cause in CAUSE_KINDS): compact, it is stored with
        # every write of the customer; bounded by Limits.timeline_length and timeline_days
        self.timeline: list[tuple[int, str, Any, Any, int, int]] = []
        # Not state: how often each limit dropped something since the engine last took the
        # counts (:meth:`take_limit_hits`), for a metric. Not stored, not compared.
        self.limit_hits: dict[str, int] = {}

    def take_limit_hits(self) -> dict[str, int]:
        """The limit counts since the last call, then zero; empty when no limit bit."""
        hits, self.limit_hits = self.limit_hits, {}
        return hits

    def _hit(self, limit: str, count: int) -> None:
        if count:
            self.limit_hits[limit] = self.limit_hits.get(limit, 0) + count

    # -- applying events ---------------------------------------------------------------------

    def apply(
        self,
        event: Event,
        clock_day: int,
        windows: Windows,
        limits: Limits = DEFAULT_LIMITS,
        topic_day: int | None = None,
    ) -> bool:
        """Fold one event in; returns False when it changed nothing (a duplicate)."""
        day = day_of(event.occurred_at)
        at = clock_day if topic_day is None else topic_day
        ids_at = min(at, clock_day)
        kind = SEEN_KINDS[event.type]
        seen = self.activity.get(event.event_id)
        if seen is not None:
            seen_day, seen_kind = divmod(seen, 8)
            if seen_kind != kind:
                return False
            if ids_at - seen_day < limits.event_id_memory_days:
                return False
            # past its kind's clock: as if compaction had forgotten it
        changed = False
        if ids_at - day < limits.event_id_memory_days:
            self.activity.pop(event.event_id, None)
            self.activity[event.event_id] = day * 8 + kind
            changed = True
        if self.last_activity_day is None or day > self.last_activity_day:
            self.last_activity_day = day
            changed = True
        if event.occurred_at > self.last_event_ms:
            self.last_event_ms = event.occurred_at
        if isinstance(event, OrderEvent):
            at = clock_day if topic_day is None else topic_day
            changed |= self._apply_order(event, day, at, windows, limits)
        elif isinstance(event, SupportEvent):
            at = clock_day if topic_day is None else topic_day
            if self._apply_ticket(event, day, at, windows):
                changed = True
                if len(self.tickets) > limits.max_open_tickets:
                    self._cap_open_tickets(limits.max_open_tickets)
        elif isinstance(event, SurveyEvent):
            # no window can see it, and compaction would drop it again (a late re-send)
            if clock_day - day < _survey_days(windows):
                key = event.survey_id if event.survey_id is not None else "\x00" + event.event_id
                changed |= _lww(
                    self.surveys, key, (event.occurred_at, event.event_id, day, event.score)
                )
        elif isinstance(event, ProfileEvent):
            for name, value in event.attributes.items():
                changed |= _lww(self.attrs, name, (event.occurred_at, event.event_id, value))
            if len(self.attrs) > limits.max_attributes:
                self._cap_attributes(limits)
        return changed

    def _cap_attributes(self, limits: Limits) -> None:
        """Keep the best-ranked names. Names never leave otherwise (a null is a tombstone), so a
        dropped name always has enough better-ranked ones present: the kept set and each kept
        record are the same whatever the arrival order."""
        keep = limits.keep_attributes
        ranked = sorted(self.attrs, key=lambda name: (name not in keep, name))
        for name in ranked[limits.max_attributes :]:
            del self.attrs[name]
        self._hit(LIMIT_ATTRIBUTES, len(ranked) - limits.max_attributes)

    def _cap_open_tickets(self, limit: int) -> None:
        """Forget the open tickets that have been quiet longest: a ticket nobody closes for so
        long is most likely lost by its producer, and the newest ones carry the signal."""
        open_ = [(t[0], t[1], tid) for tid, t in self.tickets.items() if t[2] != "closed"]
        excess = len(open_) - limit
        if excess <= 0:
            return
        for _, _, ticket_id in heapq.nsmallest(excess, open_):
            del self.tickets[ticket_id]
        self._hit(LIMIT_OPEN_TICKETS, excess)

    def _apply_order(
        self, event: OrderEvent, day: int, order_day: int, windows: Windows, limits: Limits
    ) -> bool:
        held = windows.horizon + LATE_DAYS
        order = self.orders.get(event.order_id)
        if order is not None and order_day - order[2] >= held:
            return False  # compaction may have folded it
        if event.status != "completed":
            if order is not None and day - order[2] >= windows.horizon:
                return False  # dated a horizon after its order: it cannot undo it (event time,
                # so the answer does not depend on when it arrives)
            if order is None and _digest(event.order_id) in self.folded_ids:
                return False  # folded already: too late to undo, and it would only take memory
            if order is None and order_day - day >= held:
                return False
            known = self.refunds.get(event.order_id)
            if (
                known is not None
                and known <= day
                and (order is not None or order_day - known < held)
            ):
                return False
            self.refunds[event.order_id] = day
            return True
        if _digest(event.order_id) in self.folded_ids:
            return False
        if order is None:
            known = self.refunds.get(event.order_id)
            if known is not None and order_day - known >= held:
                del self.refunds[event.order_id]  # compaction may have dropped it
                known = None
            if known is None and order_day - day >= held:
                self._fold(event.order_id, day, event.amount)
                self._cap_folded_ids(limits)
                return True
        return _lww(
            self.orders, event.order_id, (event.occurred_at, event.event_id, day, event.amount)
        )

    def _refunded(self, order_id: str, day: int, horizon: int) -> bool:
        """Refunded or cancelled within a horizon of the order's day (later ones do not undo
        it): an event-time rule, the same whenever the correction arrives."""
        refunded = self.refunds.get(order_id)
        return refunded is not None and refunded - day < horizon

    def _apply_ticket(
        self, event: SupportEvent, day: int, ticket_day: int, windows: Windows
    ) -> bool:
        old = self.tickets.get(event.ticket_id)
        removable = (
            old is not None
            and old[2] == "closed"
            and ticket_day - max(day_of(old[0]), old[3]) >= windows.horizon
        )
        if removable:
            old = None  # compaction may have removed it
        if (
            old is None
            and ticket_day - day >= windows.horizon
            and (removable or _digest(event.ticket_id) in self.closed_ids)
        ):
            # compaction removed the ticket closed; every event of it it had seen was at least
            # a horizon old, so this late one (a duplicate, a re-send) must not reopen it
            return False
        opened = day if event.status == "opened" else -1
        if old is not None:
            if old[3] >= 0 and (opened < 0 or old[3] < opened):
                opened = old[3]
            if (old[0], old[1]) >= (event.occurred_at, event.event_id):
                if opened == old[3]:
                    return False
                self.tickets[event.ticket_id] = (old[0], old[1], old[2], opened)
                return True
        self.tickets[event.ticket_id] = (event.occurred_at, event.event_id, event.status, opened)
        return True

    def _fold(self, order_id: str, day: int, amount: Decimal) -> None:
        self.folded_ids.add(_digest(order_id))
        self.folded_count += 1
        self.folded_amount += amount
        if self.folded_first_day is None or day < self.folded_first_day:
            self.folded_first_day = day
        if self.folded_last_day is None or day > self.folded_last_day:
            self.folded_last_day = day

    def _cap_folded_ids(self, limits: Limits) -> None:
        self._hit(LIMIT_FOLDED_IDS, _keep_smallest(self.folded_ids, limits.max_folded_ids))

    def compact(
        self,
        clock_day: int,
        windows: Windows,
        limits: Limits = DEFAULT_LIMITS,
        topic_days: dict[str, int] | None = None,
    ) -> None:
        """Drop or fold what no window can see any more; bounded memory per customer."""
        if clock_day - self.compacted_day < COMPACT_EVERY_DAYS:
            return
        self.compacted_day = clock_day
        horizon = windows.horizon
        held = horizon + LATE_DAYS
        orders_at = (topic_days or {}).get("order", clock_day)
        tickets_at = (topic_days or {}).get("support", clock_day)
        for order_id, (_, _, day, amount) in list(self.orders.items()):
            if orders_at - day >= held:
                del self.orders[order_id]
                if self._refunded(order_id, day, horizon):
                    del self.refunds[order_id]
                    self.folded_ids.add(_digest(order_id))
                else:
                    self._fold(order_id, day, amount)
        self._cap_folded_ids(limits)
        for order_id, day in list(self.refunds.items()):
            if orders_at - day >= held and order_id not in self.orders:
                del self.refunds[order_id]
        survey_days = _survey_days(windows)
        for key, survey in list(self.surveys.items()):
            if clock_day - survey[2] >= survey_days:
                del self.surveys[key]
        for ticket_id, (ms, _, status, opened) in list(self.tickets.items()):
            if status == "closed" and tickets_at - max(day_of(ms), opened) >= horizon:
                del self.tickets[ticket_id]
                self.closed_ids.add(_digest(ticket_id))
        dropped = _keep_smallest(self.closed_ids, limits.max_closed_ticket_ids)
        self._hit(LIMIT_CLOSED_TICKET_IDS, dropped)
        kind_days = [clock_day] + [
            min((topic_days or {}).get(k, clock_day), clock_day) for k in SEEN_KINDS
        ]
        for event_id, seen in list(self.activity.items()):
            seen_day, seen_kind = divmod(seen, 8)
            if kind_days[seen_kind] - seen_day >= limits.event_id_memory_days:
                del self.activity[event_id]

    # -- reading -----------------------------------------------------------------------------

    def values(
        self, clock_day: int, windows: Windows, watch: frozenset[str] = frozenset()
    ) -> tuple[dict[str, Any], Exits]:
        """The state names rules read as of ``clock_day``, and for each window group in
        ``watch`` the days its current items leave it (so the scheduler knows when to look)."""
        rfm_days = windows.rfm_days
        csi_days = windows.csi_days
        exits: Exits = {group: [] for group in watch}
        x_rfm, x_o30, x_o90 = exits.get("rfm"), exits.get("o30"), exits.get("o90")
        x_t30, x_s90, x_csi = exits.get("t30"), exits.get("s90"), exits.get("csi")
        x_a30, x_a60 = exits.get("a30"), exits.get("a60")
        frequency = orders_30d = orders_90d = counted = 0
        monetary = ZERO
        total = self.folded_amount
        first = self.folded_first_day
        last = self.folded_last_day
        refunds = self.refunds
        rfm_horizon = windows.horizon
        for order_id, (_, _, day, amount) in self.orders.items():
            refunded = refunds.get(order_id)
            if refunded is not None and refunded - day < rfm_horizon:
                continue
            counted += 1
            total += amount
            if first is None or day < first:
                first = day
            if last is None or day > last:
                last = day
            age = clock_day - day
            if age < rfm_days:  # each window on its own: rfm_days may be shorter than 90 or 30
                frequency += 1
                monetary += amount
                if x_rfm is not None:
                    x_rfm.append(day + rfm_days)
            if age < 90:
                orders_90d += 1
                if x_o90 is not None:
                    x_o90.append(day + 90)
                if age < 30:
                    orders_30d += 1
                    if x_o30 is not None:
                        x_o30.append(day + 30)
        tickets_open = tickets_30d = 0
        for _, _, status, opened in self.tickets.values():
            if status != "closed":
                tickets_open += 1
            if opened >= 0 and clock_day - opened < 30:
                tickets_30d += 1
                if x_t30 is not None:
                    x_t30.append(opened + 30)
        promoters = detractors = responses = surveys_90d = nps_pro = nps_det = 0
        last_score: int | None = None
        last_key: tuple[int, str] | None = None
        for ms, eid, day, score in self.surveys.values():
            age = clock_day - day
            if age < 90:
                surveys_90d += 1
                if x_s90 is not None:
                    x_s90.append(day + 90)
            if age < csi_days:
                if x_csi is not None:
                    x_csi.append(day + csi_days)
                responses += 1
                if score >= 8:
                    promoters += 1
                    if score >= 9:
                        nps_pro += 1
                elif 1 <= score <= 3:
                    detractors += 1
                if score <= 6:
                    nps_det += 1
                if last_key is None or (ms, eid) > last_key:
                    last_key = (ms, eid)
                    last_score = score
        recent = previous = 0
        for seen in self.activity.values():
            day = seen // 8
            age = clock_day - day
            if age < ACTIVITY_DAYS:
                recent += 1
                if x_a30 is not None:
                    x_a30.append(day + ACTIVITY_DAYS)
            elif age < 2 * ACTIVITY_DAYS:
                previous += 1
                if x_a60 is not None:
                    x_a60.append(day + 2 * ACTIVITY_DAYS)
        values = {
            "recency_days": None if last is None else clock_day - last,
            "frequency": frequency,
            "monetary": float(monetary),
            "orders_total": self.folded_count + counted,
            "monetary_total": float(total),
            "tenure_days": None if first is None else clock_day - first,
            "orders_30d": orders_30d,
            "orders_90d": orders_90d,
            "tickets_open": tickets_open,
            "tickets_30d": tickets_30d,
            "surveys_90d": surveys_90d,
            "activity_30d": recent,
            "activity_trend": recent - previous,
            "days_since_activity": (
                None if self.last_activity_day is None else clock_day - self.last_activity_day
            ),
            "promoters": promoters,
            "detractors": detractors,
            "responses": responses,
            "last_score": last_score,
            "csi": promoters / max(detractors, 1) if responses else None,
            "nps": 100.0 * (nps_pro - nps_det) / responses if responses else None,
        }
        return values, exits


def _digest(natural_id: str) -> int:
    return int.from_bytes(blake2b(natural_id.encode(), digest_size=8).digest(), "big")


def _keep_smallest(digests: set[int], limit: int) -> int:
    """Trim to the ``limit`` smallest (a bottom-k set: the same whatever the order of adds);
    returns how many were dropped."""
    excess = len(digests) - limit
    if excess <= 0:
        return 0
    for digest in heapq.nlargest(excess, digests):
        digests.remove(digest)
    return excess


def _survey_days(windows: Windows) -> int:
    return max(windows.csi_days, 90)


def _lww(table: dict[str, Any], key: str, record: tuple[Any, ...]) -> bool:
    """Last-writer-wins on (occurred_at, event_id); True when the record replaced the old one."""
    old = table.get(key)
    if old is not None and (old[0], old[1]) >= (record[0], record[1]):
        return False
    table[key] = record
    return True


_FORMAT = 4
# 4: ``activity`` holds day * 8 + kind per event id (see SEEN_KINDS); 3: named fields (an
#    added field can no longer shift the others), empty ones left out, and ``closed_ids``; 2:
#    positional, added ``quantiles``; 1: positional. All four are read.
# Records inside a field stay arrays in the order of the tuples they hold (see __init__).


def dump_state(st: CustomerState) -> bytes:
    """Compact, versioned JSON for the state store and its changelog."""
    data: dict[str, Any] = {
        "format": _FORMAT,
        "customer_id": st.customer_id,
        "orders": [[k, o[0], o[1], o[2], str(o[3])] for k, o in st.orders.items()],
        "refunds": st.refunds,
        "folded_count": st.folded_count,
        "folded_amount": str(st.folded_amount),
        "folded_first_day": st.folded_first_day,
        "folded_last_day": st.folded_last_day,
        "folded_ids": sorted(st.folded_ids),
        "closed_ids": sorted(st.closed_ids),
        "tickets": st.tickets,
        "surveys": st.surveys,
        "attrs": st.attrs,
        "activity": st.activity,
        "last_activity_day": st.last_activity_day,
        "last_event_ms": st.last_event_ms,
        "compacted_day": st.compacted_day,
        "segments": st.segments,
        "seq": st.seq,
        "due_day": st.due_day,
        "quantiles": st.quantiles,
        "timeline": st.timeline,
        "entered": st.entered,
    }
    for name, empty in _EMPTY.items():
        if data[name] == empty and type(data[name]) is type(empty):
            del data[name]
    return orjson.dumps(data)


# What a new CustomerState holds; such fields are left out of the stored form.
_EMPTY: dict[str, Any] = {
    "orders": [],
    "refunds": {},
    "folded_count": 0,
    "folded_amount": "0",
    "folded_first_day": None,
    "folded_last_day": None,
    "folded_ids": [],
    "closed_ids": [],
    "tickets": {},
    "surveys": {},
    "attrs": {},
    "activity": {},
    "last_activity_day": None,
    "last_event_ms": 0,
    "segments": {},
    "seq": 0,
    "due_day": None,
    "quantiles": {},
    "timeline": [],
    "entered": {},
}


def load_state(raw: bytes) -> CustomerState:
    data = orjson.loads(raw)
    if isinstance(data, list) and data and data[0] in (1, 2):
        return _load_positional(data)
    if not isinstance(data, dict) or data.get("format") not in (3, _FORMAT):
        version = data.get("format") if isinstance(data, dict) else data[:1]
        raise ValueError(f"unknown state format {version!r}")
    st = CustomerState(data["customer_id"])
    get = data.get
    st.orders = {o[0]: (o[1], o[2], o[3], Decimal(o[4])) for o in get("orders", ())}
    st.refunds = get("refunds", {})
    st.folded_count = get("folded_count", 0)
    st.folded_amount = Decimal(get("folded_amount", "0"))
    st.folded_first_day = get("folded_first_day")
    st.folded_last_day = get("folded_last_day")
    st.folded_ids = set(get("folded_ids", ()))
    st.closed_ids = set(get("closed_ids", ()))
    st.tickets = {k: (t[0], t[1], t[2], t[3]) for k, t in get("tickets", {}).items()}
    st.surveys = {k: (s[0], s[1], s[2], s[3]) for k, s in get("surveys", {}).items()}
    st.attrs = {k: (a[0], a[1], a[2]) for k, a in get("attrs", {}).items()}
    st.activity = get("activity", {})
    if data["format"] == 3:
        st.activity = {k: day * 8 for k, day in st.activity.items()}
    st.last_activity_day = get("last_activity_day")
    st.last_event_ms = get("last_event_ms", 0)
    st.compacted_day = data["compacted_day"]
    st.segments = get("segments", {})
    st.seq = get("seq", 0)
    st.due_day = get("due_day")
    st.quantiles = {k: (q[0], q[1]) for k, q in get("quantiles", {}).items()}
    st.timeline = [(t[0], t[1], t[2], t[3], t[4], t[5]) for t in get("timeline", ())]
    st.entered = get("entered", {})
    return st


def _load_positional(data: list[Any]) -> CustomerState:
    """Formats 1 and 2, as written before fields had names."""
    st = CustomerState(data[1])
    st.orders = {o[0]: (o[1], o[2], o[3], Decimal(o[4])) for o in data[2]}
    st.refunds = data[3]
    st.folded_count = data[4]
    st.folded_amount = Decimal(data[5])
    st.folded_first_day, st.folded_last_day = data[6], data[7]
    st.folded_ids = set(data[8])
    st.tickets = {k: (t[0], t[1], t[2], t[3]) for k, t in data[9].items()}
    st.surveys = {k: (s[0], s[1], s[2], s[3]) for k, s in data[10].items()}
    st.attrs = {k: (a[0], a[1], a[2]) for k, a in data[11].items()}
    st.activity = {k: day * 8 for k, day in data[12].items()}
    st.last_activity_day, st.last_event_ms, st.compacted_day = data[13], data[14], data[15]
    st.segments, st.seq, st.due_day = data[16], data[17], data[18]
    if data[0] >= 2:
        st.quantiles = {k: (q[0], q[1]) for k, q in data[19].items()}
    return st
