"""Configuration as validated, frozen values.

Every timing and every limit of a member lives here, so tests shorten timings
through config (``Timing.fast()``), never by patching module constants.
Defaults are filled in one place (the dataclass fields); cross-field checks
live in ``validate()``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from peergrid.errors import ArgumentError, ConfigError, TLSConfigError
from peergrid.protocol import Terms

DiscoveryKind = Literal["static", "mdns"]

CLOCK_DRIFT = 0.01
"""The most two members' monotonic clocks may differ in rate (1%): owner leases are shortened by
it, so a lease runs out on its holder before any other member may act as if it had."""


@dataclass(frozen=True)
class Timing:
    """Every timing of a member, in seconds.

    The defaults suit a LAN: a member that stops answering is declared dead
    after ``failure_timeout`` and its partitions fail over within a few
    seconds. ``Timing.fast()`` is a preset for in-process test clusters.
    """

    heartbeat_interval: float = 1.0
    """How often each member sends a heartbeat to the master (whose answer renews its owner
    lease); the master hears from every member, the others from the master only."""
    failure_timeout: float = 5.0
    """A member not heard from for this long is declared dead. Time this member's own loop
    did not run (a pause, an overloaded process) does not count."""
    owner_lease: float | None = None
    """How long a member may serve its partitions after its last confirmation that it is still
    a member (the master's answer to its heartbeat; for the master, its own timely heartbeat;
    with ``min_cluster_size``, also answers from that many members). None: derived from
    ``failure_timeout`` (see ``lease``). Must run out before any member can be declared dead."""
    join_timeout: float = 5.0
    """How long to keep trying the seeds before starting a new cluster alone."""
    join_max_wait: float = 120.0
    """How long a joiner whose seeds answer keeps asking to be admitted before it fails with
    ``JoinError`` (Hazelcast's ``max.join.seconds``): a master busy with a hundred processes
    starting on a few cores admits them slowly, and a joiner must not exit meanwhile. It fails
    sooner once no seed has answered for a quarter of this (at least twice
    ``failure_timeout``). (A master that refused the joiner, or cannot call it back, fails it at
    once.)"""
    join_retry_interval: float = 0.25
    """Pause between two rounds of join attempts."""
    join_batch_window: float = 0.05
    """How long the master gathers joiners before admitting them in one new member list (a
    simultaneous start of many members makes a few list versions, not one per member). While
    joiners keep coming, a batch also waits until a ``heartbeat_interval`` has passed since the
    last: every list version costs every member a new partition table and migrations."""
    rpc_timeout: float = 3.0
    """Deadline of one control call (join, publish, heartbeat, migration step)."""
    operation_timeout: float = 10.0
    """Default deadline of one map operation, retries on a newer table included."""
    retry_initial: float = 0.005
    """First pause before retrying an operation that met a moving partition."""
    retry_max: float = 0.25
    """Longest pause between two retries of one operation."""
    shutdown_timeout: float = 30.0
    """How long a graceful shutdown waits for its partitions to be handed over."""
    anti_entropy_interval: float = 30.0
    """How often an owner compares partition versions with its backups."""
    expiry_sweep_interval: float = 1.0
    """How often expired entries are swept from memory."""
    expiry_sweep_slice: float = 0.0005
    """How long a sweep holds the member's loop before it yields to the requests waiting: a
    million entries expiring at once delay no request by much more than this. (At 1 ms, remote
    gets' p99.9 under a 1M-entry expiry was 3.5-4.0 ms, against 3.0-3.4 at 0.5 ms; see
    ``docs/performance.md``, "Shorter sweep slices".)"""
    expiry_sweep_pause: float = 0.0015
    """How long a sweep then pauses: a backlog of expired entries takes at most
    ``slice / (slice + pause)`` of the loop (a quarter by default, as Redis' active expiry), and
    the backup writes it queued leave in small frames. At half the loop (2 ms / 2 ms), a backup
    applying a large backlog's deletes ran frames of them in steps of 10-21 ms of CPU; at a
    quarter, 4 ms at most (``python -m benchmarks.stalls --steps``, 300k entries)."""
    event_batch_interval: float = 0.002
    """Shortest time between two batches of events an owner sends one subscriber (a near cache,
    an entry listener elsewhere): events that come sooner after a batch wait for the next, and
    go together. A lone event goes at once. Under many writes this turns a message (and a
    wake-up of the subscriber's process) per write into one per interval, for at most this
    much more delay. 0: every batch at once; at most 0.05."""
    safe_poll_interval: float = 0.02
    """How often ``wait_until_safe`` asks the members whether they are safe."""
    lock_retry_initial: float = 0.01
    """First pause before asking again for a lock another holder has (or for a key another
    member is computing, with ``@grid.cached``); the pause doubles up to ``lock_retry_max``."""
    lock_retry_max: float = 0.25
    """Longest pause between two tries of a contended lock or ``@cached`` key."""
    merge_horizon: float = 600.0
    """How long after losing a member that did not leave (a split, from where this member
    stands) its writes are journaled for a merge: a split healed later than this merges as if
    nothing had been journaled (see ``peergrid.storage.journal``)."""
    discovery_interval: float = 1.0
    """How often the master looks for other instances of its cluster to merge with (peers
    found by mDNS, static seeds that are not members)."""
    mdns_record_ttl: float = 120.0
    """Lifetime of this member's mDNS records: a member that dies without saying goodbye
    disappears from the others' discovery after at most this long."""
    mdns_resolve_timeout: float = 3.0
    """How long one mDNS lookup of a discovered service waits for its records."""
    mdns_close_timeout: float = 5.0
    """Upper bound on stopping mDNS (goodbye packets, zeroconf's threads)."""

    @property
    def lease(self) -> float:
        """The owner lease in seconds: ``owner_lease``, or 3/4 of the time between the last
        heartbeat a member could have been heard by and its removal, shortened by the drift bound."""
        if self.owner_lease is not None:
            return self.owner_lease
        return (self.failure_timeout - self.heartbeat_interval) * 0.75 / (1 + 2 * CLOCK_DRIFT)

    @classmethod
    def fast(cls) -> Timing:
        """Short timings for in-process test clusters on loopback."""
        return cls(
            heartbeat_interval=0.1,
            failure_timeout=1.0,
            join_timeout=1.0,
            join_max_wait=20.0,
            join_retry_interval=0.05,
            join_batch_window=0.01,
            rpc_timeout=1.0,
            operation_timeout=10.0,
            retry_max=0.05,
            shutdown_timeout=10.0,
            anti_entropy_interval=1.0,
            expiry_sweep_interval=0.1,
            safe_poll_interval=0.01,
            lock_retry_max=0.05,
            discovery_interval=0.2,
        )

    def validate(self) -> None:
        """Raise ``ConfigError`` when a timing is out of range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "owner_lease":
                continue
            if f.name == "event_batch_interval":
                continue  # may be 0 (checked below)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"timing.{f.name} must be a positive number of seconds, got {value!r}")
        if self.failure_timeout < 3 * self.heartbeat_interval:
            raise ConfigError(
                f"timing.failure_timeout ({self.failure_timeout}s) must be at least 3 times "
                f"timing.heartbeat_interval ({self.heartbeat_interval}s): a member is declared dead "
                "only after missing several heartbeats, and owner leases renewed by heartbeats "
                "must run out before that"
            )
        if self.lease <= self.heartbeat_interval:
            raise ConfigError(
                f"timing.owner_lease ({self.lease:.3g}s) must be longer than timing.heartbeat_interval "
                f"({self.heartbeat_interval}s), or leases would run out between two renewals"
            )
        longest = (self.failure_timeout - self.heartbeat_interval) / (1 + 2 * CLOCK_DRIFT)
        if self.lease > longest:
            raise ConfigError(
                f"timing.owner_lease ({self.lease}s) must be at most {longest:.3g}s with "
                f"failure_timeout={self.failure_timeout}s and heartbeat_interval={self.heartbeat_interval}s: "
                "a member must stop serving before the others may declare it dead and take over"
            )
        interval = self.event_batch_interval
        if not isinstance(interval, int | float) or isinstance(interval, bool) or not 0 <= interval <= 0.05:
            raise ConfigError(
                f"timing.event_batch_interval must be 0 to 0.05 seconds, got {interval!r}: events wait "
                "for it, and near caches' lease-renewing heartbeats (every 0.1 s at most) must not"
            )
        if self.retry_max < self.retry_initial:
            raise ConfigError("timing.retry_max must be at least timing.retry_initial")
        if self.lock_retry_max < self.lock_retry_initial:
            raise ConfigError("timing.lock_retry_max must be at least timing.lock_retry_initial")
        if self.mdns_record_ttl < 1:
            raise ConfigError("timing.mdns_record_ttl must be at least 1 second (DNS counts whole seconds)")


@dataclass(frozen=True)
class Limits:
    """Sizes and counts a member enforces: sizes before anything is sent, and again by the
    receiving member; what a peer may hold on a member (event subscriptions, their buffers)."""

    max_key_bytes: int = 64 * 1024
    """Largest serialized key."""
    max_value_bytes: int = 16 * 1024 * 1024
    """Largest serialized value."""
    max_batch_ops: int = 10_000
    """Most operations in one request frame a member accepts (a frame of more is refused whole),
    and most keys in one op of a ``get_all`` it accepts (it sends ops of at most four frames'
    worth, ``4 * max_frame_ops`` keys)."""
    max_frame_ops: int = 256
    """Most operations a member puts in one frame it sends (a ``get_all`` op's keys count a
    quarter of an op each); a larger batch (a ``put_all``, the backups of a frame of writes, a
    large ``get_all``) goes as several frames. The member receiving a frame decodes,
    runs and answers it in one step of its loop, so this bounds how long one frame holds that
    loop (~8 ms on a slow core, with backups): a ``put_all`` of 30,000 entries sent in frames
    of 10,000 held each owner's loop for seconds, long enough for its owner lease to run out.
    A lower ``max_batch_ops`` lowers it too (a peer refuses a frame over that)."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message sent or received."""
    max_inflight_frames: int = 2
    """Request frames in flight to one peer; later operations gather into the next frame."""
    store_threads: int = 4
    """Threads that call map stores (their calls block: they never run on the member's loop)."""
    max_journal_entries: int = 10_000
    """Most journaled changes (for merges after a split) kept per partition; the oldest go first."""
    max_transfer_bytes: int = 1 << 30
    """Largest partition copy one transfer (migration, backup rebuild) may carry; a longer one is
    aborted, so a peer cannot fill this member's memory with a transfer that never ends."""
    max_subscription_buffer_bytes: int = 16 * 1024 * 1024
    """Most bytes of events this member holds for one event subscriber (a peer's near cache or
    entry listeners) that has not taken them yet, the batch being written to it included: keys,
    values and old values, plus 64 bytes an event. At most half of ``max_message_bytes`` counts
    (a batch must fit one message). A subscriber that falls further behind is dropped, never
    buffered for: its stream ends, it reports a gap (a near cache drops what may be stale,
    listeners' ``on_gap`` is called) and subscribes again. An event larger than this always
    reaches subscribers as such a gap."""
    max_subscription_buffer_events: int = 100_000
    """Most events this member holds for one event subscriber (see
    ``max_subscription_buffer_bytes``)."""
    max_subscriptions: int = 256
    """Most event subscriptions this member serves at once; more are refused (RESOURCE_EXHAUSTED).
    A member subscribes once to each other member per map with a near cache or a remote entry
    listener."""
    max_subscriptions_per_peer: int = 64
    """Most event subscriptions one peer may hold on this member at once; more are refused
    (RESOURCE_EXHAUSTED). A member names itself in its subscriptions; a caller that names no
    member is counted by its network address."""
    min_heartbeat_interval: float = 0.1
    """Shortest heartbeat interval (seconds) an event subscription may ask for; a shorter one is
    refused (INVALID_ARGUMENT). This member's own near caches and listeners never ask for less,
    so a near cache's ``max_staleness`` below 3 times this serves fewer hits."""

    @property
    def frame_ops(self) -> int:
        """Most operations in one frame this member sends: ``max_frame_ops``, but no more than
        ``max_batch_ops``."""
        return min(self.max_frame_ops, self.max_batch_ops)

    @property
    def subscription_buffer_bytes(self) -> int:
        """The bytes of events held for one subscriber at most: ``max_subscription_buffer_bytes``,
        but no more than half of ``max_message_bytes`` (a batch must fit one message)."""
        return min(self.max_subscription_buffer_bytes, self.max_message_bytes // 2)

    def validate(self) -> None:
        """Raise ``ConfigError`` when a limit is out of range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "min_heartbeat_interval":
                _check_positive("limits.min_heartbeat_interval", value, allow_none=False)
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"limits.{f.name} must be a positive integer, got {value!r}")
        if self.min_heartbeat_interval > 60:
            raise ConfigError(
                "limits.min_heartbeat_interval must be at most 60 seconds, "
                f"got {self.min_heartbeat_interval!r}"
            )
        if self.max_subscriptions_per_peer > self.max_subscriptions:
            raise ConfigError(
                f"limits.max_subscriptions_per_peer ({self.max_subscriptions_per_peer}) must be at most "
                f"limits.max_subscriptions ({self.max_subscriptions})"
            )
        if self.max_value_bytes + self.max_key_bytes + 1024 > self.max_message_bytes:
            raise ConfigError(
                "limits.max_message_bytes must leave room for one key and one value "
                f"({self.max_key_bytes} + {self.max_value_bytes} bytes)"
            )
        if self.max_transfer_bytes < self.max_value_bytes + self.max_key_bytes + 1024:
            raise ConfigError(
                "limits.max_transfer_bytes must leave room for one key and one value "
                f"({self.max_key_bytes} + {self.max_value_bytes} bytes)"
            )


@dataclass(frozen=True)
class TLSConfig:
    """Mutual TLS between members: this member's certificate and key, and the cluster CA.

    Every member serves only TLS and requires a client certificate signed by
    ``ca_certificate``: a peer without one can neither join nor read nor
    write. Each member's certificate must name what the others dial: its IP
    address (an IP subject alternative name), or ``server_name``.
    """

    certificate: bytes
    """This member's certificate chain (PEM), used as server and as client."""
    private_key: bytes
    """The certificate's private key (PEM)."""
    ca_certificate: bytes
    """The cluster CA (PEM): peers must present certificates it signed."""
    server_name: str = ""
    """When set, the name checked in every peer's certificate instead of the address dialled:
    one name (a DNS subject alternative name) for the whole cluster, so certificates need not
    list addresses that mDNS or DHCP hand out."""

    @classmethod
    def from_files(
        cls, certificate: str, private_key: str, ca_certificate: str, server_name: str = ""
    ) -> TLSConfig:
        """Read PEM files from disk and check them (see ``validate``).

        Raises ``TLSConfigError`` (a ``ConfigError``) naming a file that cannot be read, holds
        something else than it should (swapped files), or a key that is not the certificate's.
        """
        contents = []
        for what, path in (
            ("certificate", certificate),
            ("private key", private_key),
            ("CA", ca_certificate),
        ):
            try:
                with open(path, "rb") as file:
                    contents.append(file.read())
            except OSError as exc:
                raise TLSConfigError(f"cannot read the TLS {what} file {path!r}: {exc.strerror}") from exc
        config = cls(contents[0], contents[1], contents[2], server_name)
        config.validate(
            files={"certificate": certificate, "private_key": private_key, "ca_certificate": ca_certificate}
        )
        return config

    def validate(self, files: Mapping[str, str] | None = None) -> None:
        """Raise ``TLSConfigError`` (a ``ConfigError``) when a field is not PEM data of its kind
        (a certificate, a private key, a certificate), as when two files are swapped; when the
        ``cryptography`` package is installed, also when the private key is not the
        certificate's, or the CA's certificate says it is no CA. (Without ``cryptography`` the
        key is checked when the member binds: grpc refuses it then.)
        """
        files = files or {}
        for name, kind in (
            ("certificate", "CERTIFICATE"),
            ("private_key", "PRIVATE KEY"),
            ("ca_certificate", "CERTIFICATE"),
        ):
            value = getattr(self, name)
            where = f"tls.{name}" + (f" (file {files[name]!r})" if name in files else "")
            if not isinstance(value, bytes) or b"-----BEGIN " not in value:
                raise TLSConfigError(
                    f"{where} must be PEM data (bytes with a '-----BEGIN ...' line); "
                    "read files with peergrid.TLSConfig.from_files(...)"
                )
            found = _pem_kind(value)
            if not found.endswith(kind) or (
                kind == "CERTIFICATE" and "PRIVATE KEY" in value.decode("ascii", "replace")
            ):
                raise TLSConfigError(
                    f"{where} holds a PEM {found}, not a {kind}: are two TLS files swapped? "
                    "TLSConfig.from_files takes (certificate, private_key, ca_certificate)"
                )
        if not isinstance(self.server_name, str):
            raise ConfigError(f"tls.server_name must be a str, got {self.server_name!r}")
        _check_key_pair(self, files)


def _pem_kind(data: bytes) -> str:
    """The type of the first PEM block (``CERTIFICATE``, ``RSA PRIVATE KEY``, ...)."""
    start = data.index(b"-----BEGIN ") + len(b"-----BEGIN ")
    end = data.find(b"-----", start)
    return data[start:end].decode("ascii", "replace").strip()


def _check_key_pair(tls: TLSConfig, files: Mapping[str, str]) -> None:
    """With ``cryptography`` installed: the key is the certificate's, and the CA is a CA."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # optional: grpc refuses a key of another certificate at bind
        return
    name = {
        n: f"tls.{n}" + (f" (file {files[n]!r})" if n in files else "")
        for n in ("certificate", "private_key", "ca_certificate")
    }
    try:
        certificate = x509.load_pem_x509_certificate(tls.certificate)
        ca = x509.load_pem_x509_certificate(tls.ca_certificate)
    except ValueError as exc:
        raise TLSConfigError(
            f"{name['certificate']} or {name['ca_certificate']} is not a valid certificate: {exc}"
        ) from exc
    try:
        key = serialization.load_pem_private_key(tls.private_key, password=None)
    except (ValueError, TypeError) as exc:
        raise TLSConfigError(
            f"{name['private_key']} cannot be loaded ({exc}); peergrid needs an unencrypted PEM private key"
        ) from exc
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and not constraints.ca:
        raise TLSConfigError(
            f"{name['ca_certificate']} is a member's certificate (basic constraints CA:FALSE), not "
            "the cluster CA: are the certificate and CA files swapped?"
        )
    raw = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != certificate.public_key().public_bytes(*raw):
        raise TLSConfigError(
            f"{name['private_key']} is not the private key of {name['certificate']} "
            f"(subject {certificate.subject.rfc4514_string()!r}): give the key that was issued with it"
        )


EvictionPolicy = Literal["lru", "lfu", "none"]
MergePolicy = Literal["latest_update", "put_if_absent", "pass_through", "discard"]


@dataclass(frozen=True)
class NearCacheConfig:
    """A near cache: decoded values of other members' entries kept in the reading member.

    A hit is a dict lookup: no RPC, no decode. Every change on an entry's owner
    invalidates it here; if this member cannot hear from the owner (a dropped
    stream, a slow network), its entries stop being served after
    ``max_staleness`` seconds, which bounds how long after a write was
    acknowledged an old value may still be read here.
    """

    max_entries: int = 10_000
    """Most entries kept (least recently used ones make room)."""
    ttl: float | None = None
    """Seconds an entry is served before it is fetched again (None: until invalidated)."""
    max_staleness: float = 1.0
    """Seconds without word from an entry's owner after which its entries are not served."""

    def validate(self, where: str) -> None:
        """Raise ``ConfigError`` when a value is out of range."""
        _check_int(f"{where}.max_entries", self.max_entries, 1, 100_000_000)
        _check_positive(f"{where}.ttl", self.ttl, allow_none=True)
        _check_positive(f"{where}.max_staleness", self.max_staleness, allow_none=False)


@dataclass(frozen=True)
class WriteBehindConfig:
    """Write-behind: writes go to the map at once and to its store later, in batches.

    Pending writes are kept with the partition (on its backups too), so a dead
    owner's pending writes are flushed by its successor. Repeated writes to a
    key before it is flushed coalesce into one store call. A failing store is
    retried with backoff and every failure is logged and counted; nothing is
    dropped.
    """

    delay: float = 1.0
    """Seconds a write waits before it is stored."""
    batch_size: int = 500
    """Most entries per store call."""
    retry_initial: float = 0.5
    """First pause after a failed store call."""
    retry_max: float = 30.0
    """Longest pause between retries."""

    def validate(self, where: str) -> None:
        """Raise ``ConfigError`` when a value is out of range."""
        _check_positive(f"{where}.delay", self.delay, allow_none=False)
        _check_int(f"{where}.batch_size", self.batch_size, 1, 1_000_000)
        _check_positive(f"{where}.retry_initial", self.retry_initial, allow_none=False)
        _check_positive(f"{where}.retry_max", self.retry_max, allow_none=False)


@dataclass(frozen=True)
class MapConfig:
    """How one map behaves. Configure a map the same way on every member.

    Pass it in ``GridConfig(maps={"users": MapConfig(...)})`` or as keywords of
    ``grid.get_map("users", ...)``. The bounds are per member, over the entries
    it owns (backup copies do not count and follow their owner's evictions).
    """

    ttl: float | None = None
    """Default seconds to live of entries written without their own ttl."""
    ttl_jitter: float = 0.0
    """Spread the default ttl by up to this fraction (0.1: +-10%), against expiry stampedes."""
    max_idle: float | None = None
    """Entries not read or written for this many seconds expire."""
    max_entries: int | None = None
    """Most entries this member owns of this map."""
    max_bytes: int | None = None
    """Most serialized key and value bytes this member owns of this map."""
    eviction: EvictionPolicy = "lru"
    """What a write beyond a bound does: evict (sampled LRU or LFU, as Redis does) or, with
    ``"none"``, raise ``CapacityError``."""
    near_cache: NearCacheConfig | None = None
    """Keep other members' entries, decoded, in this member (see ``NearCacheConfig``)."""
    store: Any = None
    """A ``peergrid.stores.MapStore``: a miss on the owner loads from it (read-through), and
    writes go to it before they are acknowledged (write-through) or later (``write_behind``)."""
    write_behind: WriteBehindConfig | None = None
    """Write to ``store`` behind the map's back, in batches (see ``WriteBehindConfig``)."""
    merge_policy: MergePolicy = "latest_update"
    """What a healed split keeps of the merging side's changes, key by key: ``"latest_update"``
    (the later change wins, deletes included), ``"put_if_absent"`` (only keys the surviving side
    lacks), ``"pass_through"`` (the merging side's change always wins) or ``"discard"`` (the
    surviving side's data only). Partitions the surviving side lost entirely come back whole
    whatever the policy. See docs/operations.md, "Splits and merges"."""

    @classmethod
    def from_options(cls, name: str, base: MapConfig | None, **options: Any) -> MapConfig:
        """``base`` with ``options`` applied; unknown option names raise ``ArgumentError``."""
        names = [f.name for f in dataclasses.fields(cls)]
        reject_unknown("get_map", {k: v for k, v in options.items() if k not in names}, ("name", *names))
        config = dataclasses.replace(base or cls(), **{k: v for k, v in options.items() if v is not None})
        config.validate(f"map {name!r}")
        return config

    @property
    def bounded(self) -> bool:
        """True when the map has a size bound."""
        return self.max_entries is not None or self.max_bytes is not None

    def validate(self, where: str = "map") -> None:
        """Raise ``ConfigError`` when a value is out of range."""
        _check_positive(f"{where}.ttl", self.ttl, allow_none=True)
        _check_positive(f"{where}.max_idle", self.max_idle, allow_none=True)
        if not isinstance(self.ttl_jitter, int | float) or not 0 <= self.ttl_jitter < 1:
            raise ConfigError(f"{where}.ttl_jitter must be a fraction in [0, 1), got {self.ttl_jitter!r}")
        if self.max_entries is not None:
            _check_int(f"{where}.max_entries", self.max_entries, 1, 10**12)
        if self.max_bytes is not None:
            _check_int(f"{where}.max_bytes", self.max_bytes, 1, 10**15)
        if self.eviction not in ("lru", "lfu", "none"):
            raise ConfigError(f"{where}.eviction must be 'lru', 'lfu' or 'none', got {self.eviction!r}")
        if self.merge_policy not in get_args(MergePolicy):
            raise ConfigError(
                f"{where}.merge_policy must be one of {', '.join(map(repr, get_args(MergePolicy)))}, "
                f"got {self.merge_policy!r}"
            )
        if self.store is not None:
            missing = [
                m
                for m in ("load", "load_all", "store", "store_all", "delete", "delete_all")
                if not callable(getattr(self.store, m, None))
            ]
            if missing:
                raise ConfigError(
                    f"{where}.store must be a peergrid.stores.MapStore; it lacks {', '.join(missing)}"
                )
        if self.write_behind is not None:
            if self.store is None:
                raise ConfigError(f"{where}.write_behind needs a store to write to")
            if not isinstance(self.write_behind, WriteBehindConfig):
                raise ConfigError(f"{where}.write_behind must be a peergrid.WriteBehindConfig")
            self.write_behind.validate(f"{where}.write_behind")
        if self.near_cache is not None:
            if not isinstance(self.near_cache, NearCacheConfig):
                raise ConfigError(f"{where}.near_cache must be a peergrid.NearCacheConfig")
            self.near_cache.validate(f"{where}.near_cache")


@dataclass(frozen=True)
class GridConfig:
    """The configuration of one member. ``peergrid.Grid(**kwargs)`` builds one."""

    cluster: str = "peergrid"
    """Cluster name; members of another cluster are refused."""
    bind: str = "127.0.0.1:0"
    """This member's gRPC address, ``host:port``; port 0 picks a free port."""
    members: tuple[str, ...] = ()
    """Static seed addresses (``host:port``); empty starts alone."""
    discovery: DiscoveryKind = "static"
    """``"static"`` (the seed list) or ``"mdns"`` (python-zeroconf)."""
    backup_count: int = 1
    """Synchronous backup copies of every partition; must be the same on every member."""
    async_backup_count: int = 0
    """Further backup copies sent without waiting for their acknowledgement; must be the same on
    every member."""
    partition_count: int = 271
    """Number of partitions of every map; must be the same on every member."""
    vnodes: int = 512
    """Virtual nodes on the ring per unit of weight; must be the same on every member."""
    weight: float = 1.0
    """This member's share of partitions relative to the others."""
    min_cluster_size: int = 1
    """Writes are refused while this member sees fewer members (quorum)."""
    heartbeat_fanout: int = 10
    """Most members whose heartbeats one member receives for the master: the four oldest after
    the master beat it directly (fewer if this is smaller), every other member beats a relay, an
    older member that carries the beats of up to ``heartbeat_fanout`` members up with its own
    (a tree: the master's heartbeat load stays constant as the cluster grows;
    docs/architecture.md, "Heartbeat relays"). 10,000: no relays."""
    serializer: str = "msgpack"
    """Value serializer: ``"msgpack"`` (safe default) or ``"pickle"`` (needs TLS)."""
    tls: TLSConfig | None = None
    """Mutual TLS between members; ``None`` means plaintext."""
    timing: Timing = field(default_factory=Timing)
    limits: Limits = field(default_factory=Limits)
    maps: Mapping[str, MapConfig] = field(default_factory=dict)
    """Per-map configuration, by map name."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (needs ``peergrid[metrics]``); None: off."""

    def terms(self) -> Terms:
        """What every member of the cluster must share (a joiner's are checked by the member it asks)."""
        return Terms(
            self.partition_count,
            self.serializer,
            self.backup_count,
            self.async_backup_count,
            self.vnodes,
            self.timing.heartbeat_interval,
            self.timing.failure_timeout,
            self.timing.lease,
            self.min_cluster_size,
        )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GridConfig:
        """Build a config from keyword arguments, refusing unknown names with a hint."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in kwargs:
            if key not in names:
                raise ConfigError(_unknown(key, names, "Grid"))
        members = kwargs.get("members")
        if members is not None:
            if isinstance(members, str):
                members = [m for m in members.split(",") if m.strip()]
            kwargs["members"] = tuple(str(m).strip() for m in members)
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ConfigError`` when a value is out of range or values contradict each other."""
        if not isinstance(self.cluster, str) or not self.cluster or len(self.cluster) > 255:
            raise ConfigError(
                f"cluster must be a non-empty name of at most 255 characters, got {self.cluster!r}"
            )
        parse_address(self.bind, what="bind")
        for seed in self.members:
            parse_address(seed, what="members entry")
        if self.discovery not in ("static", "mdns"):
            raise ConfigError(f"discovery must be 'static' or 'mdns', got {self.discovery!r}")
        if self.discovery == "mdns":
            host = parse_address(self.bind, what="bind")[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ConfigError(
                    f"discovery='mdns' announces the bound address: bind must be an IP address, got {host!r}"
                ) from None
        _check_int("backup_count", self.backup_count, 0, 6)
        _check_int("async_backup_count", self.async_backup_count, 0, 6)
        if self.backup_count + self.async_backup_count > 6:
            raise ConfigError("backup_count + async_backup_count must be at most 6")
        _check_int("partition_count", self.partition_count, 1, 65_536)
        _check_int("vnodes", self.vnodes, 1, 10_000)
        _check_int("min_cluster_size", self.min_cluster_size, 1, 10_000)
        _check_int("heartbeat_fanout", self.heartbeat_fanout, 1, 10_000)
        if not isinstance(self.weight, int | float) or not 0 < self.weight <= 100:
            raise ConfigError(f"weight must be a number in (0, 100], got {self.weight!r}")
        if self.serializer not in ("msgpack", "pickle"):
            raise ConfigError(f"serializer must be 'msgpack' or 'pickle', got {self.serializer!r}")
        if self.tls is not None and not isinstance(self.tls, TLSConfig):
            raise ConfigError(f"tls must be a peergrid.TLSConfig, got {type(self.tls).__name__}")
        if self.tls is not None:
            self.tls.validate()
        if self.serializer == "pickle" and self.tls is None:
            raise ConfigError(
                "serializer='pickle' needs tls=...: unpickling data from an unauthenticated "
                "peer lets anyone who can reach this member's port run code in this process"
            )
        if not isinstance(self.timing, Timing):
            raise ConfigError(f"timing must be a peergrid.Timing, got {type(self.timing).__name__}")
        if not isinstance(self.limits, Limits):
            raise ConfigError(f"limits must be a peergrid.Limits, got {type(self.limits).__name__}")
        self.timing.validate()
        self.limits.validate()
        for name, map_config in dict(self.maps).items():
            if not isinstance(map_config, MapConfig):
                raise ConfigError(
                    f"maps[{name!r}] must be a peergrid.MapConfig, got {type(map_config).__name__}"
                )
            map_config.validate(f"map {name!r}")
        if self.metrics_port is not None:
            _check_int("metrics_port", self.metrics_port, 0, 65535)


def parse_address(address: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``"host:port"`` into host and port, or raise ``ConfigError``."""
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(f"{what} must look like 'host:port', got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {address!r} has a port that is not a number") from None
    if not host or not 0 <= port <= 65535:
        raise ConfigError(f"{what} {address!r} needs a host and a port between 0 and 65535")
    return host, port


def _check_positive(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


def is_loopback(host: str) -> bool:
    """True for a loopback IP address or ``localhost``: only this machine can connect."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {value!r}")


def _unknown(key: str, names: Sequence[str] | set[str], where: str) -> str:
    hint = difflib.get_close_matches(key, list(names), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"{where}() got an unknown option {key!r}{suggestion} (known: {', '.join(sorted(names))})"


def check_ttl(ttl: object) -> float:
    """TTL seconds as the wire carries them (None: 0.0, no expiry), or ``ArgumentError``."""
    if ttl is None:
        return 0.0
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ArgumentError(f"ttl must be a positive number of seconds (or None for no expiry), got {ttl!r}")
    return float(ttl)


def reject_unknown(where: str, unknown: Mapping[str, object], known: Sequence[str]) -> None:
    """Raise ``ArgumentError`` naming the first unknown keyword argument of a call."""
    for key in unknown:
        raise ArgumentError(_unknown(key, known, where))
