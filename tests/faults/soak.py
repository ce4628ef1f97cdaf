"""Long fault-injection profile (``make soak``): a never-killed run, then several killed runs of
the same input on one embedded broker, each checked; prints the figures table and exits 1 if
any run failed a check.

    python -m tests.faults.soak --customers 3000 --events 60000 --runs 4 --kills 4
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from segstream.runtime.broker import EmbeddedBroker
from tests.faults.figures import details, table
from tests.faults.harness import FaultPlan, Outcome, compare_with_baseline, run
from tests.faults.workload import Workload


def plans(args: argparse.Namespace) -> list[FaultPlan]:
    """Killed runs cycle through every (store, workers) pair asked for; the baseline uses the
    first pair."""
    workload = Workload(customers=args.customers, events=args.events, seed=args.seed)
    pairs = list(itertools.product(args.stores, args.workers))
    base = FaultPlan(
        workload=workload,
        rate=args.rate,
        partitions=args.partitions,
        kills=args.kills,
        fixed_points=tuple(args.fixed),
        mode=args.mode,
        quiet=args.quiet,
        settle_timeout=args.settle_timeout,
    )
    out = []
    if args.baseline:
        store, workers = pairs[0]
        out.append(replace(base.without_kills("never-killed"), store=store, workers=workers))
    for n in range(args.runs):
        store, workers = pairs[n % len(pairs)]
        name, seed = f"kill-{n + 1}", args.seed * 1000 + n
        out.append(replace(base, name=name, store=store, workers=workers, kill_seed=seed))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="segstream-soak-"))
    outcomes: list[Outcome] = []
    with EmbeddedBroker() as broker:
        for index, plan in enumerate(plans(args)):
            print(f"== {plan.name}: {plan.store} x{plan.workers} ...", flush=True)
            outcome = run(plan, broker.bootstrap, tmp / f"{index}-{plan.name}")
            if outcomes and not outcomes[0].kills and args.baseline:
                compare_with_baseline(outcome, outcomes[0])
            outcomes.append(outcome)
            print(details(outcome), flush=True)
    print()
    print(table(outcomes))
    print(f"worker logs and inputs: {tmp}")
    return 0 if all(o.ok for o in outcomes) else 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--events", type=int, default=60_000, help="synth events per run")
    parser.add_argument("--seed", type=int, default=1, help="input and kill schedule seed")
    parser.add_argument("--rate", type=float, default=2500.0, help="input lines per second")
    parser.add_argument("--runs", type=int, default=4, help="killed runs")
    parser.add_argument("--kills", type=int, default=4, help="random kill points per run")
    parser.add_argument(
        "--fixed", type=_floats, default=[1.0], help="kill points as fractions of the feed"
    )
    parser.add_argument("--mode", choices=("restart", "replace", "mixed"), default="mixed")
    parser.add_argument("--stores", type=_words, default=["rocksdb://", "memory://"])
    parser.add_argument("--workers", type=_ints, default=[2, 1])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--quiet", type=float, default=5.0, help="settled after this silence")
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the never-killed run"
    )
    return parser.parse_args(argv)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _words(text: str) -> list[str]:
    return [x if "://" in x else f"{x}://" for x in text.split(",") if x]


if __name__ == "__main__":
    sys.exit(main())
