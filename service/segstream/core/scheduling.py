"""When a customer must be evaluated again without any event of its own.

Time alone moves some values: a window count drops when an item leaves its window, a day
counter (``days_since_last_order``, a date attribute's ``days_to_renewal``) moves every day.
Re-evaluating every customer every day would cost the whole population per day, so each
evaluation asks :meth:`Schedule.next_change_day` for the first day on which a rule could read a
different answer, and a lane's :class:`DueIndex` wakes the customer then: a clock day costs the
customers due on it, not the population.

Both are prepared per rule set and per lane by :class:`segstream.core.engine.Engine`; nothing
here touches a customer's state besides reading its values and window index.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any

from segstream.core.rulelang import RuleSet
from segstream.core.state import DAY_COUNTERS, FIRST_EXIT, WINDOW_GROUPS, Windowed


class DueIndex:
    """One lane's customers by the day they are next due: a set per day and a heap of days.

    A customer is in at most one day's set (:meth:`move` takes it out of its old day); a day
    whose set emptied stays in the heap and costs one pop when its turn comes."""

    __slots__ = ("by_day", "days")

    def __init__(self) -> None:
        self.by_day: dict[int, set[str]] = {}
        self.days: list[int] = []

    def move(self, customer_id: str, old: int | None, new: int | None) -> None:
        if old is not None:
            self.discard(customer_id, old)
        if new is not None:
            members = self.by_day.get(new)
            if members is None:
                self.by_day[new] = members = set()
                heapq.heappush(self.days, new)
            members.add(customer_id)

    def discard(self, customer_id: str, day: int) -> None:
        members = self.by_day.get(day)
        if members is not None:
            members.discard(customer_id)

    def pop_through(self, day: int) -> Iterator[str]:
        """The customers due on ``day`` or before, a day at a time, each day's in id order
        (the order their changes take, whatever the order they were scheduled in)."""
        while self.days and self.days[0] <= day:
            d = heapq.heappop(self.days)
            yield from sorted(self.by_day.pop(d, ()))


class Schedule:
    """Which time-driven values one rule set can tell apart, and so when a customer is due."""

    __slots__ = ("boundary_exit", "counters", "every_exit")

    def __init__(self, rules: RuleSet, date_counters: list[tuple[str, str, int]]) -> None:
        used, opaque, bounds = rules.used_fields, rules.opaque_fields, rules.boundaries
        # window groups whose every exit matters: a value read beyond a count compared with
        # literals (a sum, a mean, the count inside arithmetic), by their first-exit function
        self.every_exit: list[Callable[[Windowed], int | None]] = []
        # (group, its count, the literals it is compared with): due when a threshold is crossed
        self.boundary_exit: list[tuple[str, str, tuple[int, ...]]] = []
        for group, (count, names) in WINDOW_GROUPS.items():
            read = used & names
            if not read:
                continue
            if count is None or read - {count} or count in opaque:
                self.every_exit.append(FIRST_EXIT[group])
            elif count in bounds:
                self.boundary_exit.append((group, count, bounds[count]))
        # (counter, read other than against literals, thresholds, +1 or -1 a day)
        self.counters: list[tuple[str, bool, tuple[int, ...], int]] = [
            (c, c in opaque, bounds.get(c, ()), 1)
            for c in DAY_COUNTERS
            if c in opaque or c in bounds
        ]
        self.counters += [
            (c, c in opaque, bounds.get(c, ()), step)
            for c, _, step in date_counters
            if c in opaque or c in bounds
        ]

    def next_change_day(self, today: int, values: dict[str, Any], windowed: Windowed) -> int | None:
        """The first day after today on which a rule reading a time-dependent value may flip.

        Window counts compared only with literals matter when they cross a boundary, so a
        customer with 9 recent events and a rule ``activity_30d >= 3`` is due when the 7th of
        them leaves the window, not at each exit. Everything else is due at its next exit.
        """
        best: int | None = None
        for first_exit in self.every_exit:
            first = first_exit(windowed)
            if first is not None and (best is None or first < best):
                best = first
        for group, count, bounds in self.boundary_exit:
            value = values[count]  # the group's items in its window
            i = bisect_right(bounds, value)
            if i == 0:
                continue
            day = windowed.kth_exit(group, value - bounds[i - 1] + 1)
            if day is not None and (best is None or day < best):
                best = day
        for counter, every_day, bounds, step in self.counters:
            value = values[counter]
            if value is None:
                continue
            i = bisect_right(bounds, value)
            if every_day:
                candidate = today + 1
            elif step > 0:  # rising: it reaches the next threshold above it
                if i == len(bounds):
                    continue
                candidate = today + bounds[i] - value
            else:  # falling: it drops below the highest threshold at or under it
                if i == 0:
                    continue
                candidate = today + value - bounds[i - 1] + 1
            if best is None or candidate < best:
                best = candidate
        return best


__all__ = ["DueIndex", "Schedule"]
