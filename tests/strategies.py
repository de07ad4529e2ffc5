"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

import datetime

from hypothesis import strategies as st

from peergrid.protocol import Effect, EffectKind
from tests.registered_types import Color, Level, Money, Pair, Point

#: Keys as users write them.
keys = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)

#: Values the default serializer carries.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

#: One-partition owner ops of one map on a few keys, as ``storage.ops`` runs them: the writes
#: that change values and TTLs, with plain values (encoded bytes compare as values do).
_OWNER_KEYS = st.sampled_from([b"sa", b"sb", b"sc"])
_OWNER_VALUES = st.sampled_from([b"\x01", b"\x02"])
_OWNER_TTLS = st.sampled_from([0.0, 100.0, 200.0])
owner_ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["set", "put", "put_if_absent", "replace"]),
            _OWNER_KEYS,
            _OWNER_VALUES,
            _OWNER_TTLS,
        ),
        st.tuples(st.just("expire"), _OWNER_KEYS, st.just(b""), st.sampled_from([50.0, 300.0])),
        st.tuples(
            st.sampled_from(["persist", "remove", "evict", "delete"]), _OWNER_KEYS, st.just(b""), st.just(0.0)
        ),
        st.tuples(
            st.sampled_from(["remove_if_same", "replace_if_same"]), _OWNER_KEYS, _OWNER_VALUES, st.just(0.0)
        ),
        st.tuples(st.sampled_from(["evict_all", "clear"]), st.just(b""), st.just(b""), st.just(0.0)),
    ),
    max_size=30,
)

#: Member uuids as members generate them (hex uuid4), distinct.
member_uuids = st.lists(st.uuids(version=4).map(lambda u: u.hex), min_size=1, max_size=10, unique=True)


def member_lists(min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    """Distinct member uuids."""
    return st.lists(
        st.uuids(version=4).map(lambda u: u.hex), min_size=min_size, max_size=max_size, unique=True
    )


@st.composite
def register_histories(draw: st.DrawFn, max_processes: int = 4, max_ops: int = 8) -> list[dict[str, object]]:
    """History records of one register key ``r0`` that are linearizable by construction.

    Each process runs operations one after another with random gaps; each operation takes effect
    at a random point inside its interval (an ``info`` one at a random later point, or never,
    and it is its process's last); results are computed by applying the operations in the
    order of those points. Ends with a final read after everything completed.
    """
    fs = st.sampled_from(["get", "get", "set", "put", "cas", "delete"])
    serial = iter(range(1_000_000))
    planned: list[tuple[float, dict[str, object], dict[str, object] | None]] = []
    writes: list[str] = []
    end_of_time = 0
    for p in range(draw(st.integers(1, max_processes))):
        now = draw(st.integers(0, 50))
        for _ in range(draw(st.integers(0, max_ops))):
            f = draw(fs)
            start = now + draw(st.integers(1, 30))
            done = start + draw(st.integers(1, 60))
            info = f != "get" and draw(st.integers(0, 9)) == 0
            value: object = None
            if f in ("set", "put"):
                value = f"v{next(serial)}"
                writes.append(str(value))
            elif f == "cas":
                old = draw(st.sampled_from([*writes[-3:], "nope"]))
                value = [old, f"v{next(serial)}"]
            call = {"process": f"p{p}", "type": "invoke", "f": f, "key": "r0", "value": value, "time": start}
            if info:
                never = draw(st.booleans())
                point = float("inf") if never else start + draw(st.floats(0.01, 200.0))
                planned.append((point, call, None))
                break
            point = start + draw(st.floats(0.01, 0.99)) * (done - start)
            planned.append(
                (point, call, {"process": f"p{p}", "type": "ok", "f": f, "key": "r0", "time": done})
            )
            now = done
            end_of_time = max(end_of_time, done)
        end_of_time = max(end_of_time, now)
    records: list[dict[str, object]] = []
    state: object = None
    for point, call, done in sorted(planned, key=lambda item: item[0]):
        f, value = call["f"], call["value"]
        result: object = None
        if point != float("inf"):
            if f == "get":
                result = state
            elif f == "set":
                state = value
            elif f == "put":
                result, state = state, value
            elif f == "cas":
                old, new = value  # type: ignore[misc]
                result = state == old
                state = new if result else state
            elif f == "delete":
                result, state = state is not None, None
        records.append(call)
        if done is not None:
            done["value" if f == "get" else "result"] = result
            records.append(done)
    final = end_of_time + 1000
    records.append(
        {"process": "final", "type": "invoke", "f": "get", "key": "r0", "time": final, "final": True}
    )
    records.append(
        {"process": "final", "type": "ok", "f": "get", "key": "r0", "time": final + 1, "value": state}
    )
    return records


int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)

#: Time zones the default serializer keeps: fixed offsets (named or not, to the microsecond),
#: UTC and zoneinfo zones.
_offsets = st.timedeltas(
    min_value=datetime.timedelta(hours=-23, minutes=-59), max_value=datetime.timedelta(hours=23, minutes=59)
)
time_zones = st.one_of(
    st.none(),
    st.just(datetime.UTC),
    _offsets.map(datetime.timezone),
    st.builds(datetime.timezone, _offsets, st.text(max_size=8)),
    st.timezones(),
)
#: Datetimes and times, naive and aware, with fold 0 or 1.
datetimes = st.builds(
    lambda d, fold: d.replace(fold=fold), st.datetimes(timezones=time_zones), st.integers(0, 1)
)
times = st.builds(lambda t, fold: t.replace(fold=fold), st.times(timezones=time_zones), st.integers(0, 1))

