"""Sustained load: a paced synthetic feed for a while, each worker's RSS (``VmRSS`` of
/proc/PID/status) and consumer lag (``segstream_consumer_lag_messages`` summed over its
partitions) sampled every second.

The report prints, per minute, min/median/max of each, and the slope of RSS after the
warm-up (a least-squares line through the samples, MiB per minute): flat memory and bounded
lag are what a long-running worker must show.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from segstream.runtime.settings import TOPIC_OF_TYPE
from segstream.synth import SynthConfig, generate
from tests.integration.conftest import Deployment, WorkerProcess

LAG = "segstream_consumer_lag_messages"


@dataclass(frozen=True)
class LoadPlan:
    rate: float = 2_000.0  # events per second
    seconds: float = 600.0
    warmup: float = 60.0  # RSS slope measured after this
    workers: int = 1
    store: str = "memory://"
    customers: int = 50_000
    partitions: int = 4
    seed: int = 11


@dataclass
class Sample:
    at: float  # seconds since the feed started
    fed: int
    rss_kib: list[int]  # per worker
    lag: list[float | None]  # per worker; None when /metrics did not answer


@dataclass
class LoadReport:
    plan: LoadPlan
    samples: list[Sample] = field(default_factory=list)
    fed: int = 0
    seconds: float = 0.0
    alive: bool = True

    def minutes(self) -> list[str]:
        rows = [
            f"{'min':>4} {'fed/s':>7} {'RSS MiB min/med/max':>22} {'lag min/med/max':>20}",
        ]
        for minute in range(int(self.seconds // 60) + 1):
            chunk = [s for s in self.samples if minute * 60 <= s.at < (minute + 1) * 60]
            if not chunk:
                continue
            rss = [sum(s.rss_kib) / 1024 for s in chunk]
            lags = [sum(x for x in s.lag if x is not None) for s in chunk]
            rate = (chunk[-1].fed - chunk[0].fed) / max(chunk[-1].at - chunk[0].at, 1e-9)
            rows.append(
                f"{minute:>4} {rate:>7.0f} {_three(rss, '.0f'):>22} {_three(lags, '.0f'):>20}"
            )
        return rows

    def rss_slope(self) -> float:
        """MiB per minute of total RSS after the warm-up (least squares)."""
        after = [s for s in self.samples if s.at >= self.plan.warmup]
        if len(after) < 2:
            return 0.0
        xs = [s.at / 60 for s in after]
        ys = [sum(s.rss_kib) / 1024 for s in after]
        return float(statistics.linear_regression(xs, ys).slope)

    def lag_bounds(self) -> tuple[float, float, float]:
        lags = [sum(x for x in s.lag if x is not None) for s in self.samples]
        return (min(lags), statistics.median(lags), max(lags)) if lags else (0.0, 0.0, 0.0)

    def text(self) -> str:
        p = self.plan
        low, mid, high = self.lag_bounds()
        return "\n".join(
            [
                f"load: {p.rate:.0f} events/s for {p.seconds:.0f} s, {p.workers} worker(s), "
                f"{p.store}, {p.customers} customers, {p.partitions} partitions",
                f"fed {self.fed} events in {self.seconds:.0f} s "
                f"({self.fed / max(self.seconds, 1e-9):.0f}/s); workers alive: {self.alive}",
                *self.minutes(),
                f"RSS slope after {p.warmup:.0f} s warm-up: {self.rss_slope():+.2f} MiB/min",
                f"lag over the run: min {low:.0f}, median {mid:.0f}, max {high:.0f}",
            ]
        )


def _three(values: list[float], fmt: str) -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def lag_of(worker: WorkerProcess, client: httpx.Client) -> float | None:
    try:
        text = client.get(worker.url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(LAG))


def sustain(plan: LoadPlan, bootstrap: str, tmp: Path) -> LoadReport:
    tmp.mkdir(parents=True, exist_ok=True)
    dep = Deployment(bootstrap, f"l{uuid.uuid4().hex[:8]}-", tmp, partitions=plan.partitions)
    report = LoadReport(plan)
    try:
        workers = [dep.start_worker(store=plan.store) for _ in range(plan.workers)]
        for worker in workers:
            worker.wait_ready()
        asyncio.run(_run(dep, workers, plan, report))
        report.alive = all(w.proc.poll() is None for w in workers)
    finally:
        for worker in dep.workers:
            worker.stop()
    return report


async def _run(
    dep: Deployment, workers: list[WorkerProcess], plan: LoadPlan, report: LoadReport
) -> None:
    begin = time.monotonic()
    feeding = asyncio.create_task(_feed(dep, plan, report, begin))
    with httpx.Client() as client:
        while not feeding.done():
            at = time.monotonic() - begin
            lags = await asyncio.gather(*(asyncio.to_thread(lag_of, w, client) for w in workers))
            rss = [rss_kib(w.proc.pid) if w.proc.poll() is None else 0 for w in workers]
            report.samples.append(Sample(at, report.fed, rss, list(lags)))
            await asyncio.sleep(max(begin + len(report.samples) - time.monotonic(), 0))
    await feeding
    report.seconds = time.monotonic() - begin


async def _feed(dep: Deployment, plan: LoadPlan, report: LoadReport, begin: float) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=dep.bootstrap, enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        cfg = SynthConfig(
            customers=plan.customers, events=int(plan.rate * plan.seconds), seed=plan.seed
        )
        for index, event in enumerate(generate(cfg)):
            elapsed = time.monotonic() - begin
            if elapsed >= plan.seconds:
                break
            topic = dep.topic(TOPIC_OF_TYPE.get(str(event.get("type")), "orders"))
            key = str(event.get("customer_id") or "").encode() or None
            await producer.send(topic, orjson.dumps(event), key=key)
            report.fed = index + 1
            if index % 50 == 0:
                await asyncio.sleep(max(begin + index / plan.rate - time.monotonic(), 0))
        await producer.flush()
    finally:
        await producer.stop()
