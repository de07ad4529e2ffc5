"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

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

#: Member uuids as members generate them (hex uuid4), distinct.
member_uuids = st.lists(st.uuids(version=4).map(lambda u: u.hex), min_size=1, max_size=10, unique=True)


def member_lists(min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    """Distinct member uuids."""
    return st.lists(
        st.uuids(version=4).map(lambda u: u.hex), min_size=min_size, max_size=max_size, unique=True
    )
