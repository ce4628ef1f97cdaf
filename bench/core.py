"""Core benchmarks: the segmentation engine alone (no I/O), the rule set alone, and the cost of
a clock tick.

python -m bench.core [--events N] [--customers N] [--clock-customers N]

Also ``segstream replay`` end to end (file in, changes out) and re-evaluating every customer
after a rules change.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segstream.core.contracts import OrderEvent
from segstream.core.engine import Engine
from segstream.core.rulelang import compile_rules, load_rules
from segstream.core.state import dump_state
from segstream.core.timeutil import MS_PER_DAY

ROOT = Path(__file__).resolve().parents[1]
BATCH = 4096


def core_throughput(path: Path) -> dict[str, Any]:
    """Parse + state update + evaluation + change detection over a whole file, in batches."""
    lines = path.read_bytes().splitlines()
    engine = Engine(load_rules(ROOT / "rules"), clock="event")
    gc.collect()
    gc.disable()  # as `segstream replay` runs the core (the core makes no reference cycles)
    try:
        started = time.perf_counter()
        changes = 0
        for start in range(0, len(lines), BATCH):
            changes += len(engine.process(lines[start : start + BATCH]).changes)
            engine.drop_pending()
        changes += len(engine.refresh_population())
        seconds = time.perf_counter() - started
        # the core's objects, allocated with the collector off, are all in the youngest
        # generation: the first collections would walk them inside the parse timing
        gc.freeze()
    finally:
        gc.enable()
    parse_started = time.perf_counter()
    for line in lines[:100_000]:
        engine.parse(line)
    parse_us = (time.perf_counter() - parse_started) / min(len(lines), 100_000) * 1e6
    gc.unfreeze()
    sizes = [len(dump_state(st)) for st in engine.store.values()]
    sizes.sort()
    return {
        "events": len(lines),
        "customers": len(engine.store),
        "seconds": round(seconds, 2),
        "events_per_second": round(len(lines) / seconds),
        "evaluations": engine.evaluations,
        "evaluations_by_cause": census(engine.evaluated, len(lines)),
        "changes": changes,
        "parse_us_per_event": round(parse_us, 2),
        "state_bytes_mean": round(sum(sizes) / len(sizes)),
        "state_bytes_p50": sizes[len(sizes) // 2],
        "state_bytes_p99": sizes[int(len(sizes) * 0.99)],
    }


def census(evaluated: Mapping[tuple[str, bool], int], events: int) -> dict[str, Any]:
    """Evaluations per event by cause, and the share of them that moved no segment. The clock
    ones that moved nothing are what a schedule waking a customer only when some rule could
    read another answer would spare; an event is evaluated whatever it moves."""
    out: dict[str, Any] = {}
    for cause in sorted({c for c, _ in evaluated}):
        moved, unmoved = evaluated.get((cause, True), 0), evaluated.get((cause, False), 0)
        out[cause] = {
            "per_event": round((moved + unmoved) / events, 3),
            "moved_nothing": round(unmoved / max(moved + unmoved, 1), 3),
        }
    return out


def replay_throughput(path: Path) -> dict[str, Any]:
    """``segstream replay`` as a user runs it: a process reading the file and writing every
    change event to a file (JSON lines), summary and all; timed from start to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "changes.jsonl"
        command = [sys.executable, "-m", "segstream.cli", "replay", "--no-progress"]
        command += ["--rules", str(ROOT / "rules"), "--out", str(out), str(path)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        with out.open("rb") as handle:
            changes = sum(1 for _ in handle)
    events = sum(1 for _ in path.open("rb"))
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_second": round(events / seconds),
        "changes": changes,
    }


