"""Change events from core/changes.py: the id and the body the engine always wrote."""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from segstream.core.changes import ChangeBuilder, state_reader
from tests.unit.factories import default_rules

KEYS = [
    "event_id",
    "customer_id",
    "family",
    "segment",
    "from",
    "to",
    "change",
    "seq",
    "at",
    "cause",
    "reason",
    "state",
    "action",
    "owner",
    "touch",
]


def build(
    builder: ChangeBuilder, family: str, old: Any, new: Any, values: dict[str, Any] | None = None
) -> dict[str, Any]:
    return builder.build(
        "C1", 7, family, family, old, new, "entered", "event", None, 0, None, None, values or {}
    )


def test_the_id_is_the_digest_of_the_str_join_of_its_parts() -> None:
    rules = default_rules()
    builder = ChangeBuilder(rules)
    change = build(builder, "onboarding", False, True)
    parts = ("C1", 7, "onboarding", False, True, "event", None, rules.version)
    key = "\x1f".join(map(str, parts))
    assert change["event_id"] == blake2b(key.encode(), digest_size=16).hexdigest()
    assert list(change) == KEYS


def test_state_reads_every_name_in_order_and_a_missing_one_as_null() -> None:
    rules = default_rules()
    builder = ChangeBuilder(rules)
    reads = rules.reads["health"]
    full = {name: i for i, name in enumerate(reversed(reads))} | {"other": 1}
    assert list(build(builder, "health", None, "healthy", values=full)["state"].items()) == [
        (name, full[name]) for name in reads
    ]
    partial = {reads[0]: 5}
    assert build(builder, "health", None, "healthy", values=partial)["state"] == {
        name: partial.get(name) for name in reads
    }
    assert build(builder, "no_longer_a_rule", True, False)["state"] == {}


def test_a_reader_of_odd_names_reads_them_as_keys() -> None:
    names = ("a'b", 'c"d', "e\\f", "}")
    assert state_reader(names)({n: n for n in names}) == {n: n for n in names}
    assert state_reader(())({"x": 1}) == {}
