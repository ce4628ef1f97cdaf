"""Where a customer's bytes go: the population of tests/unit/test_memory.py through an engine
under tracemalloc, what stays allocated grouped by where it was allocated.

    python -m bench.memory [--top 12]

The total is the figure test_memory.py bounds (it warms the caches first, as this does). Each
row is the bytes and objects per customer still held, with the engine lines that made them.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from tests.unit.test_memory import CUSTOMERS, _engine, _population, _run, _warm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    _warm()
    raws = _population("C")
    engine = _engine()
    gc.collect()
    tracemalloc.start(6)
    _run(engine, raws)
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snapshot.statistics("traceback")
    total = sum(s.size for s in stats)
    print(f"{total / CUSTOMERS:,.0f} B per customer held, {CUSTOMERS:,} customers")
    for stat in stats[: args.top]:
        frames = [
            f"{frame.filename.rsplit('/segstream/', 1)[-1]}:{frame.lineno}"
            for frame in stat.traceback
            if "/segstream/" in frame.filename
        ]
        share = stat.size / total
        print(
            f"{stat.size / CUSTOMERS:7.0f} B {stat.count / CUSTOMERS:5.2f} objects {share:6.1%}"
            f"  {' <- '.join(reversed(frames[-3:]))}"
        )


if __name__ == "__main__":
    main()
