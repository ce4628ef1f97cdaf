"""``make bench``: every figure of the performance issue, measured in one run.

    python -m bench.run [--events 1000000] [--customers 100000] [--quick]

Prints a table and writes bench/results/latest.json. Ratios are against references measured
in the same run, because this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import core, stream
from bench.common import RESULTS, events_file, machine
from segstream.runtime.broker import EmbeddedBroker

GOALS = {
    "worker_vs_baseline": 10.0,
    "worker_vs_ceiling": 0.25,
    "core_events_per_second": 100_000,
    "p99_ms": 50.0,
    "two_vs_one": 1.7,
    "state_bytes": 1024,
    "recovery_seconds_1m": 60.0,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--latency-events", type=int, default=20_000)
    parser.add_argument("--clock-customers", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k events, 10k customers")
    args = parser.parse_args()
    if args.quick:
        args.events, args.customers, args.clock_customers = 100_000, 10_000, 100_000
    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
    }
    path = events_file(args.events, args.customers)
    lines = path.read_bytes().splitlines()

    results["core"] = core.core_throughput(path)
    print("core", results["core"], flush=True)
    results["clock"] = [core.clock_tick(args.clock_customers, f) for f in (0.001, 0.01)]
    print("clock", results["clock"], flush=True)

    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedBroker() as broker:
        tmp = Path(tmp_name)
        boot = broker.bootstrap
        raw_topic = "bench-raw"
        asyncio.run(stream.create_topics(boot, [raw_topic]))
        asyncio.run(stream.produce_lines(boot, lines, lambda _: raw_topic))
        results["ceiling_per_second"] = round(
            asyncio.run(stream.ceiling(boot, raw_topic, len(lines)))
        )
        print("ceiling", results["ceiling_per_second"], flush=True)
        results["baseline_per_second"] = round(
            stream.baseline(boot, raw_topic, min(args.baseline_events, len(lines)), tmp)
        )
        print("baseline", results["baseline_per_second"], flush=True)

        one = stream.worker_run(boot, lines, tmp, 1)
        results["recovery_seconds"] = round(
            stream.recovery_time(boot, one.pop("prefix"), tmp, one.pop("procs")), 2
        )
        results["worker"] = one
        print("worker", one, "recovery", results["recovery_seconds"], flush=True)
        two = stream.worker_run(boot, lines, tmp, 2)
        for proc in two.pop("procs"):
            proc.stop()
        two.pop("prefix")
        results["two_workers"] = two
        print("two workers", two, flush=True)
        results["latency"] = asyncio.run(
            stream.latency(boot, lines[: args.latency_events], tmp, 2000.0)
        )
        print("latency", results["latency"], flush=True)

    w = results["worker"]["events_per_second"]
    results["ratios"] = {
        "worker_vs_baseline": round(w / results["baseline_per_second"], 2),
        "worker_vs_ceiling": round(w / results["ceiling_per_second"], 3),
        "two_vs_one": round(results["two_workers"]["events_per_second"] / w, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(table(results))


def table(r: dict[str, Any]) -> str:
    c, ratios = r["core"], r["ratios"]
    clock = "; ".join(
        f"{x['moving']}/{x['customers']} due: {x['seconds'] * 1000:.0f} ms" for x in r["clock"]
    )
    rows = [
        ("ceiling (aiokafka getmany + orjson)", f"{r['ceiling_per_second']:,}/s", ""),
        ("baseline (faust agent + Table)", f"{r['baseline_per_second']:,}/s", ""),
        (
            "worker, 1 process",
            f"{r['worker']['events_per_second']:,}/s",
            f"goal >= 10x baseline ({ratios['worker_vs_baseline']}x), >= 25% ceiling "
            f"({ratios['worker_vs_ceiling']:.1%})",
        ),
        ("core alone", f"{c['events_per_second']:,}/s", "goal >= 100,000/s"),
        (
            "latency at 2,000/s",
            f"p50 {r['latency']['p50_ms']} ms, p99 {r['latency']['p99_ms']} ms",
            "goal p99 <= 50 ms",
        ),
        (
            "two workers",
            f"{r['two_workers']['events_per_second']:,}/s",
            f"{ratios['two_vs_one']}x one (goal >= 1.7x)",
        ),
        (
            "state per customer",
            f"{c['state_bytes_mean']} B mean, {c['state_bytes_p99']} B p99",
            "goal <= 1 KiB typical",
        ),
        (
            "worker peak RSS",
            f"{r['worker']['peak_rss_mib']} MiB at {c['customers']:,} customers",
            "",
        ),
        (
            "recovery",
            f"{r['recovery_seconds']} s at {c['customers']:,} customers",
            "goal 1M in <= 60 s",
        ),
        ("clock tick (1 day)", clock, "grows with the due customers"),
    ]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:<40} {g}" for a, b, g in rows)


if __name__ == "__main__":
    main()
