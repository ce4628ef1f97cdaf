"""Event and engine factories with sensible defaults, so each test states only what matters."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson

from segstream.core.engine import Engine
from segstream.core.rulelang import RuleSet, compile_rules, load_rules
from segstream.core.timeutil import MS_PER_DAY

ROOT = Path(__file__).resolve().parents[2]
DAY0 = 20_000  # 2024-10-04, an arbitrary UTC day number
_ids = itertools.count(1)


def at(day: int, hour: int = 12) -> int:
    """Epoch ms of ``hour`` o'clock on day ``DAY0 + day``."""
    return (DAY0 + day) * MS_PER_DAY + hour * 3_600_000


def event(kind: str, customer: str = "C1", day: int = 0, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": fields.pop("event_id", f"e{next(_ids)}"),
        "type": kind,
        "customer_id": customer,
        "occurred_at": at(day, fields.pop("hour", 12)),
    }
    body.update(fields)
    return body


def order(
    customer: str = "C1", day: int = 0, amount: Any = "10.00", **fields: Any
) -> dict[str, Any]:
    fields.setdefault("order_id", f"o{next(_ids)}")
    return event("order", customer, day, amount=amount, **fields)


def raw(*events: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def default_rules() -> RuleSet:
    return load_rules(ROOT / "rules")


def rules_from(text: str, name: str = "rules.yaml") -> RuleSet:
    return compile_rules({name: text})


def engine_for(text: str | None = None, **kwargs: Any) -> Engine:
    return Engine(default_rules() if text is None else rules_from(text), **kwargs)
