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

from bench import core, decode, stream
from bench.common import RESULTS, events_file, machine
from segstream.runtime.broker import EmbeddedBroker

GOALS = {
    "worker_vs_baseline": 10.0,
    "worker_vs_ceiling": 0.25,
    "core_events_per_second": 100_000,
    "replay_events_per_second": 100_000,
    "p99_over_floor_ms": 20.0,  # above the two-hop relay floor measured in the same run
    "two_vs_one": 1.7,
    "state_bytes": 1024,
    "rss_mib_per_million": 1536,
    "recovery_seconds_1m": 30.0,
    "rules_change_seconds_1m": 10.0,
}


STAGES = ("core", "stream", "scale")
# the stream stage's latency probes alone (about a minute): `--stages latency`
EXTRA_STAGES = ("latency",)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--latency-events", type=int, default=20_000)
    parser.add_argument("--clock-customers", type=int, default=1_000_000)
    parser.add_argument("--scale-events", type=int, default=2_000_000)
    parser.add_argument("--scale-customers", type=int, default=2_500_000, help="ids to draw from")
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="comma-separated subset of core,stream,scale (or latency: the stream stage's "
        "latency probes alone); the others keep their last figures",
    )
    parser.add_argument("--quick", action="store_true", help="100k events, 10k customers")
    args = parser.parse_args()
    if args.quick:
        args.events, args.customers, args.clock_customers = 100_000, 10_000, 100_000
        args.scale_events, args.scale_customers = 100_000, 120_000
    stages = set(args.stages.split(",")) & {*STAGES, *EXTRA_STAGES}
    latest = RESULTS / "latest.json"
    results: dict[str, Any] = orjson.loads(latest.read_bytes()) if latest.exists() else {}
    results["machine"] = machine()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stamped = stages | ({"latency"} if "stream" in stages else set())  # stream runs latency
    results.setdefault("measured_at", {}).update(dict.fromkeys(stamped, now))
    results.setdefault("args", {}).update(
        {stage: vars(args) for stage in stages}  # what each stage last ran with
    )
    path = events_file(args.events, args.customers)
    lines = path.read_bytes().splitlines()

    if "core" in stages:
        results["core"] = core.core_throughput(path)
        print("core", results["core"], flush=True)
        results["rules"] = core.rules_evaluation()
        print("rules", results["rules"], flush=True)
        results["clock"] = [core.clock_tick(args.clock_customers, f) for f in (0.001, 0.01)]
        print("clock", results["clock"], flush=True)
        results["replay"] = core.replay_throughput(path)
        print("replay", results["replay"], flush=True)
        results["rules_change"] = core.rules_reevaluation(args.clock_customers)
        print("rules change", results["rules_change"], flush=True)
        results["decode"] = decode.decode_speed(lines[:50_000])
        print(decode.table(results["decode"]), flush=True)

    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedBroker() as broker:
        tmp = Path(tmp_name)
        boot = broker.bootstrap
        if "stream" in stages:
            stream_stage(results, args, boot, lines, tmp)
        elif "latency" in stages:
            latency_stage(results, args, boot, lines, tmp)
        if "scale" in stages:
            scale_lines = events_file(args.scale_events, args.scale_customers).read_bytes()
            results["scale"] = stream.scale_run(boot, scale_lines.splitlines(), tmp)
            print("scale", results["scale"], flush=True)

    if {"worker", "baseline_per_second", "ceiling_per_second", "two_workers"} <= results.keys():
        w = results["worker"]["events_per_second"]
        results["ratios"] = {
            "worker_vs_baseline": round(w / results["baseline_per_second"], 2),
            "worker_vs_ceiling": round(w / results["ceiling_per_second"], 3),
            "two_vs_one": round(results["two_workers"]["events_per_second"] / w, 2),
        }
    RESULTS.mkdir(exist_ok=True)
    latest.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(table(results))


