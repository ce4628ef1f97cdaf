"""Replacement recovery, A/B: one changelog, replacement workers of several trees in turn.

    python -m bench.recovery_ab 250000 /work/main /work/wt-recover [--repeat 2] [--profile DIR]

Writes the first N events of the scale file (2M events over 2.5M ids; ``--customers C``: a
file of N events over C ids, as ``bench.run --scale-events N --scale-customers C``) to a fresh
Tansu, lets one RocksDB worker (this tree) consume them and stops it, as the scale stage does;
then starts a replacement on an empty disk from each TREE in turn (``PYTHONPATH`` =
TREE/service:TREE), taking turns ``--repeat`` times, and prints seconds to ready, the worker's
CPU seconds (all threads), customers recovered and the phases of the start, from its log. The
trees read the same changelog, back to back, so the figures compare on this shared machine.
``--profile DIR`` samples each replacement with py-spy (raw stacks in DIR, summary printed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import orjson

from bench import stream
from bench.common import events_file
from bench.profile import summarise
from segstream.runtime.broker import EmbeddedBroker


def replacement(
    boot: str, prefix: str, tmp: Path, name: str, tree: Path, profile: Path | None
) -> Recovered:
    os.environ["PYTHONPATH"] = f"{tree / 'service'}:{tree}"
    started = time.perf_counter()
    worker = stream.start_worker(boot, prefix, tmp, name, store="rocksdb://")
    spy = None
    if profile is not None:
        out = profile / f"{name}.txt"
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid"]
        command += [str(worker.proc.pid), "--output", str(out), "--format", "raw"]
        command += ["--rate", "100", "--nonblocking", "--subprocesses"]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not stream.wait_until(worker.ready, 3600):
            raise RuntimeError(f"{name} did not recover")
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds(worker.proc.pid)
        customers = int(worker.metric("segstream_customers_tracked"))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        worker.stop()
        log = tmp / f"{name}.log"
        if profile is not None:
            (profile / log.name).write_bytes(log.read_bytes())
    return Recovered(seconds, cpu, customers, _phases(log))


class Recovered(NamedTuple):
    seconds: float
    cpu_seconds: float  # the worker's, all threads: less noisy than the wall clock here
    customers: int
    phases: dict[str, float]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: log lines that end a phase of the start, in order
_PHASE_ENDS = {
    "start": "[^_Worker]: Starting",
    "join": "Restoring state from changelog",  # assigned, highwaters read
    "changelog": "Done reading from changelog",
    "adopt": "ready: partitions",  # the rules topic read, then adoption and settling
}


def _phases(log: Path) -> dict[str, float]:
    """Seconds between the log lines of _PHASE_ENDS (the first of each)."""
    seen: dict[str, float] = {}
    for line in log.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        message = entry.get("message", "")
        for phase, text in _PHASE_ENDS.items():
            if phase not in seen and text in message:
                at = entry["time"].replace("Z", "+00:00")
                seen[phase] = datetime.datetime.fromisoformat(at).timestamp()
    names = [p for p in _PHASE_ENDS if p in seen]
    return {b: round(seen[b] - seen[a], 1) for a, b in itertools.pairwise(names)}


def _commands(fifo: Path) -> Iterator[list[Path]]:
    while True:
        with fifo.open() as handle:
            for line in handle:
                if line.strip() == "quit":
                    return
                yield [Path(t) for t in line.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("events", type=int)
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument(
        "--customers", type=int, help="ids of a file of its own (bench.run's --scale-customers)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    parser.add_argument(
        "--serve", type=Path, help="then keep the broker: a line of trees at a time from this FIFO"
    )
    args = parser.parse_args()
    if args.customers is None:
        lines = events_file(2_000_000, 2_500_000).read_bytes().splitlines()[: args.events]
    else:
        lines = events_file(args.events, args.customers).read_bytes().splitlines()
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedBroker() as broker:
        tmp, boot = Path(tmp_name), broker.bootstrap
        prefix = f"rab-{uuid.uuid4().hex[:6]}-"
        asyncio.run(stream._topics(boot, prefix))
        asyncio.run(stream.produce_lines(boot, lines, stream.prefixed(prefix)))
        held = stream.consume_then_stop(
            boot, prefix, tmp, f"{prefix}own", len(lines), store="rocksdb://"
        )
        print(f"{len(lines):,} events, {held['customers']:,} customers held", flush=True)
        rounds: Iterable[list[Path]] = [args.trees] * args.repeat
        if args.serve is not None:
            rounds = itertools.chain(rounds, _commands(args.serve))
        for turn, trees in enumerate(rounds):
            for i, tree in enumerate(trees):
                name = f"{prefix}r{turn}-t{i}"
                done = replacement(boot, prefix, tmp, name, tree, args.profile)
                per_million = 1e6 / max(done.customers, 1)
                print(
                    f"{tree}: replacement ready in {done.seconds:.1f} s"
                    f" ({done.seconds * per_million:.0f} s per million),"
                    f" worker CPU {done.cpu_seconds:.1f} s, {done.customers:,} customers;"
                    f" phases {done.phases}",
                    flush=True,
                )
                if args.profile is not None:
                    summarise(args.profile / f"{name}.txt")


if __name__ == "__main__":
    main()
