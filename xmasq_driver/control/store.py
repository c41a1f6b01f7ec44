"""Cluster state in etcd: the view of every record (`ClusterView`) and the reads and writes of
one host (`ClusterStore`). The keys and values are layout.py's.

Writes that must be unique (VNI, address) use create (compare-and-swap on absence).

Each host is the authority for its own records (its memberships, endpoints, pool holds and
address claims, and the network and VNI records of networks it has): records.py re-asserts
them when etcd lacks them or holds a stale copy (`assert_key`), and removes its own records
that it no longer has. A record that someone else now owns is a `Conflict`: reported, never
overwritten.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import BackendError, DriverError
from .kv import KV, Changes, Compacted
from .layout import (
    ADDRESSES,
    ENDPOINTS,
    HOLDERS,
    HOSTS,
    MEMBER,
    MEMBERS,
    NETWORKS,
    PREFIX,
    VNIS,
    Kind,
    parse,
    pool_key,
)
from .model import VNI_FIRST, VNI_LAST, Address, ClusterNetwork, HostRecord, RemoteEndpoint

T = TypeVar("T")
Owned = tuple[Kind, str, str]  # (kind, network or pool key, ip or "")


@dataclass
class ClusterView:
    """Every record under PREFIX as of `revision`: read in one range read (`parse`), then kept
    current by applying watch events (`apply`). `owned` indexes each host's records (members,
    endpoints, holders, addresses), so a host finds its own without scanning the cluster."""

    revision: int
    hosts: dict[str, str] = field(default_factory=dict)  # host -> underlay ip
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)  # host -> its WireGuard (public key, port)
    networks: dict[str, ClusterNetwork | str] = field(default_factory=dict)  # key -> record (str: not xmasq's)
    vnis: dict[str, str] = field(default_factory=dict)  # vni -> network key
    members: dict[str, set[str]] = field(default_factory=dict)  # network key -> hosts
    endpoints: dict[str, dict[str, RemoteEndpoint | str]] = field(default_factory=dict)  # key -> ip -> record
    holders: dict[str, dict[str, str]] = field(default_factory=dict)  # pool key -> host -> holds
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)  # pool key -> ip -> owner
    owned: dict[str, set[Owned]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, items: dict[str, str], revision: int) -> ClusterView:
        view = cls(revision)
        for key, value in items.items():
            view.apply(key, value)
        return view

    def apply(self, key: str, value: str | None) -> tuple[Kind, tuple[str, ...]] | None:
        """Record key=value (None: deleted); returns the key's kind and parts (None: not xmasq's)."""
        parsed = parse(key)
        if parsed is None:
            return None
        kind, (a, *rest) = parsed
        b = rest[0] if rest else ""
        if kind is HOSTS:
            host = None if value is None else HOSTS.decode(value)
            ours = host if isinstance(host, HostRecord) else None
            _put(self.hosts, a, ours.ip if ours else None)
            _put(self.keys, a, (ours.key, ours.port) if ours and ours.key else None)
        elif kind is NETWORKS:
            _put(self.networks, a, None if value is None else NETWORKS.decode(value))
        elif kind is VNIS:
            _put(self.vnis, a, value)
        elif kind is MEMBERS:
            hosts = self.members.setdefault(a, set())
            (hosts.discard if value is None else hosts.add)(b)
            self._own(b, (MEMBERS, a, ""), value is not None)
            if not hosts:
                del self.members[a]
        elif kind is ENDPOINTS:
            records = self.endpoints.setdefault(a, {})
            old = records.get(b)
            if isinstance(old, RemoteEndpoint):
                self._own(old.host, (ENDPOINTS, a, b), False)
            record = None if value is None else ENDPOINTS.decode(value)
            if isinstance(record, RemoteEndpoint):
                self._own(record.host, (ENDPOINTS, a, b), True)
            _put(records, b, record)
            if not records:
                del self.endpoints[a]
        elif kind is HOLDERS:
            _put(self.holders.setdefault(a, {}), b, value)
            self._own(b, (HOLDERS, a, ""), value is not None)
            if not self.holders[a]:
                del self.holders[a]
        elif kind is ADDRESSES:
            claims = self.addresses.setdefault(a, {})
            if b in claims:
                self._own(claims[b], (ADDRESSES, a, b), False)
            if value is not None:
                self._own(value, (ADDRESSES, a, b), True)
            _put(claims, b, value)
            if not claims:
                del self.addresses[a]
        return parsed

    def _own(self, host: str, record: Owned, present: bool) -> None:
        if present:
            self.owned.setdefault(host, set()).add(record)
        elif record in self.owned.get(host, ()):
            self.owned[host].discard(record)
            if not self.owned[host]:
                del self.owned[host]

    def owned_by(self, host: str, kind: Kind) -> list[tuple[str, str]]:
        """(network or pool key, ip) of each of `host`'s records of one kind."""
        return [(a, b) for k, a, b in self.owned.get(host, ()) if k is kind]


