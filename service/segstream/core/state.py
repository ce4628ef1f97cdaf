"""Per-customer state, kept incrementally and independent of arrival order and duplicates.

Every collection is keyed by a natural id (order, ticket, survey, attribute, event) and
resolved last-writer-wins on ``(occurred_at, event_id)``, so applying the same set of events in
any order, any number of times, gives the same state. Memory stays bounded because
:meth:`CustomerState.compact` folds orders older than the retention horizon into totals and
drops items that no window can see any more; :class:`Limits` caps what a misbehaving producer
could otherwise grow without end (attribute names, open tickets, remembered ids).

What rules read comes from an index of the items' days (:class:`Windowed`), kept sorted as
items arrive, change and go: a window is a slice of it found by bisection, so a read does not
walk the items and nothing is done as days pass. The index is derived from the items, never
stored: a loaded state builds it on its first read.
"""

from __future__ import annotations

import heapq
import sys
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping
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
# The items of one timeline entry in CustomerState.transitions: (at ms, segment name, from, to,
# change index, cause index), one entry after the other in one tuple. A tuple per entry, in a
# list, took 96 bytes plus the entry's own: flat, an entry takes its 6 references (issue 15).
TRANSITION = 6
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
    # Days after which no window can see an item; older orders fold into totals. (Computed
    # once: it is read for every event and evaluation.)
    horizon: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        horizon = max(self.rfm_days, self.csi_days, 90, 2 * ACTIVITY_DAYS)
        object.__setattr__(self, "horizon", horizon)


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


class _Nothing(dict[Any, Any]):
    """The empty dict every state shares for a collection it has not needed yet.

    Most customers never have a refund, ticket, survey, attribute, dwell or limit hit, and an
    empty dict is 64 bytes (an empty set 216): at a million customers those were close to a
    gigabyte of nothing (issue 15). A field holds :data:`NOTHING` until its first item, when
    its writer puts a dict of its own in place (``if table is NOTHING``); reads need no care.
    Writing into the shared one would give every customer the item, so it refuses.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("the shared empty mapping is read-only: give the state its own dict")

    __setitem__ = setdefault = update = __ior__ = _refuse


NOTHING: dict[Any, Any] = _Nothing()
# the same for the digest sets (an empty frozenset: read-only already)
NO_IDS: frozenset[int] = frozenset()

# Day numbers, one int object each: a day (five digits, 28 bytes as an int of its own) is kept
# in many places of many customers (orders, surveys, tickets, refunds, due and compaction
# days, and in the event ids' records: see seen_record), and every computation or decoded
# state made a new one. Bounded: past the bound, ints are simply not shared.
_DAYS: dict[int, int] = {}
_MAX_DAYS = 1 << 17


def shared_day(day: int) -> int:
    """The one int object for ``day`` (equal, so nothing that reads it can tell)."""
    known = _DAYS.get(day)
    if known is not None:
        return known
    if len(_DAYS) < _MAX_DAYS:
        _DAYS[day] = day
    return day


# An event id's record in :attr:`CustomerState.activity` is one int: its day times 8 plus the
# kind of event it came with, so the id is forgotten by its own topic's clock (an exact
# re-delivery is then caught, or not, whatever the other topics did meanwhile). Kind 0: stored
# before ids had kinds (state format 3 and older), forgotten by the partition's clock as then.
SEEN_KINDS: dict[str, int] = {"order": 1, "support": 2, "survey": 3, "profile": 4}
_KIND_BITS = 3
_KIND_MASK = (1 << _KIND_BITS) - 1


def seen_record(day: int, kind: int) -> int:
    """The one int object recording an event id seen on ``day`` with an event of ``kind``
    (kept with the days by :func:`shared_day`: equal ints, one object)."""
    return shared_day((day << _KIND_BITS) | kind)


def seen_day(record: int) -> int:
    """The day of an event id's record (:func:`seen_record`)."""
    return record >> _KIND_BITS


def _day_or_none(day: int | None) -> int | None:
    return None if day is None else shared_day(day)


