"""The renewal window opens on its day with no new event of the customer: through a real worker
(event clock, moved by other customers' events) and through the offline replay."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import orjson

from segstream.core.rulelang import load_rules
from segstream.replay import replay
from tests.integration.conftest import ROOT, Deployment, produce, read_all
from tests.integration.test_worker import metric, wait_for


def line(n: int, customer: str, day: str, **fields: object) -> bytes:
    body = {"event_id": f"e{n}", "customer_id": customer, "occurred_at": f"{day}T09:00:00Z"}
    return orjson.dumps(body | fields)


LINES = [
    line(1, "C1", "2026-01-10", type="profile", attributes={"contract_renewal": "2026-09-01"}),
    *(  # other customers' orders move the partition's clock; C1 sends nothing more
        line(10 + i, f"O{i}", day, type="order", order_id=f"o{i}", amount="10.00")
        for i, day in enumerate(["2026-03-01", "2026-05-03", "2026-05-04", "2026-09-02"])
    ),
]


def renewal_changes(changes: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (c["change"], c["cause"]["kind"], str(c["at"])[:10], c["owner"])  # type: ignore[index]
        for c in changes
        if c["customer_id"] == "C1" and c["family"] == "renewal_window"
    ]


EXPECTED = [
    ("entered", "clock", "2026-05-04", "customer_success"),
    ("exited", "clock", "2026-09-02", "customer_success"),
]


def test_the_renewal_window_fires_on_its_day_in_the_worker_and_in_replay(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.partitions = 1  # one partition: the other customers move C1's clock
    worker = deployment.start_worker()
    worker.wait_ready()
    # the renewal date months before the other events: the four input topics are consumed
    # independently, so send the later orders only once it was applied
    asyncio.run(produce(deployment, LINES[:1]))
    assert wait_for(lambda: metric(worker, "segstream_events_consumed_total") >= 1, 30)
    asyncio.run(produce(deployment, LINES[1:]))
    records = asyncio.run(
        read_all(
            deployment,
            "segment-changes",
            until=lambda r: len(renewal_changes([orjson.loads(x.value) for x in r])) >= 2,
        )
    )
    assert renewal_changes([orjson.loads(r.value) for r in records]) == EXPECTED

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(LINES) + b"\n")
    out = io.BytesIO()
    replay([events], load_rules(ROOT / "rules"), out=out, progress=False, errors=io.StringIO())
    offline = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert renewal_changes(offline) == EXPECTED