def _put(table: dict[str, T], key: str, value: T | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


@dataclass(frozen=True)
class Conflict:
    """A record this host owns that etcd shows as someone else's."""

    kind: str  # network, vni, endpoint, address
    key: str
    ours: str
    theirs: str


@dataclass
class Reassertion:
    """What one pass of re-asserting a host's records did."""

    repaired: int = 0  # records written back (missing or stale)
    removed: int = 0  # own records etcd had that this host no longer has
    conflicts: list[Conflict] = field(default_factory=list)

    def add(self, other: Reassertion) -> None:
        self.repaired += other.repaired
        self.removed += other.removed
        self.conflicts += other.conflicts


class ClusterStore:
    def __init__(self, kv: KV, host: str):
        self.kv = kv
        self.host = host

    # -- hosts ------------------------------------------------------------
    def register_host(self, record: HostRecord, lease: int) -> None:
        self.kv.put(HOSTS.key(self.host), HOSTS.encode(record), lease=lease)

    def keep_registered(self, record: HostRecord, ttl: int, lease: int) -> tuple[int, bool]:
        """Renew this host's lease; if it expired (or there is none yet) register the host on a new
        one. Returns (lease, whether newly registered)."""
        if lease and self.kv.keepalive(lease):
            return lease, False
        lease = self.kv.grant(ttl)
        self.register_host(record, lease)
        return lease, True

    def hosts(self) -> tuple[dict[str, str], int]:
        """(host -> underlay ip of every live host, revision read at)."""
        raw, revision = self.kv.list_prefix(HOSTS.prefix())
        view = ClusterView.parse(raw, revision)
        return view.hosts, revision

    def view(self, revision: int = 0) -> ClusterView:
        """The cluster as of `revision` (0, or one etcd has compacted away: the latest)."""
        try:
            return ClusterView.parse(*self.kv.list_prefix(PREFIX, revision))
        except Compacted:
            return ClusterView.parse(*self.kv.list_prefix(PREFIX))

    def changes(self, revision: int, timeout: float, fresh: bool = False) -> Changes:
        """The changes to the cluster from `revision` on (waits up to `timeout` for one); `fresh`:
        on a new watch connection."""
        return self.kv.watch(PREFIX, revision, timeout, fresh)

    # -- re-asserting this host's records ---------------------------------
    def assert_key(self, key: str, value: str) -> tuple[bool, str | None]:
        """Write key=value unless it holds something else: (written, what it holds instead,
        None once it holds value)."""
        for _ in range(2):  # a key deleted between create and get: create again
            if self.kv.create(key, value):
                return True, None
            current = self.kv.get(key)
            if current is not None:
                return False, None if current == value else current
        return False, self.kv.get(key)

    def delete_if(self, key: str, holds: Callable[[str], bool]) -> bool:
        """Delete key if its current value passes `holds`; True if deleted."""
        current = self.kv.get(key)
        if current is None or not holds(current):
            return False
        self.kv.delete(key)
        return True

    # -- networks ---------------------------------------------------------
    def get_network(self, net: str) -> ClusterNetwork | None:
        raw = self.kv.get(NETWORKS.key(net))
        record = NETWORKS.decode(raw) if raw else None
        if isinstance(record, str):
            raise DriverError(f"etcd's record of network {net} is not xmasq's: {record[:100]!r}")
        return record

    def claim_vni(self, net: str, vni: int | None) -> int:
        """Claim `vni` (or the lowest free one) for network `net`; idempotent."""
        if vni is not None:
            _, owner = self.assert_key(VNIS.key(vni), net)
            if owner is None:
                return vni
            raise DriverError(f"VNI {vni} is already used by network {owner}")
        used = self._vnis()
        for candidate, owner in used.items():
            if owner == net:
                return candidate
        for candidate in range(VNI_FIRST, VNI_LAST + 1):
            if candidate not in used and self.kv.create(VNIS.key(candidate), net):
                return candidate
        raise DriverError("no free VNI left")

    def _vnis(self) -> dict[int, str]:
        """Every claimed VNI -> the network that holds it."""
        items, revision = self.kv.list_prefix(VNIS.prefix())
        return {int(vni): net for vni, net in ClusterView.parse(items, revision).vnis.items() if vni.isdigit()}

    def _has_members(self, net: str) -> bool:
        return bool(self.kv.get_prefix(MEMBERS.prefix(net)))

    def release_if_unused(self, net: str) -> bool:
        """Forget network `net` (its VNI, its record) unless some host still has it."""
        if self._has_members(net):
            return False
        vnis = [VNIS.key(vni) for vni, owner in self._vnis().items() if owner == net]
        self.kv.txn({}, [*vnis, NETWORKS.key(net)])
        return True

    def join_network(self, net: str, record: ClusterNetwork | None = None) -> None:
        """This host's membership, and with `record` the network's record too (one transaction:
        a network is never in etcd without a member, nor a member without its network)."""
        puts = {MEMBERS.key(net, self.host): MEMBER}
        if record is not None:
            puts[NETWORKS.key(net)] = NETWORKS.encode(record)
        self.kv.txn(puts)

    def leave_network(self, net: str, vni: int) -> bool:
        """Drop this host's membership; the last member removes the network. True if last."""
        self.kv.delete(MEMBERS.key(net, self.host))
        if self._has_members(net):
            return False
        vni_key = VNIS.key(vni)
        vni_record = [vni_key] if self.kv.get(vni_key) == net else []
        self.kv.txn({}, [ENDPOINTS.prefix(net), NETWORKS.key(net), *vni_record])
        return True

    def forget_host(self) -> int:
        """Remove every record of this store's host, which is gone for good (its driver will
        never clean up): memberships (the last member's network goes), endpoints, addresses,
        pool holds. Refused while the host is registered. Returns how many keys went."""
        items, revision = self.kv.list_prefix(PREFIX)
        if HOSTS.key(self.host) in items:
            raise BackendError(f"host {self.host} is registered (alive): stop its driver first")
        view = ClusterView.parse(items, revision)
        for key, _ in view.owned_by(self.host, MEMBERS):
            net = view.networks.get(key)
            self.leave_network(key, net.vni if isinstance(net, ClusterNetwork) else 0)
        for pool, _ in view.owned_by(self.host, HOLDERS):
            self.kv.delete(HOLDERS.key(pool, self.host))
            self.free_if_unheld(pool)
        for key, ip in view.owned_by(self.host, ENDPOINTS):
            self.kv.delete(ENDPOINTS.key(key, ip))
        for pool, ip in view.owned_by(self.host, ADDRESSES):
            self.kv.delete(ADDRESSES.key(pool, ip))
        return len(items) - len(self.kv.get_prefix(PREFIX))

    # -- endpoints --------------------------------------------------------
    def put_endpoint(self, net: str, ips: list[str], record: RemoteEndpoint) -> None:
        """The record under each of the endpoint's addresses (one transaction: a dual-stack endpoint
        is never in etcd by one address only)."""
        self.kv.txn({ENDPOINTS.key(net, ip): ENDPOINTS.encode(record) for ip in ips})

    def delete_endpoint(self, net: str, ips: list[str]) -> None:
        self.kv.txn({}, [ENDPOINTS.key(net, ip) for ip in ips])

    def get_endpoint(self, net: str, ip: str) -> RemoteEndpoint | None:
        """The record of address `ip` on network `net`, if xmasq wrote one."""
        raw = self.kv.get(ENDPOINTS.key(net, ip))
        record = ENDPOINTS.decode(raw) if raw else None
        return record if isinstance(record, RemoteEndpoint) else None

    # -- IPAM -------------------------------------------------------------
    def hold_pool(self, pool_id: str) -> None:
        key = HOLDERS.key(pool_key(pool_id), self.host)
        self.kv.put(key, HOLDERS.encode(int(self.kv.get(key) or 0) + 1))

    def set_holds(self, pool: str, holds: int) -> None:
        """This host's holds of a pool (by its key) as this host counts them."""
        self.kv.put(HOLDERS.key(pool, self.host), HOLDERS.encode(holds))

    def release_pool(self, pool_id: str) -> bool:
        """Drop one hold of this host; the last hold in the cluster frees every address."""
        key = HOLDERS.key(pool_key(pool_id), self.host)
        count = int(self.kv.get(key) or 0) - 1
        if count > 0:
            self.kv.put(key, HOLDERS.encode(count))
            return False
        self.kv.delete(key)
        return self.free_if_unheld(pool_key(pool_id))

    def free_if_unheld(self, pool: str) -> bool:
        """Free every address of the pool (by its key) once no host holds it."""
        if self.kv.get_prefix(HOLDERS.prefix(pool)):
            return False
        self.kv.txn({}, [ADDRESSES.prefix(pool)])
        return True

    def pool_held(self, pool_id: str) -> bool:
        return bool(self.kv.get_prefix(HOLDERS.prefix(pool_key(pool_id))))

    def claim_address(self, pool_id: str, ip: Address, owner: str) -> bool:
        return self.kv.create(ADDRESSES.key(pool_key(pool_id), str(ip)), owner)

    def address_owner(self, pool_id: str, ip: Address) -> str | None:
        return self.kv.get(ADDRESSES.key(pool_key(pool_id), str(ip)))

    def claimed_addresses(self, pool_id: str) -> set[Address]:
        items, revision = self.kv.list_prefix(ADDRESSES.prefix(pool_key(pool_id)))
        claims = ClusterView.parse(items, revision).addresses.get(pool_key(pool_id), {})
        return {ipaddress.ip_address(ip) for ip in claims}

    def release_address(self, pool_id: str, ip: Address) -> None:
        self.kv.delete(ADDRESSES.key(pool_key(pool_id), str(ip)))
