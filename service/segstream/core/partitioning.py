"""Which partition a customer lives in: Kafka's default partitioner, in the pure core.

Clocks and populations are kept per partition (docs/runtime.md, "Determinism"), so the offline
``replay`` must place every customer where a Kafka producer keyed by ``customer_id`` would; the
worker and replay then decide the same things from the same partition inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


# little-endian unpackers of a key's whole 32-bit words, by the key's length rounded down
# to 4 (customer ids come in a few lengths)
_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def murmur2(data: bytes) -> int:
    """MurmurHash2 as the Java client computes it (``Utils.murmur2``), unsigned 32 bits.

    Every key a replay meets the first time is hashed here, so the loop is kept short: the
    words are unpacked in one call, ``h * m ^ k * m`` is masked once (masking commutes with
    xor), and the 1 to 3 trailing bytes are one little-endian int."""
    length = len(data)
    h = _SEED ^ length
    whole = length & ~3
    if whole:
        unpack = _WORDS.get(whole)
        if unpack is None:
            unpack = _WORDS[whole] = struct.Struct(f"<{whole >> 2}I").unpack_from
        for k in unpack(data):
            k = (k * _M) & _MASK
            h = (h * _M ^ (k ^ k >> 24) * _M) & _MASK
    if length & 3:
        h = ((h ^ int.from_bytes(data[whole:], "little")) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ h >> 15


@lru_cache(maxsize=1 << 18)
def murmur_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions`` (0..n-1).
    Cached: the same customers come back batch after batch."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partition_for(customer_id: str, partitions: int) -> int:
    return murmur_partition(customer_id.encode(), partitions)
