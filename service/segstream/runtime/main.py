"""Start a worker; in demo mode also an embedded broker and a synthetic feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from segstream.core.rulelang import RuleErrors, load_rules
from segstream.present import describe_change
from segstream.runtime import faust_compat, logs
from segstream.runtime.connection import unreachable
from segstream.runtime.settings import Settings, SettingsError, load_settings
from segstream.runtime.topics import TopicLayoutError, ensure_topics
from segstream.runtime.worker import SegmentWorker
from segstream.synth import SynthConfig, generate

log = logging.getLogger("segstream.main")
#: loggers the demo keeps to warnings, so that its output is the segment changes
DEMO_QUIET = ("faust", "mode", "aiokafka", "kafka", "segstream.runtime.batching")
#: one attempt to reach the cluster; an unanswered connection must not hang the start
ATTEMPT_SECONDS = 10.0


class BrokerUnreachable(RuntimeError):
    """No broker of ``bootstrap_servers`` answered within ``broker_wait_seconds``."""


class _Worker(faust_compat.Worker):
    """faust's worker, with one line on Ctrl-C instead of mode's ``-INT-`` banner."""

    def on_interrupt(self) -> None:
        log.warning("interrupted (SIGINT): stopping")


def run_worker(*, demo: bool = False) -> int:
    """Check everything local (settings, rules, the HTTP port) before the network, so a
    mistake is one line naming what to change; then the cluster, then faust."""
    try:
        fmt = logs.choose_format(os.environ, demo=demo)
    except logs.LogFormatError as exc:
        print(f"segstream worker: {exc}", file=sys.stderr)
        return 2
    logs.configure(fmt, quiet=DEMO_QUIET if demo else ())
    incompatible = faust_compat.incompatibility()
    if incompatible is not None:
        log.error(
            "the installed stream libraries do not fit this segstream: %s; install the versions"
            " pyproject.toml pins",
            incompatible,
        )
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    try:
        rules = load_rules(settings.rules_dir)
    except RuleErrors as exc:
        errors = "; ".join(str(e) for e in exc.errors)
        log.error("invalid rule set %s (SEGSTREAM_RULES_DIR): %s", settings.rules_dir, errors)
        return 2
    problem = local_problem(settings)
    if problem is not None:
        log.error(problem)
        return 2
    if not settings.bootstrap_servers and not demo:
        log.error("KAFKA_BOOTSTRAP_SERVERS is not set; use --demo for an embedded broker")
        return 2
    broker = None
    if not settings.bootstrap_servers:
        from segstream.runtime.broker import BrokerStartError, EmbeddedBroker

        broker = EmbeddedBroker()
        try:
            broker.start()
        except BrokerStartError as exc:
            log.error("the embedded broker did not start: %s", str(exc).splitlines()[0])
            return 1
        print(f"embedded Kafka-compatible broker (Tansu) on {broker.bootstrap}", flush=True)
        settings = settings.model_copy(
            update={"bootstrap_servers": broker.bootstrap, "clock": "event"}
        )
    try:
        try:
            prepare_topics(settings)
        except (TopicLayoutError, BrokerUnreachable) as exc:
            logging.getLogger("segstream.topics").error("%s", exc)
            return 1
        except KafkaError as exc:  # e.g. SASL refused: aiokafka logged the reason above
            logging.getLogger("segstream.kafka").error("cannot use the Kafka cluster: %s", exc)
            return 1
        worker = SegmentWorker(settings, rules=rules, on_change=_print_change if demo else None)
        identity = logs.worker_id(settings.web_port)
        engine = worker.engine
        logs.configure(
            fmt,
            quiet=DEMO_QUIET if demo else (),
            context=lambda: {
                "worker": identity,
                "partitions": engine.partitions_held(),
                "rules_version": engine.rules.version,
            },
        )
        if demo:
            worker.app.task(_feeder(settings))
            print(
                f"metrics: http://{settings.web_host}:{settings.web_port}/metrics  "
                f"segments: http://{settings.web_host}:{settings.web_port}/segments  "
                "(Ctrl-C stops)",
                flush=True,
            )
        runner = _Worker(worker.app, override_logging=False, quiet=True, redirect_stdouts=False)
        runner.spinner = None  # a progress spinner on stdout, which is the demo's output
        runner.execute_from_commandline()
    finally:
        if broker is not None:
            broker.stop()
    return 0


def local_problem(settings: Settings) -> str | None:
    """What would fail once faust runs, found before it does: the HTTP port, the data dir."""
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        return f"SEGSTREAM_DATA_DIR={settings.data_dir} is not a directory"
    try:
        with socket.socket(socket.AF_INET6 if ":" in settings.web_host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((settings.web_host, settings.web_port))
    except OSError as exc:
        return (
            f"cannot listen on {settings.web_host}:{settings.web_port} ({exc.strerror or exc}); "
            "set SEGSTREAM_WEB_PORT (or SEGSTREAM_WEB_HOST) to a free port"
        )
    return None


def prepare_topics(settings: Settings) -> None:
    """Create and check the topics, retrying an unreachable cluster with backoff (0.5 s
    doubling to 5 s) for ``broker_wait_seconds``: workers often start before the brokers."""
    wait = settings.broker_wait_seconds
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        # one plain connection first (TLS verified as configured): a certificate that does
        # not verify is one line at once, and will not fix itself by retrying
        problem = asyncio.run(unreachable(settings))
        if problem is not None and "TLS" in problem:
            raise BrokerUnreachable(problem)
        try:
            if problem is not None:
                raise OSError(problem)
            asyncio.run(_ensure_topics(settings))
            return
        except (KafkaConnectionError, OSError, TimeoutError) as exc:
            reason = connection_problem(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnreachable(
                    f"cannot reach the Kafka cluster at {settings.bootstrap_servers} "
                    f"(KAFKA_BOOTSTRAP_SERVERS) within {wait:g}s "
                    f"(SEGSTREAM_BROKER_WAIT_SECONDS): {reason}"
                ) from None
            if delay == 0.5:
                log.warning(
                    "cannot reach the Kafka cluster at %s: %s; retrying for up to %gs",
                    settings.bootstrap_servers,
                    reason,
                    wait,
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


def connection_problem(exc: BaseException) -> str:
    """Why the cluster could not be reached, without aiokafka's address tuples."""
    if isinstance(exc, KafkaConnectionError):
        return "no broker answered"
    if isinstance(exc, TimeoutError):
        return f"no answer within {ATTEMPT_SECONDS:g}s"
    return str(exc) or type(exc).__name__


async def _ensure_topics(settings: Settings) -> None:
    """aiokafka logs each failed connection itself; the retry loop says it once."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(ensure_topics(settings, check_partitions=True), ATTEMPT_SECONDS)
    finally:
        quiet.setLevel(level)


def spawn_worker(
    env: dict[str, str], log_path: Path, module: str = "segstream.cli"
) -> subprocess.Popen[bytes]:
    """``segstream worker`` as a subprocess in its own session (so a signal reaches all of it),
    with ``env`` replacing every ``SEGSTREAM_*`` variable of this process; ``module`` runs it
    (a test's wrapper of the command)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, "worker"],
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
        topics = settings.topic_of_type
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