def _name(value: Any) -> Any:
    """A text value kept by many customers (a segment or tier name, an attribute's name or
    value, a ticket status) as the one interned copy; anything else as it is."""
    return sys.intern(value) if type(value) is str else value


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
        "ranked",
        "refunds",
        "segments",
        "seq",
        "surveys",
        "tickets",
        "transitions",
        "windowed",
    )

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        # order_id -> (occurred_at, event_id, day, amount)
        self.orders: dict[str, tuple[int, str, int, Decimal]] = {}
        # order_id -> day of the earliest refund/cancel seen
        self.refunds: dict[str, int] = NOTHING
        self.folded_count = 0
        self.folded_amount = ZERO
        self.folded_first_day: int | None = None
        self.folded_last_day: int | None = None
        # 64-bit digests of folded order ids: keeps duplicates of old orders out, 8 bytes each
        self.folded_ids: set[int] | frozenset[int] = NO_IDS
        # ticket_id -> (occurred_at, event_id, status, opened_day or -1)
        self.tickets: dict[str, tuple[int, str, str, int]] = NOTHING
        # 64-bit digests of closed tickets compaction removed: they stay closed
        self.closed_ids: set[int] | frozenset[int] = NO_IDS
        # survey key -> (occurred_at, event_id, day, score)
        self.surveys: dict[str, tuple[int, str, int, int]] = NOTHING
        # attribute -> (occurred_at, event_id, value); value None is a tombstone
        self.attrs: dict[str, tuple[int, str, Any]] = NOTHING
        # event_id -> seen_record(day, kind), for events young enough by their own topic's
        # clock (the de-dup record; the days also count as activity)
        self.activity: dict[str, int] = {}
        self.last_activity_day: int | None = None
        self.last_event_ms = 0
        self.compacted_day = -(10**9)
        self.segments: dict[str, str | bool | None] = {}
        # segment name -> the day the customer entered its current value, for segments with
        # a min_days dwell (docs/rules.md, Hysteresis and dwell)
        self.entered: dict[str, int] = NOTHING
        self.seq = 0
        self.due_day: int | None = None
        # per quantile score, flat: name, field value, score at the last evaluation (what the
        # population held for this customer and which score its segments were computed with,
        # so a recovered customer is indexed without recomputing its state). A flat tuple is
        # 64 bytes for the usual one score where a dict of pairs took about 240 (see
        # :attr:`quantiles` for the dict, which is what is stored).
        self.ranked: tuple[Any, ...] = ()
        # the latest transitions, oldest first: (at ms, segment name, from, to, index of the
        # change in CHANGE_KINDS, of the cause in CAUSE_KINDS): compact, it is stored with
        # every write of the customer; bounded by Limits.timeline_length and timeline_days
        # Held flat, as :attr:`transitions` (see :attr:`timeline`).
        self.transitions: tuple[Any, ...] = ()
        # Not state: how often each limit dropped something since the engine last took the
        # counts (:meth:`take_limit_hits`), for a metric. Not stored, not compared.
        self.limit_hits: dict[str, int] = NOTHING
        # Not state: the index of the items' days the windows are read from, derived from the
        # items above (built on the first read, then kept up to date by every change of an
        # item). Not stored, not compared.
        self.windowed: Windowed | None = None

    @property
    def quantiles(self) -> dict[str, tuple[float | None, int]]:
        """Quantile score name -> (field value, score) at the last evaluation, in the order
        the scores were kept (what is stored). A new dict on every read: writes to it are not
        kept; assign the whole dict."""
        flat = iter(self.ranked)
        return {name: (value, score) for name, value, score in zip(flat, flat, flat, strict=True)}

    @quantiles.setter
    def quantiles(self, kept: dict[str, tuple[float | None, int]]) -> None:
        self.ranked = tuple(item for name, q in kept.items() for item in (name, q[0], q[1]))

    @property
    def timeline(self) -> list[tuple[int, str, Any, Any, int, int]]:
        """The timeline's entries, oldest first, as 6-tuples (what is stored)."""
        flat = iter(self.transitions)
        return list(zip(flat, flat, flat, flat, flat, flat, strict=True))

    @timeline.setter
    def timeline(self, entries: list[tuple[int, str, Any, Any, int, int]]) -> None:
        self.transitions = tuple(
            item for t in entries for item in (t[0], t[1], t[2], t[3], t[4], t[5])
        )

    def take_limit_hits(self) -> dict[str, int]:
        """The limit counts since the last call, then zero; empty when no limit bit (the
        shared empty mapping: nothing is allocated per call, it is asked after every event)."""
        hits = self.limit_hits
        if hits:
            self.limit_hits = NOTHING
        return hits

    def _hit(self, limit: str, count: int) -> None:
        if count:
            hits = self.limit_hits
            if hits is NOTHING:
                hits = self.limit_hits = {}
            hits[limit] = hits.get(limit, 0) + count

    def enter(self, name: str, day: int) -> None:
        """The customer entered ``name``'s current value on ``day`` (a dwell starts)."""
        entered = self.entered
        if entered is NOTHING:
            entered = self.entered = {}
        entered[name] = shared_day(day)

    # -- applying events ---------------------------------------------------------------------

    def apply(
        self,
        event: Event,
        clock_day: int,
        windows: Windows,
        limits: Limits = DEFAULT_LIMITS,
        topic_day: int | None = None,
    ) -> bool:
        """Fold one event in; returns False when it changed nothing (a duplicate).

        ``topic_day`` is the clock of the event's own topic: the day of the newest event of its
        type that the partition applied before it (default ``clock_day``). Whether an order or
        a ticket is still open to a late event is decided by it, never by ``clock_day``, the
        partition's clock over all four topics: each topic is read in one order, while the
        topics interleave as fetches come (see :meth:`_apply_order`)."""
        day = shared_day(day_of(event.occurred_at))
        at = clock_day if topic_day is None else topic_day
        # ids go by the topic's clock, but never past the partition's: on the wall clock a
        # topic's clock can run a day ahead (events dated up to a day in the future), and an
        # id must stay while the activity windows, read at the partition's clock, count it
        ids_at = at if at < clock_day else clock_day
        memory = limits.event_id_memory_days
        kind = SEEN_KINDS[event.type]
        seen = self.activity.get(event.event_id)
        if seen is not None:
            if seen & _KIND_MASK != kind:
                # stored before ids had kinds (caught while stored, as then), or another
                # kind's event with this id (a producer's error)
                return False
            # compaction forgets an id by its kind's clock, whenever it runs: an id that clock
            # passed is treated as forgotten, whether compaction ran or not (its day is out of
            # every activity window by then, so its record changes no value while it stays)
            if ids_at - (seen >> _KIND_BITS) < memory:
                return False
        changed = False
        if ids_at - day < memory:
            if seen is not None:
                self._forget(event.event_id, seen)
            self.activity[event.event_id] = seen_record(day, kind)
            if self.windowed is not None:
                self.windowed.activity(day, 1)
            changed = True
        if self.last_activity_day is None or day > self.last_activity_day:
            self.last_activity_day = day
            changed = True
        if event.occurred_at > self.last_event_ms:
            self.last_event_ms = event.occurred_at
        if isinstance(event, OrderEvent):
            changed |= self._apply_order(event, day, at, windows, limits)
        elif isinstance(event, SupportEvent):
            if self._apply_ticket(event, day, at, windows):
                changed = True
                if len(self.tickets) > limits.max_open_tickets:
                    self._cap_open_tickets(limits.max_open_tickets)
        elif isinstance(event, SurveyEvent):
            # no window can see it, and compaction would drop it again (a late re-send)
            if clock_day - day < _survey_days(windows):
                key = event.survey_id if event.survey_id is not None else "\x00" + event.event_id
                old = self.surveys.get(key)
                if old is None or (old[0], old[1]) < (event.occurred_at, event.event_id):
                    self._windowed_survey(key, -1)
                    if self.surveys is NOTHING:
                        self.surveys = {}
                    self.surveys[key] = (event.occurred_at, event.event_id, day, event.score)
                    self._windowed_survey(key, 1)
                    changed = True
        elif isinstance(event, ProfileEvent):
            if self.attrs is NOTHING and event.attributes:
                self.attrs = {}
            for name, value in event.attributes.items():
                record = (event.occurred_at, event.event_id, _name(value))
                changed |= _lww(self.attrs, sys.intern(name), record)
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
            self._windowed_ticket(ticket_id, -1)
            del self.tickets[ticket_id]
        self._hit(LIMIT_OPEN_TICKETS, excess)

    def _apply_order(
        self, event: OrderEvent, day: int, order_day: int, windows: Windows, limits: Limits
    ) -> bool:
        """Compaction (:meth:`compact`) folds an order once the order clock is ``held`` days
        past it, and drops a correction of an absent order as late. It runs whenever its
        customer is evaluated, which depends on the other topics. So every event here treats
        what compaction *may* have folded or dropped by now as folded or dropped: which
        corrections count is decided by the orders topic alone, whenever compaction ran."""
        held = windows.horizon + LATE_DAYS
        order_id = event.order_id
        old = self.orders.get(order_id)
        if old is not None and order_day - old[2] >= held:
            return False  # foldable: nothing may change it any more, folded or not yet
        if event.status != "completed":
            if old is not None and day - old[2] >= windows.horizon:
                return False  # dated a horizon after its order: it cannot undo it (event time,
                # so the answer does not depend on when it arrives)
            if old is None and (order_day - day >= held or _digest(order_id) in self.folded_ids):
                return False  # too late to undo, and it would only take memory
            known = self.refunds.get(order_id)
            if (
                known is not None
                and known <= day
                and not (old is None and order_day - known >= held)
            ):
                return False
            self._windowed_order(order_id, -1)
            if self.refunds is NOTHING:
                self.refunds = {}
            self.refunds[order_id] = day
            self._windowed_order(order_id, 1)
            return True
        if _digest(order_id) in self.folded_ids:
            return False
        if old is None:
            known = self.refunds.get(order_id)
            if known is not None and order_day - known >= held:
                del self.refunds[order_id]  # compaction may have dropped it: as if it had
                known = None
            if known is None and order_day - day >= held:
                self._fold(order_id, day, event.amount)
                self._cap_folded_ids(limits)
                return True
        if old is not None and (old[0], old[1]) >= (event.occurred_at, event.event_id):
            return False
        self._windowed_order(order_id, -1)
        self.orders[order_id] = (event.occurred_at, event.event_id, day, event.amount)
        self._windowed_order(order_id, 1)
        return True

    def _refunded(self, order_id: str, day: int, horizon: int) -> bool:
        """Refunded or cancelled within a horizon of the order's day (later ones do not undo
        it): an event-time rule, the same whenever the correction arrives."""
        refunded = self.refunds.get(order_id)
        return refunded is not None and refunded - day < horizon

    def _apply_ticket(
        self, event: SupportEvent, day: int, ticket_day: int, windows: Windows
    ) -> bool:
        """As for orders (:meth:`_apply_order`), a closed ticket that compaction may have
        removed by now (``ticket_day``, the support topic's clock, a horizon past its last
        event) is treated as removed, whether it ran or not."""
        horizon = windows.horizon
        old = self.tickets.get(event.ticket_id)
        removable = old is not None and _closed_past(old, ticket_day, horizon)
        if removable:
            old = None
        if (
            old is None
            and ticket_day - day >= horizon
            and (removable or _digest(event.ticket_id) in self.closed_ids)
        ):
            # compaction removed (or may have removed) the ticket closed; every event of it it
            # had seen was at least a horizon old, so this late one (a duplicate, a re-send)
            # must not reopen it
            return False
        opened = day if event.status == "opened" else -1
        record: tuple[int, str, str, int]
        if old is not None:
            if old[3] >= 0 and (opened < 0 or old[3] < opened):
                opened = old[3]
            if (old[0], old[1]) >= (event.occurred_at, event.event_id):
                if opened == old[3]:
                    return False
                record = (old[0], old[1], old[2], opened)
            else:
                record = (event.occurred_at, event.event_id, event.status, opened)
        else:
            record = (event.occurred_at, event.event_id, event.status, opened)
        self._windowed_ticket(event.ticket_id, -1)
        if self.tickets is NOTHING:
            self.tickets = {}
        self.tickets[event.ticket_id] = record
        self._windowed_ticket(event.ticket_id, 1)
        return True

    # -- keeping the window index (an item is taken out before it changes, put back after) ----

    def _windowed_order(self, order_id: str, sign: int) -> None:
        windowed = self.windowed
        if windowed is None:
            return
        order = self.orders.get(order_id)
        if order is None:
            return
        refunded = self.refunds.get(order_id)
        if refunded is not None and refunded - order[2] < windowed.horizon:
            return  # not counted (see :meth:`_refunded`)
        windowed.order(order[2], sign)

    def _windowed_ticket(self, ticket_id: str, sign: int) -> None:
        windowed = self.windowed
        if windowed is not None:
            ticket = self.tickets.get(ticket_id)
            if ticket is not None:
                windowed.ticket(ticket[2] != "closed", ticket[3], sign)

    def _windowed_survey(self, key: str, sign: int) -> None:
        windowed = self.windowed
        if windowed is not None:
            survey = self.surveys.get(key)
            if survey is not None:
                windowed.survey(survey, sign)

    def _add_folded(self, order_id: str) -> None:
        ids = self.folded_ids
        if isinstance(ids, frozenset):
            ids = self.folded_ids = set()
        ids.add(_digest(order_id))

    def _fold(self, order_id: str, day: int, amount: Decimal) -> None:
        self._add_folded(order_id)
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
        topic_days: Mapping[str, int] | None = None,
    ) -> None:
        """Drop or fold what no window can see any more; bounded memory per customer. Orders
        and tickets go by their own topic's clock in ``topic_days`` (event type -> day;
        ``clock_day`` for a type it lacks; see :meth:`apply`)."""
        if clock_day - self.compacted_day < COMPACT_EVERY_DAYS:
            return
        self.compacted_day = shared_day(clock_day)
        horizon = windows.horizon
        held = horizon + LATE_DAYS
        clocks = {} if topic_days is None else topic_days
        orders_at = clocks.get("order", clock_day)
        tickets_at = clocks.get("support", clock_day)
        # each pass first picks what goes (one comprehension: usually nothing), then takes it
        # out in the collection's order; taking one item out changes no other's test
        old_orders = [(k, o[2], o[3]) for k, o in self.orders.items() if orders_at - o[2] >= held]
        for order_id, day, amount in old_orders:
            self._windowed_order(order_id, -1)
            del self.orders[order_id]
            if self._refunded(order_id, day, horizon):
                del self.refunds[order_id]
                self._add_folded(order_id)
            else:
                self._fold(order_id, day, amount)
        self._cap_folded_ids(limits)
        orders = self.orders
        for order_id in [
            k for k, day in self.refunds.items() if orders_at - day >= held and k not in orders
        ]:
            del self.refunds[order_id]
        survey_days = _survey_days(windows)
        for key in [k for k, sv in self.surveys.items() if clock_day - sv[2] >= survey_days]:
            self._windowed_survey(key, -1)
            del self.surveys[key]
        for ticket_id in [
            k for k, t in self.tickets.items() if _closed_past(t, tickets_at, horizon)
        ]:
            self._windowed_ticket(ticket_id, -1)
            del self.tickets[ticket_id]
            closed = self.closed_ids
            if isinstance(closed, frozenset):
                closed = self.closed_ids = set()
            closed.add(_digest(ticket_id))
        dropped = _keep_smallest(self.closed_ids, limits.max_closed_ticket_ids)
        self._hit(LIMIT_CLOSED_TICKET_IDS, dropped)
        memory = limits.event_id_memory_days
        # each kind's clock (never past the partition's: see apply), less the memory: ids seen
        # before it are forgotten
        forget_before = [clock_day - memory] + [
            min(clocks.get(kind, clock_day), clock_day) - memory for kind in SEEN_KINDS
        ]
        for event_id, seen in [
            (k, v)
            for k, v in self.activity.items()
            if v >> _KIND_BITS <= forget_before[v & _KIND_MASK]
        ]:
            self._forget(event_id, seen)

    def _forget(self, event_id: str, seen: int) -> None:
        del self.activity[event_id]
        if self.windowed is not None:
            self.windowed.activity(seen >> _KIND_BITS, -1)

    # -- reading -----------------------------------------------------------------------------

    def values(
        self, clock_day: int, windows: Windows, watch: frozenset[str] = frozenset()
    ) -> tuple[dict[str, Any], Exits]:
        """The state names rules read as of ``clock_day``, and for each window group in
        ``watch`` the days its current items leave it (so the scheduler knows when to look)."""
        values, windowed = self.read(clock_day, windows)
        return values, {group: windowed.exit_days(group) for group in watch}

    def read(
        self, clock_day: int, windows: Windows, *, keep: bool = True
    ) -> tuple[dict[str, Any], Windowed]:
        """The state names rules read as of ``clock_day``, and the window index they come from
        (whose :meth:`Windowed.first_exit` and :meth:`Windowed.kth_exit` say when items leave
        their windows). Reading changes no item.

        An index for another horizon than the kept one is built from the items; ``keep=False``
        (a shadow rule set's read) leaves the kept one in place, so the live rules' reads stay
        incremental while a shadow set with other windows runs."""
        w = self.windowed
        if w is None or w.horizon != windows.horizon:
            w = self._build(windows.horizon)
            if keep:
                self.windowed = w
        rfm_days, csi_days = windows.rfm_days, windows.csi_days
        w.day, w.rfm_days, w.csi_days = clock_day, rfm_days, csi_days
        days = w.order_days
        counted = len(days)
        lo = bisect_left(days, clock_day - rfm_days + 1)
        frequency = counted - lo
        folded = self.folded_count
        if w.money_version != w.version or w.money_lo != lo or w.money_folded != folded:
            # summed again only when the counted orders, the RFM window's slice of them or the
            # folded ones moved (Decimal sums round at 28 digits: always in the orders' order)
            exact_monetary, exact_total = self._sums(clock_day, windows)
            w.monetary, w.monetary_total = float(exact_monetary), float(exact_total)
            w.money_version, w.money_lo, w.money_folded = w.version, lo, folded
        if counted:
            first: int | None = days[0]
            last: int | None = days[-1]
        else:
            first = last = None
        folded_first = self.folded_first_day
        if folded_first is not None:
            first = folded_first if first is None or folded_first < first else first
            folded_last = self.folded_last_day
            assert folded_last is not None
            last = folded_last if last is None or folded_last > last else last
        opened = w.opened_days
        survey_days = w.survey_days
        n_surveys = len(survey_days)
        lo = bisect_left(survey_days, clock_day - csi_days + 1)
        responses = n_surveys - lo
        promoters = detractors = 0
        if responses:
            nps = 0
            for survey in w.surveys[lo:]:
                score = survey[3]
                if score >= 8:
                    promoters += 1
                    if score >= 9:
                        nps += 1
                elif 1 <= score <= 3:
                    detractors += 1
                if score <= 6:
                    nps -= 1
            last_score: int | None = w.surveys[-1][3]  # the latest is dated last: inside
            csi: float | None = promoters / max(detractors, 1)
            nps_value: float | None = 100.0 * nps / responses
        else:
            last_score = csi = nps_value = None
        activity = w.activity_days
        n_activity = len(activity)
        lo30 = bisect_left(activity, clock_day - ACTIVITY_DAYS + 1)
        recent = n_activity - lo30
        last_activity = self.last_activity_day
        values = {
            "recency_days": None if last is None else clock_day - last,
            "frequency": frequency,
            "monetary": w.monetary,
            "orders_total": self.folded_count + counted,
            "monetary_total": w.monetary_total,
            "tenure_days": None if first is None else clock_day - first,
            "orders_30d": counted - bisect_left(days, clock_day - 29),
            "orders_90d": counted - bisect_left(days, clock_day - 89),
            "tickets_open": w.tickets_open,
            "tickets_30d": len(opened) - bisect_left(opened, clock_day - 29),
            "surveys_90d": n_surveys - bisect_left(survey_days, clock_day - 89),
            "activity_30d": recent,
            "activity_trend": recent
            - (lo30 - bisect_left(activity, clock_day - 2 * ACTIVITY_DAYS + 1)),
            "days_since_activity": None if last_activity is None else clock_day - last_activity,
            "promoters": promoters,
            "detractors": detractors,
            "responses": responses,
            "last_score": last_score,
            "csi": csi,
            "nps": nps_value,
        }
        return values, w

    def _build(self, horizon: int) -> Windowed:
        """The window index for a horizon, from every item."""
        w = Windowed(horizon)
        refunds = self.refunds
        for order_id, (_, _, day, _) in self.orders.items():
            refunded = refunds.get(order_id)
            if refunded is None or refunded - day >= horizon:  # counted (see _refunded)
                w.order(day, 1)
        for _, _, status, opened in self.tickets.values():
            w.ticket(status != "closed", opened, 1)
        for survey in self.surveys.values():
            w.survey(survey, 1)
        for seen in self.activity.values():
            w.activity(seen >> _KIND_BITS, 1)
        return w

    def _sums(self, clock_day: int, windows: Windows) -> tuple[Decimal, Decimal]:
        """Monetary and monetary_total, summed in the orders' order."""
        monetary = ZERO
        total = self.folded_amount
        refunds = self.refunds
        horizon = windows.horizon
        rfm_days = windows.rfm_days
        for order_id, (_, _, day, amount) in self.orders.items():
            refunded = refunds.get(order_id)
            if refunded is not None and refunded - day < horizon:
                continue
            total += amount
            if clock_day - day < rfm_days:
                monetary += amount
        return monetary, total


