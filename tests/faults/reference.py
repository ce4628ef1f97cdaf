"""The expected outcome of an input file: the offline replay. The ONE place that calls it.

Customers are partitioned as Kafka's default partitioner places them, so per-partition clocks
and cut points are those of the workers.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segstream.core.rulelang import load_rules
from segstream.replay import replay

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"


@dataclass(frozen=True)
class Reference:
    segments: dict[str, dict[str, Any]]  # customer -> family -> segment (or None / False)
    invalid: Counter[str]  # input lines rejected, by reason
    mode: str


def replay_reference(path: Path, *, partitions: int, rules_dir: Path = RULES) -> Reference:
    engine, summary = replay(
        [path],
        load_rules(rules_dir),
        out=None,
        progress=False,
        errors=io.StringIO(),
        partitions=partitions,
    )
    mode = f"replay (partitions={partitions})"
    segments: dict[str, dict[str, Any]] = {}
    for customer in engine.store:
        mine = engine.segments_of(customer)
        assert mine is not None
        segments[customer] = mine
    return Reference(segments, Counter(summary.invalid), mode)
