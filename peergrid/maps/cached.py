"""``@grid.cached``: a function's results cached in a distributed map, cache-aside in one line.

    @grid.cached("users", ttl=300)
    def load_user(user_id: int) -> dict:
        return db.fetch_user(user_id)

    @async_grid.cached("users", ttl=300)
    async def load_user(user_id: int) -> dict: ...

**Keys.** A call's key is a hash of the function's module and qualified name
and the msgpack of its arguments, bound to its signature (so ``f(1)`` and
``f(x=1)`` share a key, defaults included; a tuple and a list of the same
items are the same argument). As in ``functools.lru_cache``, arguments that
compare equal share a key (``f(1)``, ``f(1.0)`` and ``f(True)``), unless
``typed=True``, which keeps arguments of different types apart. Every member
computes the same key for the same call. ``key=`` replaces the arguments with
what a function of them returns (it is called with the call's arguments):

    @grid.cached("reports", key=lambda user_id, *, verbose=False: user_id)

**Methods.** A method's ``self`` is no value msgpack can carry, so a method is
cached through ``key=``, which names what of the instance (and the other
arguments) the result depends on; each instance with the same key shares the
results:

    class Users:
        @grid.cached("users", key=lambda self, user_id: [self.tenant, user_id])
        def load(self, user_id: int) -> dict: ...

Without ``key=``, a call whose arguments msgpack cannot carry (an object, a
``self``) runs uncached, with one warning per function naming ``key=``.

**Clearing.** ``wrapper.cache_clear()`` (``await wrapper.cache_clear()`` for
the async form) deletes the function's results from the map, on every member,
and returns how many it deleted; other functions' results in the same map
stay. A call computing while the clear runs may store its result after it.

**Single flight across the cluster.** A miss *claims* the key: it stores a
"computing" marker with ``put_if_absent`` and a short TTL (``claim_ttl``).
Concurrent misses of the key, on any member, find the marker and wait for the
value (asking again with a growing pause, ``Timing.lock_retry_*``) instead of
running the function too. The claimer runs the function and replaces the
marker with the result. A claim whose member left the cluster is taken over
at once; one that outlives ``claim_ttl`` (a function slower than that) expires
and the next caller claims again.

**Exceptions are not cached.** The claimer's exception releases the claim and
propagates; a waiter then claims the key and runs the function itself.

**Never the critical path.** Every grid call has a short deadline
(``timeout``, 1 s by default). When the grid cannot answer in time (members
unreachable, a partition moving for too long, a result too large to store),
the function runs directly and its result is returned: a *bypass*, logged
(once when the cache starts failing, once when it answers again) and
counted. ``wrapper.cache_info()`` returns the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack

from peergrid.errors import ArgumentError, LimitExceededError, OperationTimeoutError, SerializationError
from peergrid.maps.core import check_map_name
from peergrid.maps.flows import drive, drive_async
from peergrid.owner.processors import RELEASE_CLAIM

if TYPE_CHECKING:
    from peergrid.member.node import Node

log = logging.getLogger("peergrid.maps.cached")

F = TypeVar("F", bound=Callable[..., Any])
Step = tuple[Any, ...]  # ("call",) runs the function; (method, *args) calls the cache map
_VALUE = 0  # stored as [0, result]
_CLAIM = 1  # stored as [1, member uuid, nonce] while a member computes it
_MAX_NAME_IN_KEY = 100


@dataclass(frozen=True)
class CacheInfo:
    """What a ``@cached`` function's calls did, on this member since it was decorated."""

    hits: int
    """Calls answered from the map (possibly after waiting for another member's computation)."""
    misses: int
    """Calls that ran the function and stored its result."""
    bypasses: int
    """Calls that ran the function directly (or could not store its result) because the grid did
    not answer in time."""
    uncacheable: int
    """Calls whose arguments (or result) the serializer cannot carry: run, never stored."""