def rules_reevaluation(customers: int) -> dict[str, Any]:
    """A rules change over ``customers``: switch the engine to a rule set with one threshold
    moved, then re-evaluate every customer, as a worker does (in slices) after a rules update."""
    files = {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))}
    moved = files["value.yaml"].replace("f >= 3 and m >= 3", "f >= 2 and m >= 3", 1)
    assert moved != files["value.yaml"], "rules/value.yaml changed: pick another threshold"
    engine = Engine(compile_rules(files), clock="wall", partitions=8)
    today = 20_400
    now = today * MS_PER_DAY + 1
    for i in range(customers):
        ms = (today - i % 300) * MS_PER_DAY + 3_600_000
        amount = str(10 + i % 997)
        event = OrderEvent(
            event_id=f"e{i}", customer_id=f"C{i}", occurred_at=ms, order_id=f"o{i}", amount=amount
        )
        engine.apply(event, partition=engine.partition_for(event.customer_id), now_ms=now)
    engine.refresh_population()
    engine.drop_pending()
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    engine.set_rules(compile_rules(files | {"value.yaml": moved}))
    changes = 0
    ids = engine.customer_ids()
    for start in range(0, len(ids), 10_000):  # the worker's slices: commit between them
        changes += len(engine.reevaluate(ids[start : start + 10_000]))
        engine.drop_pending()
    engine.rules_done()
    seconds = time.perf_counter() - started
    gc.unfreeze()
    return {"customers": customers, "changes": changes, "seconds": round(seconds, 2)}


def rules_evaluation(calls: int = 20_000) -> dict[str, Any]:
    """The default rule set evaluated on one customer's values, alone: no parsing, no state.
    The values are a real customer's (one order), so every name any rule reads is there."""
    rules = load_rules(ROOT / "rules")
    engine = Engine(rules, clock="event")
    day = 20_400 * MS_PER_DAY
    engine.apply(
        OrderEvent(event_id="e", customer_id="C", occurred_at=day, order_id="o", amount="25")
    )
    values = engine.values(engine.store["C"])
    started = time.perf_counter()
    for _ in range(calls):
        rules.evaluate(dict(values))
    seconds = time.perf_counter() - started
    return {"calls": calls, "us_per_customer": round(seconds / calls * 1e6, 2)}


def clock_tick(customers: int, moving_fraction: float) -> dict[str, Any]:
    """Advance the clock one day over ``customers`` where ``moving_fraction`` change segment.

    Every customer has one order; the moving ones bought 89 days ago, so tomorrow is their
    day 90 and they leave onboarding. The rest bought 10 days ago and are not due for another
    20 days (their order leaves the 30-day activity window, which health's trend reads).
    """
    engine = Engine(load_rules(ROOT / "rules"), clock="wall")
    today = 20_400
    # the lane's first clock before its customers: a lane's first clock also starts its groups'
    # first period (every customer's contribution, once in its life), not what a tick costs
    engine.lane(0)
    engine.advance(today * MS_PER_DAY + 1)
    moving = int(customers * moving_fraction)
    for i in range(customers):
        age = 89 if i < moving else 10
        ms = (today - age) * MS_PER_DAY + 3_600_000
        engine.apply(
            OrderEvent(
                event_id=f"e{i}", customer_id=f"C{i}", occurred_at=ms, order_id=f"o{i}", amount="25"
            )
        )
    engine.refresh_population()
    # as the worker does after adopting its customers: the built population leaves the cyclic
    # GC's generations, so the tick is timed without a full collection of a 1M-customer heap
    # falling into it by chance (one costs about 3 s here; docs/performance.md)
    gc.collect()
    gc.freeze()
    before = engine.evaluations
    started = time.perf_counter()
    changes = engine.advance((today + 1) * MS_PER_DAY + 1)
    seconds = time.perf_counter() - started
    gc.unfreeze()
    return {
        "customers": customers,
        "moving": moving,
        "evaluated": engine.evaluations - before,
        "changed_customers": len({c["customer_id"] for c in changes}),
        "seconds": round(seconds, 4),
    }


def main() -> None:
    from bench.common import events_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--clock-customers", type=int, default=1_000_000)
    args = parser.parse_args()
    result = core_throughput(events_file(args.events, args.customers))
    print(f"core: {result}")
    print(f"rules: {rules_evaluation()}")
    for fraction in (0.001, 0.01, 0.1):
        print(f"clock: {clock_tick(args.clock_customers, fraction)}")
    print(f"replay: {replay_throughput(events_file(args.events, args.customers))}")
    print(f"rules change: {rules_reevaluation(args.clock_customers)}")


if __name__ == "__main__":
    main()
