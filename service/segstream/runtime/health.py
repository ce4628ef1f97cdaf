"""What the worker tells an operator about itself: consumer lag and readiness.

Both need state that faust and aiokafka keep in private names (faust's read and committed
offsets, aiokafka's fetch position and its clients' connections); they are read here only,
so a faust or aiokafka upgrade that renames them breaks this module and its tests, not the
batch path.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP

#: A probe answers well inside the readiness probe's timeout (deploy/kubernetes: 3 s).
PROBE_TIMEOUT_SECONDS = 1.5


def consumed_offset(consumer: Any, tp: TP, processed: int | None = None) -> int | None:
    """The next offset this worker will process on ``tp``, or None while nobody knows yet.

    The largest of: what the batch path processed (``processed``), faust's read offset (set
    from the committed offset when partitions are assigned, then after every batch), faust's
    committed offset, and the fetch position of the aiokafka consumer (the committed offset
    right after an assignment, before faust has seeked). Each lags the others at some moment of
    a start or a rebalance; a default of 0 would report an idle partition's whole history.
    """
    known = [
        offset
        for offset in (
            processed,
            consumer._read_offset.get(tp),
            consumer._committed_offset.get(tp),
            _fetch_position(consumer, tp),
        )
        if offset is not None
    ]
    return max(known) if known else None


def _fetch_position(consumer: Any, tp: TP) -> int | None:
    thread = getattr(consumer, "_thread", None)
    client = getattr(thread, "_consumer", None)
    if client is None:
        return None
    state = client._subscription.subscription
    if state is None or state.assignment is None or tp not in state.assignment.tps:
        return None
    tp_state = state.assignment.state_value(tp)
    return int(tp_state.position) if tp_state.has_valid_position else None


def lag_of(consumer: Any, tp: TP, processed: int | None = None) -> int | None:
    """High watermark minus the next offset to process; None until a fetch reported the high
    watermark (ListOffsets is not used: Tansu under-reports it, see batching.py)."""
    high = consumer.highwater(tp)
    position = consumed_offset(consumer, tp, processed)
    if high is None or position is None:
        return None
    return max(int(high) - position, 0)
