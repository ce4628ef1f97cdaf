"""The sizing guide of docs/performance.md, computed from the last measured per-worker figures.

    python -m bench.sizing [--results bench/results/latest.json]

Prints the markdown table the guide quotes (a unit test holds the two equal, so the guide
changes whenever ``make bench`` measures something new). Every input is a figure of one worker
process on this machine; the assumptions that turn them into a plan are ``Assumptions``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import RESULTS

CUSTOMERS = (1_000_000, 10_000_000, 100_000_000)
RATES = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class Assumptions:
    """What the guide assumes beyond the measured figures (stated under its table)."""

    # a worker is planned at this share of its measured throughput: the rest absorbs peaks and
    # the backlog a restart leaves
    utilisation: float = 0.6
    # the memory one worker may use (a pod's limit): more customers than fit take more workers
    memory_limit_mib: int = 8192
    # RSS a worker holds before any customer (interpreter, faust, aiokafka, buffers)
    base_rss_mib: int = 300
    # partitions per worker at the planned size, so the group can grow 4x without re-keying
    partitions_per_worker: int = 4
    min_partitions: int = 8


@dataclass(frozen=True)
class Measured:
    """One worker process's figures, from ``bench.run``'s results."""

    events_per_second: float  # one worker, memory store, the 1M-event mixed file
    rss_mib_per_million: float  # RocksDB store at the scale stage's customer count
    restart_seconds_per_million: float  # own disk: RocksDB plus the changelog's tail
    replacement_seconds_per_million: float  # empty disk: the whole changelog

    @classmethod
    def of(cls, results: dict[str, Any]) -> Measured:
        scale = results["scale"]
        millions = scale["customers"] / 1e6
        return cls(
            events_per_second=float(results["worker"]["events_per_second"]),
            rss_mib_per_million=scale["peak_rss_mib"] / millions,
            restart_seconds_per_million=scale["restart_recovery_seconds"] / millions,
            replacement_seconds_per_million=scale["fresh_recovery_seconds"] / millions,
        )


@dataclass(frozen=True)
class Plan:
    customers: int
    rate: int
    workers: int
    bound_by: str  # "throughput" or "memory"
    partitions: int
    memory_mib: int
    restart_seconds: float
    replacement_seconds: float
    catch_up_seconds: float  # draining the backlog a replacement's recovery leaves


def plan(customers: int, rate: int, m: Measured, a: Assumptions = Assumptions()) -> Plan:
    """Workers for the rate and for the memory, whichever needs more; the rest follows."""
    for_rate = math.ceil(rate / (m.events_per_second * a.utilisation))
    per_customer = m.rss_mib_per_million / 1e6
    for_memory = math.ceil(customers * per_customer / (a.memory_limit_mib - a.base_rss_mib))
    workers = max(for_rate, for_memory, 1)
    partitions = max(a.min_partitions, 1 << math.ceil(math.log2(workers * a.partitions_per_worker)))
    share = customers / workers
    replacement = m.replacement_seconds_per_million * share / 1e6
    spare = m.events_per_second - rate / workers  # what a worker has left to drain a backlog
    backlog = rate / workers * replacement
    return Plan(
        customers=customers,
        rate=rate,
        workers=workers,
        bound_by="memory" if for_memory > for_rate else "throughput",
        partitions=partitions,
        memory_mib=round(a.base_rss_mib + share * per_customer),
        restart_seconds=m.restart_seconds_per_million * share / 1e6,
        replacement_seconds=replacement,
        catch_up_seconds=backlog / spare if spare > 0 else math.inf,
    )


def table(m: Measured, a: Assumptions = Assumptions()) -> str:
    rows = [
        "| customers | events/s | workers (bound by) | partitions | memory per worker"
        " | restart | replacement + catch-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for customers in CUSTOMERS:
        for rate in RATES:
            p = plan(customers, rate, m, a)
            rows.append(
                f"| {customers // 1_000_000}M | {rate // 1000}k | {p.workers} ({p.bound_by})"
                f" | {p.partitions} | {_mib(p.memory_mib)} | {_seconds(p.restart_seconds)}"
                f" | {_seconds(p.replacement_seconds)} + {_seconds(p.catch_up_seconds)} |"
            )
    return "\n".join(rows)


def inputs(m: Measured) -> str:
    return (
        f"per worker: {m.events_per_second:,.0f} events/s,"
        f" {m.rss_mib_per_million:,.0f} MiB RSS per million customers,"
        f" restart {m.restart_seconds_per_million:.1f} s and replacement"
        f" {m.replacement_seconds_per_million:.1f} s per million customers"
    )


def _mib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


def _seconds(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    measured = Measured.of(orjson.loads(args.results.read_bytes()))
    print(inputs(measured))
    print()
    print(table(measured))


if __name__ == "__main__":
    main()
