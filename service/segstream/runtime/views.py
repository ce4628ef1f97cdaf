"""The worker's HTTP views. /metrics, /healthz and /readyz stay open for Prometheus and the
kubelet; customer and group data need the bearer token when one is set."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faust.exceptions import ConsumerNotStarted

from segstream.core.timeutil import parse_timestamp
from segstream.runtime.health import broker_problem, lag_of, not_ready_reason
from segstream.runtime.http import bearer_token_guard

if TYPE_CHECKING:
    from segstream.runtime.worker import SegmentWorker


def add_views(app: Any, worker: SegmentWorker) -> None:
    guarded = bearer_token_guard(worker.settings.api_token.get_secret_value())

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        update_gauges(worker)
        return web.bytes(worker.metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        partitions = sorted(assigned_or_none(worker))
        reason = not_ready_reason(worker.progress.ready, await broker_problem(worker.app))
        body: dict[str, Any] = {
            "ready": reason is None,
            "partitions": partitions,
            "rules_version": worker.engine.rules.version,
        }
        if reason is not None:
            body["reason"] = reason
        return web.json(body, status=200 if reason is None else 503)

    @app.page("/segments")
    @guarded
    async def segments(web: Any, request: Any) -> Any:
        return web.json(
            {
                "rules_version": worker.engine.rules.version,
                "customers": worker.engine.customer_count(),
                "members": worker.engine.member_counts(),
            }
        )

    @app.page("/groups/{name}")
    @guarded
    async def groups(web: Any, request: Any, name: str) -> Any:
        known = worker.engine.rules.groups
        if name not in known:
            listed = ", ".join(known) or "none"
            return web.json({"error": f"unknown group {name!r}; groups: {listed}"}, status=404)
        return web.json(worker.groups.view(name, assigned_or_none(worker)))

    @app.page("/marketing")
    async def marketing_page(web: Any, request: Any) -> Any:
        return web.bytes(static("marketing.html"), content_type="text/html")

    @app.page("/marketing/app.js")
    async def marketing_script(web: Any, request: Any) -> Any:
        return web.bytes(static("marketing.js"), content_type="text/javascript")

    @app.page("/marketing/chart.js")
    async def charting_library(web: Any, request: Any) -> Any:
        return web.bytes(static("chart.umd.min.js"), content_type="text/javascript")

    @app.page("/marketing/data")
    @guarded
    async def marketing_data(web: Any, request: Any) -> Any:
        engine = worker.engine
        flows: dict[str, list[dict[str, Any]]] = {name: [] for name in engine.rules.segment_names}
        for (family, old, new), n in sorted(worker.handler.flows.items()):
            flows.setdefault(family, []).append({"from": old, "to": new, "customers": n})
        worker.timers.record_sizes()  # today's point is the sizes shown, not the last tick's
        history = worker.progress.size_history
        return web.json(
            {
                "rules_version": engine.rules.version,
                "partitions": sorted(assigned_or_none(worker)),
                "of": worker.settings.partitions,
                "sizes": engine.member_counts(),
                "history": [{"day": day, "sizes": history[day]} for day in sorted(history)],
                "flows": flows,
                "shadow": engine.shadow_report(),
            }
        )

    @app.page("/rules/shadow")
    @guarded
    async def shadow(web: Any, request: Any) -> Any:
        report = worker.engine.shadow_report()
        return web.json(
            {
                "live": worker.engine.rules.version,
                "partitions": sorted(assigned_or_none(worker)),
                "shadow": report,
            }
        )

    if not worker.settings.customer_api:
        return

    @app.page("/customers/{customer_id}/timeline")
    @guarded
    @app.table_route(table=worker.table, match_info="customer_id")
    async def timeline(web: Any, request: Any, customer_id: str) -> Any:
        entries = worker.engine.timeline(customer_id)
        if entries is None:
            return web.json({"error": f"unknown customer {customer_id!r}"}, status=404)
        at = request.query.get("at")
        if at is None:
            return web.json({"customer_id": customer_id, "timeline": entries})
        try:
            at_ms = parse_timestamp(int(at) if at.lstrip("-").isdigit() else at)
        except ValueError as exc:
            return web.json({"error": f"at: {exc}"}, status=400)
        answer = worker.engine.segments_at(customer_id, at_ms) or {}
        return web.json(answer | {"timeline": entries})

    @app.page("/customers/{customer_id}")
    @guarded  # before routing: a request is checked where it arrives and where it is routed
    @app.table_route(table=worker.table, match_info="customer_id")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        explained = worker.engine.explain(customer_id)
        if explained is None:
            return web.json({"error": f"unknown customer {customer_id!r}"}, status=404)
        return web.json(explained)


STATIC = Path(__file__).resolve().parent / "static"


@functools.cache
def static(name: str) -> bytes:
    """The page and its scripts are static: the data comes from /marketing/data, behind the
    token, so serving them needs none."""
    return (STATIC / name).read_bytes()


def assigned_or_none(worker: SegmentWorker) -> set[int]:
    try:
        return worker.assigned_partitions()
    except ConsumerNotStarted:
        return set()  # starting: no partitions yet, which is no error


def update_gauges(worker: SegmentWorker) -> None:
    engine, metrics = worker.engine, worker.metrics
    metrics.customers.set(engine.customer_count())
    metrics.customers_cold.set(engine.cold_count())
    metrics.population_pending.set(
        sum(engine.has_pending_population(p) for p in engine.partitions_held())
    )
    metrics.set_members(engine.member_counts())
    metrics.shadow_moves.clear()
    report = engine.shadow_report()
    if report is not None:
        for segment, counts in report["segments"].items():
            for change in ("entered", "exited", "upgraded", "downgraded"):
                metrics.shadow_moves.labels(
                    ruleset=report["shadow"], segment=segment, change=change
                ).set(counts[change])
    metrics.lag.clear()
    consumer = worker.app.consumer
    try:
        assignment = consumer.assignment()
    except ConsumerNotStarted:
        return  # starting: no partitions, no lag yet
    next_offset = worker.progress.next_offset
    for tp in assignment:
        if tp.topic not in worker.inputs:
            continue
        lag = lag_of(consumer, tp, next_offset.get((tp.topic, tp.partition)))
        if lag is not None:
            metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
