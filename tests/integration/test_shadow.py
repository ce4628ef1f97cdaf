"""A marketer tightens "champions" in shadow through a real worker: the worker emits nothing for
it, reports what it would move (equal to `segstream rules diff` offline), and the promotion
then emits exactly those changes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from segstream.synth import SynthConfig, generate
from tests.integration.conftest import ROOT, Deployment, produce, read_all
from tests.integration.test_worker import metric, wait_for
from tests.unit.test_shadow import tightened


def moves(report: dict[str, Any]) -> Counter[tuple[str, str]]:
    counts = Counter(
        {
            (name, kind): n
            for name, seg in report["segments"].items()
            for kind, n in seg.items()
            if kind != "sample"
        }
    )
    return +counts


def test_shadow_then_promote_through_a_real_worker(deployment: Deployment, tmp_path: Path) -> None:
    deployment.partitions = 2
    deployment.settings["shadow_refresh_seconds"] = "1"
    worker = deployment.start_worker()
    worker.wait_ready()
    lines = [orjson.dumps(e) for e in generate(SynthConfig(customers=300, events=4000, seed=5))]
    asyncio.run(produce(deployment, lines))
    assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= len(lines), 90)

    candidate = tightened(tmp_path)
    published = deployment.cli("rules", "publish", str(candidate), "--shadow")
    assert published.returncode == 0, published.stderr
    assert "as the shadow rule set" in published.stdout

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    diff = deployment.cli(
        "rules",
        "diff",
        str(ROOT / "rules"),
        str(candidate),
        "--events",
        str(events),
        "--format",
        "json",
    )
    assert diff.returncode == 0, diff.stderr
    offline = orjson.loads(diff.stdout)
    assert offline["customers_moving"] > 0

    seen: dict[str, Any] = {}

    def reported() -> bool:
        body = worker.get("/rules/shadow").json()
        seen["body"] = body
        shadow = body["shadow"]
        return shadow is not None and moves(shadow) == moves(offline)

    assert wait_for(reported, 60), (seen, offline)
    report = seen["body"]["shadow"]
    assert report["shadow"] == offline["shadow"]
    assert metric(worker, "segstream_shadow_moves") == sum(moves(offline).values())

    changes = asyncio.run(read_all(deployment, "segment-changes", idle=2.0))
    versions = {orjson.loads(r.value)["cause"]["rules_version"] for r in changes}
    assert offline["shadow"] not in versions  # the shadow set emitted nothing

    version = offline["shadow"]
    promoted = deployment.cli("rules", "promote", version)
    assert promoted.returncode == 0, promoted.stderr

    def promotion_done() -> bool:
        records = asyncio.run(read_all(deployment, "segment-changes", idle=2.0))
        made = [
            orjson.loads(r.value)
            for r in records
            if orjson.loads(r.value)["cause"]["rules_version"] == version
        ]
        seen["made"] = Counter((c["family"], c["change"]) for c in made)
        return seen["made"] == moves(offline)

    assert wait_for(promotion_done, 60), seen.get("made")
    assert worker.get("/rules/shadow").json()["shadow"] is None