class Windowed:
    """The days of a customer's items, sorted, for reading its windows at any day.

    Every window is "younger than n days": its items as of day ``c`` are those dated from
    ``c - n + 1`` on, a slice found by bisection, and an item dated ``d`` leaves it on day
    ``d + n``. An item that arrives, changes or goes is added or removed (each change of the
    items calls :meth:`order`, :meth:`ticket`, :meth:`survey` or :meth:`activity`), so a read
    never walks the items and nothing is done as days pass. Derived, never stored; which orders
    count depends on the horizon (a refund undoes an order within one), so it is rebuilt when
    the horizon changes.
    """

    __slots__ = (
        "activity_days",
        "csi_days",
        "day",
        "horizon",
        "items",
        "monetary",
        "monetary_total",
        "money_folded",
        "money_lo",
        "money_version",
        "opened_days",
        "order_days",
        "rfm_days",
        "survey_days",
        "surveys",
        "tickets_open",
        "version",
    )

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        # the day and windows of the last read (the ones exits are asked about)
        self.day = 0
        self.rfm_days = self.csi_days = 0
        # the days of the counted orders (not refunded within a horizon), sorted
        self.order_days: list[int] = _NO_DAYS  # (shared empty lists until the first item)
        self.version = 0  # counts the changes of the counted orders
        # counts the changes of the counted orders and of the surveys: what a group
        # contribution is made of (the engine recomputes one only when this moved)
        self.items = 0
        # monetary and monetary_total as of (version, the RFM window's first index in
        # order_days, folded orders)
        self.monetary = self.monetary_total = 0.0
        self.money_version = self.money_lo = self.money_folded = -1
        self.tickets_open = 0
        self.opened_days = _NO_DAYS  # of the tickets with an opened day
        # the kept survey records, sorted by (occurred_at, event_id), so also by day
        self.surveys: list[tuple[int, str, int, int]] = _NO_SURVEYS
        self.survey_days = _NO_DAYS
        self.activity_days = _NO_DAYS

    # -- items in and out --------------------------------------------------------------------

    def order(self, day: int, sign: int) -> None:
        """A counted order comes (+1) or goes (-1)."""
        self.version += 1
        self.items += 1
        self.order_days = _moved(self.order_days, day, sign)

    def ticket(self, is_open: bool, opened: int, sign: int) -> None:
        if is_open:
            self.tickets_open += sign
        if opened >= 0:
            self.opened_days = _moved(self.opened_days, opened, sign)

    def survey(self, survey: tuple[int, str, int, int], sign: int) -> None:
        self.items += 1
        if sign < 0:
            self.surveys.remove(survey)
        elif self.surveys is _NO_SURVEYS:
            self.surveys = [survey]
        else:
            insort(self.surveys, survey)
        self.survey_days = _moved(self.survey_days, survey[2], sign)

    def activity(self, day: int, sign: int) -> None:
        self.activity_days = _moved(self.activity_days, day, sign)

    # -- when items leave their windows (as of the last read) ---------------------------------

    def _window(self, group: str) -> tuple[list[int], int, int, int]:
        """A window group's sorted days, the slice of them inside it, and its length."""
        day = self.day
        if group in ("rfm", "o30", "o90"):
            days = self.order_days
            length = self.rfm_days if group == "rfm" else _LENGTH[group]
        elif group in ("s90", "csi"):
            days = self.survey_days
            length = self.csi_days if group == "csi" else _LENGTH[group]
        elif group == "t30":
            days, length = self.opened_days, 30
        else:
            days, length = self.activity_days, _LENGTH[group]
            if group == "a60":  # 30 to 59 days old
                lo = bisect_left(days, day - length + 1)
                return days, lo, bisect_left(days, day - ACTIVITY_DAYS + 1), length
        return days, bisect_left(days, day - length + 1), len(days), length

    def first_exit(self, group: str) -> int | None:
        """The first day an item of a window group leaves it."""
        return FIRST_EXIT[group](self)

    def kth_exit(self, group: str, k: int) -> int | None:
        """The day the ``k``-th item (from 1) of a window group leaves it; None if fewer."""
        days, lo, hi, length = self._window(group)
        return days[lo + k - 1] + length if 0 < k <= hi - lo else None

    def exit_days(self, group: str) -> list[int]:
        """Every exit day of a window group, one per item, in order."""
        days, lo, hi, length = self._window(group)
        return [day + length for day in days[lo:hi]]


