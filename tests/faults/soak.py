"""Long fault-injection profile (``make soak``): a never-killed run, then several faulted runs
of the same input on one embedded broker (random SIGKILLs plus ``--faults``: rebalances, a
paused broker, kills mid-recovery and during a rules re-evaluation), each checked; then the
bad-input fuzzer with many examples, and a sustained load with RSS and lag sampled every
second. Prints the figures and exits 1 if any check failed.

    python -m tests.faults.soak --customers 3000 --events 60000 --runs 4 --kills 4
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

from segstream.runtime.broker import EmbeddedBroker
from tests.faults import fuzz
from tests.faults.figures import details, table
from tests.faults.harness import (
    KINDS,
    Fault,
    FaultPlan,
    Outcome,
    broker_pid,
    compare_with_baseline,
    run,
)
from tests.faults.load import LoadPlan, sustain
from tests.faults.workload import Workload
from tests.integration.conftest import Deployment
from tests.integration.test_rules_topic import BIG, rule_dir


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
        out.append(
            replace(
                base,
                name=name,
                store=store,
                workers=workers,
                kill_seed=seed,
                faults=tuple(args.faults),
                rules_dir=args.rules_dir,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="segstream-soak-"))
    args.rules_dir = rule_dir(tmp, "rules-published", add=BIG)
    outcomes: list[Outcome] = []
    ok = True
    with EmbeddedBroker() as broker:
        for index, plan in enumerate(plans(args)):
            print(f"== {plan.name}: {plan.store} x{plan.workers} ...", flush=True)
            outcome = run(
                plan, broker.bootstrap, tmp / f"{index}-{plan.name}", broker=broker_pid(broker)
            )
            if outcomes and not outcomes[0].kills and args.baseline:
                compare_with_baseline(outcome, outcomes[0])
            outcomes.append(outcome)
            print(details(outcome), flush=True)
        if outcomes:
            print()
            print(table(outcomes), flush=True)
            ok = all(o.ok for o in outcomes)
        if args.fuzz_records or args.fuzz_rules:
            ok &= run_fuzz(args, broker.bootstrap, tmp / "fuzz")
    if args.load_seconds:
        with EmbeddedBroker() as broker:  # a fresh broker: nothing left over from the runs
            plan = LoadPlan(
                rate=args.load_rate,
                seconds=args.load_seconds,
                warmup=args.load_warmup,
                workers=args.load_workers,
                customers=args.load_customers,
            )
            report = sustain(plan, broker.bootstrap, tmp / "load")
            print(report.text(), flush=True)
            ok &= report.alive
    print(f"worker logs and inputs: {tmp}")
    return 0 if ok else 1


def run_fuzz(args: argparse.Namespace, bootstrap: str, tmp: Path) -> bool:
    dep = Deployment(bootstrap, f"z{uuid.uuid4().hex[:8]}-", tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    worker = dep.start_worker()
    worker.wait_ready()
    fuzzer = fuzz.Fuzzer(dep, worker)
    failures: list[str] = []
    steps = (
        (fuzz.fuzz_records, args.fuzz_records),
        (fuzz.fuzz_rules_topic, args.fuzz_rules),
        (fuzz.fuzz_rules_check, args.fuzz_rules * 5),
    )
    try:
        for step, examples in steps:
            try:
                step(fuzzer, examples, args.seed)
            except Exception as exc:  # the figures still print; the first failure is shown
                failures.append(f"{step.__name__}: {str(exc)[:3000]}")
    finally:
        worker.stop()
    print(f"== fuzz (seed {args.seed}):\n{fuzzer.figures()}", flush=True)
    for failure in failures:
        print(f"FUZZ FAILURE {failure}", flush=True)
    return not failures


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
    parser.add_argument(
        "--faults",
        type=_faults,
        default=_faults("add@0.15,pause3@0.3,rules@0.45,recovery@0.6,stop@0.8"),
        help="more faults per run: KIND[SECONDS]@FRACTION,...; kinds: " + ", ".join(KINDS),
    )
    parser.add_argument("--fuzz-records", type=int, default=300, help="record batches drawn")
    parser.add_argument("--fuzz-rules", type=int, default=100, help="rule sets to the worker")
    parser.add_argument("--load-seconds", type=float, default=600.0, help="0: no load run")
    parser.add_argument("--load-rate", type=float, default=2000.0, help="events per second")
    parser.add_argument("--load-warmup", type=float, default=60.0)
    parser.add_argument("--load-workers", type=int, default=1)
    parser.add_argument("--load-customers", type=int, default=20_000)
    return parser.parse_args(argv)


def _faults(text: str) -> list[Fault]:
    out = []
    for item in filter(None, text.split(",")):
        spec, at = item.split("@")
        kind = spec.rstrip("0123456789.")
        out.append(Fault(float(at), kind, float(spec[len(kind) :] or 0)))
    return out


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _words(text: str) -> list[str]:
    return [x if "://" in x else f"{x}://" for x in text.split(",") if x]


if __name__ == "__main__":
    sys.exit(main())
