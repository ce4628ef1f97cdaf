"""Segments and changes as people read them: tier names, ``-`` for none, flags ``in``/``out``
(never Python's ``None`` or ``False``). Machine outputs (JSON, metrics labels) keep the values."""

from __future__ import annotations

from typing import Any


def segment_label(value: Any, *, none: str = "-") -> str:
    """A family's tier, ``none`` when the customer is in no tier; a flag ``in`` or ``out``."""
    if value is None:
        return none
    if value is True:
        return "in"
    if value is False:
        return "out"
    return str(value)


def describe_change(change: Any) -> str:
    """One line for humans (the demo prints these)."""
    cause = change["cause"]["kind"]
    old, new = segment_label(change["from"]), segment_label(change["to"])
    return (
        f"{change['at'][:19]} {change['customer_id']:<10} {change['family']:<18} "
        f"{old:>18} -> {new:<18} {change['change']:<10} ({cause})"
    )
