"""``segstream worker`` that holds one fetch back until the consumer generation changed and
the flow is resumed, so that a test can complete a rebalance (by starting another worker) while
fetched records wait; the first of:

- its second fetch of input records (the first batch was processed: a worker mid-stream);
- its first fetch of a changelog partition being recovered (a worker mid-recovery); it is held
  until the tables' recover callbacks of the interrupted recovery have returned too, so that
  they see the changelog not read to its end.

The hold prints one line to the worker's log, ``held-fetch: holding N <kind> records of
generation G``, then ``held-fetch: released in generation G'``.

    python -m tests.integration.held_fetch worker
"""

from __future__ import annotations

import asyncio
import sys

from faust.types import AppT

from segstream.cli import main
from segstream.runtime import faust_compat
from segstream.runtime.batching import BatchConsumer
from segstream.runtime.faust_compat import Fetched, RecoverCallback

HOLD_SECONDS = 120.0
INPUT_FETCH_HELD = 2  # the second fetch with input records


def _kind(consumer: BatchConsumer, fetched: Fetched, input_fetches: list[int]) -> str | None:
    if any(tp.topic in consumer.batch_topics for tp in fetched.records):
        input_fetches[0] += 1
        return "input" if input_fetches[0] == INPUT_FETCH_HELD else None
    if any(consumer.recovers_in_bulk(tp) for tp in fetched.records):
        return "changelog"
    return None


def hold_fetches() -> None:
    fetch = BatchConsumer.fetch
    held: list[str] = []
    input_fetches = [0]
    recovered_in: list[int] = []  # the generation each recover callback returned in
    when_recovery_ended = faust_compat.when_recovery_ended

    def counted(app: AppT, callback: RecoverCallback) -> RecoverCallback:
        guarded = when_recovery_ended(app, callback)

        async def recovered() -> None:
            await guarded()
            recovered_in.append(app.consumer_generation_id)

        return recovered

    faust_compat.when_recovery_ended = counted  # before the worker module imports it

    async def holding(self: BatchConsumer, wait_seconds: float) -> Fetched:
        fetched = await fetch(self, wait_seconds)
        kind = _kind(self, fetched, input_fetches) if fetched.records else None
        if kind is None or held:
            return fetched
        held.append(kind)
        topics = self.batch_topics if kind == "input" else None
        count = sum(
            len(r) for tp, r in fetched.records.items() if topics is None or tp.topic in topics
        )
        print(
            f"held-fetch: holding {count} {kind} records of generation {fetched.generation}",
            flush=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOLD_SECONDS

        def rebalanced() -> bool:
            generation = self.app.consumer_generation_id
            return (
                generation != fetched.generation
                and self.flow_active
                and (kind == "input" or generation in recovered_in)
            )

        while not rebalanced() and loop.time() < deadline:  # noqa: ASYNC110 (plain attributes)
            await asyncio.sleep(0.05)
        print(f"held-fetch: released in generation {self.app.consumer_generation_id}", flush=True)
        return fetched

    BatchConsumer.fetch = holding  # type: ignore[method-assign]


if __name__ == "__main__":
    hold_fetches()
    sys.exit(main(sys.argv[1:]))
