"""GDPR erasure through a real worker: a profile event with ``"erase": true``."""

from __future__ import annotations

import asyncio

import orjson

from tests.integration.conftest import Deployment, produce, read_all
from tests.integration.test_worker import wait_for


def body(kind: str, customer: str, n: int, day: int, **fields: object) -> bytes:
    event = {
        "event_id": f"{customer}-{n}",
        "type": kind,
        "customer_id": customer,
        "occurred_at": f"2026-03-{day:02d}T10:00:00Z",
    }
    return orjson.dumps(event | fields)


def order(customer: str, n: int, day: int) -> bytes:
    return body("order", customer, n, day, order_id=f"o{n}", amount="250.00")


def test_an_erased_customer_exits_every_segment_and_nothing_of_it_remains(
    deployment: Deployment,
) -> None:
    deployment.partitions = 2
    worker = deployment.start_worker()
    worker.wait_ready()
    story = [order("C1", 1, 1), order("C1", 2, 3), body("survey", "C1", 3, 4, score=9)]
    asyncio.run(produce(deployment, [*story, order("C2", 4, 4)]))
    assert wait_for(lambda: worker.get("/customers/C1").status_code == 200, 30)
    held = {k: v for k, v in worker.get("/customers/C1").json()["segments"].items() if v}

    asyncio.run(produce(deployment, [body("profile", "C1", 5, 6, erase=True)]))

    def exits() -> list[dict[str, object]]:
        changes = [
            orjson.loads(r.value)
            for r in asyncio.run(read_all(deployment, "segment-changes", idle=1.0))
        ]
        return [c for c in changes if c["cause"]["kind"] == "erasure"]

    erased = wait_for(lambda: len(exits()) >= len(held), 30) and exits()
    assert {(c["family"], c["change"], c["customer_id"]) for c in erased} == {
        (name, "exited", "C1") for name in held
    }
    assert worker.get("/customers/C1").status_code == 404
    assert worker.get("/customers/C2").status_code == 200
    changelog = asyncio.run(read_all(deployment, "app-customers-changelog", idle=1.0))
    assert [r.value for r in changelog if r.key == b"C1"][-1] is None  # a tombstone

    worker.stop()  # a replacement rebuilds from the changelog alone
    replacement = deployment.start_worker()
    replacement.wait_ready()
    assert replacement.get("/customers/C1").status_code == 404
    assert replacement.get("/customers/C2").status_code == 200
    asyncio.run(produce(deployment, [order("C1", 2, 3), order("C2", 6, 7)]))  # an old one again
    assert wait_for(
        lambda: replacement.get("/customers/C2").json()["state"]["orders_total"] == 2, 30
    )
    assert replacement.get("/customers/C1").status_code == 404
