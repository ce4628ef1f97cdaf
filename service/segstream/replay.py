"""``segstream replay``: run event files through the same core the worker uses."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

from segstream.core.engine import CLOCK_EVENT, Change, Engine
from segstream.core.groups import Period, merge, metrics_of, rows
from segstream.core.rulelang import RuleSet
from segstream.core.timeutil import to_rfc3339
from segstream.present import segment_label

BATCH_LINES = 2048
READ_BYTES = 1 << 20  # lines are read about this much at a time
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
MAX_REPORTED_INVALID = 20

_MOVE = itemgetter("family", "from", "to")


@dataclass(slots=True)
class ReplaySummary:
    events: int = 0
    lines: int = 0
    duplicates: int = 0
    changes: int = 0
    seconds: float = 0.0
    shown: int = 0  # invalid lines listed with file:line (at most MAX_REPORTED_INVALID)
    invalid: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, changes: list[Change]) -> None:
        """Counted by their raw values in C first, then labelled once per distinct move: a
        batch has thousands of changes but only tens of different moves."""
        self.changes += len(changes)
        for (family, old, new), n in Counter(map(_MOVE, changes)).items():
            self.transitions[(family, segment_label(old), segment_label(new))] += n

    @property
    def unlisted(self) -> int:
        """Invalid lines counted but not listed."""
        return sum(self.invalid.values()) - self.shown


def _chunks(paths: list[Path], progress: bool) -> Iterator[tuple[str, list[bytes], Sequence[int]]]:
    """The files' non-blank lines without their line ends, about READ_BYTES at a time: the
    file name, the lines, and the number of each line in its file.

    Lines are split, stripped and checked a chunk at a time (``readlines``, comprehensions)
    rather than one Python iteration each; a chunk without a blank line, nearly every one,
    numbers its lines with a range."""
    total = sum(p.stat().st_size for p in paths)
    bar = None
    if progress and total >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, desc="replay")
    try:
        for path in paths:
            name, first = str(path), 1
            with path.open("rb") as handle:
                while chunk := handle.readlines(READ_BYTES):
                    if bar is not None:
                        bar.update(sum(map(len, chunk)))
                    lines = [line.rstrip(b"\r\n") for line in chunk]
                    numbers: Sequence[int] = range(first, first + len(lines))
                    first += len(lines)
                    if not all(map(bytes.strip, lines)):  # skip blank lines, keep the numbers
                        numbers = [
                            n for n, line in zip(numbers, lines, strict=True) if line.strip()
                        ]
                        lines = [line for line in lines if line.strip()]
                    yield name, lines, numbers
    finally:
        if bar is not None:
            bar.close()


def replay(
    paths: list[Path],
    rules: RuleSet,
    *,
    out: IO[bytes] | None,
    clock: str = CLOCK_EVENT,
    as_of_ms: int | None = None,
    currency: str = "USD",
    progress: bool = True,
    errors: IO[str] = sys.stderr,
    partitions: int = 1,
    show_invalid: Callable[[bytes], bool] | None = None,
    hot_customers: int | None = None,
) -> tuple[Engine, ReplaySummary]:
    """Process the files in order, then settle the clock and population; return the engine.

    Each customer goes to the partition a Kafka producer keyed by ``customer_id`` would pick
    among ``partitions``, and every partition keeps its own clock and cut points, as a worker
    does: with the topics' partition count, replay and the workers decide the same things.

    The first invalid lines (those ``show_invalid`` accepts, if given) are listed on
    ``errors``; ``summary.unlisted`` says how many more there were."""
    engine = Engine(
        rules, clock=clock, currency=currency, partitions=partitions, hot_customers=hot_customers
    )
    summary = ReplaySummary()
    started = time.perf_counter()
    wall_ms = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    now_ms = None if clock == CLOCK_EVENT else wall_ms
    batch: list[bytes] = []
    where: list[tuple[str, int]] = []

    def flush() -> None:
        result = engine.process(batch, now_ms=now_ms, wall_ms=wall_ms)
        summary.events += result.events
        summary.duplicates += result.duplicates
        for index, rejection in result.rejections:
            summary.invalid[rejection.reason.value] += 1
            wanted = show_invalid is None or show_invalid(batch[index])
            if wanted and summary.shown < MAX_REPORTED_INVALID:
                summary.shown += 1
                file, line = where[index]
                errors.write(f"{file}:{line}: {rejection.reason.value}: {rejection.message}\n")
        emit(result.changes)
        engine.drop_pending()
        batch.clear()
        where.clear()

    def emit(changes: list[Change]) -> None:
        summary.count(changes)
        if out is not None and changes:
            out.write(b"".join([orjson.dumps(c) + b"\n" for c in changes]))

    for file, lines, numbers in _chunks(paths, progress):
        summary.lines += len(lines)
        start = 0
        while start < len(lines):  # into batches of BATCH_LINES, across chunks and files
            end = start + BATCH_LINES - len(batch)
            batch.extend(lines[start:end])
            where.extend(zip(repeat(file), numbers[start:end]))
            start = end
            if len(batch) >= BATCH_LINES:
                flush()
    flush()
    if as_of_ms is not None:
        emit(engine.advance(as_of_ms))
    emit(engine.refresh_population())
    summary.seconds = time.perf_counter() - started
    summary.sizes = engine.member_counts()
    return engine, summary


def write_state(engine: Engine, handle: IO[bytes]) -> None:
    for customer_id in engine.customer_ids():
        explained = engine.explain(customer_id)
        assert explained is not None
        line = {
            "customer_id": customer_id,
            "state": explained["state"],
            "segments": explained["segments"],
        }
        handle.write(orjson.dumps(line) + b"\n")


def format_summary(summary: ReplaySummary, engine: Engine) -> str:
    rate = summary.events / summary.seconds if summary.seconds else 0.0
    lines = [
        f"lines {summary.lines}  events {summary.events}  duplicates {summary.duplicates}  "
        f"invalid {sum(summary.invalid.values())}  changes {summary.changes}  "
        f"customers {engine.customer_count()}  {summary.seconds:.2f}s ({rate:,.0f} events/s)",
        f"rules {engine.rules.version}  clock {engine.clock} as of {_as_of(engine)}",
        "",
        "segment sizes:",
    ]
    for family, counts in summary.sizes.items():
        members = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {family:<20} {members or '-'}")
    if summary.transitions:
        lines += ["", "transitions (family: from -> to  count):"]
        for (family, old, new), n in sorted(summary.transitions.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {family:<20} {old:>20} -> {new:<20} {n}")
    if summary.invalid:
        lines += ["", "invalid events by reason:"]
        lines += [f"  {reason:<20} {n}" for reason, n in summary.invalid.most_common()]
    return "\n".join(lines) + "\n"


def _as_of(engine: Engine) -> str:
    return to_rfc3339(engine.clock_ms) if engine.clock_ms is not None else "-"


def open_out(path: str | None) -> Any:
    if path in (None, "-"):
        return os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    return Path(path).open("wb")


def group_periods(engine: Engine) -> dict[str, list[Period]]:
    """Every group's periods over all the engine's partitions, as the workers merge them."""
    partials = [engine.group_partial(p) for p in sorted(engine.lanes)]
    return {
        name: merge(spec, (p["groups"].get(name) for p in partials))
        for name, spec in engine.rules.groups.items()
    }


def group_rows(engine: Engine, periods: dict[str, list[Period]]) -> list[dict[str, Any]]:
    return [row for name, ps in periods.items() for row in rows(engine.rules.groups[name], ps)]


def format_groups(engine: Engine, periods: dict[str, list[Period]]) -> str:
    """A table per group and period, newest period first."""
    lines: list[str] = []
    for name, ps in periods.items():
        spec = engine.rules.groups[name]
        lines.append(f"group {name}  by {spec.by}  period {spec.period}")
        if not ps:
            lines.append("  no figures yet")
        for period in ps:
            state = "closed" if period.closed else "open"
            lines.append(f"  {period.period} ({period.start}..{period.end}, {state})")
            header = "".join(f"{m:>12}" for m in spec.metrics)
            lines.append(f"    {'value':<24}{header}")
            for value, (members, tally) in period.figures.items():
                figures = metrics_of(spec, members, tally)
                cells = "".join(f"{_cell(figures[m]):>12}" for m in spec.metrics)
                lines.append(f"    {value[:24]:<24}{cells}")
            if period.folded:
                lines.append(f"    ({period.folded} values beyond max_values added up as (other))")
        lines.append("")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def shadow_diff(engine: Engine, shadow: RuleSet) -> dict[str, Any]:
    """What promoting ``shadow`` would move, compared on every customer as of the engine's
    clocks (``segstream rules diff``)."""
    engine.set_shadow(shadow)
    engine.observe_shadow(engine.customer_ids())
    report = engine.shadow_report()
    assert report is not None
    return report


def format_diff(report: dict[str, Any]) -> str:
    lines = [
        f"rules {report['live']} -> {report['shadow']}: {report['customers_compared']} customers"
        f" compared, {report['customers_moving']} would move",
        "",
        f"  {'segment':<24}{'entered':>10}{'exited':>10}{'upgraded':>10}{'downgraded':>12}",
    ]
    for name, counts in report["segments"].items():
        lines.append(
            f"  {name[:24]:<24}{counts['entered']:>10}{counts['exited']:>10}"
            f"{counts['upgraded']:>10}{counts['downgraded']:>12}"
        )
    if report["matrix"]:
        lines += ["", "from -> to (customers):"]
        for row in report["matrix"]:
            lines.append(
                f"  {row['segment']:<24}{row['from']:>20} -> {row['to']:<20}{row['customers']}"
            )
    return "\n".join(lines) + "\n"
