"""The hot set at scale: one worker (RocksDB store) over the same feed with every customer held
as an object, then with ``SEGSTREAM_HOT_CUSTOMERS`` bounding them; peak RSS and throughput of
each, in one run (docs/performance.md, The hot set).

    python -m bench.hot_set [--events 1000000] [--customers 1250000] [--hot 100000]
                            [--store rocksdb://] [--runs all-hot,bounded]

``--runs all-hot`` with ``PYTHONPATH=<an older tree>/service`` measures an older worker.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

from bench import stream
from bench.common import events_file
from segstream.runtime.broker import EmbeddedBroker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=1_250_000, help="ids to draw from")
    parser.add_argument("--hot", type=int, default=100_000)
    parser.add_argument("--store", default="rocksdb://")
    parser.add_argument("--runs", default="all-hot,bounded")
    args = parser.parse_args()
    runs = {"all-hot": {}, "bounded": {"hot_customers": str(args.hot)}}
    lines = events_file(args.events, args.customers).read_bytes().splitlines()
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedBroker() as broker:
        tmp, boot = Path(tmp_name), broker.bootstrap
        for name in args.runs.split(","):
            extra = runs[name]
            prefix = f"hot-{uuid.uuid4().hex[:6]}-"  # topics and group of its own: no recovery
            asyncio.run(stream._topics(boot, prefix))
            asyncio.run(stream.produce_lines(boot, lines, stream.prefixed(prefix)))
            run = stream.consume_then_stop(
                boot, prefix, tmp, f"{prefix}{name}", len(lines), store=args.store, **extra
            )
            per_million = run["peak_rss_mib"] * 1_000_000 / max(run["customers"], 1)
            print(
                f"{name:8} hot={extra.get('hot_customers', 'all'):>7}  "
                f"{len(lines) / run['seconds']:,.0f} events/s  peak RSS {run['peak_rss_mib']:,} MiB"
                f" at {run['customers']:,} customers = {per_million:,.0f} MiB per million",
                flush=True,
            )


if __name__ == "__main__":
    main()
