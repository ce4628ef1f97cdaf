"""The sizing guide: its arithmetic, and docs/performance.md quoting the last bench figures."""

from __future__ import annotations

from pathlib import Path

import orjson
from bench.sizing import Assumptions, Measured, plan, table

ROOT = Path(__file__).resolve().parents[2]
WORKER = Measured(
    events_per_second=10_000,
    rss_mib_per_million=2_000,
    restart_seconds_per_million=30,
    replacement_seconds_per_million=60,
)


def test_workers_follow_the_rate_when_memory_is_not_the_limit() -> None:
    p = plan(1_000_000, 100_000, WORKER, Assumptions(utilisation=0.5))
    assert (p.workers, p.bound_by) == (20, "throughput")
    assert p.partitions == 128  # 4 per worker, rounded up to a power of two
    assert p.restart_seconds == 30 / 20
    assert p.replacement_seconds == 60 / 20


def test_memory_takes_more_workers_than_the_rate_when_customers_do_not_fit() -> None:
    a = Assumptions(memory_limit_mib=4_300, base_rss_mib=300)
    p = plan(100_000_000, 1_000, WORKER, a)
    assert (p.workers, p.bound_by) == (50, "memory")  # 200 GiB of customers, 4 GiB each
    assert p.memory_mib == 300 + 4_000
    assert p.restart_seconds == 30 * 2


def test_catch_up_is_the_backlog_of_a_replacement_drained_with_the_spare_throughput() -> None:
    p = plan(1_000_000, 5_000, WORKER, Assumptions(utilisation=0.6))
    assert p.workers == 1
    # 60 s of recovery at 5k/s leaves 300k events, drained at 10k - 5k per second
    assert p.catch_up_seconds == 60.0


def test_the_guide_quotes_the_last_measured_figures() -> None:
    results = orjson.loads((ROOT / "bench" / "results" / "latest.json").read_bytes())
    guide = (ROOT / "docs" / "performance.md").read_text()
    assert table(Measured.of(results)) in guide, "re-run python -m bench.sizing into the guide"
