"""Short fault-injection profile: SIGKILLed workers (under load, mid-recovery, mid rules
re-evaluation) and a paused broker, then the change topic and the final segments checked per
customer against the offline replay (tests/faults). ``make soak`` runs the long profile, with
rebalances too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from segstream.runtime.broker import EmbeddedBroker
from tests.faults.figures import details, table
from tests.faults.harness import Fault, FaultPlan, broker_pid, run
from tests.faults.workload import Workload
from tests.integration.test_rules_topic import BIG, rule_dir

SHORT = FaultPlan(
    workload=Workload(customers=600, events=8_000, seed=7),
    name="short",
    rate=1_000.0,
    workers=2,
    store="rocksdb://",
    kills=0,
    kill_seed=4,
    mode="mixed",
    quiet=3.0,
    settle_timeout=60.0,
    faults=(
        Fault(0.2, "pause", 3.0),  # the broker stopped for 3 s under load
        Fault(0.6, "recovery"),  # killed, and its replacement killed again before it is ready
        # (kill_seed 4: the second replacement gets a new data directory), then, after the
        # feed, a worker killed while it re-evaluates its customers under a new rule set.
        # Published mid-feed, the kill loses a refund now and then: docs/reliability.md
        Fault(1.0, "rules"),
    ),
)


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: the pause fault stops it."""
    with EmbeddedBroker() as broker:
        yield broker


def test_faulted_workers_lose_nothing_and_end_where_replay_ends(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    plan = FaultPlan(**{**SHORT.__dict__, "rules_dir": rule_dir(tmp_path, "rules", add=BIG)})
    outcome = run(plan, own_broker.bootstrap, tmp_path, broker=broker_pid(own_broker))
    figures = f"{table([outcome])}\n{details(outcome)}"
    print(figures)
    assert outcome.ok, f"fault checks failed (worker logs in {tmp_path}):\n{figures}"
