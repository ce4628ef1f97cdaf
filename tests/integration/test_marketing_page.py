"""The marketers' page in a real headless browser (Debian's Chromium and its driver) against a
real worker: sizes, history, flows, the shadow set's impact and a customer lookup with its
timeline, behind the API token. The screenshot's path is printed with the test output."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from segstream.synth import SynthConfig, generate
from tests.integration.conftest import Deployment, WorkerProcess, produce
from tests.integration.test_worker import metric, wait_for

TOKEN = "page-test-token"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1900"):
        options.add_argument(argument)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_marketers_page_shows_segments_flows_and_a_customer(
    deployment: Deployment,
    browser: webdriver.Chrome,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deployment.partitions = 2
    deployment.settings["api_token"] = TOKEN
    # no clock tick during the test: today's size point must come from the page's own load
    # (it once had no day at all when no tick had run since the worker was ready)
    deployment.settings["clock_tick_seconds"] = "3600"
    worker = deployment.start_worker()
    worker.wait_ready()
    lines = [orjson.dumps(e) for e in generate(SynthConfig(customers=200, events=2500, seed=9))]
    asyncio.run(produce(deployment, lines))
    assert wait_for(lambda: _consumed(worker) >= len(lines), 90)
    customer = orjson.loads(lines[0])["customer_id"]

    browser.get(worker.url + "/marketing")
    wait = WebDriverWait(browser, 30)
    # without the token the data is refused, and the page says so
    wait.until(lambda d: "refused" in d.find_element(By.ID, "error").text)

    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "load").click()
    wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "yes")
    bars = browser.execute_script("return Chart.getChart('sizes').data.datasets[0].data")
    assert sum(bars) > 0
    served = get_json(worker, "/segments")["members"]
    assert sum(bars) == sum(n for tiers in served.values() for n in tiers.values())
    days = browser.execute_script("return Chart.getChart('history').data.labels")
    assert len(days) >= 1
    data = get_json(worker, "/marketing/data")
    assert data["history"][-1]["sizes"] == data["sizes"]  # today's point is what is shown
    cells = browser.find_elements(By.CSS_SELECTOR, "#flows td")
    assert any(c.text.strip().isdigit() for c in cells)

    browser.find_element(By.ID, "customer").send_keys(customer)
    browser.find_element(By.ID, "lookup").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline tr"))
    shown = browser.find_element(By.ID, "customer-out").text
    assert customer in shown
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tr")
    timeline = get_json(worker, f"/customers/{customer}/timeline")["timeline"]
    assert len(rows) == len(timeline) + 1  # a header row, then one per transition

    screenshot = tmp_path / "marketing-page.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    with capsys.disabled():  # in the test output whether the test passes or not
        print(f"\nscreenshot of the marketers' page: {screenshot}")


def _consumed(worker: WorkerProcess) -> float:
    return metric(worker, "segstream_events_consumed_total")


def get_json(worker: WorkerProcess, path: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.get(worker.url + path, headers=headers, timeout=10).json()
