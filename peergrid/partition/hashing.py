"""Key -> partition: a stable hash of the encoded key.

Python's ``hash()`` is salted per process, so two members would disagree; CRC-32
of the encoded key is stable everywhere and costs ~0.1 us. A ``str`` key that
contains ``{tag}`` hashes only the tag (the first ``{`` and the first ``}``
after it, non-empty), so related keys share a partition, as Redis Cluster's
hash tags do. UTF-8 never uses the bytes of ``{`` and ``}`` inside a
multi-byte character, so the tag is found in the encoded bytes directly.
"""

from __future__ import annotations

from zlib import crc32


def partition_of(encoded_key: bytes, partition_count: int) -> int:
    """The partition of a key encoded by ``peergrid.serialization.encode_key``."""
    if encoded_key[:1] == b"s":
        start = encoded_key.find(b"{", 1)
        if start != -1:
            end = encoded_key.find(b"}", start + 1)
            if end > start + 1:
                return crc32(encoded_key[start + 1 : end]) % partition_count
    return crc32(encoded_key) % partition_count
