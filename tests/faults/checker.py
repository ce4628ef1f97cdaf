"""The fault checker: what a consumer of ``segment-changes`` would see, judged per customer.

Pure functions over change bodies (dicts as the worker sends them), so the checker itself is
unit-tested with hand-made lists (tests/unit/test_fault_checker.py). Categories:

- **lost**: a customer's sequence numbers must be 1..n without a hole; every missing number is
  a change that was never delivered.
- **id conflicts**: a ``(customer_id, seq)`` pair carrying two or more different ``event_id``\\ s:
  two different histories were emitted for the same customer, so de-duplicating on
  ``event_id`` cannot give a consistent stream. Must be 0.
- **duplicates**: a record whose ``event_id`` was already delivered (a re-emission after a
  restart). Allowed under at-least-once; counted.
- **chain breaks**: applying the de-duplicated records in log order, a change's ``from`` is not
  the ``to`` of the previous change of the same customer and family (a consumer's view jumps).
- **final segments**: the last ``to`` per (customer, family) in log order, or the segments a
  worker serves, compared with a reference (the offline replay, or a never-killed run).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Change = Mapping[str, Any]
Segments = Mapping[str, Any]
MISSING = "<missing>"  # a (customer, family) the compared side does not know at all


@dataclass(frozen=True)
class ChangeReport:
    changes: int
    customers: int
    lost: dict[str, list[int]]  # customer -> sequence numbers that never arrived
    conflicts: dict[tuple[str, int], list[str]]  # (customer, seq) -> its different event ids
    duplicates: int  # records whose event_id had already been delivered
    chain_breaks: list[tuple[str, str, int]]  # (customer, family, seq) whose from != last to

    @property
    def lost_changes(self) -> int:
        return sum(len(seqs) for seqs in self.lost.values())


def check_changes(changes: Iterable[Change]) -> ChangeReport:
    """Sequence, id and chain checks over the whole topic, in log order."""
    ids_of: dict[tuple[str, int], list[str]] = defaultdict(list)
    seen: set[str] = set()
    current: dict[tuple[str, str], Any] = {}
    total = duplicates = 0
    breaks: list[tuple[str, str, int]] = []
    for change in changes:
        total += 1
        customer, seq, event_id = change["customer_id"], int(change["seq"]), change["event_id"]
        if event_id not in ids_of[(customer, seq)]:
            ids_of[(customer, seq)].append(event_id)
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        key = (customer, change["family"])
        if key in current and current[key] != change["from"]:
            breaks.append((customer, change["family"], seq))
        current[key] = change["to"]
    seqs: dict[str, set[int]] = defaultdict(set)
    for customer, seq in ids_of:
        seqs[customer].add(seq)
    lost = {
        customer: sorted(set(range(1, max(got) + 1)) - got)
        for customer, got in seqs.items()
        if got != set(range(1, max(got) + 1))
    }
    conflicts = {key: ids for key, ids in ids_of.items() if len(ids) > 1}
    return ChangeReport(total, len(seqs), lost, conflicts, duplicates, breaks)


def final_segments(changes: Iterable[Change]) -> dict[str, dict[str, Any]]:
    """Per customer and family, the ``to`` of the last change in log order (what a consumer that
    applies the topic in order ends with)."""
    final: dict[str, dict[str, Any]] = defaultdict(dict)
    for change in changes:
        final[change["customer_id"]][change["family"]] = change["to"]
    return dict(final)


@dataclass(frozen=True)
class SegmentDiff:
    differ: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)  # got, want

    @property
    def pairs(self) -> int:
        return len(self.differ)

    @property
    def customers(self) -> int:
        return len({customer for customer, _ in self.differ})

    def by_family(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for _, family in self.differ:
            counts[family] += 1
        return dict(sorted(counts.items()))


def compare_segments(
    got: Mapping[str, Segments | None],
    want: Mapping[str, Segments],
    *,
    absent_is_default: bool = False,
) -> SegmentDiff:
    """Every (customer, family) where ``got`` differs from ``want``.

    ``absent_is_default``: ``got`` comes from the change topic, where a family that never
    changed has no record; it then stands for the family's default (``None``, or ``False`` for
    a flag), which is all a consumer can assume.
    """
    differ: dict[tuple[str, str], tuple[Any, Any]] = {}
    for customer in sorted(set(got) | set(want)):
        mine, theirs = got.get(customer), want.get(customer)
        families = set(mine or {}) | set(theirs or {})
        for family in sorted(families):
            value = _value(mine, family, absent_is_default, theirs)
            expected = theirs.get(family, MISSING) if theirs is not None else MISSING
            if value != expected:
                differ[(customer, family)] = (value, expected)
    return SegmentDiff(differ)


def _value(
    segments: Segments | None, family: str, absent_is_default: bool, want: Segments | None
) -> Any:
    if segments is not None and family in segments:
        return segments[family]
    if absent_is_default and want is not None and want.get(family) in (None, False):
        return want[family]  # no record for it: the default, whichever of None/False it is
    return MISSING
