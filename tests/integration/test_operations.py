"""Operations under faults, through real worker processes on the embedded broker: the topic
layout a worker accepts, what it reports while it cannot work, and what its HTTP port serves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from segstream.core.partitioning import partition_for
from segstream.runtime.broker import EmbeddedBroker, free_port
from segstream.runtime.main import spawn_worker
from tests.integration.conftest import (
    ROOT,
    Deployment,
    WorkerProcess,
    load_events,
    produce,
    read_all,
)
from tests.integration.test_worker import metric, wait_for

SAMPLE = ROOT / "samples" / "events.jsonl"
INPUTS = ("orders", "support", "surveys", "profiles")


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = await _admin(bootstrap)
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def cleanup_policies(bootstrap: str, topics: list[str]) -> dict[str, str | None]:
    admin = await _admin(bootstrap)
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    policies: dict[str, str | None] = dict.fromkeys(topics)
    for response in responses:
        for _code, _msg, _type, name, entries in response.resources:
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    policies[name] = entry[1]
    return policies


def lag_series(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    series = {}
    for line in worker.get("/metrics").text.splitlines():
        if line.startswith("segstream_consumer_lag_messages{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(kv.split("=", 1) for kv in labels[labels.index("{") + 1 : -1].split(","))
            series[(parts["topic"].strip('"'), parts["partition"].strip('"'))] = float(value)
    return series


def start_worker(dep: Deployment, **settings: str) -> WorkerProcess:
    """``Deployment.start_worker`` with extra settings, by field name."""
    port, n = free_port(), len(dep.workers)
    env = dep.env(web_port=str(port), data_dir=str(dep.tmp / f"worker-{n}"), **settings)
    log_path = dep.tmp / f"worker-{n}.log"
    worker = WorkerProcess(spawn_worker(env, log_path), f"http://127.0.0.1:{port}", log_path)
    dep.workers.append(worker)
    return worker


def _has_customer(line: bytes) -> bool:
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and isinstance(body.get("customer_id"), str)


def readyz(worker: WorkerProcess) -> tuple[int, Any]:
    try:
        response = worker.get("/readyz")
    except httpx.HTTPError:
        return 0, None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def test_worker_refuses_inputs_partitioned_unlike_the_changelog(deployment: Deployment) -> None:
    asyncio.run(create_topic(deployment.bootstrap, deployment.topic("orders"), 3))
    worker = deployment.start_worker()
    try:
        code = worker.proc.wait(25)
    except Exception:
        worker.kill()
        raise AssertionError(f"worker started anyway: {worker.log.read_text()[-2000:]}") from None
    records = [orjson.loads(line) for line in worker.log.read_text().splitlines()]
    errors = [r["message"] for r in records if r["level"] == "error"]
    assert code != 0
    assert len(errors) == 1, records  # one line, after the info that topics were created
    assert "refusing to start" in errors[0] and f"{deployment.topic('orders')}=3" in errors[0]
    assert "SEGSTREAM_PARTITIONS=4" in errors[0]


def test_control_topics_and_changelog_are_compacted(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    compacted = [deployment.topic("segment-rules")]
    compacted.append(f"{deployment.prefix}app-customers-changelog")
    policies = asyncio.run(cleanup_policies(deployment.bootstrap, compacted))
    assert policies == dict.fromkeys(compacted, "compact")


def test_lag_of_a_replacement_is_right_from_its_first_scrape(deployment: Deployment) -> None:
    first = deployment.start_worker()
    first.wait_ready()
    lines = load_events(SAMPLE)[:400]
    asyncio.run(produce(deployment, lines))
    assert wait_for(lambda: metric(first, "segstream_events_consumed_total") >= len(lines))
    assert wait_for(lambda: set(lag_series(first).values()) == {0.0}, 10)
    # a graceful stop commits every offset (a kill would not: it must have been a clean stop)
    assert first.stop(timeout=90), f"no clean stop: {first.log.read_text()[-3000:]}"

    replacement = deployment.start_worker()
    replacement.wait_ready()
    lag = lag_series(replacement)
    expected = {(deployment.topic(t), str(p)) for t in INPUTS for p in range(4)}
    assert lag == dict.fromkeys(expected, 0.0)


def test_readiness_follows_the_broker(tmp_path: Path) -> None:
    """A broker of its own: stopping the session's broker would break every other test."""
    with EmbeddedBroker() as broker:
        deployment = Deployment(broker.bootstrap, "own-", tmp_path)
        worker = deployment.start_worker()
        try:
            statuses: list[int] = []
            while not statuses or statuses[-1] != 200:
                statuses.append(readyz(worker)[0])
                assert len(statuses) < 300, worker.log.read_text()[-3000:]
                time.sleep(0.1)
            assert 500 not in statuses  # starting is 503 with a reason, never an error
            broker.stop()
            assert wait_for(lambda: readyz(worker)[0] == 503, 15), readyz(worker)
            _, body = readyz(worker)
            assert body["ready"] is False and "broker" in body["reason"], body
        finally:
            worker.kill()