#: Scalars of the extension types (no NaN: it is not equal to itself).
typed_scalars = st.one_of(
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.sampled_from(Color),
    st.sampled_from(Level),
    st.builds(Money, int64s, st.text(max_size=3)),
)
#: Values that can be set members and dict keys, nested.
hashable_values = st.recursive(
    st.one_of(scalars, typed_scalars),
    lambda children: (
        st.lists(children, max_size=3).map(tuple)
        | st.frozensets(children, max_size=3)
        | st.builds(Pair, children, children)
        | st.builds(Point, st.integers(-5, 5), st.integers(-5, 5), children)
    ),
    max_leaves=6,
)
#: Everything the default serializer carries, registered test types included, nested.
typed_values = st.recursive(
    st.one_of(scalars, typed_scalars),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.one_of(st.text(max_size=8), hashable_values), children, max_size=4)
        | st.sets(hashable_values, max_size=3)
        | st.frozensets(hashable_values, max_size=3)
        | st.builds(Pair, children, children)
        | st.builds(Point, int64s, int64s, children)
    ),
    max_leaves=12,
)


# Wire ops and results as a frame carries them (tests/test_frames.py).
_blobs = st.binary(max_size=40)
#: A write's changes as its backups get them: none, a lone write's one or two, or a batch's.
wire_effects = st.lists(
    st.builds(
        Effect,
        st.integers(EffectKind.PUT, EffectKind.DELTA),
        st.text(max_size=12),
        _blobs,
        _blobs,
        st.sampled_from([0.0, 12.5]),
        st.sampled_from([0, 1, 2**50]),
    ),
    max_size=6,
).map(tuple)
wire_ops = st.builds(
    lambda code, partition, name, key, value, expect, ttl, version, effects: (
        code,
        partition,
        name,
        key,
        value,
        expect,
        ttl,
        version,
        effects,
    ),
    st.integers(1, 40),
    st.integers(0, 270),
    st.text(max_size=12),
    _blobs,
    _blobs,
    _blobs,
    st.sampled_from([0.0, 0.5, 30.0]),
    st.integers(0, 2**40),
    wire_effects,
)
wire_results = st.tuples(
    st.integers(0, 12),
    _blobs,
    st.booleans(),
    st.integers(0, 2**31),
    st.text(max_size=20),
    st.integers(0, 2**40),
    st.sampled_from([0.0, 1.5]),
)

#: Steps against one record store and a model of its deadlines (tests/test_expiry.py): times
#: are seconds after the example's start, in halves, so every float compares exactly.
_EXPIRY_KEYS = st.sampled_from([b"ea", b"eb", b"ec"])
expiry_steps = st.lists(
    st.one_of(
        # set/put/expire (a TTL of d seconds from now) or persist/a put without TTL (d = 0)
        st.tuples(st.just("put"), _EXPIRY_KEYS, st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("delete"), _EXPIRY_KEYS, st.just(0)),
        # an owner's read synced to a backup (touch), or a copied entry's idle clock (access),
        # at a whole second in [-20, 20]
        st.tuples(st.just("touch"), _EXPIRY_KEYS, st.integers(min_value=-20, max_value=20)),
        st.tuples(st.just("access"), _EXPIRY_KEYS, st.integers(min_value=-20, max_value=20)),
        # a sweep this many whole seconds later (so at a half second), at most this many pairs
        # a call (0: no limit), as owner (idle too) or as backup (TTL only)
        st.tuples(
            st.sampled_from(["sweep", "backup-sweep"]),
            st.integers(min_value=0, max_value=15),
            st.integers(min_value=0, max_value=3),
        ),
    ),
    max_size=40,
)

# Steps on one priority queue of (deadline, key) pairs (peergrid.storage.records.Deadlines;
# tests/test_expiry.py): push a pair (few distinct deadlines and keys: ties and duplicates), pop
# up to n pairs, list the pairs due by a time, or take up to n (0: all) of them. Long enough
# that pairs settle into runs and runs merge, with the queue's fresh heap made small.
deadline_steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(min_value=0, max_value=50), st.binary(max_size=2)),
        st.tuples(st.just("pop"), st.integers(min_value=1, max_value=20), st.just(b"")),
        st.tuples(st.just("due"), st.integers(min_value=0, max_value=50), st.just(b"")),
        st.tuples(
            st.just("take"),
            st.integers(min_value=0, max_value=50),
            st.integers(min_value=0, max_value=20).map(lambda n: bytes([n])),
        ),
    ),
    max_size=400,
)

# A get_all's keys bound for one member, and one member's answer to them, as a GET_MANY op
# carries them (peergrid/multiget.py; tests/test_frames.py): (key, partition) pairs, duplicates
# allowed (the caller sends each key once, but the format does not care), and per key
# (version, ttl, value or None, status).
get_many_keys = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), st.integers(0, 270)), min_size=1, max_size=30
)
get_many_answers = st.lists(
    st.tuples(
        st.integers(0, 2**64 - 1),
        st.sampled_from([0.0, 0.25, 30.0, 1e-9]),
        st.one_of(st.none(), st.binary(max_size=40)),
        st.sampled_from([0, 1, 2, 3, 4, 6, 13]),
    ),
    min_size=1,
    max_size=30,
)
