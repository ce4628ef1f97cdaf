"""Regressions of issue 10 through real workers: input that used to stop the service, and cut
points that used to churn after the input stopped."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson

from segstream.synth import SynthConfig, generate
from tests.integration.conftest import Deployment, produce, read_all
from tests.integration.test_worker import metric, wait_for

GOOD = {
    "event_id": "ok",
    "type": "order",
    "customer_id": "C1",
    "order_id": "o1",
    "occurred_at": "2026-01-05T10:00:00Z",
    "amount": "20.00",
    "status": "completed",
}
OUT_OF_RANGE = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2300-01-01T00:00:00Z"]


def test_events_dated_out_of_range_go_to_the_dlq_and_the_worker_goes_on(
    deployment: Deployment,
) -> None:
    """The 9999 order crashed the worker that owned its partition, then the one that took the
    partition over; years 0001 and 2300 were accepted (2300 moved the event clock ahead)."""
    deployment.partitions = 2
    first, second = deployment.start_worker(), deployment.start_worker()
    first.wait_ready()
    second.wait_ready()
    bad = [
        GOOD | {"event_id": f"bad{i}", "order_id": f"b{i}", "occurred_at": when}
        for i, when in enumerate(OUT_OF_RANGE)
    ]
    later = GOOD | {"event_id": "later", "order_id": "o2", "occurred_at": "2026-01-06T10:00:00Z"}
    asyncio.run(produce(deployment, [orjson.dumps(e) for e in [*bad, GOOD, later]]))

    dlq = asyncio.run(read_all(deployment, "segstream-dlq", until=lambda r: len(r) >= 3))
    assert (
        sorted(dict(r.headers)["segstream.error.reason"] for r in dlq)
        == [b"occurred_at_out_of_range"] * 3
    )
    changes = asyncio.run(read_all(deployment, "segment-changes", until=lambda r: len(r) >= 1))
    assert changes and all(orjson.loads(r.value)["at"] < "2026-01-07" for r in changes)
    assert first.proc.poll() is None and second.proc.poll() is None
    explained = wait_for(lambda: first.get("/customers/C1").json(), 30)
    assert explained["state"]["orders_total"] == 2
    assert explained["as_of"].startswith("2026-01-06")


def test_cut_points_do_not_churn_after_the_input_stops(deployment: Deployment) -> None:
    """With two workers sharing KLL sketches, 58 customer/family pairs changed two or more
    times with cause `population` after the last event, until the sketches settled. Each
    partition now refreshes from its own values: once the input stops, at most one refresh."""
    config = SynthConfig(customers=2000, events=16_000, seed=3)
    lines = [orjson.dumps(event) for event in generate(config)]
    asyncio.run(produce(deployment, lines))
    workers = [deployment.start_worker(), deployment.start_worker()]
    for worker in workers:
        worker.wait_ready()
    assert wait_for(
        lambda: sum(metric(w, "segstream_events_consumed_total") for w in workers) >= len(lines),
        120,
        every=0.2,
    )
    consumed_at_ms = time.time() * 1000
    time.sleep(4.0)  # several refresh periods (0.5 s in tests): any churn would show
    records = asyncio.run(read_all(deployment, "segment-changes", idle=3.0))
    after = Counter(
        (body["customer_id"], body["family"])
        for record in records
        if record.timestamp > consumed_at_ms + 500
        and (body := orjson.loads(record.value))["cause"]["kind"] == "population"
    )
    assert after, "no refresh after the input stopped: the test would prove nothing"
    assert max(after.values()) == 1, after.most_common(5)