def stream_stage(
    results: dict[str, Any], args: argparse.Namespace, boot: str, lines: list[bytes], tmp: Path
) -> None:
    """Ceiling, baseline, one worker (and its recovery), two workers, latency: one broker."""
    raw_topic = "bench-raw"
    asyncio.run(stream.create_topics(boot, [raw_topic]))
    asyncio.run(stream.produce_lines(boot, lines, lambda _: raw_topic))
    results["ceiling_per_second"] = round(asyncio.run(stream.ceiling(boot, raw_topic, len(lines))))
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
    latency_stage(results, args, boot, lines, tmp)


def latency_stage(
    results: dict[str, Any], args: argparse.Namespace, boot: str, lines: list[bytes], tmp: Path
) -> None:
    """Produce-to-change latency at a steady 2,000 events/s, and the floors it is held to."""
    paced = lines[: args.latency_events]
    results["latency_floor"] = asyncio.run(stream.latency_floor(boot, paced, 2000.0))
    results["latency_relay_floor"] = asyncio.run(stream.latency_relay_floor(boot, paced, 2000.0))
    results["latency"] = asyncio.run(stream.latency(boot, paced, tmp, 2000.0))
    results["latency_live"] = asyncio.run(stream.latency_live(boot, paced, tmp, 2000.0))
    print(
        "latency",
        results["latency"],
        "live",
        results["latency_live"],
        "floor",
        results["latency_floor"],
        flush=True,
    )


