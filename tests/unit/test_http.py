"""The worker's HTTP views while it starts (no broker, consumer not started): answers, never
errors, and only the views we mean to serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from segstream.runtime.settings import Settings
from segstream.runtime.worker import SegmentWorker
from tests.unit.factories import ROOT


@pytest.fixture
async def starting(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
        rules_dir=ROOT / "rules",
        data_dir=tmp_path,
        api_token="t0ken",
    )
    worker = SegmentWorker(settings)  # built, never started: no broker is contacted
    worker.app.web.init_server()
    async with TestClient(TestServer(worker.app.web.web_app)) as client:
        yield client


async def test_a_starting_worker_is_unready_with_a_reason_not_an_error(
    starting: TestClient,
) -> None:
    response = await starting.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["ready"] is False and body["reason"].startswith("starting")
    assert (await starting.get("/metrics")).status == 200
    assert (await starting.get("/healthz")).status == 200


async def test_faust_table_views_are_not_served_and_customer_data_needs_the_token(
    starting: TestClient,
) -> None:
    for path in ("/router", "/table", "/table/customers/C1"):
        assert (await starting.get(path)).status == 404, path
    for path in ("/segments", "/customers/C1"):
        response = await starting.get(path)
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    segments = await starting.get("/segments", headers={"Authorization": "Bearer t0ken"})
    assert segments.status == 200
