"""mDNS discovery: announce this member and browse for members of the same cluster.

Every member registers one DNS-SD service of type ``_peergrid._tcp.local.``
whose instance name is its uuid and whose TXT record carries ``cluster``,
``uuid`` and ``port``. A browser on the same zeroconf instance resolves the
services it sees and keeps those of our cluster as `DiscoveredPeer` values.

mDNS is only a hint: this module joins nothing. The membership layer calls
`MdnsDiscovery.peers` and joins through its usual checks, so a stale or
spoofed announcement costs at most a failed join attempt.

This is the only module of the package that imports zeroconf.

Threading: zeroconf runs an asyncio loop on a thread of its own, and the
`ServiceBrowser` delivers state changes on a second thread. Resolving a
service means waiting for its SRV, TXT and address records, so it is done as
a coroutine scheduled on zeroconf's loop; neither thread ever blocks on the
network on our behalf. The peer table is guarded by one lock because both
threads write it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import ifaddr
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceInfo

from peergrid.config import Timing

__all__ = ["SERVICE_TYPE", "DiscoveredPeer", "MdnsDiscovery"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_peergrid._tcp.local."

# How many times one resolve of a browsed service is tried (each waiting
# Timing.mdns_resolve_timeout) before the service is given up on until the
# browser reports it again.
_RESOLVE_ATTEMPTS = 3

# The timings live in peergrid.Timing: mdns_record_ttl (zeroconf's default
# PTR/TXT TTL is 75 minutes, so a member that dies without sending goodbyes
# would linger in everyone's peer list for that long; two minutes, the RFC
# 6762 host-record TTL, bounds that for a few refresh packets a minute),
# mdns_resolve_timeout, and mdns_close_timeout (the goodbye broadcasts take
# under a second, the rest is joining zeroconf's threads, which a wedged
# on_change could hold).

_MAX_LABEL = 63  # bytes in one DNS label: the instance and host names use the uuid

# What we hand Zeroconf(interfaces=...): all interfaces, or our one address.
_Interfaces = InterfaceChoice | list[str]
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DiscoveredPeer:
    """A member of our cluster seen over mDNS."""

    uuid: str
    """The member's uuid (hex string)."""
    address: str
    """``host:port`` of the member's gRPC endpoint (IPv6 hosts in brackets)."""
    cluster: str
    """The cluster name the member announced."""


