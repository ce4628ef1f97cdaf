"""Where the time goes: the profiles quoted in docs/performance.md.

    python -m bench.profile core   [--events 100000] [--customers 10000]
    python -m bench.profile worker [--events 250000] [--customers 100000] [--rate 200]

``core`` times the engine's stages with thin wrappers (no profiler overhead on the rest), the
way the table in docs/performance.md was made. ``worker`` starts a broker and one worker
process, samples it with py-spy while it consumes, and prints the hottest frames, inclusive
and self (``--customers 100000`` reads the first ``--events`` lines of the 1M-event file).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import stream
from bench.common import events_file
from segstream.core import state
from segstream.core.engine import Engine
from segstream.core.rulelang import load_rules
from segstream.core.scheduling import Schedule

ROOT = Path(__file__).resolve().parents[1]


def _lines(events: int, customers: int) -> list[bytes]:
    if customers >= 100_000:  # a slice of the big file keeps its customer universe
        return events_file(1_000_000, 100_000).read_bytes().splitlines()[:events]
    return events_file(events, customers).read_bytes().splitlines()


def core(lines: list[bytes]) -> None:
    engine = Engine(load_rules(ROOT / "rules"), clock="event")
    spent: collections.Counter[str] = collections.Counter()
    clock = time.perf_counter_ns

    def timed(owner: Any, name: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] += clock() - began

        setattr(owner, name, wrapper)

    for name in ("parse", "_values", "_diff", "_change", "_schedule"):
        timed(engine, name, name.strip("_"))
    timed(engine.rules, "evaluate", "rules (compiled)")
    timed(Schedule, "next_change_day", "next_change_day")
    for name in ("values", "compact", "apply"):
        timed(state.CustomerState, name, f"state.{name}")
    gc.collect()
    gc.disable()  # as `segstream replay` and the core stage run the core
    try:
        began = clock()
        for start in range(0, len(lines), 4096):
            engine.process(lines[start : start + 4096])
            engine.drop_pending()
        total = clock() - began
    finally:
        gc.enable()
    print(f"{len(lines) / total * 1e9:,.0f} events/s (with wrappers), {engine.evaluations:,} evals")
    for label, ns in spent.most_common():
        print(f"  {label:<18} {ns / total:6.1%}  {ns / len(lines) / 1e3:6.2f} us/event")


def worker(lines: list[bytes], rate: int) -> None:
    from segstream.runtime.broker import EmbeddedBroker

    tmp = Path(tempfile.mkdtemp())
    with EmbeddedBroker() as broker:
        prefix = "prof-"
        asyncio.run(stream._topics(broker.bootstrap, prefix))
        asyncio.run(stream.produce_lines(broker.bootstrap, lines, stream.prefixed(prefix)))
        proc = stream.start_worker(broker.bootstrap, prefix, tmp, "worker")
        try:
            stream.wait_until(proc.ready, 120)
            out = tmp / "py-spy.txt"
            command = [str(Path(sys.executable).with_name("py-spy")), "record"]
            command += ["--pid", str(proc.proc.pid), "--output", str(out), "--format", "raw"]
            command += ["--rate", str(rate), "--nonblocking"]
            spy = subprocess.Popen(command)
            began = time.perf_counter()
            done = len(lines)
            stream.wait_until(lambda: proc.metric("segstream_events_consumed_total") >= done, 3600)
            seconds = time.perf_counter() - began
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        finally:
            proc.stop()
    print(f"worker: {len(lines) / seconds:,.0f} events/s while sampled")
    summarise(out)


def summarise(raw: Path, top: int = 30) -> None:
    """Collapsed py-spy stacks to inclusive and self shares per function."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [re.sub(r" \(/.*?([^/]+/[^/]+\.py):\d+\)", r" (\1)", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title} ({total} samples)")
        for frame, n in counter.most_common(top):
            print(f"{n / total:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["core", "worker"])
    parser.add_argument("--events", type=int)
    parser.add_argument("--customers", type=int)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args()
    if args.what == "core":
        core(_lines(args.events or 100_000, args.customers or 10_000))
    else:
        worker(_lines(args.events or 250_000, args.customers or 100_000), args.rate)


if __name__ == "__main__":
    main()