class CachedCalls:
    """The caching protocol of one decorated function on one member (sync and async alike)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        node: Node,
        map_name: str,
        ttl: float | None,
        timeout: float,
        claim_ttl: float,
        key: Callable[..., Any] | None = None,
        typed: bool = False,
    ) -> None:
        self.fn = fn
        self.key_fn = key
        self.typed = typed
        self.node = node
        self.map_name = map_name
        self.ttl = ttl
        self.timeout = timeout
        self.claim_ttl = claim_ttl
        self.name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        self._lock = threading.Lock()
        self._counts = {"hits": 0, "misses": 0, "bypasses": 0, "uncacheable": 0}
        self._degraded = False  # the last grid call failed (a bypass was logged)
        self._warned_uncacheable = False

    # ------------------------------------------------------------------ keys
    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The map key of a call, or None when its arguments cannot be carried (or do not bind)."""
        if self.key_fn is not None:
            material: Any = self.key_fn(*args, **kwargs)
        elif self._signature is not None:
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError:
                return None  # the call itself raises the TypeError
            bound.apply_defaults()
            if self.typed:
                material = [[name, _type_name(value), value] for name, value in bound.arguments.items()]
            else:
                material = [[name, value] for name, value in bound.arguments.items()]
        else:
            material = [list(args), kwargs]
            if self.typed:
                material.append([_type_name(a) for a in args] + [_type_name(v) for v in kwargs.values()])
        try:
            payload = msgpack.packb([self.name, _canonical(material, self.typed)], use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            hint = "" if self.key_fn is not None else "; for a method, pass key=lambda self, ...: ..."
            what = "what key= returned" if self.key_fn is not None else "its arguments"
            self._warn_uncacheable(f"{what} cannot be serialized ({exc}){hint}")
            return None
        return self.prefix + hashlib.sha256(payload).hexdigest()[:40]

    @property
    def prefix(self) -> str:
        """What every key of this function starts with (its name, then a colon)."""
        return f"{self.name[-_MAX_NAME_IN_KEY:]}:"

    def clear_flow(self) -> Generator[Step, Any, int]:
        """``cache_clear``: delete every key of this function from the map (one ``clear`` when
        the map holds nothing else); the number deleted."""
        keys = list((yield ("keys",)))
        mine = [k for k in keys if isinstance(k, str) and k.startswith(self.prefix)]
        if mine and len(mine) == len(keys):
            yield ("clear",)
            return len(mine)
        deleted = 0
        for k in mine:
            deleted += bool((yield ("delete", k)))
        return deleted

    # ------------------------------------------------------------------ the protocol
    def flow(self, key: str) -> Generator[Step | float, Any, Any]:
        """One call: a hit, or a claimed computation, or a bypass (see the module docstring)."""
        marker = [_CLAIM, self.node.uuid, int.from_bytes(os.urandom(8), "big") >> 1]
        try:
            found = yield ("get", key)
            waited_since: float | None = None
            pause = float(self.node.config.timing.lock_retry_initial)
            while True:
                if _is_value(found):
                    self._done("hits")
                    return found[1]
                if found is None:
                    found = yield ("put_if_absent", key, marker, self.claim_ttl)
                    if found is None:
                        break  # claimed: we compute
                    continue
                if not _is_claim(found) or found[1] not in self.node.membership.members:
                    # Not ours to wait for (a stray value, or its claimer's member left): take over.
                    if (yield ("replace_if_same", key, found, marker, self.claim_ttl)):
                        break
                    found = yield ("get", key)
                    continue
                now = time.monotonic()
                waited_since = waited_since if waited_since is not None else now
                if now - waited_since > self.claim_ttl + self.timeout:
                    self._bypassed(OperationTimeoutError(f"the key stayed claimed over {self.claim_ttl}s"))
                    return (yield ("call",))
                yield pause
                pause = min(pause * 2, float(self.node.config.timing.lock_retry_max))
                found = yield ("get", key)
        except Exception as exc:  # noqa: BLE001 - whatever the grid did, the function still runs
            self._bypassed(exc)
            return (yield ("call",))
        try:
            result = yield ("call",)
        except Exception:
            yield from self._release(key, marker)  # a waiter claims it and runs the function itself
            raise
        try:
            yield ("set", key, [_VALUE, result], self.ttl)
        except (SerializationError, LimitExceededError) as exc:
            self.uncached()
            self._warn_uncacheable(f"its result cannot be stored ({exc})")
            yield from self._release(key, marker)
            return result
        except Exception as exc:  # noqa: BLE001 - the result is returned all the same
            self._bypassed(exc)
            return result
        self._done("misses")
        return result

    def _release(self, key: str, marker: list[Any]) -> Generator[Step, Any, None]:
        try:
            yield ("execute_on_key", key, RELEASE_CLAIM, marker)
        except Exception:
            log.debug("@cached %s: could not release the claim on %r", self.name, key, exc_info=True)

    # ------------------------------------------------------------------ accounting
    def _done(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1
            recovered, self._degraded = self._degraded, False
        if recovered:
            log.info("@cached %s: the grid answers again; results are cached in %r", self.name, self.map_name)

    def _bypassed(self, exc: Exception) -> None:
        with self._lock:
            self._counts["bypasses"] += 1
            first, self._degraded = not self._degraded, True
        if first:
            log.warning(
                "@cached %s: the grid did not answer within %ss (%s: %s); calling the function "
                "directly until it does (counted in cache_info().bypasses)",
                self.name,
                self.timeout,
                type(exc).__name__,
                exc,
            )

    def _warn_uncacheable(self, why: str) -> None:
        with self._lock:
            first, self._warned_uncacheable = not self._warned_uncacheable, True
        if first:
            log.warning("@cached %s: some calls run uncached: %s", self.name, why)

    def uncached(self) -> None:
        """Count a call that ran without the cache (its arguments or its result cannot be carried)."""
        with self._lock:
            self._counts["uncacheable"] += 1

    def info(self) -> CacheInfo:
        """The counts so far."""
        with self._lock:
            return CacheInfo(**self._counts)


# ---------------------------------------------------------------------- decorators
def check_options(
    map_name: str, ttl: object, timeout: object, claim_ttl: object, key: object = None, typed: object = False
) -> None:
    """Refuse bad ``cached`` options at decoration time (``ArgumentError``)."""
    check_map_name(map_name)
    if key is not None and not callable(key):
        raise ArgumentError(f"cached(key=...) must be a function of the call's arguments, got {key!r}")
    if not isinstance(typed, bool):
        raise ArgumentError(f"cached(typed=...) must be True or False, got {typed!r}")
    for name, value, optional in (
        ("ttl", ttl, True),
        ("timeout", timeout, False),
        ("claim_ttl", claim_ttl, False),
    ):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise ArgumentError(f"cached({name}=...) must be a positive number of seconds, got {value!r}")


def cached_sync(
    node: Node,
    open_map: Callable[[float | None], Any],
    map_name: str,
    ttl: float | None,
    timeout: float,
    claim_ttl: float,
    key: Callable[..., Any] | None = None,
    typed: bool = False,
) -> Callable[[F], F]:
    """The decorator behind ``Grid.cached``; ``open_map(timeout)`` gives the cache's map, each
    call of which waits exactly ``timeout`` (no grace past it; None: the map's own deadlines)."""
    check_options(map_name, ttl, timeout, claim_ttl, key, typed)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            raise ArgumentError(f"{fn.__qualname__} is async: decorate it with AsyncGrid.cached")
        calls = CachedCalls(fn, node, map_name, ttl, timeout, claim_ttl, key, typed)
        cache: list[Any] = []  # made on first use

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = calls.key(args, kwargs)
            if key is None:
                calls.uncached()
                return fn(*args, **kwargs)
            if not cache:
                cache.append(open_map(timeout))
            handle = cache[0]

            def run(step: Step) -> Any:
                if step[0] == "call":
                    return fn(*args, **kwargs)
                return getattr(handle, step[0])(*step[1:])

            return drive(calls.flow(key), run)

        def cache_clear() -> int:
            """Delete this function's results from the map on every member; the number deleted."""
            handle = open_map(None)
            return drive(calls.clear_flow(), lambda step: getattr(handle, step[0])(*step[1:]))

        _expose(wrapper, calls)
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def cached_async(
    node: Node,
    open_map: Callable[[float | None], Any],
    map_name: str,
    ttl: float | None,
    timeout: float,
    claim_ttl: float,
    key: Callable[..., Any] | None = None,
    typed: bool = False,
) -> Callable[[F], F]:
    """The decorator behind ``AsyncGrid.cached`` (for ``async def`` functions); ``open_map`` as
    for ``cached_sync``, giving an ``AsyncMap``."""
    check_options(map_name, ttl, timeout, claim_ttl, key, typed)

    def decorate(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise ArgumentError(f"{fn.__qualname__} is not async: decorate it with Grid.cached")
        calls = CachedCalls(fn, node, map_name, ttl, timeout, claim_ttl, key, typed)
        cache: list[Any] = []  # made on first use

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = calls.key(args, kwargs)
            if key is None:
                calls.uncached()
                return await fn(*args, **kwargs)
            if not cache:
                cache.append(open_map(timeout))
            handle = cache[0]

            async def run(step: Step) -> Any:
                if step[0] == "call":
                    return await fn(*args, **kwargs)
                try:
                    async with asyncio.timeout(timeout):
                        return await getattr(handle, step[0])(*step[1:])
                except TimeoutError as exc:
                    raise OperationTimeoutError(f"no answer within {timeout}s") from exc

            return await drive_async(calls.flow(key), run)

        async def cache_clear() -> int:
            """Delete this function's results from the map on every member; the number deleted."""
            handle = open_map(None)

            async def run(step: Step) -> Any:
                return await getattr(handle, step[0])(*step[1:])

            return await drive_async(calls.clear_flow(), run)

        _expose(wrapper, calls)
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _expose(wrapper: Any, calls: CachedCalls) -> None:
    wrapper.cache_info = calls.info
    wrapper.cache_key = lambda *args, **kwargs: calls.key(args, kwargs)


def _is_value(found: Any) -> bool:
    return isinstance(found, list) and len(found) == 2 and found[0] == _VALUE


def _is_claim(found: Any) -> bool:
    return isinstance(found, list) and len(found) == 3 and found[0] == _CLAIM


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


_INT_RANGE = 2**63  # floats beyond it stay floats (msgpack carries ints of 64 bits)


def _canonical(value: Any, typed: bool = False) -> Any:
    """``value`` with dicts in a stable (sorted) order where their keys can be sorted; unless
    ``typed``, numbers that compare equal made one (``True``, ``1.0`` -> ``1``), as equal
    arguments share an entry of ``functools.lru_cache``."""
    if isinstance(value, dict):
        items = [(_canonical(k, typed), _canonical(v, typed)) for k, v in value.items()]
        with contextlib.suppress(TypeError):  # keys of mixed types: their order stays the caller's
            items.sort(key=lambda item: item[0])
        return dict(items)
    if isinstance(value, list | tuple):
        return [_canonical(v, typed) for v in value]
    if not typed:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer() and -_INT_RANGE < value < _INT_RANGE:
            return int(value)
    return value
