"""What a worker does when its broker restarts empty (Tansu keeps everything in memory).

Not a pass/fail check: it prints a timeline (process alive, ``/readyz`` status and reason,
events consumed, new log lines) while the broker is down, after a new empty broker comes up on
the same port, and after input arrives again, plus the distinct warning/error lines the worker
logged. docs/reliability.md records what it showed.

    python -m tests.faults.broker_restart [--down 20] [--after 60]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from segstream.runtime.broker import EmbeddedBroker, free_port
from tests.faults.fuzz import metrics
from tests.faults.harness import _feed, _Progress
from tests.faults.workload import Workload, generate_lines
from tests.integration.conftest import Deployment, WorkerProcess, read_all

NOISE = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback|Error|exception", re.IGNORECASE)


def observe(down: float, after: float, tmp: Path) -> str:
    port = free_port()
    out: list[str] = []
    broker = EmbeddedBroker(port=port).start()
    dep = Deployment(broker.bootstrap, f"b{uuid.uuid4().hex[:8]}-", tmp)
    worker = dep.start_worker()
    try:
        worker.wait_ready()
        lines = generate_lines(Workload(customers=200, events=2_000, seed=5))
        asyncio.run(_feed(dep, lines, 2_000.0, _Progress([])))
        time.sleep(5)
        out.append(f"fed {len(lines)} lines; before: {_state(worker)}")
        out.append(f"topics before (partitions, records): {asyncio.run(_topics(dep))}")
        mark = _log_size(worker)
        broker.stop()
        begin = time.monotonic()
        out += _watch(worker, "broker down", begin, down)
        broker = EmbeddedBroker(port=port).start()
        out.append(f"{time.monotonic() - begin:6.1f}s a new, empty broker on the same port")
        out += _watch(worker, "broker back", begin, after)
        asyncio.run(_feed(dep, lines[:500], 500.0, _Progress([])))
        out.append(f"{time.monotonic() - begin:6.1f}s fed 500 lines again (topics recreated?)")
        out += _watch(worker, "fed again", begin, 20)
        out.append(f"topics now (partitions, records): {asyncio.run(_topics(dep))}")
        out.append("distinct warning/error lines logged since the broker stopped (first 25):")
        out += [f"  {line}" for line in _distinct(worker, mark)[:25]]
        out.append(f"worker exit code: {worker.proc.poll()}; log {worker.log}")
    finally:
        worker.stop()
        broker.stop()
    return "\n".join(out)


async def _topics(dep: Deployment) -> dict[str, tuple[int, int]]:
    """Each topic of the deployment: partition count and total records (by reading it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        out: dict[str, tuple[int, int]] = {}
        for topic in sorted(t for t in await consumer.topics() if t.startswith(dep.prefix)):
            parts = consumer.partitions_for_topic(topic) or set()
            records = len(await read_all(dep, topic.removeprefix(dep.prefix), idle=1.0))
            out[topic.removeprefix(dep.prefix)] = (len(parts), records)
        return out
    finally:
        await consumer.stop()


def _watch(worker: WorkerProcess, phase: str, begin: float, seconds: float) -> list[str]:
    rows, last = [], ""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        state = _state(worker)
        if state != last:  # only the changes of state, stamped
            rows.append(f"{time.monotonic() - begin:6.1f}s {phase}: {state}")
            last = state
        if worker.proc.poll() is not None:
            break
        time.sleep(1)
    return rows


def _state(worker: WorkerProcess) -> str:
    if worker.proc.poll() is not None:
        return f"process exited {worker.proc.returncode}"
    try:
        ready = worker.get("/readyz")
        body = ready.json()
        consumed = metrics(worker)["consumed"]
    except (httpx.HTTPError, ValueError) as exc:
        return f"alive, HTTP {type(exc).__name__}"
    reason = body.get("reason", "")
    return (
        f"alive, /readyz {ready.status_code} {reason!r}, partitions {body.get('partitions')}, "
        f"consumed {consumed:.0f}"
    )


def _log_size(worker: WorkerProcess) -> int:
    return len(worker.log.read_bytes())


def _distinct(worker: WorkerProcess, mark: int) -> list[str]:
    seen: dict[str, int] = {}
    for line in worker.log.read_bytes()[mark:].decode(errors="replace").splitlines():
        if NOISE.search(line):
            key = re.sub(r"^\[[^]]*\] \[\d+\] ", "", line)
            key = re.sub(r"\d+", "N", key)[:200]
            seen[key] = seen.get(key, 0) + 1
    return [f"{n:>5}x {line}" for line, n in seen.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.broker_restart")
    parser.add_argument("--down", type=float, default=20.0, help="seconds without a broker")
    parser.add_argument("--after", type=float, default=60.0, help="seconds watched after")
    args = parser.parse_args(argv)
    print(observe(args.down, args.after, Path(tempfile.mkdtemp(prefix="segstream-restart-"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
