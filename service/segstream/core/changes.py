"""Segment-change events: their ids and bodies, built at stream speed.

Every membership change the engine decides becomes one of these dicts, so building one is on
the hot path of every event that moves a customer (a replay of the benchmark file builds close
to three for each event). What a rule set fixes (its version, which values each segment reads,
the playbook of each tier and flag) is prepared once per rule set in a :class:`ChangeBuilder`;
what is left per change is the id digest and the dict itself.

The bytes must never change (docs/contracts.md, segment-change events): consumers deduplicate
on ``event_id``, and a re-sent change (after a crash) must carry the id it had. The id is the
BLAKE2b-128 digest of ``customer_id, seq, family, from, to, cause, cause event id, rules
version`` joined with U+001F, each written as ``str()`` writes it (``None``, ``True``); every
key of the dict keeps its place.
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b
from typing import Any

from segstream.core.rulelang import RuleSet
from segstream.core.rulelang.ruleset import NO_PLAYBOOK, Playbook
from segstream.core.timeutil import to_rfc3339

Change = dict[str, Any]
StateReader = Callable[[dict[str, Any]], dict[str, Any]]


def state_reader(reads: tuple[str, ...]) -> StateReader:
    """A function from a customer's values to ``{name: values[name] for name in reads}``.

    It is one dict display compiled for these names (no loop, no method call per name), which
    builds a change's ``state`` in about two thirds of the comprehension's time. It raises
    KeyError when a name is missing (an erasure passes no values): the caller then falls back
    to ``values.get`` so a missing name still reads as null. Names are written with ``repr``,
    a string literal whatever they hold.
    """
    items = ", ".join(f"{name!r}: v[{name!r}]" for name in reads)
    # the source holds repr() literals only, whatever the names are
    reader: StateReader = eval(
        compile(f"lambda v: {{{items}}}", "<state>", "eval"), {"__builtins__": {}}
    )
    return reader


# what a rule set does not know: a segment of earlier rules (exits after a rule change, erasure)
_UNKNOWN: tuple[tuple[str, ...], StateReader, dict[Any, Playbook]] = ((), state_reader(()), {})


class ChangeBuilder:
    """Builds the change events of one rule set (a new rule set gets a new builder)."""

    __slots__ = ("_at", "_at_ms", "_segments", "version")

    def __init__(self, rules: RuleSet) -> None:
        self.version = rules.version
        playbooks: dict[tuple[str, Any], Playbook] = {
            (name, tier.name): tier.playbook
            for name, family in rules.families.items()
            for tier in family.tiers
        } | {(name, name): flag.playbook for name, flag in rules.flags.items()}
        by_segment: dict[str, dict[Any, Playbook]] = {}
        for (owner, segment), playbook in playbooks.items():
            by_segment.setdefault(owner, {})[segment] = playbook
        # family or flag -> (names it reads, their reader, playbook by segment); one lookup
        self._segments: dict[str, tuple[tuple[str, ...], StateReader, dict[Any, Playbook]]] = {
            name: (reads, state_reader(reads), by_segment.get(name, {}))
            for name, reads in rules.reads.items()
        }
        for name, segments in by_segment.items():
            if name not in self._segments:
                self._segments[name] = ((), _UNKNOWN[1], segments)
        # the last time formatted: a change rarely comes alone (one event, several segments;
        # one clock day, many customers)
        self._at_ms: int | None = None
        self._at = ""

    def build(
        self,
        customer_id: str,
        seq: int,
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
        version = self.version
        # f-string fields are format(x, ""), which is str(x) for every value here (str, int,
        # None, bool): the same text as "\x1f".join(map(str, parts)), in one step
        key = (
            f"{customer_id}\x1f{seq}\x1f{family}\x1f{old}\x1f{new}\x1f{cause}\x1f{event_id}"
            f"\x1f{version}"
        )
        reads, reader, playbooks = self._segments.get(family, _UNKNOWN)
        try:
            state = reader(values)
        except KeyError:
            state = {name: values.get(name) for name in reads}
        playbook = playbooks.get(segment, NO_PLAYBOOK)
        if at_ms != self._at_ms:
            self._at = to_rfc3339(at_ms)
            self._at_ms = at_ms
        return {
            "event_id": blake2b(key.encode(), digest_size=16).hexdigest(),
            "customer_id": customer_id,
            "family": family,
            "segment": segment,
            "from": old,
            "to": new,
            "change": kind,
            "seq": seq,
            "at": self._at,
            "cause": {"kind": cause, "event_id": event_id, "rules_version": version},
            "reason": {"matched": matched, "failed": failed},
            "state": state,
            "action": playbook.action,
            "owner": playbook.owner,
            "touch": playbook.touch,
        }
