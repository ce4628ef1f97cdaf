"""The ``segstream`` command. Streaming commands import the runtime lazily, so the offline
commands never load faust or aiokafka.

A mistake (a missing file, a bad number, an unreachable cluster) is one line on stderr,
``segstream COMMAND: what is wrong``, and a non-zero exit code: 2 for what the user gave, 1
for what failed on the way; 130 on Ctrl-C; 141 when the reader of stdout went away (``| head``).
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from segstream.core.rulelang import RuleErrors, RuleSet, load_rules
from segstream.core.timeutil import parse_timestamp, to_rfc3339
from segstream.present import segment_label

DEFAULT_RULES = "rules"
PARTITIONS_ENV = "SEGSTREAM_PARTITIONS"
MAX_PARTITIONS = 4096
EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 1, 130, 141


class Mistake(Exception):
    """Something the user gave cannot be used: one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _rules(path: str) -> RuleSet:
    try:
        return load_rules(path)
    except RuleErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _timestamp(value: str) -> int:
    try:
        ms = parse_timestamp(int(value) if value.lstrip("-").isdigit() else value)
        to_rfc3339(ms)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return ms


def _count(least: int, most: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if number < least or (most is not None and number > most):
            bound = f"from {least} to {most}" if most is not None else f"at least {least}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {number}")
        return number

    return parse


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {value}")
    return rate


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise argparse.ArgumentTypeError(f"not an ISO 4217 code such as USD: {value!r}")
    return value


def _partitions(args: argparse.Namespace) -> int:
    """``--partitions``, else ``$SEGSTREAM_PARTITIONS``, else 8 (as the worker)."""
    if args.partitions is not None:
        return int(args.partitions)
    raw = os.environ.get(PARTITIONS_ENV)
    if raw is None:
        return 8
    try:
        return _count(1, MAX_PARTITIONS)(raw)
    except argparse.ArgumentTypeError as exc:
        raise Mistake(f"{PARTITIONS_ENV}={raw!r} (the default of --partitions): {exc}") from None


def _inputs(names: list[str], flag: str) -> list[Path]:
    """Readable files, checked before any work starts."""
    paths = [Path(name) for name in names]
    for path in paths:
        if path.is_dir():
            raise Mistake(f"{flag}{path} is a directory; give the event files")
        try:
            path.open("rb").close()
        except OSError as exc:
            raise Mistake(f"{flag}{path}: {exc.strerror or exc}") from None
    return paths


def _output(name: str, flag: str, inputs: list[Path]) -> IO[bytes]:
    """Open an output before the work starts, so a wrong path costs nothing."""
    path = Path(name)
    if path.is_dir():
        raise Mistake(f"{flag} {path} is a directory; give a file name")
    if any(path.exists() and path.samefile(source) for source in inputs):
        raise Mistake(f"{flag} {path} is also an input; it would be overwritten")
    try:
        return path.open("wb")
    except OSError as exc:
        raise Mistake(f"{flag} {path}: {exc.strerror or exc}") from None


@contextmanager
def _few_full_collections() -> Iterator[None]:
    """A worker builds one large heap that lives on (every customer's state) and makes little
    cyclic garbage, while the default thresholds have the collector traverse that whole heap
    again each time it grew by a quarter (a fifth of the core's time or more, measured when
    replay ran this way). Young collections still run, less often; full ones at most every 100M
    net allocations."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextmanager
def _no_cyclic_collector() -> Iterator[None]:
    """A replay runs only the pure core, which makes no reference cycles (a test runs random
    streams, rejections, rule changes and recoveries with the collector off and finds no
    garbage it would have freed): its memory is freed by reference counts alone, so the cyclic
    collector would only walk the young objects of every allocation, 7-9% of the core's CPU
    (docs/performance.md). The worker keeps the collector: faust and asyncio make cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # everything allocated meanwhile is still young: handed to the oldest generation at
        # once, the next young collection does not walk the whole heap (a second a million)
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def cmd_replay(args: argparse.Namespace) -> int:
    from segstream.replay import format_summary, open_out, replay, write_state

    partitions = _partitions(args)
    paths = _inputs(args.events, "")
    rules = _rules(args.rules)
    out = open_out(None) if args.out in (None, "-") else _output(args.out, "--out", paths)
    state_out = _output(args.state_out, "--state-out", paths) if args.state_out else None
    with out, _no_cyclic_collector():
        engine, summary = replay(
            paths,
            rules,
            out=out,
            clock=args.clock,
            as_of_ms=args.as_of,
            currency=args.currency,
            progress=not args.no_progress,
            partitions=partitions,
            hot_customers=args.hot_customers,
        )
    if state_out is not None:
        with state_out:
            write_state(engine, state_out)
    if summary.unlisted:
        print(
            f"{summary.unlisted} more invalid lines not listed (counts by reason below)",
            file=sys.stderr,
        )
    report = sys.stderr if args.out in (None, "-") else sys.stdout
    report.write(format_summary(summary, engine))
    report.flush()
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    rules = _rules(args.dir)
    print(
        f"ok {rules.version}: {len(rules.families)} families, {len(rules.flags)} flags, "
        f"{len(rules.scores)} scores, {len(rules.derived)} derived"
    )
    return 0