# The first exit of each window group (what :meth:`Windowed.first_exit` answers), one function
# per group: the scheduler asks for every group its rules read after every evaluation, and
# these find the slice with one bisection each, as :meth:`Windowed._window` does, without
# choosing the group's days and length first.


def _first_rfm(w: Windowed) -> int | None:
    days, length = w.order_days, w.rfm_days
    lo = bisect_left(days, w.day - length + 1)
    return days[lo] + length if lo < len(days) else None


def _first_o30(w: Windowed) -> int | None:
    days = w.order_days
    lo = bisect_left(days, w.day - 29)
    return days[lo] + 30 if lo < len(days) else None


def _first_o90(w: Windowed) -> int | None:
    days = w.order_days
    lo = bisect_left(days, w.day - 89)
    return days[lo] + 90 if lo < len(days) else None


def _first_t30(w: Windowed) -> int | None:
    days = w.opened_days
    lo = bisect_left(days, w.day - 29)
    return days[lo] + 30 if lo < len(days) else None


def _first_s90(w: Windowed) -> int | None:
    days = w.survey_days
    lo = bisect_left(days, w.day - 89)
    return days[lo] + 90 if lo < len(days) else None


def _first_csi(w: Windowed) -> int | None:
    days, length = w.survey_days, w.csi_days
    lo = bisect_left(days, w.day - length + 1)
    return days[lo] + length if lo < len(days) else None


