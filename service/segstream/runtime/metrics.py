"""Prometheus metrics (names carry units; no customer ids in labels)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """One registry per worker, so tests and embedded runs never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "segstream_events_consumed_total",
            "Input messages consumed",
            ["topic", "type"],
            registry=r,
        )
        self.invalid = Counter(
            "segstream_events_invalid_total",
            "Input messages rejected to the DLQ",
            ["reason"],
            registry=r,
        )
        self.tombstones = Counter(
            "segstream_tombstones_total",
            "Input records with a null value, skipped",
            ["topic"],
            registry=r,
        )
        self.rerouted = Counter(
            "segstream_events_rerouted_total",
            "Input messages re-keyed to their customer's partition",
            ["topic"],
            registry=r,
        )
        self.evaluation = Histogram(
            "segstream_evaluation_duration_seconds",
            "Time to apply and evaluate one input batch",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.latency = Histogram(
            "segstream_event_to_emit_latency_seconds",
            "From the input record's timestamp to its change being sent",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.transitions = Counter(
            "segstream_segment_transitions_total",
            "Segment changes emitted",
            ["family", "from_segment", "to_segment", "change"],
            registry=r,
        )
        self.members = Gauge(
            "segstream_segment_members",
            "Customers in each segment (this worker's partitions)",
            ["family", "segment"],
            registry=r,
        )
        self.customers = Gauge(
            "segstream_customers_tracked", "Customers held by this worker", registry=r
        )
        self.customers_cold = Gauge(
            "segstream_customers_cold",
            "Customers held as their stored bytes, beyond SEGSTREAM_HOT_CUSTOMERS (0 unset)",
            registry=r,
        )
        self.population_pending = Gauge(
            "segstream_population_refresh_pending",
            "Partitions of this worker whose quantile cut points wait for the refresh that"
            " follows a quiet input (their last changes are still to come)",
            registry=r,
        )
        self.rules_info = Gauge(
            "segstream_rules_info", "Active rule set", ["rules_version"], registry=r
        )
        self.rules_rejected = Counter(
            "segstream_rules_rejected_total",
            "Rule sets received on the control topic and refused",
            registry=r,
        )
        self.limit_hits = Counter(
            "segstream_state_limit_hits_total",
            "Items a per-customer memory limit dropped (docs/contracts.md, memory bounds)",
            ["limit"],
            registry=r,
        )
        self.commits_split = Counter(
            "segstream_commits_split_total",
            "Commits larger than SEGSTREAM_COMMIT_MAX_BYTES, written as several record batches"
            " (a crash between them can re-decide changes)",
            registry=self.registry,
        )
        self.rule_errors = Counter(
            "segstream_rule_errors_total",
            "Evaluations of a family, flag or derived metric that raised (a division by zero,"
            " ...): the value was taken as null/false",
            ["segment"],
            registry=r,
        )
        self.segment_last_change = Gauge(
            "segstream_segment_last_change_timestamp_seconds",
            "When this worker last moved a customer into or out of the segment (Unix time)",
            ["family", "segment"],
            registry=r,
        )
        self.exit_delay = Histogram(
            "segstream_segment_exit_delay_seconds",
            "From the start of the UTC day a clock-driven exit or downgrade became due (a"
            " window boundary) to its change event being sent",
            ["family"],
            buckets=(1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 2 * 86400),
            registry=r,
        )
        self.shadow_moves = Gauge(
            "segstream_shadow_moves",
            "Customers of this worker that promoting the shadow rule set now would move, per"
            " segment and kind of change (sum over workers for the total)",
            ["ruleset", "segment", "change"],
            registry=r,
        )
        self.shadow_transitions = Counter(
            "segstream_shadow_transitions_total",
            "Transitions the shadow rule set made between evaluations (none is emitted)",
            ["ruleset", "family", "from_segment", "to_segment", "change"],
            registry=r,
        )
        self.group_values_folded = Gauge(
            "segstream_group_values_folded",
            "Values of a group beyond its max_values, added up as (other) in its newest period",
            ["group"],
            registry=r,
        )
        self.group_snapshots = Counter(
            "segstream_group_snapshots_total",
            "group-snapshot events emitted (one per group value and closed quarter)",
            ["group"],
            registry=r,
        )
        self.lag = Gauge(
            "segstream_consumer_lag_messages",
            "High watermark minus next offset",
            ["topic", "partition"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def set_rules(self, version: str, evaluated: Iterable[str] = ()) -> None:
        """The running rule set; its segments' and derived metrics' error counters start at 0,
        so a query over them finds a series before the first error."""
        self.rules_info.clear()
        self.rules_info.labels(rules_version=version).set(1)
        for name in evaluated:
            self.rule_errors.labels(segment=name)

    def set_members(self, counts: dict[str, dict[str, int]]) -> None:
        self.members.clear()
        for family, segments in counts.items():
            for segment, n in segments.items():
                self.members.labels(family=family, segment=segment).set(n)
