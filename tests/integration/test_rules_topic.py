"""The rules topic under faults: invalid records never displace the newest valid rule set, for a
restarted worker or for a publisher checking what it would remove."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson

from segstream.core.rulelang import compile_rules, load_rules
from segstream.runtime.rulestopic import newest_valid, rules_message
from tests.integration.conftest import ROOT, Deployment
from tests.integration.test_worker import _send_raw, metric, wait_for
from tests.unit.test_rulelang import ALIAS_BOMB

BIG = 'version: 1\nflags:\n  big_spender: "monetary_total >= 300"\n'
INVALID_RECORDS = [
    b"{not a rule set",
    orjson.dumps({"version": "x", "files": {"bomb.yaml": ALIAS_BOMB}}),
    orjson.dumps({"version": "x", "files": {"empty.yaml": ""}}),
]


def rule_dir(tmp: Path, name: str, *, drop: str = "", add: str = "") -> Path:
    """The default rules, less one file and plus a big_spender flag if asked."""
    path = tmp / name
    shutil.copytree(ROOT / "rules", path, ignore=shutil.ignore_patterns(drop) if drop else None)
    if add:
        (path / "big.yaml").write_text(add)
    return path


def send_raw(dep: Deployment, *values: bytes) -> None:
    for value in values:
        asyncio.run(_send_raw(dep, dep.topic("segment-rules"), value))


def test_newest_valid_skips_every_invalid_record_after_it() -> None:
    valid = rules_message(compile_rules({"a.yaml": BIG}))
    records = [(0, valid), *((i + 1, v) for i, v in enumerate(INVALID_RECORDS)), (4, None)]
    latest = newest_valid(records)
    assert (
        latest.rules is not None and latest.rules.version == compile_rules({"a.yaml": BIG}).version
    )
    assert [r.offset for r in latest.refused] == [1, 2, 3, 4]
    assert "YAML anchors/aliases are not allowed" in latest.refused[1].reason
    assert "no family and no flag" in latest.refused[2].reason
    assert latest.next_offset == 5
    assert newest_valid([(7, b"[]")]).rules is None


def test_a_restarted_worker_runs_the_newest_valid_set_whatever_follows(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Before, a restarted worker kept only the last record of the topic: invalid, so it fell
    back to the rules on disk."""
    first = deployment.start_worker()
    first.wait_ready()
    a = rule_dir(tmp_path, "a", add=BIG)
    published = deployment.cli("rules", "publish", str(a))
    assert published.returncode == 0, published.stderr
    version = load_rules(a).version
    assert wait_for(lambda: first.get("/segments").json()["rules_version"] == version, 30)

    send_raw(deployment, *INVALID_RECORDS)
    assert wait_for(lambda: metric(first, "segstream_rules_rejected_total") == 3.0, 30)
    assert first.get("/readyz").json()["rules_version"] == version
    first.stop()

    second = deployment.start_worker()
    second.wait_ready()
    assert second.get("/readyz").json()["rules_version"] == version
    assert second.get("/segments").json()["rules_version"] == version
    assert metric(second, "segstream_rules_rejected_total") == 3.0  # seen, logged, skipped
    assert "ignoring invalid rule set at" in second.log.read_text()
    assert second.proc.poll() is None


def test_publish_refuses_to_drop_a_running_family_or_flag_without_allow_removal(
    deployment: Deployment, tmp_path: Path
) -> None:
    small = rule_dir(tmp_path, "small", drop="satisfaction.yaml")
    refused = deployment.cli("rules", "publish", str(small))  # running: the rules on disk
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"refused: {small} drops family 'satisfaction', flag 'unhappy', flag 'support_heavy' of "
        f"the running rule set {load_rules(ROOT / 'rules').version}; pass --allow-removal to "
        "publish it anyway"
    ]
    assert deployment.cli("rules", "publish", str(small), "--allow-removal").returncode == 0

    bigger = rule_dir(tmp_path, "bigger", drop="satisfaction.yaml", add=BIG)
    assert deployment.cli("rules", "publish", str(bigger)).returncode == 0  # adds only
    send_raw(deployment, *INVALID_RECORDS)

    # running: the newest valid set on the topic, not the invalid records after it
    refused = deployment.cli("rules", "publish", str(small))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"refused: {small} drops flag 'big_spender' of the running")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "rules.yaml").write_text("")
    refused = deployment.cli("rules", "publish", str(empty), "--allow-removal")
    assert refused.returncode == 2 and "no family and no flag" in refused.stderr
