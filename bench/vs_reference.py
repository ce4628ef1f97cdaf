"""The core against the frozen reference core (tests/reference/), interleaved in one process.

python -m bench.vs_reference EVENTS.jsonl [--partitions 8] [--batch 2048] [--repeat 3]

On a shared, noisy machine two processes timed one after the other disagree by more than the
differences being measured. Here both engines get the same batches in turn, the order flipped
every batch, so whatever slows the machine slows both alike; each batch's changes are compared,
so the figures are of two engines that said the same thing. Each repeat runs the whole file
through fresh engines; the medians of the repeats are printed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path
from typing import Any

from tests.reference import engine as reference

from segstream.core import engine as production
from segstream.core.rulelang import load_rules

ROOT = Path(__file__).resolve().parents[1]


def run(lines: list[bytes], partitions: int, batch: int) -> dict[str, float]:
    rules = load_rules(ROOT / "rules")
    engines: dict[str, Any] = {
        "core": production.Engine(rules, partitions=partitions),
        "reference": reference.Engine(rules, partitions=partitions),
    }
    cpu = dict.fromkeys(engines, 0.0)
    wall = dict.fromkeys(engines, 0.0)
    gc.collect()
    for number, start in enumerate(range(0, len(lines), batch)):
        chunk = lines[start : start + batch]
        said = {}
        order = list(engines) if number % 2 else list(reversed(engines))
        for name in order:
            engine = engines[name]
            started, started_cpu = time.perf_counter(), time.process_time()
            said[name] = engine.process(chunk).changes
            engine.drop_pending()
            wall[name] += time.perf_counter() - started
            cpu[name] += time.process_time() - started_cpu
        assert said["core"] == said["reference"], f"batch {number}: the engines disagree"
    out: dict[str, float] = {}
    for name, engine in engines.items():
        out[f"{name} events/s (cpu)"] = len(lines) / cpu[name]
        out[f"{name} events/s (wall)"] = len(lines) / wall[name]
        out[f"{name} evaluations"] = engine.evaluations
    out["core/reference cpu"] = cpu["core"] / cpu["reference"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=Path)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lines = [line for line in args.events.read_bytes().splitlines() if line.strip()]
    runs = [run(lines, args.partitions, args.batch) for _ in range(args.repeat)]
    for key in runs[0]:
        figures = [r[key] for r in runs]
        spread = f"  (min {min(figures):,.3f} max {max(figures):,.3f})" if len(runs) > 1 else ""
        print(f"{key:<30} {statistics.median(figures):>12,.3f}{spread}")


if __name__ == "__main__":
    main()
