"""Group figures through real workers: every worker answers for the whole group, the answer
equals ``segstream report groups`` on the same events, and a quarter that closes is emitted as
one group-snapshot event per value, with deterministic ids."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from segstream.core.contracts import GroupSnapshot
from segstream.core.groups import snapshot_id
from tests.integration.conftest import Deployment, WorkerProcess, produce, read_all
from tests.integration.test_worker import metric, wait_for

MANAGERS = ["dana", "eli", "fay"]
SCORES = [9, 2, 10, 8, 1, 5, 7, 3, 9, 10, 6, 8]


def event(n: int, customer: str, when: str, **fields: object) -> bytes:
    body = {"event_id": f"g{n}", "customer_id": customer, "occurred_at": f"{when}T10:00:00Z"}
    return orjson.dumps(body | fields)


def quarter_one() -> list[bytes]:
    lines = []
    for i, score in enumerate(SCORES):
        c = f"C{i}"
        manager = MANAGERS[i % 3]
        lines += [
            event(3 * i, c, "2026-01-05", type="profile", attributes={"account_manager": manager}),
            event(3 * i + 1, c, "2026-02-10", type="order", order_id=f"o{i}", amount=f"{100 + i}"),
            event(3 * i + 2, c, "2026-03-02", type="survey", survey_id=f"q1-{i}", score=score),
        ]
    return lines


def quarter_two() -> list[bytes]:
    """Every customer answers in April: each partition's clock passes the end of Q1."""
    return [
        event(1000 + i, f"C{i}", "2026-04-08", type="survey", survey_id=f"q2-{i}", score=9)
        for i in range(len(SCORES))
    ]


def rows_of(view: dict[str, Any]) -> list[dict[str, Any]]:
    """``GET /groups/{name}`` as the rows ``report groups --format json`` prints."""
    return [
        {"group": view["group"], "value": row["value"]}
        | {"period": p["period"], "closed": p["closed"]}
        | {k: v for k, v in row.items() if k != "value"}
        for p in view["periods"]
        for row in p["values"]
    ]


def settled(worker: WorkerProcess, partitions: int) -> dict[str, Any] | None:
    response = worker.get("/groups/account_managers")
    if response.status_code != 200:
        return None
    view: dict[str, Any] = response.json()
    closed = [p for p in view["periods"] if p["closed"]]
    if view["partitions"]["reporting"] < partitions or not closed:
        return None
    return view


def test_groups_agree_across_workers_and_with_report_groups(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.partitions = 4
    deployment.settings["groups_publish_seconds"] = "0.5"
    first, second = deployment.start_worker(), deployment.start_worker()
    first.wait_ready()
    second.wait_ready()
    q1, q2 = quarter_one(), quarter_two()
    asyncio.run(produce(deployment, q1))
    consumed = lambda: sum(  # noqa: E731
        metric(w, "segstream_events_consumed_total") for w in (first, second)
    )
    assert wait_for(lambda: consumed() >= len(q1), 60)
    asyncio.run(produce(deployment, q2))
    assert wait_for(lambda: consumed() >= len(q1) + len(q2), 60)

    views: dict[str, dict[str, Any]] = {}

    def both_settled() -> bool:
        for name, worker in (("first", first), ("second", second)):
            view = settled(worker, deployment.partitions)
            if view is None:
                return False
            views[name] = view
        return rows_of(views["first"]) == rows_of(views["second"])

    assert wait_for(both_settled, 60), views
    view = views["first"]
    assert view["current"] == "2026-Q2"
    assert [p["period"] for p in view["periods"]] == ["2026-Q2", "2026-Q1"]

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(q1 + q2) + b"\n")
    report = deployment.cli(
        "report", "groups", "--events", str(events), "--format", "json", "--partitions", "4"
    )
    assert report.returncode == 0, report.stderr
    offline = [orjson.loads(line) for line in report.stdout.splitlines()]
    assert rows_of(view) == offline

    # dana's customers answered 9, 8, 7, 10 in Q1: 3 promoters, no detractor -> CSI 3.0
    q1_dana = next(r for r in offline if r["period"] == "2026-Q1" and r["value"] == "dana")
    assert q1_dana["csi"] == 3.0 and q1_dana["members"] == 4

    records = asyncio.run(
        read_all(deployment, "segment-group-snapshots", until=lambda r: len(r) >= 3)
    )
    records = asyncio.run(read_all(deployment, "segment-group-snapshots", idle=3.0))
    snapshots = [orjson.loads(r.value) for r in records]
    assert sorted(s["value"] for s in snapshots) == MANAGERS  # once each
    for s in snapshots:
        GroupSnapshot.model_validate(s)
        assert s["period"] == "2026-Q1" and s["type"] == "group_snapshot"
        assert s["event_id"] == snapshot_id("account_managers", s["value"], "2026-Q1")
        row = next(r for r in offline if r["period"] == "2026-Q1" and r["value"] == s["value"])
        assert s["metrics"] == {k: row[k] for k in ("csi", "nps", "members", "revenue")}

    # both workers crash; a new one recovers the same figures from the changelog and the
    # groups topic, and emits no snapshot with another id
    first.kill()
    second.kill()
    third = deployment.start_worker()
    third.wait_ready()
    recovered: dict[str, Any] = {}

    def recovered_settled() -> bool:
        view = settled(third, deployment.partitions)
        recovered["view"] = view
        return view is not None and rows_of(view) == offline

    assert wait_for(recovered_settled, 60), recovered
    later = asyncio.run(read_all(deployment, "segment-group-snapshots", idle=3.0))
    ids = {orjson.loads(r.value)["event_id"] for r in later}
    assert ids == {s["event_id"] for s in snapshots}
