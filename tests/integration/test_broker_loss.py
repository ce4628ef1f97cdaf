"""A broker that restarts empty must not leave a worker serving as if nothing happened."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from segstream.runtime.broker import EmbeddedBroker, free_port
from segstream.runtime.recovery import EXIT_CLUSTER_LOST
from tests.integration.conftest import Deployment, load_events, produce
from tests.integration.test_worker import SAMPLE, metric, wait_for


def test_a_worker_stops_with_one_line_when_the_cluster_lost_its_writes(tmp_path: Path) -> None:
    """Before: /readyz went back to 200 with the customers held in memory, the changelog and
    output topics were gone on the new broker, and nothing above INFO was logged."""
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    dep = Deployment(broker.bootstrap, f"l{uuid.uuid4().hex[:8]}-", tmp_path)
    worker = dep.start_worker()
    try:
        worker.wait_ready()
        lines = load_events(SAMPLE)[:300]
        asyncio.run(produce(dep, lines))
        assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= 300, 60)
        broker.stop()
        broker = EmbeddedBroker(port=port).start()  # the same address, nothing in it
        deadline = time.monotonic() + 90
        while worker.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert worker.proc.returncode == EXIT_CLUSTER_LOST, worker.log.read_text()[-2000:]
        log = worker.log.read_text()
        assert "the Kafka cluster lost data this worker wrote" in log
        assert "Traceback" not in log
    finally:
        worker.stop()
        broker.stop()
