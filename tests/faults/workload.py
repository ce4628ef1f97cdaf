"""The harness's input: ``segstream.synth`` plus the cases synth does not make.

synth gives the four event types, profile updates, immediate duplicates, invalid events and
refunds/cancellations of recent orders. On top, seeded from the same seed:

- late cancellations: a completed order cancelled 280-320 days after it was placed (still
  inside the 365-day RFM window, near the state's horizon; only those that fall inside the
  input's period, so the event clock ends where synth's does);
- late duplicates: a valid event sent again a few hundred to a few thousand lines later;
- lines that are not an event at all (bad JSON, an array, a string).

Same config, same lines, byte for byte.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from segstream.core.timeutil import MS_PER_DAY, parse_timestamp, to_rfc3339
from segstream.synth import SynthConfig, generate

GARBAGE = (b"{not json", b"[1, 2, 3]", b'"just a string"', b"{}")


@dataclass(frozen=True)
class Workload:
    customers: int = 600
    events: int = 8_000
    seed: int = 1
    invalid_rate: float = 0.01
    duplicate_rate: float = 0.02
    late_cancel_rate: float = 0.03  # of completed orders
    late_duplicate_rate: float = 0.005
    garbage_rate: float = 0.002


def generate_lines(w: Workload) -> list[bytes]:
    rng = random.Random(f"faults-{w.seed}")
    cfg = SynthConfig(
        customers=w.customers,
        events=w.events,
        seed=w.seed,
        invalid_rate=w.invalid_rate,
        duplicate_rate=w.duplicate_rate,
    )
    timed: list[tuple[int, int, dict[str, Any] | bytes]] = []  # (ms, order, line)
    last_ms, late, end_ms = cfg.start_ms, 0, cfg.start_ms + cfg.days * MS_PER_DAY
    for index, event in enumerate(generate(cfg)):
        at = _time_of(event)
        last_ms = at if at is not None else last_ms  # broken events keep their neighbours' time
        timed.append((last_ms, index, event))
        if _is_completed_order(event) and at is not None and rng.random() < w.late_cancel_rate:
            late += 1
            cancel_at = at + rng.randint(280, 320) * MS_PER_DAY + rng.randrange(MS_PER_DAY)
            if cancel_at >= end_ms:
                continue  # no events from after the input's period
            cancel = {
                "event_id": f"L{w.seed}-{late:07d}",
                "type": "order",
                "customer_id": event["customer_id"],
                "order_id": event["order_id"],
                "amount": "0",
                "status": "cancelled",
                "occurred_at": to_rfc3339(cancel_at),
            }
            timed.append((cancel_at, index, cancel))
    timed.sort(key=lambda item: (item[0], item[1]))
    lines = [orjson.dumps(item) if isinstance(item, dict) else item for _, _, item in timed]
    out: list[bytes] = []
    pending: dict[int, list[bytes]] = {}
    for position, line in enumerate(lines):
        out.append(line)
        out.extend(pending.pop(position, ()))
        if rng.random() < w.late_duplicate_rate and _time_of(orjson.loads(line)) is not None:
            pending.setdefault(position + rng.randint(300, 3000), []).append(line)
        if rng.random() < w.garbage_rate:
            out.append(rng.choice(GARBAGE))
    for position in sorted(pending):
        out.extend(pending[position])
    return out


def _time_of(event: Any) -> int | None:
    if not isinstance(event, dict) or not event.get("type") or not event.get("customer_id"):
        return None
    try:
        return parse_timestamp(event.get("occurred_at"))
    except ValueError:
        return None


def _is_completed_order(event: dict[str, Any]) -> bool:
    return event.get("type") == "order" and event.get("status", "completed") == "completed"