TOKEN = "op-test-token-5f2c"


def test_customer_data_needs_the_token_and_faust_views_are_gone(deployment: Deployment) -> None:
    """Two workers, so some requests are routed: the owner checks the token too."""
    deployment.partitions = 2
    workers = [start_worker(deployment, api_token=TOKEN) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    assert wait_for(lambda: all(readyz(w)[1].get("partitions") for w in workers), 20)
    lines = load_events(SAMPLE)[:300]
    asyncio.run(produce(deployment, lines))
    customers = sorted({orjson.loads(ln)["customer_id"] for ln in lines if _has_customer(ln)})
    mine = set(readyz(workers[0])[1]["partitions"])
    routed = [c for c in customers if partition_for(c, 2) not in mine][:5]
    local = [c for c in customers if partition_for(c, 2) in mine][:5]
    assert routed and local
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = workers[0].url

    def status(path: str, headers: dict[str, str] | None = None) -> int:
        return httpx.get(url + path, headers=headers, timeout=10).status_code

    assert wait_for(lambda: status(f"/customers/{routed[-1]}", auth) == 200, 20)
    for cid in routed + local:
        assert status(f"/customers/{cid}", auth) == 200, cid
        assert status(f"/customers/{cid}") == 401, cid
        assert status(f"/customers/{cid}", {"Authorization": "Bearer wrong"}) == 401, cid
    assert status("/segments") == 401 and status("/segments", auth) == 200
    for path in ("/metrics", "/healthz", "/readyz"):
        assert status(path) == 200, path
    for path in ("/router", "/table", "/table/customers", "/table/customers/x"):
        assert status(path, auth) == 404, path
    assert status("/customers/" + "x" * 129, auth) == 400
    assert status("/customers/" + "x" * 20_000, auth) in (400, 414, 431)
    big = httpx.post(url + "/segments", content=b"x" * 100_000, headers=auth, timeout=10)
    assert big.status_code in (405, 413)
    for worker in workers:
        assert TOKEN not in worker.log.read_text()


def test_the_customer_api_can_be_switched_off(deployment: Deployment) -> None:
    worker = start_worker(deployment, customer_api="false")
    worker.wait_ready()
    lines = load_events(SAMPLE)[:50]
    asyncio.run(produce(deployment, lines))
    assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= len(lines))
    known = next(orjson.loads(ln)["customer_id"] for ln in lines if _has_customer(ln))
    assert worker.get(f"/customers/{known}").status_code == 404
    assert worker.get("/segments").status_code == 200  # counts only, no customer data


async def send_tombstone(dep: Deployment, topic: str, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(dep.topic(topic), None, key=key)
    finally:
        await producer.stop()


def test_a_tombstone_is_counted_and_skipped_not_dead_lettered(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    lines = load_events(SAMPLE)[:20]
    asyncio.run(send_tombstone(deployment, "orders", b"C0000001"))
    asyncio.run(produce(deployment, lines))
    assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= len(lines))
    assert wait_for(lambda: metric(worker, "segstream_tombstones_total") == 1, 10)
    invalid = sum(1 for ln in lines if not _has_customer(ln))
    assert metric(worker, "segstream_events_invalid_total") == invalid
    dlq = asyncio.run(read_all(deployment, "segstream-dlq", idle=2.0))
    assert all(r.value is not None and r.value != b"" for r in dlq)
    assert len(dlq) == invalid