def _first_a30(w: Windowed) -> int | None:
    days = w.activity_days
    lo = bisect_left(days, w.day - ACTIVITY_DAYS + 1)
    return days[lo] + ACTIVITY_DAYS if lo < len(days) else None


def _first_a60(w: Windowed) -> int | None:
    """30 to 59 days old: the items before the 30-day window's slice."""
    days, day = w.activity_days, w.day
    lo = bisect_left(days, day - 2 * ACTIVITY_DAYS + 1)
    if lo < len(days) and days[lo] < day - ACTIVITY_DAYS + 1:
        return days[lo] + 2 * ACTIVITY_DAYS
    return None


FIRST_EXIT: dict[str, Callable[[Windowed], int | None]] = {
    "rfm": _first_rfm,
    "o30": _first_o30,
    "o90": _first_o90,
    "t30": _first_t30,
    "s90": _first_s90,
    "csi": _first_csi,
    "a30": _first_a30,
    "a60": _first_a60,
}


def _moved(days: list[int], day: int, sign: int) -> list[int]:
    """``days`` with ``day`` added (+1) or removed (-1), sorted."""
    if sign < 0:
        del days[bisect_left(days, day)]
    elif days is _NO_DAYS:
        return [day]
    else:
        insort(days, day)
    return days


# The lists of a Windowed without items of a kind: shared, never changed (a list is made on
# the first item; most customers have no tickets or surveys).
_NO_DAYS: list[int] = []
_NO_SURVEYS: list[tuple[int, str, int, int]] = []


