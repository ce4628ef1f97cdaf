"""TLS end to end: a worker, the tests' own clients and ``segstream rules publish`` reach a
Tansu only through a TLS-terminating proxy (tls_proxy.py), which is also the address the broker
advertises; a client that does not trust the CA stops with one line. Secrets stay out of logs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from segstream.core.rulelang import load_rules
from tests.certs import TlsFiles, make_certificates
from tests.integration.conftest import ROOT, Deployment, WorkerProcess, produce, read_all
from tests.integration.test_rules_topic import BIG, rule_dir
from tests.integration.test_worker import wait_for
from tests.integration.tls_proxy import TlsCluster

API_TOKEN = "tok-9f3c1a7e-never-logged"
SASL_PASSWORD = "pw-5d2b8e61-never-logged"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsCluster]:
    with TlsCluster(tls_files, tmp_path_factory.mktemp("tansu") / "tansu.log") as cluster:
        yield cluster


@pytest.fixture
def tls_deployment(
    tls_cluster: TlsCluster, tls_files: TlsFiles, tmp_path: Path
) -> Iterator[Deployment]:
    dep = Deployment(
        tls_cluster.bootstrap,
        f"t{uuid.uuid4().hex[:8]}-",
        tmp_path,
        partitions=2,
        settings={"security_protocol": "SSL", "ssl_cafile": str(tls_files.ca)},
        client_options=tls_cluster.client_options(),
    )
    yield dep
    for worker in dep.workers:
        worker.stop()


def exited(worker: WorkerProcess, timeout: float = 25) -> tuple[int, str]:
    code = worker.proc.wait(timeout)
    return code, worker.log.read_text()


def test_a_worker_consumes_and_emits_through_tls(
    tls_deployment: Deployment, tls_cluster: TlsCluster, tmp_path: Path
) -> None:
    dep = tls_deployment
    dep.settings["api_token"] = API_TOKEN
    handshakes = tls_cluster.proxy.connections
    worker = dep.start_worker()
    worker.wait_ready(40)
    lines = (ROOT / "samples" / "events.jsonl").read_bytes().splitlines()[:300]
    asyncio.run(produce(dep, lines))
    changes = asyncio.run(read_all(dep, "segment-changes", until=lambda r: len(r) >= 20))
    assert len(changes) >= 20
    assert {orjson.loads(r.value)["change"] for r in changes} >= {"entered"}

    new_rules = rule_dir(tmp_path, "big", add=BIG)
    published = dep.cli("rules", "publish", str(new_rules))
    assert published.returncode == 0, published.stderr
    running = f'rules_version="{load_rules(new_rules).version}"'
    assert wait_for(lambda: running in worker.get("/metrics").text, 20)  # the rules follower

    assert tls_cluster.proxy.connections > handshakes  # nobody reached Tansu but through TLS
    worker.stop()
    assert API_TOKEN not in worker.log.read_text()


def test_without_the_ca_the_worker_and_publish_stop_with_one_line(
    tls_deployment: Deployment,
) -> None:
    dep = tls_deployment
    del dep.settings["ssl_cafile"]  # the system CAs do not know the test CA
    published = dep.cli("rules", "publish", str(ROOT / "rules"))
    assert published.returncode == 1
    assert published.stderr.count("\n") == 1, published.stderr
    assert "certificate verify failed" in published.stderr
    assert "Traceback" not in published.stderr

    code, log = exited(dep.start_worker())
    assert code == 1
    assert log.strip().count("\n") == 0, log
    record = orjson.loads(log)  # the worker logs JSON lines when stderr is not a terminal
    assert record["level"] == "error"
    assert record["message"].startswith("cannot connect to Kafka (SSL)")
    assert "certificate verify failed" in record["message"]


def test_a_sasl_password_from_a_file_appears_nowhere(
    tls_deployment: Deployment, tmp_path: Path
) -> None:
    """The test broker has no SASL, so the worker stops at its first connection: the password
    was sent to the client library and the refusal reported, and neither shows it."""
    password_file = tmp_path / "sasl-password"
    password_file.write_text(SASL_PASSWORD + "\n")
    dep = tls_deployment
    dep.settings |= {
        "broker_wait_seconds": "0",  # a refused login is not retried into the test's budget
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "segstream",
        "sasl_password_file": str(password_file),
        "api_token": API_TOKEN,
    }
    started = time.monotonic()
    code, log = exited(dep.start_worker())
    assert code == 1 and time.monotonic() - started < 25
    assert '"level":"error"' in log and "Traceback" not in log
    published = dep.cli("rules", "publish", str(ROOT / "rules"))
    assert published.returncode == 1 and "refused:" in published.stderr
    for output in (log, published.stdout, published.stderr):
        assert SASL_PASSWORD not in output and API_TOKEN not in output
