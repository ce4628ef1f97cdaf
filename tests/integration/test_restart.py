"""A worker on the RocksDB store, stopped and restarted: state comes back from the store and
changelog, and the final segments still equal the offline replay."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson

from tests.integration.conftest import ROOT, Deployment, load_events, produce
from tests.integration.test_worker import SAMPLE, metric, offline_segments_for, wait_for


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

    def streamed() -> dict[str, object]:
        out = {}
        for cid in expected:
            response = second.get(f"/customers/{cid}")
            out[cid] = response.json()["segments"] if response.status_code == 200 else None
        return out

    wait_for(lambda: streamed() == expected, 60, 1.0)
    got = streamed()
    differ = {cid: (got[cid], want) for cid, want in expected.items() if got[cid] != want}
    assert differ == {}, orjson.dumps(differ).decode()
    recovered = re.findall(r"\((\d+) recovered\)", second.log.read_text())
    assert recovered and int(recovered[0]) > 0  # state came back, not rebuilt from new events
