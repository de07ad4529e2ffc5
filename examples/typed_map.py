"""A typed map: a type checker knows what goes in and what comes out.

python examples/typed_map.py          (and: mypy --strict examples/typed_map.py)

``get_map(name, key_type=..., value_type=...)`` gives a ``DistributedMap[K, V]``: ``get``
returns ``V | None``, ``put`` takes a ``V``, and a misspelt option (``tll=``) is a type
error. The map is a ``MutableMapping``, so code written for a dict takes it too.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TypedDict

import peergrid
from peergrid import DistributedMap


class User(TypedDict):
    name: str
    age: int


def oldest(users: MutableMapping[str, User]) -> str | None:
    """Code written for any mutable mapping of users: a dict, or the grid's map."""
    best = max(users.items(), key=lambda item: item[1]["age"], default=None)
    return best[0] if best is not None else None


def main() -> None:
    with peergrid.Grid(cluster="typed-example") as grid:
        scores = grid.get_map("scores", key_type=str, value_type=int)  # DistributedMap[str, int]
        scores.put("alice", 3, ttl=60)
        scores["bob"] = 5
        total: int = sum(scores.values())
        alice: int | None = scores.get("alice")
        bob = scores.get("bob", 0)  # int: the default's type joins the value's
        print("scores:", dict(scores.items()), "total:", total, "alice:", alice, "bob:", bob)

        # A value type that is no runtime class (a TypedDict): annotate the map.
        users: DistributedMap[str, User] = grid.get_map("users")
        users.update({"u1": {"name": "Alice", "age": 36}, "u2": {"name": "Bob", "age": 41}})
        first = users.get("u1")
        if first is not None:
            print("u1 is", first["name"])
        print("oldest:", oldest(users))
        print("stored only if absent:", users.set("u1", {"name": "Eve", "age": 1}, if_absent=True))
        removed: User = users.pop("u2")
        print("popped:", removed["name"], "| left:", sorted(users), "| equal to {}:", users == {})


if __name__ == "__main__":
    main()
