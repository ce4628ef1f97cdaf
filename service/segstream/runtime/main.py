"""Start a worker; in demo mode also an embedded broker and a synthetic feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from segstream.runtime.connection import unreachable
from segstream.runtime.settings import Settings, load_settings
from segstream.runtime.topics import TopicLayoutError, ensure_topics_sync
from segstream.runtime.worker import SegmentWorker, describe_change
from segstream.synth import SynthConfig, generate

log = logging.getLogger("segstream.main")
TOPIC_BY_TYPE = ("order", "support", "survey", "profile")


def run_worker(*, demo: bool = False) -> int:
    settings = load_settings()
    broker = None
    if not settings.bootstrap_servers:
        if not demo:
            print(
                "KAFKA_BOOTSTRAP_SERVERS is not set; use --demo for an embedded broker",
                file=sys.stderr,
            )
            return 2
        from segstream.runtime.broker import EmbeddedBroker

        broker = EmbeddedBroker()
        broker.start()
        print(f"embedded Kafka-compatible broker (Tansu) on {broker.bootstrap}", flush=True)
        settings = settings.model_copy(
            update={"bootstrap_servers": broker.bootstrap, "clock": "event"}
        )
    try:
        # before faust configures logging: one plain line on stderr, which is the log
        problem = asyncio.run(unreachable(settings))
        if problem is not None:
            print(f"ERROR segstream.kafka: {problem}", file=sys.stderr, flush=True)
            return 1
        try:
            ensure_topics_sync(settings, check_partitions=True)
        except TopicLayoutError as exc:
            print(f"ERROR segstream.topics: {exc}", file=sys.stderr, flush=True)
            return 1
        except KafkaError as exc:  # e.g. SASL refused: aiokafka logged the reason above
            print(f"ERROR segstream.kafka: {exc}", file=sys.stderr, flush=True)
            return 1
        worker = SegmentWorker(settings, on_change=_print_change if demo else None)
        if demo:
            worker.app.task(_feeder(settings))
            print(
                f"metrics: http://{settings.web_host}:{settings.web_port}/metrics  "
                f"segments: http://{settings.web_host}:{settings.web_port}/segments",
                flush=True,
            )
        faust.Worker(
            worker.app, loglevel="WARNING" if demo else "INFO", redirect_stdouts=False
        ).execute_from_commandline()
    finally:
        if broker is not None:
            broker.stop()
    return 0


def spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``segstream worker`` as a subprocess in its own session (so a signal reaches all of it),
    with ``env`` replacing every ``SEGSTREAM_*`` variable of this process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "segstream.cli", "worker"],
            env=base | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _print_change(change: dict[str, Any]) -> None:
    print(describe_change(change), flush=True)


def _feeder(settings: Settings) -> Any:
    """A paced synthetic feed (1% invalid messages) for the demo."""

    async def feed(app: Any) -> None:
        topics = {
            "order": settings.topic_orders,
            "support": settings.topic_support,
            "survey": settings.topic_surveys,
            "profile": settings.topic_profiles,
        }
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
        )
        await producer.start()
        try:
            interval = 1.0 / settings.demo_events_per_second
            rng = random.Random(1)
            cfg = SynthConfig(customers=500, events=1_000_000, invalid_rate=0.01)
            next_at = time.monotonic()
            for event in generate(cfg):
                topic = topics.get(str(event.get("type")), rng.choice(list(topics.values())))
                key = str(event.get("customer_id") or "").encode() or None
                await producer.send(topic, orjson.dumps(event), key=key)
                next_at += interval
                with contextlib.suppress(ValueError):
                    await asyncio.sleep(max(next_at - time.monotonic(), 0))
        finally:
            await producer.stop()

    return feed