class MdnsDiscovery:
    """Announces this member over mDNS and browses for members of the same cluster.

    `start` registers the service and starts browsing; `peers` returns what is
    currently visible; `close` sends goodbyes and stops zeroconf.

    ``on_change`` is called with no arguments from one of zeroconf's threads
    whenever the visible peer set changes. It must be quick and thread-safe
    and must not call `close`; anything it raises is logged and swallowed.
    """

    def __init__(
        self,
        *,
        cluster: str,
        member_uuid: str,
        host: str,
        port: int,
        on_change: Callable[[], None] | None = None,
        timing: Timing | None = None,
    ) -> None:
        """Validate the announcement; nothing touches the network until `start`.

        ``timing`` supplies the record lifetime and the lookup and close
        timeouts (``Timing()``'s defaults when None).

        Raises:
            ValueError: ``host`` is not an IP literal, ``port`` is out of
                range, or ``cluster``/``member_uuid`` cannot be announced.
        """
        _check_uuid(member_uuid)
        _check_cluster(cluster)
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self._cluster = cluster
        self._uuid = member_uuid
        self._host = _parse_host(host)
        self._port = port
        self._on_change = on_change
        self._timing = timing or Timing()
        self._home: list[_IPNetwork] = []  # set by start(); read on zeroconf's loop
        self._name = f"{member_uuid}.{SERVICE_TYPE}"
        # Reentrant: a future that is already done runs its done-callback
        # (which takes the lock) inside add_done_callback, under the lock.
        self._lock = threading.RLock()
        # All below guarded by _lock.
        self._started = False
        self._closed = False
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._browsed: set[str] = set()  # service names the browser reports present
        self._peers: dict[str, DiscoveredPeer] = {}  # service name -> peer of our cluster
        self._ignored: set[str] = set()  # service names already logged as foreign

    # -- public API ---------------------------------------------------------

    def start(self) -> None:
        """Register our service and start browsing; returns without waiting.

        The name-uniqueness probing and announcements (about a second and a
        half) run on zeroconf's thread.

        Raises:
            RuntimeError: `start` was already called, or the instance is closed.
            OSError: the mDNS sockets could not be opened on ``host``.
        """
        with self._lock:
            if self._started or self._closed:
                raise RuntimeError("MdnsDiscovery.start() may be called once, before close()")
            self._started = True
        interfaces, ip_version = self._zeroconf_binding()
        self._home = _home_networks(self._host)
        zc = _new_zeroconf(interfaces, ip_version)
        loop = zc.loop
        assert loop is not None  # set by Zeroconf's constructor
        info = self._service_info(ip_version)
        with self._lock:
            # close() may have run while the sockets were being opened; it
            # found nothing to stop, so the new instance is ours to stop.
            closed_meanwhile = self._closed
            if not closed_meanwhile:
                self._zc = zc
                self._track(asyncio.run_coroutine_threadsafe(self._register(zc, info), loop))
                self._browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_service_change])
        if closed_meanwhile:
            _shutdown(zc, None)

    def peers(self) -> list[DiscoveredPeer]:
        """Return the visible peers of our cluster, never ourselves, sorted by uuid."""
        with self._lock:
            return sorted(self._peers.values(), key=lambda peer: peer.uuid)

    def close(self) -> None:
        """Send goodbyes and stop zeroconf; idempotent, bounded by a few seconds.

        If zeroconf's threads do not stop in time (a blocked ``on_change``)
        a warning is logged and the daemon threads are left behind.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            zc, browser = self._zc, self._browser
            pending = list(self._pending)
            self._peers.clear()
        for future in pending:
            # Outstanding resolves would otherwise hold zeroconf's loop
            # shutdown for up to its task timeout.
            future.cancel()
        if zc is None:
            return
        worker = threading.Thread(
            target=_shutdown, args=(zc, browser), name="peergrid-mdns-close", daemon=True
        )
        worker.start()
        worker.join(self._timing.mdns_close_timeout)
        if worker.is_alive():
            log.warning(
                "mDNS shutdown did not finish in %.1f s; leaving it behind", self._timing.mdns_close_timeout
            )

    # -- announcing ---------------------------------------------------------

    def _zeroconf_binding(self) -> tuple[_Interfaces, IPVersion]:
        """Choose the interfaces and IP version zeroconf binds to."""
        host = self._host
        if host.is_unspecified:
            version = IPVersion.V4Only if host.version == 4 else IPVersion.All
            return InterfaceChoice.All, version
        # Bind to the member's own interface only: announcing on interfaces the
        # gRPC server does not listen on would hand peers unreachable addresses.
        version = IPVersion.V4Only if host.version == 4 else IPVersion.V6Only
        return [str(host)], version

    def _service_info(self, ip_version: IPVersion) -> ServiceInfo:
        """Build the record set we announce."""
        host = self._host
        addresses = _interface_addresses(ip_version) if host.is_unspecified else [str(host)]
        return ServiceInfo(
            SERVICE_TYPE,
            self._name,
            port=self._port,
            properties={"cluster": self._cluster, "uuid": self._uuid, "port": str(self._port)},
            # One host name per member, so two members on one machine never
            # contend for the same address records.
            server=f"{self._uuid}.local.",
            host_ttl=round(self._timing.mdns_record_ttl),
            other_ttl=round(self._timing.mdns_record_ttl),
            parsed_addresses=addresses,
        )

    async def _register(self, zc: Zeroconf, info: ServiceInfo) -> None:
        """Probe for our name and announce it (runs on zeroconf's loop)."""
        try:
            await zc.async_register_service(info)
        except NonUniqueNameException:
            log.warning(
                "another host already answers for mDNS name %s; this member is not announced",
                self._name,
            )
        except Exception:
            # Nothing awaits this future: an error not logged here is lost.
            log.exception("registering mDNS service %s failed", self._name)

    # -- browsing -----------------------------------------------------------

    def _on_service_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Browser-thread handler; its keyword names are fixed by zeroconf."""
        del service_type  # we browse one type only
        try:
            if state_change is ServiceStateChange.Removed:
                self._forget(name)
            else:
                self._schedule_resolve(zeroconf, name)
        except Exception:
            # An exception here would end zeroconf's browser thread.
            log.exception("handling mDNS %s of %s failed", state_change.name, name)

    def _schedule_resolve(self, zc: Zeroconf, name: str) -> None:
        """Resolve ``name`` on zeroconf's loop without blocking this thread."""
        loop = zc.loop
        if name == self._name:
            return  # our own announcement, heard back
        with self._lock:
            if self._closed or loop is None or loop.is_closed():
                return
            self._browsed.add(name)
            self._track(asyncio.run_coroutine_threadsafe(self._resolve(zc, name), loop))

    def _track(self, future: concurrent.futures.Future[None]) -> None:
        """Remember a coroutine running on zeroconf's loop so close() can cancel it."""
        self._pending.add(future)
        future.add_done_callback(self._untrack)

    def _untrack(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    async def _resolve(self, zc: Zeroconf, name: str) -> None:
        """Fetch a service's records and update the peer table (zeroconf's loop)."""
        try:
            info = await _request(zc, name, round(self._timing.mdns_resolve_timeout * 1000))
            if info is None:
                log.debug("mDNS service %s did not resolve; waiting for the next update", name)
                return
            self._learn(name, info)
        except Exception:
            # Nothing awaits this future: an error not logged here is lost.
            log.exception("resolving mDNS service %s failed", name)

    def _learn(self, name: str, info: ServiceInfo) -> None:
        """Record a resolved service, or log why it is not a peer."""
        if name == self._name:
            return
        props = info.decoded_properties
        uuid, cluster = props.get("uuid"), props.get("cluster")
        port = info.port or _int_or_none(props.get("port"))
        if not uuid or cluster is None or port is None:
            log.debug("ignoring mDNS service %s: incomplete announcement %r", name, props)
            return
        if uuid == self._uuid:
            return
        address = _pick_address(info.parsed_addresses(), self._host, self._home, port)
        if address is None:
            log.debug("ignoring mDNS service %s: no usable address", name)
            return
        if cluster != self._cluster:
            self._log_foreign(name, uuid, address, cluster)
            return
        self._update(name, DiscoveredPeer(uuid=uuid, address=address, cluster=cluster))

    def _log_foreign(self, name: str, uuid: str, address: str, cluster: str) -> None:
        """Log a member of another cluster once per service name."""
        with self._lock:
            if name in self._ignored:
                return
            self._ignored.add(name)
        log.info(
            "ignoring mDNS peer %s at %s: it announces cluster %r, this member is in %r",
            uuid,
            address,
            cluster,
            self._cluster,
        )

    def _update(self, name: str, peer: DiscoveredPeer) -> None:
        with self._lock:
            # A goodbye may have arrived while the records were being fetched.
            if self._closed or name not in self._browsed or self._peers.get(name) == peer:
                return
            self._peers[name] = peer
        log.debug("mDNS peer %s at %s is visible", peer.uuid, peer.address)
        self._notify()

    def _forget(self, name: str) -> None:
        with self._lock:
            self._browsed.discard(name)
            peer = self._peers.pop(name, None)
        if peer is None:
            return
        log.debug("mDNS peer %s at %s went away", peer.uuid, peer.address)
        self._notify()

    def _notify(self) -> None:
        """Call on_change, which must never raise into zeroconf's threads."""
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            log.exception("mDNS on_change callback raised")


# -- helpers ----------------------------------------------------------------


def _new_zeroconf(interfaces: _Interfaces, ip_version: IPVersion) -> Zeroconf:
    """Create a Zeroconf that always runs its own loop thread.

    Zeroconf attaches to the caller's event loop when one is running, and its
    blocking API (close, unregister) then refuses to block that loop, which
    would skip our goodbyes. Building it on a helper thread, where no loop
    runs, gives it a loop thread of its own whoever calls `start`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return Zeroconf(interfaces=interfaces, ip_version=ip_version)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="peergrid-mdns") as pool:
        return pool.submit(Zeroconf, interfaces=interfaces, ip_version=ip_version).result()


def _shutdown(zc: Zeroconf, browser: ServiceBrowser | None) -> None:
    """Stop browsing, send goodbyes and close zeroconf (on a worker thread)."""
    try:
        if browser is not None:
            browser.cancel()
        zc.close()
    except Exception:
        # close() must not raise: the member is going away regardless.
        log.exception("closing zeroconf failed")


async def _request(zc: Zeroconf, name: str, timeout_ms: int) -> AsyncServiceInfo | None:
    """Return the service's records, from cache or the network, or None."""
    for _ in range(_RESOLVE_ATTEMPTS):
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if await info.async_request(zc, timeout_ms):
            return info
    return None


def _local_interfaces() -> list[_IPInterface]:
    """This host's interface addresses with their networks, as zeroconf's ifaddr sees them."""
    found: list[_IPInterface] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            # IPv6 entries are (address, flowinfo, scope_id) tuples.
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                found.append(ipaddress.ip_interface(f"{raw}/{ip.network_prefix}"))
            except ValueError:
                continue
    return found


def _interface_addresses(ip_version: IPVersion) -> list[str]:
    """Addresses to announce for a wildcard bind: every interface's, loopback last resort."""
    found = [i.ip for i in _local_interfaces() if _version_allowed(i.ip, ip_version)]
    # Link-local IPv6 needs a scope id that a host:port string cannot carry.
    usable = [a for a in found if not a.is_loopback and not _is_scoped(a)]
    chosen = usable or [a for a in found if a.is_loopback]
    return sorted({str(a) for a in chosen})


def _home_networks(own_host: _IPAddress) -> list[_IPNetwork]:
    """The networks a peer's address should be on for us to reach it directly.

    Bound to one address, that address's networks; bound to a wildcard, all.
    """
    networks = [i.network for i in _local_interfaces()]
    if own_host.is_unspecified:
        return networks
    return [n for n in networks if own_host in n] or networks


def _version_allowed(addr: _IPAddress, ip_version: IPVersion) -> bool:
    if ip_version is IPVersion.V4Only:
        return addr.version == 4
    if ip_version is IPVersion.V6Only:
        return addr.version == 6
    return True


def _is_scoped(addr: _IPAddress) -> bool:
    return addr.version == 6 and addr.is_link_local


def _pick_address(
    candidates: list[str],
    own_host: _IPAddress,
    home: list[_IPNetwork],
    port: int,
) -> str | None:
    """Choose which announced address to dial, formatted as ``host:port``.

    A peer bound to a wildcard announces every interface address, and
    zeroconf does not say which interface a record arrived on. We prefer,
    in order: non-loopback (a peer on our own host announces only loopback
    if that is all it has), an address on one of our home networks, our
    own family; ties go to the lowest address so every member picks alike.
    A multi-homed peer whose networks we share more than one of may still
    be dialled on the wrong one: such hosts should bind one address.
    """
    parsed: list[_IPAddress] = []
    for text in candidates:
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if not _is_scoped(addr):
            parsed.append(addr)
    if not (own_host.is_unspecified and own_host.version == 6):
        # Only a dual-stack ("::") server can dial the other family.
        parsed = [a for a in parsed if a.version == own_host.version]
    if not parsed:
        return None

    def preference(addr: _IPAddress) -> tuple[bool, bool, bool, bytes]:
        off_home = not any(addr in net for net in home if net.version == addr.version)
        return (addr.is_loopback, off_home, addr.version != own_host.version, addr.packed)

    best = min(parsed, key=preference)
    return f"[{best}]:{port}" if best.version == 6 else f"{best}:{port}"


def _parse_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address literal, got {host!r}") from None


def _check_uuid(member_uuid: str) -> None:
    """The uuid becomes a DNS label (instance and host name): keep it one."""
    encoded = member_uuid.encode()
    if not member_uuid or len(encoded) > _MAX_LABEL or "." in member_uuid:
        raise ValueError(f"member_uuid must be 1..{_MAX_LABEL} bytes without dots")


def _check_cluster(cluster: str) -> None:
    # One TXT string holds "cluster=<name>" and is limited to 255 bytes.
    if not cluster or len(f"cluster={cluster}".encode()) > 255:
        raise ValueError("cluster must be a non-empty name of at most 247 bytes")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
