"""Hysteresis and dwell through a real worker, equal to the offline replay: a score oscillating
inside the band moves nobody, and a min_days dwell ends on its day with no new event."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import orjson

from segstream.core.rulelang import load_rules
from segstream.replay import replay
from tests.integration.conftest import Deployment, produce, read_all
from tests.integration.test_renewal import line
from tests.integration.test_worker import metric, wait_for
from tests.unit.test_hysteresis import RULES

SCORES = [2.5, 1.6, 1.9, 1.5, 1.7, 1.2, 1.8, 2.2, 1.6]
STAGES = [
    [
        line(i, "C1", f"2026-01-{i + 1:02d}", type="profile", attributes={"score": s})
        for i, s in enumerate(SCORES)
    ],
    [line(100, "C1", "2026-01-10", type="order", order_id="o1", amount="10.00")],
    [line(101, "C2", "2026-02-19", type="order", order_id="o2", amount="10.00")],  # day 40
    [line(102, "C2", "2026-02-26", type="order", order_id="o3", amount="10.00")],  # day 47
]


def of_c1(changes: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (c["family"], c["change"], c["to"], c["cause"]["kind"], str(c["at"])[:10])  # type: ignore[index]
        for c in changes
        if c["customer_id"] == "C1"
    ]


def test_hysteresis_and_dwell_in_the_worker_equal_the_replay(
    deployment: Deployment, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "held.yaml").write_text(RULES)
    deployment.partitions = 1
    deployment.settings["rules_dir"] = str(rules)
    worker = deployment.start_worker()
    worker.wait_ready()
    sent = 0
    for stage in STAGES:  # the input topics are consumed independently: one stage at a time
        asyncio.run(produce(deployment, stage))
        sent += len(stage)
        assert wait_for(lambda n=sent: metric(worker, "segstream_events_consumed_total") >= n, 30)

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(line for stage in STAGES for line in stage) + b"\n")
    out = io.BytesIO()
    replay([events], load_rules(rules), out=out, progress=False, errors=io.StringIO())
    offline = of_c1([orjson.loads(x) for x in out.getvalue().splitlines()])
    records = asyncio.run(
        read_all(
            deployment,
            "segment-changes",
            until=lambda r: len(of_c1([orjson.loads(x.value) for x in r])) >= len(offline),
        )
    )
    streamed = of_c1([orjson.loads(r.value) for r in records])
    assert streamed == offline
    hot = [c for c in streamed if c[0] == "hot"]
    # in at 2.5, held through 1.6-1.5, out at 1.2, in again only at 2.2
    assert [c[1] for c in hot] == ["entered", "exited", "entered"]
    buyer = [c for c in streamed if c[0] == "buyer"]
    assert buyer[-1][1:] == ("exited", False, "clock", "2026-02-26")  # held past day 30 to 45
