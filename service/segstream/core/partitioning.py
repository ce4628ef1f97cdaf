"""Which partition a customer lives in: Kafka's default partitioner, in the pure core.

Clocks and populations are kept per partition (docs/runtime.md, "Determinism"), so the offline
``replay`` must place every customer where a Kafka producer keyed by ``customer_id`` would; the
worker and replay then decide the same things from the same partition inputs.
"""

from __future__ import annotations

from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as the Java client computes it (``Utils.murmur2``), unsigned 32 bits."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 18)
def murmur_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions`` (0..n-1).
    Cached: the same customers come back batch after batch."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partition_for(customer_id: str, partitions: int) -> int:
    return murmur_partition(customer_id.encode(), partitions)
