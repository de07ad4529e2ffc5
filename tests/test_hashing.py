"""Key -> partition: stable, tag-aware, spread."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from peergrid.partition import partition_of
from peergrid.serialization import encode_key
from tests.strategies import keys


def part(key: object, count: int = 271) -> int:
    return partition_of(encode_key(key), count)


def test_partition_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; ours must not be.
    code = (
        "from peergrid.partition import partition_of; from peergrid.serialization import encode_key;"
        "print([partition_of(encode_key(k), 271) for k in ('a', b'a', 1, 'user:42')])"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert outputs == {str([part("a"), part(b"a"), part(1), part("user:42")]) + "\n"}


def test_known_values_never_change() -> None:
    # Changing these moves every user's data: a wire-format break.
    assert [part("a"), part(b"a"), part(1), part("user:42"), part("{user:1}:x")] == [47, 179, 130, 245, 246]
    assert part("user:42") == __import__("zlib").crc32(b"suser:42") % 271


def test_hash_tags_group_keys() -> None:
    assert part("{user:1}:profile") == part("{user:1}:orders") == part("x{user:1}y")
    assert part("{user:1}:profile") != part("{user:2}:profile")


def test_empty_or_unclosed_tags_hash_the_whole_key() -> None:
    assert part("{}abc") == partition_of(encode_key("{}abc"), 271)
    assert part("{abc") == __import__("zlib").crc32(b"s{abc") % 271


@given(key=keys)
def test_partition_is_in_range(key: object) -> None:
    assert 0 <= part(key) < 271


def test_sequential_keys_spread_evenly() -> None:
    counts = Counter(part(f"user:{i}") for i in range(271 * 200))
    assert len(counts) == 271
    assert max(counts.values()) < 200 * 1.35
    assert min(counts.values()) > 200 * 0.65


@given(
    tag=st.text(min_size=1, max_size=10).filter(lambda t: "}" not in t and "{" not in t),
    a=st.text(max_size=5),
    b=st.text(max_size=5),
)
def test_any_tag_groups(tag: str, a: str, b: str) -> None:
    a, b = a.replace("{", ""), b.replace("{", "")
    assert part(f"{a}{{{tag}}}x") == part(f"{b}{{{tag}}}y")
