"""Short fault-injection profile: SIGKILLed workers, then the change topic and the final
segments checked per customer against the offline replay (tests/faults). ``make soak`` runs
the long profile."""

from __future__ import annotations

from pathlib import Path

from tests.faults.figures import details, table
from tests.faults.harness import FaultPlan, run
from tests.faults.workload import Workload

SHORT = FaultPlan(
    workload=Workload(customers=600, events=8_000, seed=7),
    name="short",
    rate=2_000.0,
    workers=2,
    store="rocksdb://",
    kills=1,
    fixed_points=(1.0,),  # and once more at the end of the feed, mid catch-up
    kill_seed=4,  # a restart at 70% of the feed, then a replacement at its end
    mode="mixed",
    quiet=3.0,
    settle_timeout=60.0,
)


def test_killed_workers_lose_nothing_and_end_where_replay_ends(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    outcome = run(SHORT, kafka_bootstrap, tmp_path)
    figures = f"{table([outcome])}\n{details(outcome)}"
    print(figures)
    assert outcome.ok, f"fault checks failed (worker logs in {tmp_path}):\n{figures}"
