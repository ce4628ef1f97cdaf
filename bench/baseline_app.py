"""The plain faust way, kept honest: one agent, one event at a time, one Table write each.

BENCH_BOOTSTRAP=... BENCH_TOPIC=... BENCH_N=... python -m bench.baseline_app worker
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import faust

from segstream.core.contracts import Rejection
from segstream.core.engine import Engine
from segstream.core.rulelang import load_rules
from segstream.core.state import dump_state, load_state

ROOT = Path(__file__).resolve().parents[1]
N = int(os.environ["BENCH_N"])
app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-baseline"),
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    store="memory://",
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
)
events = app.topic(os.environ["BENCH_TOPIC"], key_type=bytes, value_type=bytes)
customers = app.Table(
    "customers",
    key_type=bytes,
    value_type=bytes,
    partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
)
engine = Engine(load_rules(ROOT / "rules"), clock="event")
seen = {"n": 0, "t0": 0.0}


@app.agent(events)
async def segment(stream: Any) -> None:
    async for record in stream.events():
        if not seen["t0"]:
            seen["t0"] = time.perf_counter()
        event = engine.parse(record.message.value)
        if not isinstance(event, Rejection):
            key = event.customer_id.encode()
            stored = customers.get(key)
            if stored is not None and event.customer_id not in engine.store:
                engine.adopt(load_state(stored), record.message.partition)
            engine.apply(event, partition=record.message.partition)
            customers[key] = dump_state(engine.store[event.customer_id])
        seen["n"] += 1
        if seen["n"] == N:
            seconds = time.perf_counter() - seen["t0"]
            print(f"RESULT {N} {seconds:.3f}", flush=True)
            sys.stdout.flush()
            os._exit(0)


if __name__ == "__main__":
    app.main()
