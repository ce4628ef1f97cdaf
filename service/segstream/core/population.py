"""Population quantiles for quantile scores (e.g. monetary quintiles), exact and per partition.

Each partition keeps the current value of every customer it holds and computes its own cut
points from them, exactly (sorting, no sketch). The cut points of a partition are therefore a
function of that partition's input alone: a crash, a rebalance or a second worker cannot change
them, and ``replay`` (which partitions customers as Kafka does) computes the same ones. With
thousands of customers per partition the partitions' cut points agree closely with a global
computation; docs/rules.md says what that means for small populations.
"""

from __future__ import annotations

import numpy as np

REFRESH_MIN_UPDATES = 50  # a refresh is O(partition customers): not for every few updates


class Population:
    """Current values of one field for the customers of one partition."""

    __slots__ = ("by_customer", "cuts", "field", "quantiles", "updates_since_refresh")

    def __init__(self, field: str, quantiles: int) -> None:
        self.field = field
        self.quantiles = quantiles
        self.by_customer: dict[str, float] = {}
        self.cuts: tuple[float, ...] = ()
        self.updates_since_refresh = 0

    def set(self, customer_id: str, value: float | None) -> None:
        values = self.by_customer
        if value is None or value <= 0:
            if values.pop(customer_id, None) is not None:
                self.updates_since_refresh += 1
        elif values.get(customer_id) != value:
            values[customer_id] = value
            self.updates_since_refresh += 1

    def load(self, customer_id: str, value: float | None) -> None:
        """Index a recovered customer's value: not an update (it was counted when it moved)."""
        if value is not None and value > 0:
            self.by_customer[customer_id] = value

    def discard(self, customer_id: str) -> None:
        self.by_customer.pop(customer_id, None)

    def size(self) -> int:
        return len(self.by_customer)

    def stale(self, fraction: float) -> bool:
        """Enough values moved since the last refresh to recompute the cut points."""
        updates = self.updates_since_refresh  # checked after every event: the cheap test first
        return updates >= REFRESH_MIN_UPDATES and updates >= int(fraction * len(self.by_customer))

    def compute_cuts(self) -> tuple[float, ...]:
        """Cut point i (1 <= i < quantiles) is the smallest value with at least i/quantiles of
        the values at or below it (the inverted empirical CDF): deterministic, exact."""
        n = len(self.by_customer)
        if not n:
            return ()
        values = np.fromiter(self.by_customer.values(), dtype=np.float64, count=n)
        q = self.quantiles
        ranks = sorted({max(-(-i * n // q) - 1, 0) for i in range(1, q)})
        picked = np.partition(values, ranks)
        by_rank = {rank: float(picked[rank]) for rank in ranks}
        return tuple(by_rank[max(-(-i * n // q) - 1, 0)] for i in range(1, q))

    def moved(self, old_cuts: tuple[float, ...], new_cuts: tuple[float, ...]) -> list[str]:
        """Customers whose quantile score differs between two sets of cut points (vectorised)."""
        if not self.by_customer:
            return []
        old = np.asarray(old_cuts, dtype=np.float64)
        new = np.asarray(new_cuts, dtype=np.float64)
        keys = list(self.by_customer)
        values = np.fromiter(self.by_customer.values(), dtype=np.float64, count=len(keys))
        changed = np.nonzero(
            np.searchsorted(old, values, side="right") != np.searchsorted(new, values, side="right")
        )[0]
        return [keys[i] for i in changed]
