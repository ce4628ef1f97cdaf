"""Two workers share the partitions; one is SIGKILLed mid-stream; nothing is lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

import orjson

from segstream.core.partitioning import partition_for
from tests.integration.conftest import Deployment, load_events, produce, read_all
from tests.integration.test_worker import (
    SAMPLE,
    assert_streaming_equals_offline,
    offline_segments,
    wait_for,
)


def test_two_workers_survive_a_sigkill_and_agree_with_replay(deployment: Deployment) -> None:
    first, second = deployment.start_worker(), deployment.start_worker()
    first.wait_ready()
    second.wait_ready()
    assert wait_for(
        lambda: (
            _partitions(first)
            and _partitions(second)
            and sorted(_partitions(first) + _partitions(second)) == [0, 1, 2, 3]
        ),
        60,
    )

    lines = load_events(SAMPLE)
    half = len(lines) // 2
    asyncio.run(produce(deployment, lines[:half]))

    # /customers/{id} answers on either worker: faust routes it to the owner
    owned_by_second = next(
        json.loads(line)["customer_id"]
        for line in lines
        if _valid_customer(line)
        and partition_for(json.loads(line)["customer_id"], 4) in _partitions(second)
    )
    assert wait_for(lambda: first.get(f"/customers/{owned_by_second}").status_code == 200, 30)
    time.sleep(1.0)  # let both workers get going, then kill one mid-stream
    first.kill()
    asyncio.run(produce(deployment, lines[half:]))

    assert wait_for(lambda: _partitions(second) == [0, 1, 2, 3], 90), "no takeover"
    expected = offline_segments(SAMPLE)

    assert_streaming_equals_offline(second, expected)

    records = asyncio.run(read_all(deployment, "segment-changes", idle=3.0))
    bodies = [orjson.loads(r.value) for r in records]
    ids_by_seq: dict[tuple[str, int], set[str]] = defaultdict(set)
    last: dict[tuple[str, str], tuple[int, Any]] = {}
    for body in bodies:
        ids_by_seq[(body["customer_id"], body["seq"])].add(body["event_id"])
        key = (body["customer_id"], body["family"])
        if key not in last or body["seq"] > last[key][0]:
            last[key] = (body["seq"], body["to"])
    # duplicates (if any) are the same change: one event_id per customer and sequence number
    conflicting = {k: v for k, v in ids_by_seq.items() if len(v) > 1}
    assert conflicting == {}
    # no change lost: every customer's sequence is gap-free, and its last change is where it is
    seqs: dict[str, set[int]] = defaultdict(set)
    for customer, seq in ids_by_seq:
        seqs[customer].add(seq)
    assert all(s == set(range(1, max(s) + 1)) for s in seqs.values())
    for cid, segments in expected.items():
        for family, value in segments.items():
            if (cid, family) in last:
                assert last[(cid, family)][1] == value, (cid, family)
            else:
                assert value in (None, False), (cid, family)


def _valid_customer(line: bytes) -> bool:
    try:
        return bool(json.loads(line).get("customer_id"))
    except (ValueError, AttributeError):
        return False


def _partitions(worker: Any) -> list[int]:
    try:
        response = worker.get("/readyz")
    except Exception:
        return []
    return list(response.json().get("partitions", [])) if response.status_code == 200 else []