# Days in the fixed-length windows, by group (rfm and csi are the rules' windows).
_LENGTH = {
    "o30": 30,
    "o90": 90,
    "t30": 30,
    "s90": 90,
    "a30": ACTIVITY_DAYS,
    "a60": 2 * ACTIVITY_DAYS,
}


def _digest(natural_id: str) -> int:
    return int.from_bytes(blake2b(natural_id.encode(), digest_size=8).digest(), "big")


def _closed_past(ticket: tuple[int, str, str, int], ticket_day: int, horizon: int) -> bool:
    """Closed, and a horizon past its last event by the support topic's clock: what
    compaction removes, and what an arriving event must treat as removed whether compaction
    ran or not (one test for both, so the two cannot drift apart)."""
    return ticket[2] == "closed" and ticket_day - max(day_of(ticket[0]), ticket[3]) >= horizon


def _keep_smallest(digests: set[int] | frozenset[int], limit: int) -> int:
    """Trim to the ``limit`` smallest (a bottom-k set: the same whatever the order of adds);
    returns how many were dropped."""
    excess = len(digests) - limit
    if excess <= 0 or isinstance(digests, frozenset):  # (a frozenset is the empty NO_IDS)
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
# 4: ``activity`` holds seen_record(day, kind) for each event id (the kind of event it came
#    with); 3: named fields (an added field can no longer shift the others), empty ones left
#    out, and ``closed_ids``; 2: positional, added ``quantiles``; 1: positional. All four are
#    read; an id from 3 or older has kind 0 (forgotten by the partition's clock, as then).
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
        "timeline": st.timeline,  # (entries as tuples, arrays as before)
        "entered": st.entered,
    }
    for name, empty in _EMPTY.items():
        value = data[name]
        if value == empty and (type(value) is type(empty) or value is NOTHING):
            del data[name]
    # a copy of exactly its length: orjson's own bytes object keeps the buffer it grew while
    # writing (about 8 KiB of RSS for a 1 KB state, measured), and stored states are held for
    # as long as their customer: in the memory table store and in the engine's cold set
    return bytes(memoryview(orjson.dumps(data)))


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
    """A stored state as the running engine holds it. A replacement worker decodes every
    customer of its partitions with this, so a stored item costs no Python call of its own:
    ``day(v) or shared_day(v)`` is ``shared_day(v)`` for a day already known, ``intern(v) if
    type(v) is str else v`` is ``_name(v)``, and JSON object keys are always text."""
    data = orjson.loads(raw)
    if isinstance(data, list) and data and data[0] in (1, 2):
        return _load_positional(data)
    if not isinstance(data, dict) or data.get("format") not in (3, _FORMAT):
        version = data.get("format") if isinstance(data, dict) else data[:1]
        raise ValueError(f"unknown state format {version!r}")
    st = CustomerState(data["customer_id"])
    get = data.get
    day, intern = _DAYS.get, sys.intern
    # What a decoded state holds as fresh objects in every customer (days, names, a ticket's
    # status) is shared as the running engine shares it (see shared_day and _name), and an
    # order's event id is the activity record's (one string, as when the event was applied):
    # a recovered worker holds every customer this way. Values are equal, bytes unchanged.
    stored = get("activity")
    activity: dict[str, int] = {}
    if stored and data["format"] == 3:
        activity = {k: seen_record(v, 0) for k, v in stored.items()}
    elif stored:
        activity = {k: day(v) or shared_day(v) for k, v in stored.items()}
    event_ids = {k: k for k in activity}.get if activity else _same
    stored = get("orders")
    st.orders = (
        {
            o[0]: (o[1], event_ids(o[2], o[2]), day(o[3]) or shared_day(o[3]), Decimal(o[4]))
            for o in stored
        }
        if stored
        else {}
    )
    stored = get("refunds")
    st.refunds = {k: day(v) or shared_day(v) for k, v in stored.items()} if stored else NOTHING
    st.folded_count = get("folded_count", 0)
    st.folded_amount = Decimal(get("folded_amount", "0"))
    st.folded_first_day = _day_or_none(get("folded_first_day"))
    st.folded_last_day = _day_or_none(get("folded_last_day"))
    st.folded_ids = _ids(get("folded_ids"))
    st.closed_ids = _ids(get("closed_ids"))
    stored = get("tickets")
    st.tickets = (
        {
            k: (
                t[0],
                event_ids(t[1], t[1]),
                intern(t[2]) if type(t[2]) is str else t[2],
                day(t[3]) or shared_day(t[3]),
            )
            for k, t in stored.items()
        }
        if stored
        else NOTHING
    )
    stored = get("surveys")
    st.surveys = (
        {
            k: (s[0], event_ids(s[1], s[1]), day(s[2]) or shared_day(s[2]), s[3])
            for k, s in stored.items()
        }
        if stored
        else NOTHING
    )
    stored = get("attrs")
    st.attrs = (
        {
            intern(k): (a[0], event_ids(a[1], a[1]), intern(a[2]) if type(a[2]) is str else a[2])
            for k, a in stored.items()
        }
        if stored
        else NOTHING
    )
    st.activity = activity
    st.last_activity_day = _day_or_none(get("last_activity_day"))
    st.last_event_ms = get("last_event_ms", 0)
    st.compacted_day = shared_day(data["compacted_day"])
    stored = get("segments")
    st.segments = (
        {intern(k): intern(v) if type(v) is str else v for k, v in stored.items()} if stored else {}
    )
    st.seq = get("seq", 0)
    st.due_day = _day_or_none(get("due_day"))
    stored = get("quantiles")
    if stored:
        st.ranked = tuple(item for k, q in stored.items() for item in (intern(k), q[0], q[1]))
    stored = get("timeline")
    if stored:
        flat: list[Any] = []
        add = flat.extend
        for t in stored:
            segment, old, new = t[1], t[2], t[3]
            add(
                (
                    t[0],
                    intern(segment) if type(segment) is str else segment,
                    intern(old) if type(old) is str else old,
                    intern(new) if type(new) is str else new,
                    t[4],
                    t[5],
                )
            )
        st.transitions = tuple(flat)
    stored = get("entered")
    st.entered = (
        {intern(k): day(v) or shared_day(v) for k, v in stored.items()} if stored else NOTHING
    )
    return st