def _of_customer(customer_id: str) -> Callable[[bytes], bool]:
    def test(line: bytes) -> bool:
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        return isinstance(body, dict) and body.get("customer_id") == customer_id

    return test


def cmd_explain(args: argparse.Namespace) -> int:
    from segstream.replay import replay

    partitions = _partitions(args)
    paths = _inputs(args.events, "--events ")
    rules = _rules(args.rules)
    engine, summary = replay(
        paths,
        rules,
        out=None,
        as_of_ms=args.as_of,
        progress=False,
        partitions=partitions,
        show_invalid=_of_customer(args.customer_id),
    )
    others = sum(summary.invalid.values()) - summary.shown
    if others:
        print(
            f"{others} invalid lines of other or no customers not listed "
            "(segstream replay lists them)",
            file=sys.stderr,
        )
    explained = engine.explain(args.customer_id)
    if explained is None:
        raise Mistake(f"no events for customer {args.customer_id!r}", EXIT_FAILED)
    if args.at is not None:
        return _explain_at(engine.segments_at(args.customer_id, args.at) or {}, args.json)
    if args.json:
        sys.stdout.write(orjson.dumps(explained, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(
        f"customer {explained['customer_id']}  as of {explained['as_of']}  "
        f"rules {explained['rules_version']}"
    )
    print("state:")
    for key, value in explained["state"].items():
        print(f"  {key:<22} {'-' if value is None else value}")
    for family, tiers in explained["families"].items():
        print(f"{family}: {segment_label(explained['segments'][family], none='none')}")
        for tier in tiers:
            mark = "holds " if tier["holds"] else "fails "
            print(f"  {mark} {tier['tier']:<20} {tier['when']}")
    for flag, info in explained["flags"].items():
        print(f"{flag}: {segment_label(bool(info['holds']))}   ({info['when']})")
    return 0


def cmd_rules_diff(args: argparse.Namespace) -> int:
    from segstream.replay import format_diff, replay, shadow_diff

    partitions = _partitions(args)
    paths = _inputs(args.events, "--events ")
    old, new = _rules(args.old), _rules(args.new)
    engine, _ = replay(
        paths,
        old,
        out=None,
        as_of_ms=args.as_of,
        progress=False,
        partitions=partitions,
        errors=io.StringIO(),  # `segstream replay` lists invalid lines
    )
    try:
        report = shadow_diff(engine, new)
    except ValueError as exc:
        raise Mistake(str(exc)) from None
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        sys.stdout.write(format_diff(report))
    return 0


def cmd_report_groups(args: argparse.Namespace) -> int:
    from segstream.replay import format_groups, group_periods, group_rows, replay

    partitions = _partitions(args)
    paths = _inputs(args.events, "--events ")
    rules = _rules(args.rules)
    if not rules.groups:
        raise Mistake(f"the rule set in {args.rules} declares no groups ('groups:' section)")
    if args.group is not None and args.group not in rules.groups:
        raise Mistake(f"no group {args.group!r}; the rules declare {', '.join(rules.groups)}")
    engine, _ = replay(
        paths,
        rules,
        out=None,
        clock=args.clock,
        as_of_ms=args.as_of,
        progress=False,
        partitions=partitions,
        errors=io.StringIO(),  # `segstream replay` lists invalid lines
    )
    periods = group_periods(engine)
    if args.group is not None:
        periods = {args.group: periods[args.group]}
    if args.format == "json":
        lines = (orjson.dumps(row).decode() + "\n" for row in group_rows(engine, periods))
        sys.stdout.write("".join(lines))
    else:
        sys.stdout.write(format_groups(engine, periods))
    return 0


def _explain_at(answer: dict[str, Any], as_json: bool) -> int:
    """Which segments the customer was in at ``--at``, and why (its timeline)."""
    if as_json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"customer {answer['customer_id']}  at {answer['at']}")
    if not answer["complete"]:
        print(
            "  the timeline no longer reaches back to this time (SEGSTREAM_TIMELINE_LENGTH,"
            " SEGSTREAM_TIMELINE_DAYS): unknown"
        )
        return 0
    for name, entry in answer["segments"].items():
        value = segment_label(entry["value"], none="none")
        why = (
            f"since {entry['since']} ({entry['change']}, {entry['cause']}): {entry['matched']}"
            if "since" in entry
            else "(no transition before then)"
        )
        print(f"  {name:<22} {value:<20} {why}")
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
    with _output(args.out, "--out", []) as handle:
        for event in generate(cfg):
            handle.write(orjson.dumps(event) + b"\n")
    return 0


def cmd_rules_publish(args: argparse.Namespace) -> int:
    from segstream.runtime.publish import publish_rules

    return _on_the_cluster(
        lambda: publish_rules(args.dir, allow_removal=args.allow_removal, shadow=args.shadow)
    )


def cmd_rules_promote(args: argparse.Namespace) -> int:
    from segstream.runtime.publish import promote_rules

    return _on_the_cluster(lambda: promote_rules(args.version, allow_removal=args.allow_removal))


def _on_the_cluster(action: Callable[[], int]) -> int:
    """Run a command that talks to Kafka; a bad setting or an unreachable cluster is one line."""
    from aiokafka.errors import KafkaConnectionError

    from segstream.runtime.main import connection_problem
    from segstream.runtime.settings import SettingsError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one line below says it
    try:
        return action()
    except SettingsError as exc:
        raise Mistake(f"invalid configuration: {exc}") from None
    except (KafkaConnectionError, OSError, TimeoutError) as exc:
        servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(
            "SEGSTREAM_BOOTSTRAP_SERVERS", ""
        )
        reason = connection_problem(exc)
        raise Mistake(
            f"cannot reach the Kafka cluster at {servers} (KAFKA_BOOTSTRAP_SERVERS): {reason};"
            " nothing was published",
            EXIT_FAILED,
        ) from None


def cmd_worker(args: argparse.Namespace) -> int:
    from segstream.runtime.main import run_worker

    with _few_full_collections():
        return run_worker(demo=args.demo)


def _partitions_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--partitions",
        type=_count(1, MAX_PARTITIONS),
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
    p.add_argument("--currency", type=_currency, default="USD")
    _partitions_argument(p)
    p.add_argument(
        "--hot-customers",
        type=_count(0),
        help="customers held as objects; the others as their stored bytes, decoded when"
        " needed: less memory, more CPU, the same output (default: all held as objects)",
    )
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
        "--shadow",
        action="store_true",
        help="run it beside the live set, emitting nothing, to see what it would move"
        " (GET /rules/shadow); `rules promote VERSION` makes it live",
    )
    p.add_argument(
        "--allow-removal",
        action="store_true",
        help="publish even if the set drops a family or flag the workers run",
    )
    p.set_defaults(func=cmd_rules_publish)
    p = rules.add_parser("promote", help="make the shadow rule set VERSION the live one")
    p.add_argument("version")
    p.add_argument(
        "--allow-removal",
        action="store_true",
        help="promote even if the set drops a family or flag the workers run",
    )
    p.set_defaults(func=cmd_rules_promote)
    p = rules.add_parser("diff", help="what NEW would move compared with OLD, over event files")
    p.add_argument("old", help="the rules now (directory or file)")
    p.add_argument("new", help="the candidate rules")
    p.add_argument("--events", nargs="+", required=True)
    p.add_argument("--as-of", type=_timestamp, help="advance the clock to this time first")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _partitions_argument(p)
    p.set_defaults(func=cmd_rules_diff)

    p = sub.add_parser("explain", help="why a customer is in its segments")
    p.add_argument("customer_id")
    p.add_argument("--events", nargs="+", required=True)
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--as-of", type=_timestamp)
    p.add_argument(
        "--at",
        type=_timestamp,
        help="which segments the customer was in at this time, and why (from its timeline)",
    )
    _partitions_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    report = sub.add_parser("report", help="figures computed offline").add_subparsers(
        dest="report_command", required=True
    )
    p = report.add_parser("groups", help="group figures (groups: in the rules) from event files")
    p.add_argument("--events", nargs="+", required=True)
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--group", help="only this group")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--clock", choices=("event", "wall"), default="event")
    p.add_argument("--as-of", type=_timestamp, help="advance the clock to this time at the end")
    _partitions_argument(p)
    p.set_defaults(func=cmd_report_groups)

    p = sub.add_parser("generate", help="write seeded synthetic events as JSONL")
    p.add_argument("--customers", type=_count(1), default=1000)
    p.add_argument("--events", type=_count(1), default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--invalid-rate", type=_rate, default=0.0, help="0 to 1")
    p.add_argument("--duplicate-rate", type=_rate, default=0.0, help="0 to 1")
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
    parts = (
        args.command,
        getattr(args, "rules_command", None),
        getattr(args, "report_command", None),
    )
    name = " ".join(part for part in parts if part)
    try:
        code: int = args.func(args)
    except Mistake as exc:
        print(f"segstream {name}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"segstream {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _drop_stdout() -> None:
    """The reader went away: whatever is still buffered for it goes nowhere, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
