"""Real components for integration tests: one Tansu broker per session, worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from segstream.runtime.broker import EmbeddedBroker, free_port
from segstream.runtime.main import spawn_worker
from segstream.runtime.settings import TOPIC_OF_TYPE, isolated_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap string ("127.0.0.1:PORT") of a session-wide embedded broker."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@dataclass
class Deployment:
    """One isolated segstream deployment (its own topic names) on the shared broker."""

    bootstrap: str
    prefix: str
    tmp: Path
    partitions: int = 4
    workers: list[WorkerProcess] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # by field name, for every process
    client_options: dict[str, Any] = field(default_factory=dict)  # the tests' own clients

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def env(self, **settings: str) -> dict[str, str]:
        return isolated_env(
            self.prefix,
            self.bootstrap,
            partitions=str(self.partitions),
            rules_dir=str(ROOT / "rules"),
            clock="event",
            session_timeout_seconds="6",
            population_refresh_seconds="0.5",
        ) | {f"SEGSTREAM_{k.upper()}": v for k, v in (self.settings | settings).items()}

    def start_worker(
        self,
        store: str = "memory://",
        data_of: int | None = None,
        module: str = "segstream.cli",
        **settings: str,
    ) -> WorkerProcess:
        """Start ``segstream worker``; ``data_of`` reuses an earlier worker's data directory;
        ``module`` runs the command (tests/integration/held_fetch.py holds a fetch back);
        ``settings`` are more SEGSTREAM_ settings, by name."""
        port = free_port()
        data = self.tmp / f"worker-{len(self.workers) if data_of is None else data_of}"
        env = self.env(web_port=str(port), data_dir=str(data), store=store, **settings)
        log_path = self.tmp / f"worker-{len(self.workers)}.log"
        process = spawn_worker(env, log_path, module)
        worker = WorkerProcess(process, f"http://127.0.0.1:{port}", log_path)
        self.workers.append(worker)
        return worker

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "segstream.cli", *args],
            env={k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
            | self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()[-3000:]}")
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` s. Whether this was a clean stop: the worker
        was running and exited by itself with status 0 (a test of what a stop leaves behind
        asserts it: a kill, or a worker that had already exited, is a crash, not a stop)."""
        if self.proc.poll() is not None:
            return False
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return self.proc.returncode == 0


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(kafka_bootstrap, f"t{uuid.uuid4().hex[:8]}-", tmp_path)
    yield dep
    for worker in dep.workers:
        worker.stop()


def load_events(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


async def produce(dep: Deployment, lines: list[bytes], *, key_by_customer: bool = True) -> None:
    """Send raw JSON lines to the input topic of their type (unparseable ones to orders)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=dep.bootstrap,
        enable_idempotence=False,
        linger_ms=5,
        **dep.client_options,
    )
    await producer.start()
    try:
        futures = []
        for line in lines:
            try:
                body = orjson.loads(line)
            except orjson.JSONDecodeError:
                body = {}
            kind = body.get("type") if isinstance(body, dict) else None
            topic = dep.topic(TOPIC_OF_TYPE.get(str(kind), "orders"))
            customer = body.get("customer_id") if isinstance(body, dict) else None
            key = str(customer).encode() if key_by_customer and customer else None
            futures.append(await producer.send(topic, line, key=key, headers=[("origin", b"test")]))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    dep: Deployment,
    topic: str,
    *,
    idle: float = 3.0,
    until: Callable[[list[Any]], bool] | None = None,
    limit_seconds: float = 90.0,
) -> list[Any]:
    """Every record of a topic, read until ``until`` holds (or ``idle`` seconds of silence)."""
    consumer = AIOKafkaConsumer(
        dep.topic(topic),
        bootstrap_servers=dep.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **dep.client_options,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline, last = loop.time() + limit_seconds, loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
                last = loop.time()
            if until is not None and until(records):
                break
            if until is None and loop.time() - last > idle:
                break
    finally:
        await consumer.stop()
    return records
