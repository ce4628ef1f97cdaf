"""The alerting rules, run by Prometheus' own rule engine (promtool), not read by eye.

deploy/prometheus/alerts_test.yml feeds synthetic series (downgrade spikes, invalid events, lag,
rejected rule sets, a dead worker) and states which alerts must fire; the metric names in the
rules must be the ones the worker exports."""

from __future__ import annotations

import re
import shutil
import subprocess

from segstream.runtime.metrics import Metrics
from tests.integration.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make tools` installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_only_use_metrics_the_worker_exports() -> None:
    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {f"{name}_total" for name in exported} | {f"{name}_bucket" for name in exported}
    used = set(re.findall(r"\b(segstream_[a-z_]+)", (PROMETHEUS / "alerts.yml").read_text()))
    assert used and used <= exported, used - exported
