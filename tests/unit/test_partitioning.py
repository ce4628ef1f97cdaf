"""murmur2 is Kafka's: the Java client's own test vectors, and the plain transcription of
``Utils.murmur2`` on any bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.core.partitioning import murmur2, murmur_partition, partition_for

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def transcribed(data: bytes) -> int:
    """Utils.murmur2 line by line (the implementation before it was made faster)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
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


@pytest.mark.parametrize(
    ("key", "signed"),
    [  # org.apache.kafka.common.utils.UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_the_java_clients_vectors(key: bytes, signed: int) -> None:
    assert murmur2(key) == signed & _MASK


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_hash_as_transcribed(data: bytes) -> None:
    assert murmur2(data) == transcribed(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.integers(1, 64))
def test_a_customer_goes_where_the_default_partitioner_puts_its_key(
    customer_id: str, partitions: int
) -> None:
    expected = (transcribed(customer_id.encode()) & 0x7FFFFFFF) % partitions
    assert partition_for(customer_id, partitions) == expected
    assert murmur_partition(customer_id.encode(), partitions) == expected
