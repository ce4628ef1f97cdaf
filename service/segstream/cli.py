"""The ``segstream`` command. Streaming commands import the runtime lazily, so the offline
commands never load faust or aiokafka."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from segstream.core.rulelang import RuleErrors, RuleSet, load_rules
from segstream.core.timeutil import parse_timestamp

DEFAULT_RULES = "rules"


def _rules(path: str) -> RuleSet:
    try:
        return load_rules(path)
    except RuleErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        raise SystemExit(2) from None


def _timestamp(value: str) -> int:
    try:
        return parse_timestamp(int(value) if value.lstrip("-").isdigit() else value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_replay(args: argparse.Namespace) -> int:
    from segstream.replay import format_summary, open_out, replay, write_state

    rules = _rules(args.rules)
    paths = [Path(p) for p in args.events]
    for path in paths:
        if not path.is_file():
            print(f"segstream replay: no such file: {path}", file=sys.stderr)
            return 2
    with open_out(args.out) as out:
        engine, summary = replay(
            paths,
            rules,
            out=out,
            clock=args.clock,
            as_of_ms=args.as_of,
            currency=args.currency,
            progress=not args.no_progress,
            partitions=args.partitions,
        )
    if args.state_out:
        with Path(args.state_out).open("wb") as handle:
            write_state(engine, handle)
    report = sys.stderr if args.out in (None, "-") else sys.stdout
    report.write(format_summary(summary, engine))
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    rules = _rules(args.dir)
    print(
        f"ok {rules.version}: {len(rules.families)} families, {len(rules.flags)} flags, "
        f"{len(rules.scores)} scores, {len(rules.derived)} derived"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from segstream.replay import replay

    rules = _rules(args.rules)
    engine, _ = replay(
        [Path(p) for p in args.events],
        rules,
        out=None,
        as_of_ms=args.as_of,
        progress=False,
        partitions=args.partitions,
    )
    explained = engine.explain(args.customer_id)
    if explained is None:
        print(f"no events for customer {args.customer_id!r}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(explained, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(
        f"customer {explained['customer_id']}  as of {explained['as_of']}  "
        f"rules {explained['rules_version']}"
    )
    print("state:")
    for key, value in explained["state"].items():
        print(f"  {key:<22} {value}")
    for family, tiers in explained["families"].items():
        print(f"{family}: {explained['segments'][family]}")
        for tier in tiers:
            mark = "holds " if tier["holds"] else "fails "
            print(f"  {mark} {tier['tier']:<20} {tier['when']}")
    for flag, info in explained["flags"].items():
        print(f"{flag}: {'yes' if info['holds'] else 'no'}   ({info['when']})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from segstream.synth import SynthConfig, generate

    cfg = SynthConfig(
        customers=args.customers,
        events=args.events,
        seed=args.seed,
        invalid_rate=args.invalid_rate,
        duplicate_rate=args.duplicate_rate,
    )
    with Path(args.out).open("wb") as handle:
        for event in generate(cfg):
            handle.write(orjson.dumps(event) + b"\n")
    return 0


def cmd_rules_publish(args: argparse.Namespace) -> int:
    from segstream.runtime.publish import publish_rules

    return publish_rules(args.dir, allow_removal=args.allow_removal)


def cmd_worker(args: argparse.Namespace) -> int:
    from segstream.runtime.main import run_worker

    return run_worker(demo=args.demo)


def _partitions_argument(parser: argparse.ArgumentParser) -> None:
    default = int(os.environ.get("SEGSTREAM_PARTITIONS", "8"))
    parser.add_argument(
        "--partitions",
        type=int,
        default=default,
        help="partitions of the input topics (default: $SEGSTREAM_PARTITIONS or 8, as the worker):"
        " clocks and quantile cut points are kept per partition, as the workers keep them",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="run event files through the rules offline")
    p.add_argument("events", nargs="+", help="JSONL files, one event per line")
    p.add_argument("--rules", default=DEFAULT_RULES, help="rules directory or file")
    p.add_argument("--out", help="write change events here (default: stdout)")
    p.add_argument("--state-out", help="write one line per customer: state and segments")
    p.add_argument("--clock", choices=("event", "wall"), default="event")
    p.add_argument("--as-of", type=_timestamp, help="advance the clock to this time at the end")
    p.add_argument("--currency", default="USD")
    _partitions_argument(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_replay)

    rules = sub.add_parser("rules", help="check or publish a rule set").add_subparsers(
        dest="rules_command", required=True
    )
    p = rules.add_parser("check", help="validate a rule set and print its version")
    p.add_argument("dir")
    p.set_defaults(func=cmd_rules_check)
    p = rules.add_parser("publish", help="validate and send a rule set to the workers")
    p.add_argument("dir")
    p.add_argument(
        "--allow-removal",
        action="store_true",
        help="publish even if the set drops a family or flag the workers run",
    )
    p.set_defaults(func=cmd_rules_publish)

    p = sub.add_parser("explain", help="why a customer is in its segments")
    p.add_argument("customer_id")
    p.add_argument("--events", nargs="+", required=True)
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--as-of", type=_timestamp)
    _partitions_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("generate", help="write seeded synthetic events as JSONL")
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--invalid-rate", type=float, default=0.0)
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("worker", help="run the streaming worker (see the README for config)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="also run an embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set) "
        "and a synthetic feed",
    )
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
