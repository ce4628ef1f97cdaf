"""What the worker tells an operator about itself: consumer lag and readiness.

Both need state that faust and aiokafka keep in private names (faust's read and committed
offsets, aiokafka's fetch position and its clients' connections), read through faust_compat.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP, AppT, ConsumerT

from segstream.runtime.faust_compat import (
    committed_offset,
    consumer_thread,
    fetch_position,
    kafka_client,
    kafka_producer,
    read_offset,
)

#: A probe answers well inside the readiness probe's timeout (deploy/kubernetes: 3 s).
PROBE_TIMEOUT_SECONDS = 1.5


def consumed_offset(consumer: ConsumerT, tp: TP, processed: int | None = None) -> int | None:
    """The next offset this worker will process on ``tp``, or None while nobody knows yet.

    The largest of: what the batch path processed (``processed``), faust's read offset (the
    committed offset when partitions are assigned, then the last offset processed), faust's
    committed offset, and the fetch position of the aiokafka consumer (the committed offset
    right after an assignment, before faust has seeked). Each lags the others at some moment of
    a start or a rebalance; a default of 0 would report an idle partition's whole history.
    """
    known = [
        offset
        for offset in (
            processed,
            read_offset(consumer, tp),
            committed_offset(consumer, tp),
            fetch_position(consumer, tp),
        )
        if offset is not None
    ]
    return max(known) if known else None


def lag_of(consumer: ConsumerT, tp: TP, processed: int | None = None) -> int | None:
    """High watermark minus the next offset to process; None until a fetch reported the high
    watermark (ListOffsets is not used: Tansu under-reports it, see batching.py)."""
    high = consumer.highwater(tp)
    position = consumed_offset(consumer, tp, processed)
    if high is None or position is None:
        return None
    return max(int(high) - position, 0)


async def broker_problem(app: AppT) -> str | None:
    """Why this worker cannot reach the cluster with its consumer or its producer, or None.

    A connection that is up costs nothing to check; a dropped one is re-opened (an idle client
    closes its connections after ``connections.max.idle.ms``, which is not an outage), and a
    broker that refuses or does not answer within PROBE_TIMEOUT_SECONDS makes the worker
    unready: it can neither consume nor send its changes.
    """
    thread = consumer_thread(app.consumer)
    consumer = kafka_client(app.consumer)
    producer = getattr(kafka_producer(app), "client", None)
    if thread is None or consumer is None or producer is None:
        return "starting: Kafka clients not started yet"
    try:
        # the consumer's client lives on the consumer thread's event loop: probe it there
        reached = await asyncio.wait_for(
            thread.call_thread(_reaches_a_broker, consumer), 2 * PROBE_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return f"consumer thread did not answer within {2 * PROBE_TIMEOUT_SECONDS:.0f} s"
    if not reached:
        return "consumer cannot reach any Kafka broker"
    if not await _reaches_a_broker(producer):
        return "producer cannot reach any Kafka broker"
    return None


async def _reaches_a_broker(client: Any) -> bool:
    for broker in client.cluster.brokers():
        try:
            if await asyncio.wait_for(client.ready(broker.nodeId), PROBE_TIMEOUT_SECONDS):
                return True
        except (TimeoutError, OSError):
            continue
    return False


def not_ready_reason(worker_ready: bool, problem: str | None) -> str | None:
    """The reason /readyz gives, or None when ready."""
    if problem is not None:
        return problem
    if not worker_ready:
        return "partitions being assigned or their state recovered"
    return None
