"""Seeded, reproducible synthetic events that look like a real customer base.

Customers follow personas (loyal buyers, occasional buyers, churners, leads that never buy),
so every default segment gets members. The same seed gives the same file, byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zlib import crc32

from segstream.core.timeutil import MS_PER_DAY, to_rfc3339

# persona: (share, orders per year, mean amount, survey mood, tickets per year)
PERSONAS: dict[str, tuple[float, float, float, float, float]] = {
    "loyal": (0.15, 14.0, 120.0, 0.8, 1.0),
    "regular": (0.30, 5.0, 60.0, 0.6, 1.5),
    "occasional": (0.25, 1.5, 40.0, 0.5, 0.5),
    "churner": (0.15, 6.0, 80.0, 0.2, 4.0),
    "lead": (0.15, 0.0, 0.0, 0.5, 0.0),
}
ACCOUNT_MANAGERS = ("ana", "ben", "chloe", "dev", "eva", "finn")
INDUSTRIES = ("retail", "software", "manufacturing", "health", "finance", "logistics")
SIZES = ("small", "medium", "large", "enterprise")
DEFAULT_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class SynthConfig:
    customers: int = 1000
    events: int = 10_000
    seed: int = 1
    start_ms: int = DEFAULT_START_MS
    days: int = 540
    invalid_rate: float = 0.0
    duplicate_rate: float = 0.0


def generate(cfg: SynthConfig) -> Iterator[dict[str, Any]]:
    """Yield about ``cfg.events`` events in time order (plus requested invalid/duplicate ones)."""
    rng = random.Random(cfg.seed)
    names = list(PERSONAS)
    weights = [PERSONAS[n][0] for n in names]
    personas = rng.choices(names, weights=weights, k=cfg.customers)
    # each customer's share of the traffic follows its persona's activity
    activity = [max(PERSONAS[p][1] + PERSONAS[p][4], 0.6) * rng.uniform(0.5, 1.5) for p in personas]
    total = sum(activity)
    span_ms = cfg.days * MS_PER_DAY
    times = sorted(rng.randrange(span_ms) for _ in range(cfg.events))
    picks = rng.choices(range(cfg.customers), weights=[a / total for a in activity], k=cfg.events)
    open_tickets: dict[int, list[str]] = {}
    orders: dict[int, list[str]] = {}
    seq = 0
    for offset, idx in zip(times, picks, strict=True):
        seq += 1
        persona = personas[idx]
        _, per_year, mean_amount, mood, tickets = PERSONAS[persona]
        # churners go quiet in the last third of the period
        if persona == "churner" and offset > span_ms * 0.66 and rng.random() < 0.9:
            idx = rng.randrange(cfg.customers)
            persona = personas[idx]
            _, per_year, mean_amount, mood, tickets = PERSONAS[persona]
        customer = f"C{idx:07d}"
        at = cfg.start_ms + offset
        base: dict[str, Any] = {
            "event_id": f"E{cfg.seed}-{seq:09d}",
            "customer_id": customer,
            "occurred_at": to_rfc3339(at) if seq % 3 else at,
        }
        roll = rng.random() * (per_year + tickets + 1.0)
        if roll < per_year:
            event = _order(rng, base, idx, mean_amount, orders)
        elif roll < per_year + tickets:
            event = _ticket(rng, base, idx, open_tickets)
        elif rng.random() < 0.5 or persona == "lead":
            event = _profile(rng, base, persona)
        else:
            event = _survey(rng, base, mood)
        if cfg.invalid_rate and rng.random() < cfg.invalid_rate:
            yield _broken(rng, event)
            continue
        yield event
        if cfg.duplicate_rate and rng.random() < cfg.duplicate_rate:
            yield dict(event)


def _order(
    rng: random.Random, base: dict[str, Any], idx: int, mean: float, orders: dict[int, list[str]]
) -> dict[str, Any]:
    past = orders.setdefault(idx, [])
    if past and rng.random() < 0.03:
        return {
            **base,
            "type": "order",
            "order_id": rng.choice(past),
            "amount": "0",
            "status": rng.choice(("refunded", "cancelled")),
        }
    order_id = f"O{base['event_id'][1:]}"
    past.append(order_id)
    if len(past) > 20:
        past.pop(0)
    amount = round(rng.lognormvariate(0, 0.6) * mean, 2)
    value: float | str = amount if rng.random() < 0.5 else f"{amount:.2f}"
    return {**base, "type": "order", "order_id": order_id, "amount": value, "currency": "USD"}


def _ticket(
    rng: random.Random, base: dict[str, Any], idx: int, open_tickets: dict[int, list[str]]
) -> dict[str, Any]:
    mine = open_tickets.setdefault(idx, [])
    if mine and rng.random() < 0.6:
        ticket = mine.pop(0)
        return {**base, "type": "support", "ticket_id": ticket, "status": "closed"}
    ticket = f"T{base['event_id'][1:]}"
    mine.append(ticket)
    priority = rng.choice(("low", "normal", "normal", "high", "urgent"))
    return {
        **base,
        "type": "support",
        "ticket_id": ticket,
        "status": "opened",
        "priority": priority,
    }


def _survey(rng: random.Random, base: dict[str, Any], mood: float) -> dict[str, Any]:
    score = min(10, max(0, round(rng.gauss(mood * 10, 2.5))))
    return {**base, "type": "survey", "score": score, "survey_id": f"S{base['event_id'][1:]}"}


def _profile(rng: random.Random, base: dict[str, Any], persona: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "industry": rng.choice(INDUSTRIES),
        "size": rng.choice(SIZES),
        "capacity": rng.randint(1, 5),
        # from the id, not the generator: a customer keeps its manager, and adding the
        # attribute left every other generated value as it was
        "account_manager": ACCOUNT_MANAGERS[crc32(base["customer_id"].encode()) % 6],
    }
    if persona == "lead":
        attrs |= {
            "brand_strength": rng.randint(1, 5),
            "order_attractiveness": rng.randint(1, 5),
            "failure_status": rng.randint(1, 5),
        }
    return {**base, "type": "profile", "attributes": attrs}


def _broken(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    kind = rng.randrange(4)
    if kind == 0:
        return {k: v for k, v in event.items() if k != "type"}
    if kind == 1:
        return {**event, "type": "refund_request"}
    if kind == 2:
        return {**event, "occurred_at": "2026-01-01T00:00:00"}
    return {**event, "customer_id": ""}
