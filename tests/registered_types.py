"""Types the tests register with the default serializer, as a user would (tests use codes 100-119).

Importing this module registers them; registering is idempotent, so every test module and
every in-process member sees the same registry.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple

import peergrid


@dataclasses.dataclass(frozen=True)
class Point:
    """A registered dataclass (frozen, so it can be a set member or a dict key)."""

    x: int
    y: int = 0
    label: Any = None


class Color(enum.Enum):
    """A registered plain enum (values of several carried types)."""

    RED = "red"
    GREEN = 2
    BLUE = (0, 0, 255)


class Level(enum.IntEnum):
    """A registered IntEnum: comes back as a Level, not as an int."""

    LOW = 1
    HIGH = 3


class Pair(NamedTuple):
    """A registered namedtuple: comes back as a Pair, not as a plain tuple."""

    left: Any
    right: Any


class Money:
    """A class registered with an explicit encoder and decoder."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))

    def __repr__(self) -> str:
        return f"Money({self.cents}, {self.currency!r})"


peergrid.register_type(Point, code=100)
peergrid.register_type(Color, code=101)
peergrid.register_type(Level, code=102)
peergrid.register_type(Pair, code=103)
peergrid.register_type(
    Money, code=104, encode=lambda m: [m.cents, m.currency], decode=lambda v: Money(v[0], v[1])
)
