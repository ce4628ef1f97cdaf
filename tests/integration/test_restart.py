"""A worker on the RocksDB store, stopped and restarted: state comes back from the store and
changelog, and the final segments still equal the offline replay."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.integration.conftest import ROOT, Deployment, load_events, produce
from tests.integration.test_worker import (
    SAMPLE,
    assert_streaming_equals_offline,
    metric,
    offline_segments_for,
    wait_for,
)


def test_rocksdb_worker_restarts_with_its_state(deployment: Deployment, tmp_path: Path) -> None:
    deployment.partitions = 2
    lines = load_events(SAMPLE)[:1200]
    first = deployment.start_worker(store="rocksdb://")
    first.wait_ready()
    asyncio.run(produce(deployment, lines[:600]))
    assert wait_for(lambda: metric(first, "segstream_events_consumed_total") >= 600)
    first.stop()

    second = deployment.start_worker(store="rocksdb://", data_of=0)
    second.wait_ready()
    asyncio.run(produce(deployment, lines[600:]))
    expected = offline_segments_for(lines, ROOT / "rules", tmp_path)
    assert_streaming_equals_offline(second, expected)
    recovered = re.findall(r"\((\d+) recovered\)", second.log.read_text())
    assert recovered and int(recovered[0]) > 0  # state came back, not rebuilt from new events
