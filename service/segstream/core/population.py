"""Population quantiles for quantile scores (e.g. monetary quintiles), with KLL sketches.

Each partition of customers keeps its values; cut points come from Apache DataSketches KLL
sketches, one per partition, merged, so workers that own different partitions can share their
sketches and agree on one set of cut points.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from datasketches import kll_doubles_sketch

SKETCH_K = 400


class Population:
    """Current values of one field for the customers this process holds, grouped by partition."""

    def __init__(self, field: str, quantiles: int) -> None:
        self.field = field
        self.quantiles = quantiles
        self.values: dict[int, dict[str, float]] = {}
        self.remote: dict[int, bytes] = {}
        self.cuts: tuple[float, ...] = ()
        self.updates_since_refresh = 0

    def set(self, partition: int, customer_id: str, value: float | None) -> None:
        bucket = self.values.setdefault(partition, {})
        if value is None or value <= 0:
            if bucket.pop(customer_id, None) is not None:
                self.updates_since_refresh += 1
        elif bucket.get(customer_id) != value:
            bucket[customer_id] = value
            self.updates_since_refresh += 1

    def drop_partition(self, partition: int) -> None:
        self.values.pop(partition, None)

    def size(self) -> int:
        return sum(len(v) for v in self.values.values())

    def sketch(self, partition: int) -> kll_doubles_sketch:
        sketch = kll_doubles_sketch(SKETCH_K)
        values = self.values.get(partition)
        if values:
            sketch.update(np.fromiter(values.values(), dtype=np.float64, count=len(values)))
        return sketch

    def compute_cuts(self, partitions: Iterable[int] | None = None) -> tuple[float, ...]:
        """Cut points from the merged sketches of local partitions and any remote ones."""
        merged = kll_doubles_sketch(SKETCH_K)
        local = set(self.values) if partitions is None else set(partitions)
        for p in sorted(local):
            merged.merge(self.sketch(p))
        for p, blob in sorted(self.remote.items()):
            if p not in local:
                merged.merge(kll_doubles_sketch.deserialize(blob))
        if merged.is_empty():
            return ()
        ranks = [i / self.quantiles for i in range(1, self.quantiles)]
        return tuple(float(q) for q in merged.get_quantiles(ranks))

    def moved(self, old_cuts: tuple[float, ...], new_cuts: tuple[float, ...]) -> list[str]:
        """Customers whose quantile score differs between two sets of cut points (vectorised)."""
        moved: list[str] = []
        old = np.asarray(old_cuts, dtype=np.float64)
        new = np.asarray(new_cuts, dtype=np.float64)
        for bucket in self.values.values():
            if not bucket:
                continue
            keys = list(bucket)
            values = np.fromiter(bucket.values(), dtype=np.float64, count=len(bucket))
            changed = np.nonzero(
                np.searchsorted(old, values, side="right")
                != np.searchsorted(new, values, side="right")
            )[0]
            moved.extend(keys[i] for i in changed)
        return moved
