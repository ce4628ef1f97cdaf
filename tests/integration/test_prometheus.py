"""A real Prometheus (Debian's server binary) scrapes a real worker with deploy/prometheus/
alerts.yml loaded: a burst of downgrades and an invalid rule set fire their alerts, read from
Prometheus' HTTP API, and every metric and label the alerts and the Grafana dashboard query
exists in a real scrape. promtool's unit tests (test_alerts.py) pin the thresholds and `for`
durations; here the rules run with `for` dropped, so the test takes seconds, not minutes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from segstream.core.contracts import RejectReason
from segstream.core.partitioning import partition_for
from segstream.core.rulelang import load_rules
from segstream.runtime.broker import free_port
from segstream.runtime.handler import transition_label
from tests.integration.conftest import ROOT, Deployment, produce
from tests.integration.test_worker import _send_raw

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "segstream-dashboard.json"
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)


class Prometheus:
    """``prometheus`` on a free loopback port, scraping ``target`` every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make tools` installs Debian's prometheus package"
        rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.pop("for", None)
        (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": "segstream", "static_configs": [{"targets": [target]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        checked = subprocess.run(
            ["promtool", "check", "config", str(tmp / "prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def value(self, query: str) -> float | None:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> dict[str, list[dict[str, str]]]:
        alerts: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                alerts.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return alerts

    def wait(self, what: str, check: Any, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                result = check()
            except httpx.HTTPError:
                result = None
            if result:
                return result
            time.sleep(0.3)
        raise AssertionError(f"Prometheus: no {what} in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def prometheus_of(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        started.append(Prometheus(directory, target))
        started[-1].wait("readiness", lambda: httpx.get(started[-1].url + "/-/ready").is_success)
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _at(days: int) -> str:
    return (DAY0 + timedelta(days=days)).isoformat()


def _order(customer: str, days: int) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-o{days}",
        "type": "order",
        "customer_id": customer,
        "occurred_at": _at(days),
        "order_id": f"{customer}-{days}",
        "amount": 40,
    }


def _ticket(customer: str, days: int, n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-t{days}-{n}",
        "type": "support",
        "customer_id": customer,
        "occurred_at": _at(days),
        "ticket_id": f"{customer}-{n}",
        "status": "opened",
    }


def _invalid_messages() -> dict[str, bytes]:
    """One message per reject reason."""
    base = _order("bad", 1)
    return {
        "too_large": orjson.dumps(base | {"pad": "x" * 70_000}),
        "bad_json": b"{not json",
        "not_an_object": b"[1, 2]",
        "missing_type": orjson.dumps({k: v for k, v in base.items() if k != "type"}),
        "unknown_type": orjson.dumps(base | {"type": "click"}),
        "invalid_field": orjson.dumps({k: v for k, v in base.items() if k != "amount"}),
        "wrong_currency": orjson.dumps(base | {"currency": "EUR"}),
        "occurred_at_out_of_range": orjson.dumps(base | {"occurred_at": "1960-01-01T00:00:00Z"}),
    }


def _send(dep: Deployment, events: list[dict[str, Any]] | list[bytes]) -> None:
    lines = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    asyncio.run(produce(dep, lines))


def _tickers(partitions: int) -> list[str]:
    """One customer per partition: their events move every partition's event clock."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        found.setdefault(partition_for(f"ticker-{n}", partitions), f"ticker-{n}")
        n += 1
    return sorted(found.values())


def test_a_real_prometheus_fires_the_downgrade_and_rules_alerts(
    deployment: Deployment, prometheus_of: Any
) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    prom = prometheus_of(worker.url.removeprefix("http://"))
    prom.wait("scrape", lambda: prom.value('up{job="segstream"}') == 1)

    # Day 0: 10 customers (early) and 40 (late) become "current" in lifecycle; a ticker per
    # partition; a customer with three open tickets (flag support_heavy); a survey; one
    # invalid message per reject reason.
    early = [f"early-{i}" for i in range(10)]
    late = [f"late-{i}" for i in range(40)]
    tickers = _tickers(deployment.partitions)
    _send(
        deployment,
        [_order(c, 0) for c in early]
        + [_order(c, 100) for c in late]
        + [_ticket(t, 100) for t in tickers]
        + [_ticket("heavy", 100, n) for n in range(3)]
        + [
            {
                "event_id": "s-1",
                "type": "survey",
                "customer_id": "heavy",
                "occurred_at": _at(100),
                "score": 9,
            }
        ]
        + list(_invalid_messages().values()),
    )
    customers = len(early) + len(late) + len(tickers) + 1
    prom.wait("customers", lambda: prom.value("sum(segstream_customers_tracked)") == customers)

    # Day 370: the early customers have not ordered for a year and churn (a new series, whose
    # first value rate() cannot count); day 470: the late ones follow, on the same series.
    downgrades = 'sum(segstream_segment_transitions_total{family="lifecycle",change="downgraded"})'
    _send(deployment, [_ticket(t, 370, 1) for t in tickers])
    prom.wait("early downgrades", lambda: prom.value(downgrades) == len(early))
    _send(deployment, [_ticket(t, 470, 2) for t in tickers])
    fired = prom.wait("downgrade alert", lambda: prom.firing().get("SegstreamDowngradeSpike"))
    assert {a["family"] for a in fired} >= {"lifecycle"}
    assert "SegstreamRulesRejected" not in prom.firing()

    asyncio.run(
        _send_raw(deployment, deployment.topic("segment-rules"), b'{"version": "x", "files": 1}')
    )
    prom.wait("rules alert", lambda: prom.firing().get("SegstreamRulesRejected"))

    _every_queried_metric_and_label_exists(prom)
    _transition_labels_are_names_not_reprs(prom)
    _promtool_fixtures_use_real_label_values(prom, deployment.prefix)


def _queries() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


SELECTOR = re.compile(r"\b(segstream_[a-z_]+|up)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)|label_values\([^,]+,\s*(\w+)\)")


# Series that exist only while something optional runs, each checked where it does.
OPTIONAL = {
    "segstream_shadow_moves": "a shadow rule set (tests/integration/test_shadow.py)",
}


def _every_queried_metric_and_label_exists(prom: Prometheus) -> None:
    missing = []
    for expr in _queries():
        if any(name in expr for name in OPTIONAL):
            continue
        series: list[dict[str, str]] = []
        for name, matchers in SELECTOR.findall(expr):
            found = prom.api("series", **{"match[]": name})
            if not found:
                missing.append(f"{name} (in {expr.strip()[:60]})")
            series += found
            for label, op, value in MATCHER.findall(matchers):
                if op == "=" and "$" not in value and not any(s.get(label) == value for s in found):
                    missing.append(f'{name}{{{label}="{value}"}}')
        labels = {
            label
            for by, values_of in GROUPING.findall(expr)
            for label in [*by.replace(" ", "").split(","), values_of]
            if label
        }
        missing += [
            f"label {label} (in {expr.strip()[:60]})"
            for label in sorted(labels)
            if not any(label in s for s in series)
        ]
    assert not missing, missing


def _label_values(prom: Prometheus, metric: str, label: str) -> set[str]:
    return {s[label] for s in prom.api("series", **{"match[]": metric}) if label in s}


def _transition_labels_are_names_not_reprs(prom: Prometheus) -> None:
    metric = "segstream_segment_transitions_total"
    seen = _label_values(prom, metric, "from_segment") | _label_values(prom, metric, "to_segment")
    assert {"none", "in", "out"} <= seen, seen  # first tiers, and the support_heavy flag
    assert not seen & {"None", "True", "False"}, seen
    assert seen <= _tier_names() | {"none", "in", "out"}, seen


def _tier_names() -> set[str]:
    rules = load_rules(ROOT / "rules")
    return {tier.name for family in rules.families.values() for tier in family.tiers}


def _promtool_fixtures_use_real_label_values(prom: Prometheus, prefix: str) -> None:
    """Every label value in alerts_test.yml is one the worker emits: seen in this scrape, or
    (tiers, reasons, changes: the scrape has only what this test provoked) one of the closed
    sets the real scrape's values also belong to."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    used: dict[str, set[str]] = {}
    for test in tests:
        for item in test["input_series"]:
            for label, _, value in MATCHER.findall(item["series"]):
                used.setdefault(label, set()).add(value)
    reasons = _label_values(prom, "segstream_events_invalid_total", "reason")
    assert reasons == {r.value for r in RejectReason}  # one of each was sent
    types = _label_values(prom, "segstream_events_consumed_total", "type")
    topics = {t.removeprefix(prefix) for t in _label_values(prom, '{__name__=~".+"}', "topic")}
    families = _label_values(prom, "segstream_segment_members", "family")
    tiers = _tier_names() | {transition_label(v) for v in (None, True, False)}
    changes = {"entered", "exited", "upgraded", "downgraded"}
    assert _label_values(prom, "segstream_segment_transitions_total", "change") <= changes
    closed = {
        "reason": reasons,
        "type": types,
        "topic": topics,
        "family": families,
        "from_segment": tiers,
        "to_segment": tiers,
        "change": changes,
    }
    wrong = {label: used[label] - real for label, real in closed.items() if used[label] - real}
    assert not wrong, f"alerts_test.yml uses label values no worker emits: {wrong}"
