"""Replacement recovery, A/B: one changelog, replacement workers of several trees in turn.

    python -m bench.recovery_ab 250000 /work/main /work/wt-recover [--repeat 2] [--profile DIR]

Writes the first N events of the scale file (2M events over 2.5M ids) to a fresh Tansu, lets one
RocksDB worker (this tree) consume them and stops it, as the scale stage does; then starts a
replacement on an empty disk from each TREE in turn (``PYTHONPATH`` = TREE/service:TREE), taking
turns ``--repeat`` times, and prints seconds to ready and customers recovered. The trees read
the same changelog, back to back, so the figures compare on this shared machine.
``--profile DIR`` samples each replacement with py-spy (raw stacks in DIR, summary printed).
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench import stream
from bench.common import events_file
from bench.profile import summarise
from segstream.runtime.broker import EmbeddedBroker


def replacement(
    boot: str, prefix: str, tmp: Path, name: str, tree: Path, profile: Path | None
) -> tuple[float, int]:
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
        return seconds, int(worker.metric("segstream_customers_tracked"))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        worker.stop()
        if profile is not None:
            log = tmp / f"{name}.log"
            (profile / log.name).write_bytes(log.read_bytes())


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
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    parser.add_argument(
        "--serve", type=Path, help="then keep the broker: a line of trees at a time from this FIFO"
    )
    args = parser.parse_args()
    lines = events_file(2_000_000, 2_500_000).read_bytes().splitlines()[: args.events]
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
                seconds, recovered = replacement(boot, prefix, tmp, name, tree, args.profile)
                print(
                    f"{tree}: replacement ready in {seconds:.1f} s, {recovered:,} customers"
                    f" ({seconds / max(recovered, 1) * 1e6:.0f} s per million)",
                    flush=True,
                )
                if args.profile is not None:
                    summarise(args.profile / f"{name}.txt")


if __name__ == "__main__":
    main()