def _same(key: str, default: str) -> str:
    return default


def _ids(stored: list[int] | None) -> set[int] | frozenset[int]:
    return set(stored) if stored else NO_IDS


def _load_positional(data: list[Any]) -> CustomerState:
    """Formats 1 and 2, as written before fields had names."""
    st = CustomerState(data[1])
    st.orders = {o[0]: (o[1], o[2], o[3], Decimal(o[4])) for o in data[2]}
    st.refunds = data[3] or NOTHING
    st.folded_count = data[4]
    st.folded_amount = Decimal(data[5])
    st.folded_first_day, st.folded_last_day = data[6], data[7]
    st.folded_ids = _ids(data[8])
    st.tickets = {k: (t[0], t[1], t[2], t[3]) for k, t in data[9].items()} or NOTHING
    st.surveys = {k: (s[0], s[1], s[2], s[3]) for k, s in data[10].items()} or NOTHING
    st.attrs = {k: (a[0], a[1], a[2]) for k, a in data[11].items()} or NOTHING
    st.activity = {k: seen_record(v, 0) for k, v in data[12].items()}
    st.last_activity_day, st.last_event_ms, st.compacted_day = data[13], data[14], data[15]
    st.segments, st.seq, st.due_day = data[16], data[17], data[18]
    if data[0] >= 2:
        st.quantiles = {k: (q[0], q[1]) for k, q in data[19].items()}
    return st