def _verdict(value: float, goal: float, higher_is_better: bool = True) -> str:
    """'met', or the gap to the goal as a factor, so a missed goal says by how much."""
    met = value >= goal if higher_is_better else value <= goal
    if met:
        return "met"
    factor = goal / value if higher_is_better else value / goal
    return f"MISSED by {factor:.2f}x"


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    c, ratios = r.get("core"), r.get("ratios")
    if "ceiling_per_second" in r:
        rows += [
            ("ceiling (aiokafka getmany + orjson)", f"{r['ceiling_per_second']:,}/s", ""),
            ("baseline (faust agent + Table)", f"{r['baseline_per_second']:,}/s", ""),
        ]
    if ratios:
        vb, vc = ratios["worker_vs_baseline"], ratios["worker_vs_ceiling"]
        rows += [
            ("worker, 1 process", f"{r['worker']['events_per_second']:,}/s", ""),
            (
                "  worker / baseline",
                f"{vb}x",
                f"goal >= 10x: {_verdict(vb, GOALS['worker_vs_baseline'])}",
            ),
            (
                "  worker / ceiling",
                f"{vc:.1%}",
                f"goal >= 25%: {_verdict(vc, GOALS['worker_vs_ceiling'])}",
            ),
            (
                "two workers",
                f"{r['two_workers']['events_per_second']:,}/s = {ratios['two_vs_one']}x one",
                f"goal >= 1.7x: {_verdict(ratios['two_vs_one'], GOALS['two_vs_one'])}",
            ),
        ]
    if c:
        eps = c["events_per_second"]
        rows.append(
            (
                "core alone",
                f"{eps:,}/s",
                f"goal >= 100,000/s: {_verdict(eps, GOALS['core_events_per_second'])}",
            )
        )
        by_cause = c.get("evaluations_by_cause")
        if by_cause:
            per_event = ", ".join(
                f"{cause} {x['per_event']} ({x['moved_nothing']:.0%} moved nothing)"
                for cause, x in by_cause.items()
            )
            rows.append(("  evaluations per event, by cause", per_event, ""))
    if "replay" in r:
        eps = r["replay"]["events_per_second"]
        rows.append(
            (
                "segstream replay, file in, changes out",
                f"{eps:,}/s",
                f"goal >= 100,000/s: {_verdict(eps, GOALS['replay_events_per_second'])}",
            )
        )
    if "rules_change" in r:
        x = r["rules_change"]
        per_million = x["seconds"] * 1_000_000 / x["customers"]
        rows.append(
            (
                "rules change, re-evaluate all",
                f"{x['seconds']} s for {x['customers']:,} customers ({x['changes']:,} changes)",
                "goal 1M in <= 10 s: "
                + _verdict(per_million, GOALS["rules_change_seconds_1m"], False),
            )
        )
    parse = (r.get("decode") or {}).get("all")
    if parse:
        rows.append(
            (
                "parse, msgspec decoder",
                f"{parse['decoder']['us_median']} us/event vs {parse['reference']['us_median']} us",
                f"{parse['ratio_median']}x the reference path (orjson + pydantic), same run",
            )
        )
    if "rules" in r:
        us = r["rules"]["us_per_customer"]
        rows.append(("rule set alone", f"{us} us per customer evaluated", "part of core alone"))
    if "latency" in r:
        p99 = r["latency"]["p99_ms"]
        relay = r.get("latency_relay_floor")
        goal = "no two-hop floor measured"
        if relay:
            allowed = relay["p99_ms"] + GOALS["p99_over_floor_ms"]
            goal = f"goal p99 <= {allowed:.1f} ms (floor + 20): {_verdict(p99, allowed, False)}"
        rows.append(("latency at 2,000/s", f"p50 {r['latency']['p50_ms']} ms, p99 {p99} ms", goal))
    if "latency_live" in r:
        live = r["latency_live"]
        note = "wall clock, each event stamped when sent"
        relay = r.get("latency_relay_floor")
        if relay:
            allowed = relay["p99_ms"] + GOALS["p99_over_floor_ms"]
            note += f"; against the same goal: {_verdict(live['p99_ms'], allowed, False)}"
        rows.append(
            (
                "  the same, live traffic",
                f"p50 {live['p50_ms']} ms, p99 {live['p99_ms']} ms",
                note,
            )
        )
    if "latency_relay_floor" in r:
        relay = r["latency_relay_floor"]
        rows.append(
            (
                "two-hop floor (relay, no work)",
                f"p50 {relay['p50_ms']} ms, p99 {relay['p99_ms']} ms",
                "consume the inputs, produce each record on, read it back",
            )
        )
    if "latency_floor" in r:
        floor = r["latency_floor"]
        rows.append(
            (
                "latency floor (no worker)",
                f"p50 {floor['p50_ms']} ms, p99 {floor['p99_ms']} ms",
                "the feed read back from the inputs by a plain consumer",
            )
        )
    if c:
        rows.append(
            (
                "state per customer",
                f"{c['state_bytes_mean']} B mean, {c['state_bytes_p99']} B p99",
                f"goal <= 1 KiB typical: {_verdict(c['state_bytes_mean'], 1024, False)}",
            )
        )
    if "worker" in r and c:
        rows += [
            ("worker peak RSS", f"{r['worker']['peak_rss_mib']} MiB at {c['customers']:,}", ""),
            ("recovery, memory store", f"{r['recovery_seconds']} s at {c['customers']:,}", ""),
        ]
    scale = r.get("scale")
    if scale:
        n = scale["customers"]
        per_million = 1_000_000 / n if n else 0.0
        restart, fresh = scale["restart_recovery_seconds"], scale["fresh_recovery_seconds"]
        rows += [
            (
                "scale: worker, RocksDB store",
                f"{scale['events_per_second']:,}/s over {scale['events']:,} events, {n:,} cust.",
                "",
            ),
            (
                "scale: worker peak RSS",
                f"{scale['peak_rss_mib']:,} MiB at {n:,} customers",
                "goal <= 1.5 GiB per 1M: "
                + _verdict(
                    scale["peak_rss_mib"] * per_million, GOALS["rss_mib_per_million"], False
                ),
            ),
            (
                "scale: restart on own disk",
                f"{restart} s for {scale['restart_recovered_customers']:,} customers",
                f"1M in {restart * per_million:.1f} s",
            ),
            (
                "scale: replacement, empty disk",
                f"{fresh} s for {scale['fresh_recovered_customers']:,} customers",
                "goal 1M in <= 30 s: "
                + _verdict(fresh * per_million, GOALS["recovery_seconds_1m"], False),
            ),
        ]
    if "clock" in r:
        clock = "; ".join(
            f"{x['moving']:,}/{x['customers']:,} due: {x['seconds'] * 1000:.0f} ms"
            for x in r["clock"]
        )
        rows.append(("clock tick (1 day)", clock, "grows with the due customers"))
    width = max(len(a) for a, _, _ in rows)
    value_width = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:<{value_width}}  {g}" for a, b, g in rows)


if __name__ == "__main__":
    main()
