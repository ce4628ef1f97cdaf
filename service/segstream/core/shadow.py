"""Shadow rule sets: what a candidate rule set would do, measured on the live stream and state.

A shadow set is evaluated beside the live one on the same customers' states and emits nothing.
For every customer the engine keeps the segments the shadow set gives it; comparing them with
the live segments says, per segment, how many customers would enter, exit, move up or move
down if the shadow set were promoted now (``moves``), exactly as the change events of that
promotion would call them: tiers ranked in the shadow set's order, a family or flag the shadow
set drops counted as exited. The same comparison runs offline (``segstream rules diff``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from segstream.core.rulelang import RuleSet

SAMPLE = 10  # customer ids kept per segment and kind of move
KINDS = ("entered", "exited", "upgraded", "downgraded")

Move = tuple[str, Any, Any, str]  # (segment name, live value, shadow value, kind)


def compare(
    live: RuleSet, shadow: RuleSet, live_segments: dict[str, Any], shadow_segments: dict[str, Any]
) -> tuple[Move, ...]:
    """The changes promoting ``shadow`` would make to one customer."""
    moves: list[Move] = []
    for name in dict.fromkeys([*live.segment_names, *shadow.segment_names]):
        is_flag = name in shadow.flags or (name not in shadow.families and name in live.flags)
        old = live_segments.get(name)
        new = shadow_segments.get(name)
        if is_flag:
            old, new = bool(old), bool(new)
            if old != new:
                moves.append((name, old, new, "entered" if new else "exited"))
            continue
        if old == new:
            continue
        if old is None:
            kind = "entered"
        elif new is None:
            kind = "exited"
        else:
            family = shadow.families[name]
            kind = "upgraded" if family.rank(new) < family.rank(old) else "downgraded"
        moves.append((name, old, new, kind))
    return tuple(moves)


def label(value: Any) -> str:
    """A move's from/to as the transition metrics name it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "in" if value else "out"
    return str(value)


@dataclass
class ShadowReport:
    """The standing difference between the live and a shadow rule set, kept per customer."""

    live: RuleSet
    rules: RuleSet
    moves: dict[str, tuple[Move, ...]] = field(default_factory=dict)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (segment, kind)
    matrix: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # segment, from, to
    samples: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    compared: set[str] = field(default_factory=set)

    def observe(
        self, customer_id: str, live_segments: dict[str, Any], shadow_segments: dict[str, Any]
    ) -> None:
        self.forget(customer_id)
        self.compared.add(customer_id)
        moves = compare(self.live, self.rules, live_segments, shadow_segments)
        if not moves:
            return
        self.moves[customer_id] = moves
        for name, old, new, kind in moves:
            self.counts[(name, kind)] += 1
            self.matrix[(name, label(old), label(new))] += 1
            sample = self.samples.setdefault((name, kind), [])
            if len(sample) < SAMPLE:
                sample.append(customer_id)

    def forget(self, customer_id: str) -> None:
        self.compared.discard(customer_id)
        moves = self.moves.pop(customer_id, ())
        for name, old, new, kind in moves:
            self.counts[(name, kind)] -= 1
            self.matrix[(name, label(old), label(new))] -= 1
            sample = self.samples.get((name, kind))
            if sample is not None and customer_id in sample:
                sample.remove(customer_id)

    def forget_all(self, customer_ids: Iterable[str]) -> None:
        for customer_id in customer_ids:
            self.forget(customer_id)

    def summary(self) -> dict[str, Any]:
        """Totals per segment and kind, a sample of customer ids, and the from -> to matrix."""
        segments: dict[str, Any] = {}
        for name in dict.fromkeys([*self.live.segment_names, *self.rules.segment_names]):
            counts = {kind: self.counts.get((name, kind), 0) for kind in KINDS}
            sample = {kind: sorted(self.samples.get((name, kind), ())) for kind in KINDS}
            segments[name] = counts | {"sample": {k: v for k, v in sample.items() if v}}
        return {
            "live": self.live.version,
            "shadow": self.rules.version,
            "customers_compared": len(self.compared),
            "customers_moving": len(self.moves),
            "segments": segments,
            "matrix": [
                {"segment": name, "from": old, "to": new, "customers": n}
                for (name, old, new), n in sorted(self.matrix.items())
                if n
            ],
        }
