"""A deliberately plain re-statement of the contracts, used as an oracle by property tests.

It recomputes a customer's state from the full list of its events (no increments, no
buckets, no schedule) and evaluates the default rule set with ordinary Python.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from segstream.core.timeutil import day_of, parse_timestamp


def _ms(event: dict[str, Any]) -> int:
    return parse_timestamp(event["occurred_at"])


def _latest(events: list[dict[str, Any]]) -> dict[str, Any]:
    return max(events, key=lambda e: (_ms(e), e["event_id"]))


def reference_values(
    events: list[dict[str, Any]], clock_day: int, rfm_days: int = 365, csi_days: int = 365
) -> dict[str, Any]:
    unique = list({e["event_id"]: e for e in events}.values())
    orders: dict[str, list[dict[str, Any]]] = {}
    refunded: set[str] = set()
    tickets: dict[str, list[dict[str, Any]]] = {}
    surveys: dict[str, list[dict[str, Any]]] = {}
    for e in unique:
        if e["type"] == "order":
            if e.get("status", "completed") == "completed":
                orders.setdefault(e["order_id"], []).append(e)
            else:
                refunded.add(e["order_id"])
        elif e["type"] == "support":
            tickets.setdefault(e["ticket_id"], []).append(e)
        elif e["type"] == "survey":
            surveys.setdefault(e.get("survey_id") or "\0" + e["event_id"], []).append(e)
    counted = [
        (day_of(_ms(w)), Decimal(str(w["amount"])))
        for oid, evs in orders.items()
        if oid not in refunded
        for w in [_latest(evs)]
    ]
    in_rfm = [(d, a) for d, a in counted if clock_day - d < rfm_days]
    days = [d for d, _ in counted]
    open_count = sum(1 for evs in tickets.values() if _latest(evs)["status"] != "closed")
    opened_days = [
        min(day_of(_ms(e)) for e in evs if e["status"] == "opened")
        for evs in tickets.values()
        if any(e["status"] == "opened" for e in evs)
    ]
    answers = [_latest(evs) for evs in surveys.values()]
    in_csi = [a for a in answers if clock_day - day_of(_ms(a)) < csi_days]
    scores = [a["score"] for a in in_csi]
    promoters = sum(1 for s in scores if s >= 8)
    detractors = sum(1 for s in scores if 1 <= s <= 3)
    ages = [clock_day - day_of(_ms(e)) for e in unique]
    recent = sum(1 for a in ages if a < 30)
    previous = sum(1 for a in ages if 30 <= a < 60)
    return {
        "recency_days": clock_day - max(days) if days else None,
        "frequency": len(in_rfm),
        "monetary": float(sum((a for _, a in in_rfm), Decimal(0))),
        "orders_total": len(counted),
        "monetary_total": float(sum((a for _, a in counted), Decimal(0))),
        "tenure_days": clock_day - min(days) if days else None,
        "orders_30d": sum(1 for d, _ in counted if clock_day - d < 30),
        "orders_90d": sum(1 for d, _ in counted if clock_day - d < 90),
        "tickets_open": open_count,
        "tickets_30d": sum(1 for d in opened_days if clock_day - d < 30),
        "surveys_90d": sum(1 for a in answers if clock_day - day_of(_ms(a)) < 90),
        "activity_30d": recent,
        "activity_trend": recent - previous,
        "days_since_activity": min(ages) if ages else None,
        "promoters": promoters,
        "detractors": detractors,
        "responses": len(scores),
        "last_score": _latest(in_csi)["score"] if in_csi else None,
        "csi": promoters / max(detractors, 1) if scores else None,
        "nps": 100.0
        * (sum(1 for s in scores if s >= 9) - sum(1 for s in scores if s <= 6))
        / len(scores)
        if scores
        else None,
    }


def reference_attributes(events: list[dict[str, Any]], defaults: dict[str, Any]) -> dict[str, Any]:
    latest: dict[str, tuple[int, str, Any]] = {}
    for e in events:
        if e["type"] != "profile":
            continue
        for name, value in e["attributes"].items():
            key = (_ms(e), e["event_id"], value)
            if name not in latest or key[:2] > latest[name][:2]:
                latest[name] = key
    out = dict(defaults)
    for name, (_, _, value) in latest.items():
        if name in out and value is not None and isinstance(value, type(defaults[name])):
            out[name] = value
    return out


def reference_segments(v: dict[str, Any], m_cuts: tuple[float, ...]) -> dict[str, Any]:
    """The default rule set (rules/*.yaml) restated in plain Python."""
    rec = v["recency_days"]
    r = 0 if rec is None else 5 - sum(1 for b in (30, 90, 180, 365) if b < rec)
    f = 1 + sum(1 for b in (1, 2, 4, 8) if b <= v["frequency"])
    mon = v["monetary"]
    m = 1 if mon <= 0 else 1 + sum(1 for c in m_cuts if c <= mon)
    if r >= 4 and f >= 4 and m >= 4:
        value = "champions"
    elif r >= 3 and f >= 3 and m >= 3:
        value = "loyal"
    elif r <= 2 and f >= 3 and m >= 3:
        value = "at_risk"
    elif v["orders_total"] >= 1:
        value = "occasional"
    else:
        value = None
    csi = v["csi"]
    if csi is not None and csi >= 2 and v["promoters"] >= 1:
        satisfaction = "loyal"
    elif csi is not None and csi >= 1:
        satisfaction = "neutral"
    elif csi is not None:
        satisfaction = "relationship_reset"
    else:
        satisfaction = None
    busy, big = v["activity_30d"] >= 3, v["capacity"] >= 4
    matrix = (
        "stars" if busy and big else "cash_cows" if busy else "problem_children" if big else "dogs"
    )
    if rec is not None and rec < 365:
        lifecycle = "current"
    elif v["orders_total"] >= 1:
        lifecycle = "churned"
    else:
        lifecycle = "rejected_lead"
    renewal = v["brand_strength"] + v["order_attractiveness"] + v["failure_status"]
    health: str | None = None
    if lifecycle == "current":
        nps = 0 if v["nps"] is None else v["nps"]
        score = (
            100
            - (100 - nps) / 5
            - 10 * min(3, max(0, -v["activity_trend"] - 1))
            - 10 * min(3, v["tickets_open"])
        )
        health = "healthy" if score >= 70 else "watch" if score >= 50 else "at_risk"
    tenure = v["tenure_days"]
    until = v.get("days_until_renewal")  # days to the contract_renewal date, if one was sent
    return {
        "value": value,
        "satisfaction": satisfaction,
        "activity_matrix": matrix,
        "lifecycle": lifecycle,
        "health": health,
        "unhappy": csi is not None and csi < 1 and v["responses"] >= 2,
        "support_heavy": v["tickets_open"] >= 3 or v["tickets_30d"] >= 5,
        "renewal_candidate": lifecycle == "rejected_lead" and renewal >= 11,
        "renewal_window": until is not None and 0 <= until <= 120,
        "onboarding": tenure is not None and tenure < 90,
    }
