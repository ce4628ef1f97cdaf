"""The default playbook through a real worker and through the offline replay: a customer enters
onboarding with its first order and leaves it on day 90 with no new event of its own; its
health falls with open tickets and with the activity trend, the latter by the clock alone."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import orjson

from segstream.core.rulelang import load_rules
from segstream.core.timeutil import parse_timestamp
from segstream.replay import replay
from tests.integration.conftest import ROOT, Deployment, produce, read_all
from tests.integration.test_renewal import line
from tests.integration.test_worker import metric, wait_for

FIRST_ORDER = [line(1, "C1", "2026-01-10", type="order", order_id="c1", amount="50.00")]
TICKETS = [  # two open tickets: 100 - 20 (no survey) - 20 = 60, healthy -> watch
    line(2, "C1", "2026-01-20", type="support", ticket_id="t1", status="opened"),
    line(3, "C1", "2026-01-21", type="support", ticket_id="t2", status="opened"),
]
CLOCK = [  # other customers' orders move the partition's clock; C1 sends nothing more
    line(10 + i, f"O{i}", day, type="order", order_id=f"o{i}", amount="10.00")
    for i, day in enumerate(["2026-02-24", "2026-04-09", "2026-04-10"])
]
LINES = FIRST_ORDER + TICKETS + CLOCK

ONBOARDING = [
    ("entered", "event", "2026-01-10", True),
    ("exited", "clock", "2026-04-10", False),  # day 90 after the first order
]
HEALTH = [
    ("entered", "event", "2026-01-10", "healthy"),
    ("downgraded", "event", "2026-01-21", "watch"),
    # day 45: no event in 30 days, three in the 30 before: 100 - 20 - 20 - 20 = 40
    ("downgraded", "clock", "2026-02-24", "at_risk"),
    # day 89: none in either window, the trend is 0 again: 60
    ("upgraded", "clock", "2026-04-09", "watch"),
]


def of(changes: list[dict[str, object]], family: str) -> list[tuple[object, ...]]:
    return [
        (c["change"], c["cause"]["kind"], str(c["at"])[:10], c["to"])  # type: ignore[index]
        for c in changes
        if c["customer_id"] == "C1" and c["family"] == family
    ]


def done(changes: list[dict[str, object]]) -> bool:
    return len(of(changes, "onboarding")) >= 2 and len(of(changes, "health")) >= 4


def test_onboarding_ends_on_day_90_and_health_follows_tickets_and_the_clock(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.partitions = 1  # one partition: the other customers move C1's clock
    worker = deployment.start_worker()
    worker.wait_ready()
    # the four input topics are consumed independently: send each step once the one before
    # it was applied, so the worker sees them in time order as the replay does
    for step, total in ((FIRST_ORDER, 1), (TICKETS, 3), (CLOCK, len(LINES))):
        asyncio.run(produce(deployment, step))
        assert wait_for(lambda n=total: metric(worker, "segstream_events_consumed_total") >= n, 30)
    records = asyncio.run(
        read_all(
            deployment,
            "segment-changes",
            until=lambda r: done([orjson.loads(x.value) for x in r]),
        )
    )
    streamed = [orjson.loads(r.value) for r in records]
    assert of(streamed, "onboarding") == ONBOARDING
    assert of(streamed, "health") == HEALTH
    # a flag, not a lifecycle tier: nothing moved in lifecycle after C1 entered it
    assert [c[:2] for c in of(streamed, "lifecycle")] == [("entered", "event")]
    leaving = next(c for c in streamed if c["family"] == "onboarding" and c["change"] == "exited")
    assert (leaving["owner"], leaving["touch"]) == ("customer_success", "low")

    served = worker.get("/customers/C1").json()
    assert served["segments"]["onboarding"] is False
    assert served["segments"]["health"] == "watch"
    assert served["state"]["health_tickets"] == 20 and served["state"]["health_score"] == 60

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(LINES) + b"\n")
    out = io.BytesIO()
    replay([events], load_rules(ROOT / "rules"), out=out, progress=False, errors=io.StringIO())
    offline = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert (of(offline, "onboarding"), of(offline, "health")) == (ONBOARDING, HEALTH)

    # the membership timeline: which segments C1 was in at each of its changes, and why, the
    # same from the worker (GET /customers/C1/timeline?at=) and from the replay's engine
    engine, _ = replay([events], load_rules(ROOT / "rules"), out=None, progress=False, partitions=1)
    served_timeline = worker.get("/customers/C1/timeline").json()["timeline"]
    assert served_timeline == engine.timeline("C1")
    settled_at = {(c["family"], c["at"]): c["to"] for c in streamed if c["customer_id"] == "C1"}
    for (family, at), value in settled_at.items():
        answer = worker.get(f"/customers/C1/timeline?at={at}").json()
        assert answer["complete"] is True
        assert answer["segments"][family]["value"] == value
        expected = engine.segments_at("C1", parse_timestamp(at))
        assert {k: v for k, v in answer.items() if k != "timeline"} == expected
