"""End to end: a real worker process on a real broker, compared with the offline replay."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from segstream.core.rulelang import load_rules
from tests.faults.reference import replay_reference
from tests.integration.conftest import (
    ROOT,
    Deployment,
    WorkerProcess,
    load_events,
    produce,
    read_all,
)

SAMPLE = ROOT / "samples" / "events.jsonl"


def offline_segments(
    path: Path, rules_dir: Path = ROOT / "rules", partitions: int = 4
) -> dict[str, Any]:
    """The replay's segments, with customers partitioned as the test deployments' topics."""
    return replay_reference(path, partitions=partitions, rules_dir=rules_dir).segments


def metric(worker: WorkerProcess, name: str) -> float:
    total = 0.0
    for line in worker.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(check: Any, timeout: float = 60.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(every)
        result = check()
    return result


def streamed_segments(worker: WorkerProcess, customers: list[str]) -> dict[str, Any]:
    """Each customer's segments as the worker serves them (routed to the owner if need be)."""
    out = {}
    for cid in customers:
        response = worker.get(f"/customers/{cid}")
        out[cid] = response.json().get("segments") if response.status_code == 200 else None
    return out


def assert_streaming_equals_offline(worker: WorkerProcess, expected: dict[str, Any]) -> None:
    """Wait for the worker to settle (population refresh is periodic), then compare all."""
    customers = sorted(expected)
    wait_for(lambda: streamed_segments(worker, customers) == expected, 60, 1.0)
    got = streamed_segments(worker, customers)
    differ = {cid: (got[cid], want) for cid, want in expected.items() if got[cid] != want}
    assert differ == {}, orjson.dumps(differ).decode()


def test_worker_end_to_end(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    lines = load_events(SAMPLE)
    asyncio.run(produce(deployment, lines[:-30]))
    asyncio.run(produce(deployment, lines[-30:], key_by_customer=False))  # routed by customer_id
    assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= len(lines))

    # streaming equals offline, for every customer
    expected = offline_segments(SAMPLE)
    assert_streaming_equals_offline(worker, expected)
    assert metric(worker, "segstream_events_rerouted_total") > 0

    # change events: keyed by customer, with CloudEvents headers matching the body
    changes = asyncio.run(read_all(deployment, "segment-changes"))
    assert changes
    for record in changes[:200]:
        body = orjson.loads(record.value)
        headers = dict(record.headers)
        assert record.key == body["customer_id"].encode()
        assert headers["ce_id"] == body["event_id"].encode()
        assert headers["ce_type"] == f"segstream.segment.{body['change']}".encode()
        assert headers["ce_subject"] == record.key and headers["ce_specversion"] == b"1.0"
        assert headers["content-type"] == b"application/json"
        # every default tier and flag carries its playbook
        assert body["action"] and body["owner"] in {"marketing", "customer_success", "sales"}
        assert body["touch"] in {"high", "low", "tech"}

    # invalid input lands in the DLQ unchanged, with context headers and original headers
    invalid = [ln for ln in lines if not _valid(ln)]
    dlq = asyncio.run(read_all(deployment, "segstream-dlq", until=lambda r: len(r) >= len(invalid)))
    assert sorted(r.value for r in dlq) == sorted(invalid)
    headers = dict(dlq[0].headers)
    assert headers["origin"] == b"test"
    assert headers["segstream.source.topic"].startswith(deployment.prefix.encode())
    assert int(headers["segstream.source.offset"]) >= 0
    assert headers["segstream.error.reason"] in {b"missing_type", b"unknown_type", b"invalid_field"}
    assert metric(worker, "segstream_events_invalid_total") == len(invalid)

    # HTTP
    assert worker.get("/healthz").json() == {"status": "ok"}
    assert worker.get("/readyz").status_code == 200
    some = sorted(expected)[0]
    explained = worker.get(f"/customers/{some}").json()
    assert explained["segments"] == expected[some]
    assert set(explained["families"]) == {
        "value",
        "satisfaction",
        "activity_matrix",
        "lifecycle",
        "health",
    }
    assert worker.get("/customers/nobody").status_code == 404
    assert sum(worker.get("/segments").json()["members"]["lifecycle"].values()) == len(expected)
    text = worker.get("/metrics").text
    for name in (
        "segstream_evaluation_duration_seconds_bucket",
        "segstream_event_to_emit_latency_seconds_bucket",
        "segstream_customers_tracked",
        "segstream_population_refresh_pending",
        "segstream_segment_members{",
        "segstream_rules_info{",
        "segstream_consumer_lag_messages{",
        "segstream_segment_transitions_total{",
    ):
        assert name in text, name


def test_rules_publish_resegments_existing_customers(
    deployment: Deployment, tmp_path: Path
) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    lines = load_events(SAMPLE)[:800]
    asyncio.run(produce(deployment, lines))
    assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= len(lines))

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text('version: 1\nflags:\n  oops: "frequncy > 1"\n')
    refused = deployment.cli("rules", "publish", str(bad))
    assert refused.returncode == 2 and "x.yaml:3:" in refused.stderr

    new = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", new)
    (new / "big.yaml").write_text('version: 1\nflags:\n  big_spender: "monetary_total >= 300"\n')
    published = deployment.cli("rules", "publish", str(new))
    assert published.returncode == 0, published.stderr
    version = load_rules(new).version

    def rules_changes() -> list[dict[str, Any]]:
        records = asyncio.run(read_all(deployment, "segment-changes", idle=1.0))
        bodies = [orjson.loads(r.value) for r in records]
        return [b for b in bodies if b["cause"]["kind"] == "rules"]

    changes = wait_for(rules_changes, 60, 1.0)
    assert changes and {c["family"] for c in changes} == {"big_spender"}
    assert all(c["cause"]["rules_version"] == version for c in changes)
    expected = offline_segments_for(lines, new, tmp_path)
    big = {cid for cid, seg in expected.items() if seg["big_spender"]}
    assert {c["customer_id"] for c in changes} == big

    # an invalid rule set that reaches the topic anyway is ignored; the old rules stay
    asyncio.run(_send_raw(deployment, deployment.topic("segment-rules"), b"{not a rule set"))
    assert wait_for(lambda: metric(worker, "segstream_rules_rejected_total") == 1.0, 30)
    assert worker.get("/segments").json()["rules_version"] == version


def offline_segments_for(
    lines: list[bytes], rules_dir: Path, tmp: Path, partitions: int = 4
) -> dict[str, Any]:
    path = tmp / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return offline_segments(path, rules_dir, partitions)


async def _send_raw(dep: Deployment, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


def _valid(line: bytes) -> bool:
    from segstream.core.contracts import Rejection, parse_event

    return not isinstance(parse_event(line), Rejection)
