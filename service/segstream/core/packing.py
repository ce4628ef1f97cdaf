"""The cold set's encoding: a stored state squeezed to about a sixth of its bytes.

Stored states are small JSON documents that repeat their field names, segment names and
shapes customer after customer; zstd with a dictionary trained on such states takes a 760-byte
state to about 130 bytes in 3 us, and back in 2 (docs/performance.md, The hot set). The
dictionary is trained once, from the first states offered: nothing has to be shipped or kept
in step with the rules, and the bytes that come back are always exactly those packed, so the
training samples decide only how small the packed states are.
"""

from __future__ import annotations

import zstandard

TRAINING_STATES = 2_000
DICTIONARY_BYTES = 4_096


class StatePacker:
    """Packs stored states once trained; until then the caller holds them as they are."""

    __slots__ = ("_compressor", "_decompressor", "_samples")

    def __init__(self) -> None:
        # typed as the stubs' invariant list[ByteString] asks
        self._samples: list[bytes | bytearray | memoryview] = []
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None

    @property
    def trained(self) -> bool:
        return self._compressor is not None

    def learn(self, raw: bytes) -> bool:
        """Keep ``raw`` as a training sample; True when it completed the training: from then
        on states are packed, and the caller packs those it held as they were."""
        if self._compressor is not None:
            return False
        self._samples.append(raw)
        if len(self._samples) < TRAINING_STATES:
            return False
        try:
            trained = zstandard.train_dictionary(DICTIONARY_BYTES, self._samples)
        except zstandard.ZstdError:  # samples it cannot learn from: plain zstd still packs
            trained = None
        self._samples = []
        self._compressor = zstandard.ZstdCompressor(
            level=1, dict_data=trained, write_checksum=False, write_dict_id=False
        )
        self._decompressor = zstandard.ZstdDecompressor(dict_data=trained)
        return True

    def pack(self, raw: bytes) -> bytes:
        assert self._compressor is not None, "pack before training"
        # a copy of exactly its length: zstandard's own bytes object keeps its worst-case
        # output buffer (about the input's size; 823 traced bytes for a 35-byte result)
        return bytes(memoryview(self._compressor.compress(raw)))

    def unpack(self, packed: bytes) -> bytes:
        assert self._decompressor is not None, "unpack before training"
        return self._decompressor.decompress(packed)
