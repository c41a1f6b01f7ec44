"""Cluster state in etcd: networks, their VNIs and members, endpoints, IPAM.

Layout (all under /xmasq/v1/, values are JSON or plain strings):
  hosts/<host>                 {ip}  on a lease: present while the host's driver is alive
  networks/<net>               {vni, subnet, gateway, mtu, internal, options}
  members/<net>/<host>         "1" while <host> has the network
  vnis/<vni>                   <net>            (unique: claimed with create)
  endpoints/<net>/<ip>         {host, mac, endpoint}
  ipam/holders/<pool>/<host>   how many times <host> holds the pool
  ipam/addresses/<pool>/<ip>   "gateway" or the host that holds the address
Writes that must be unique (VNI, address) use create (compare-and-swap on absence).

Each host is the authority for its own records (its memberships, endpoints, pool holds and
address claims, and the network and VNI records of networks it has): it re-asserts them
when etcd lacks them or holds a stale copy (`assert_key`), and removes its own records that
it no longer has. A record that someone else now owns is a `Conflict`: reported, never
overwritten.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import BackendError, DriverError
from .kv import KV, Changes
from .model import VNI_FIRST, VNI_LAST, Address, ClusterNetwork, RemoteEndpoint

T = TypeVar("T")
PREFIX = "/xmasq/v1/"
GATEWAY_OWNER = "gateway"


def pool_key(pool_id: str) -> str:
    return pool_id.replace("/", "_")


def pool_id_of(key: str) -> str:
    """The inverse of pool_key: only the subnet and range (before any "@space") had slashes."""
    head, at, space = key.partition("@")
    return head.replace("_", "/") + at + space


class Owned:
    """The kinds of record that ClusterView.owned indexes by the host they name as theirs."""

    ENDPOINT, MEMBER, HOLDER, ADDRESS = "endpoint", "member", "holder", "address"


@dataclass
class ClusterView:
    """Every record under PREFIX as of `revision`: read in one range read (`parse`), then kept
    current by applying watch events (`apply`). `owned` indexes each host's records, so a host
    finds its own without scanning the cluster."""

    revision: int
    hosts: dict[str, str] = field(default_factory=dict)  # host -> underlay ip
    networks: dict[str, ClusterNetwork | str] = field(default_factory=dict)  # key -> record (str: not xmasq's)
    vnis: dict[str, str] = field(default_factory=dict)  # vni -> network key
    members: dict[str, set[str]] = field(default_factory=dict)  # network key -> hosts
    endpoints: dict[str, dict[str, RemoteEndpoint | str]] = field(default_factory=dict)  # key -> ip -> record
    holders: dict[str, dict[str, str]] = field(default_factory=dict)  # pool key -> host -> holds
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)  # pool key -> ip -> owner
    # host -> {(kind, network or pool key, ip or "")}: derived from the records above
    owned: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, items: dict[str, str], revision: int) -> ClusterView:
        view = cls(revision)
        for key, value in items.items():
            view.apply(key, value)
        return view

    def apply(self, key: str, value: str | None) -> tuple[str, ...]:
        """Record key=value (None: deleted); returns the key's parts after PREFIX."""
        kind, *rest = parts = tuple(key[len(PREFIX) :].split("/"))
        if kind == "hosts" and len(rest) == 1:
            self.hosts.pop(rest[0], None)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if value is not None:
                    self.hosts[rest[0]] = json.loads(value)["ip"]
        elif kind == "networks" and len(rest) == 1:
            _put(self.networks, rest[0], None if value is None else ClusterNetwork.decode(value))
        elif kind == "vnis" and len(rest) == 1:
            _put(self.vnis, rest[0], value)
        elif kind == "members" and len(rest) == 2:
            hosts = self.members.setdefault(rest[0], set())
            (hosts.discard if value is None else hosts.add)(rest[1])
            self._own(rest[1], (Owned.MEMBER, rest[0], ""), value is not None)
            if not hosts:
                del self.members[rest[0]]
        elif kind == "endpoints" and len(rest) == 2:
            records = self.endpoints.setdefault(rest[0], {})
            old = records.get(rest[1])
            if isinstance(old, RemoteEndpoint):
                self._own(old.host, (Owned.ENDPOINT, rest[0], rest[1]), False)
            record = None if value is None else RemoteEndpoint.decode(value)
            if isinstance(record, RemoteEndpoint):
                self._own(record.host, (Owned.ENDPOINT, rest[0], rest[1]), True)
            _put(records, rest[1], record)
            if not records:
                del self.endpoints[rest[0]]
        elif kind == "ipam" and len(rest) == 3 and rest[0] == "holders":
            _put(self.holders.setdefault(rest[1], {}), rest[2], value)
            self._own(rest[2], (Owned.HOLDER, rest[1], ""), value is not None)
            if not self.holders[rest[1]]:
                del self.holders[rest[1]]
        elif kind == "ipam" and len(rest) == 3 and rest[0] == "addresses":
            claims = self.addresses.setdefault(rest[1], {})
            if rest[2] in claims:
                self._own(claims[rest[2]], (Owned.ADDRESS, rest[1], rest[2]), False)
            if value is not None:
                self._own(value, (Owned.ADDRESS, rest[1], rest[2]), True)
            _put(claims, rest[2], value)
            if not claims:
                del self.addresses[rest[1]]
        return parts

    def _own(self, host: str, record: tuple[str, str, str], present: bool) -> None:
        if present:
            self.owned.setdefault(host, set()).add(record)
        elif record in self.owned.get(host, ()):
            self.owned[host].discard(record)
            if not self.owned[host]:
                del self.owned[host]

    def owned_by(self, host: str, kind: str) -> list[tuple[str, str]]:
        """(network or pool key, ip) of each of `host`'s records of one kind."""
        return [(a, b) for k, a, b in self.owned.get(host, ()) if k == kind]


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


class ClusterStore:
    def __init__(self, kv: KV, host: str):
        self.kv = kv
        self.host = host

    # -- hosts ------------------------------------------------------------
    def register_host(self, ip: str, lease: int) -> None:
        self.kv.put(f"{PREFIX}hosts/{self.host}", json.dumps({"ip": ip}), lease=lease)

    def keep_registered(self, ip: str, ttl: int, lease: int) -> tuple[int, bool]:
        """Renew this host's lease; if it expired (or there is none yet) register the host on a new
        one. Returns (lease, whether newly registered)."""
        if lease and self.kv.keepalive(lease):
            return lease, False
        lease = self.kv.grant(ttl)
        self.register_host(ip, lease)
        return lease, True

    def hosts(self) -> tuple[dict[str, str], int]:
        """(host -> underlay ip of every live host, revision read at)."""
        raw, revision = self.kv.list_prefix(f"{PREFIX}hosts/")
        return {k.rsplit("/", 1)[1]: json.loads(v)["ip"] for k, v in raw.items()}, revision

    def view(self) -> ClusterView:
        return ClusterView.parse(*self.kv.list_prefix(PREFIX))

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

    @staticmethod
    def network_key(net: str) -> str:
        return f"{PREFIX}networks/{net}"

    @staticmethod
    def vni_key(vni: int) -> str:
        return f"{PREFIX}vnis/{vni}"

    def endpoint_key(self, net: str, ip: str) -> str:
        return f"{PREFIX}endpoints/{net}/{ip}"

    def holder_key(self, pool: str) -> str:
        """The key of this host's holds of a pool (by its key, see pool_key)."""
        return f"{PREFIX}ipam/holders/{pool}/{self.host}"

    @staticmethod
    def address_key(pool: str, ip: str) -> str:
        return f"{PREFIX}ipam/addresses/{pool}/{ip}"

    def changes(self, revision: int, timeout: float) -> Changes:
        """The changes to the cluster from `revision` on (waits up to `timeout` for one)."""
        return self.kv.watch(PREFIX, revision, timeout)

    # -- networks ---------------------------------------------------------
    def get_network(self, net: str) -> ClusterNetwork | None:
        raw = self.kv.get(self.network_key(net))
        record = ClusterNetwork.decode(raw) if raw else None
        if isinstance(record, str):
            raise DriverError(f"etcd's record of network {net} is not xmasq's: {record[:100]!r}")
        return record

    def claim_vni(self, net: str, vni: int | None) -> int:
        """Claim `vni` (or the lowest free one) for network `net`; idempotent."""
        if vni is not None:
            _, owner = self.assert_key(self.vni_key(vni), net)
            if owner is None:
                return vni
            raise DriverError(f"VNI {vni} is already used by network {owner}")
        used = self.kv.get_prefix(f"{PREFIX}vnis/")
        for key, owner in used.items():
            if owner == net:
                return int(key.rsplit("/", 1)[1])
        taken = {int(k.rsplit("/", 1)[1]) for k in used}
        for candidate in range(VNI_FIRST, VNI_LAST + 1):
            if candidate not in taken and self.kv.create(f"{PREFIX}vnis/{candidate}", net):
                return candidate
        raise DriverError("no free VNI left")

    def release_if_unused(self, net: str) -> bool:
        """Forget network `net` (its VNI, its record) unless some host still has it."""
        if self.kv.get_prefix(f"{PREFIX}members/{net}/"):
            return False
        vnis = [key for key, owner in self.kv.get_prefix(f"{PREFIX}vnis/").items() if owner == net]
        self.kv.txn({}, [*vnis, self.network_key(net)])
        return True

    def join_network(self, net: str, record: ClusterNetwork | None = None) -> None:
        """This host's membership, and with `record` the network's record too (one transaction:
        a network is never in etcd without a member, nor a member without its network)."""
        self.kv.txn({self._member_key(net): "1", **({self.network_key(net): record.encode()} if record else {})})

    def _member_key(self, net: str) -> str:
        return f"{PREFIX}members/{net}/{self.host}"

    def leave_network(self, net: str, vni: int) -> bool:
        """Drop this host's membership; the last member removes the network. True if last."""
        self.kv.delete(self._member_key(net))
        if self.kv.get_prefix(f"{PREFIX}members/{net}/"):
            return False
        vni_record = [self.vni_key(vni)] if self.kv.get(self.vni_key(vni)) == net else []
        self.kv.txn({}, [f"{PREFIX}endpoints/{net}/", self.network_key(net), *vni_record])
        return True

    def forget_host(self) -> int:
        """Remove every record of this store's host, which is gone for good (its driver will
        never clean up): memberships (the last member's network goes), endpoints, addresses,
        pool holds. Refused while the host is registered. Returns how many keys went."""
        items, revision = self.kv.list_prefix(PREFIX)
        if f"{PREFIX}hosts/{self.host}" in items:
            raise BackendError(f"host {self.host} is registered (alive): stop its driver first")
        view = ClusterView.parse(items, revision)
        for key, members in view.members.items():
            if self.host in members:
                net = view.networks.get(key)
                self.leave_network(key, net.vni if isinstance(net, ClusterNetwork) else 0)
        for pool, holders in view.holders.items():
            if self.host in holders:
                self.kv.delete(self.holder_key(pool))
                self.free_if_unheld(pool)
        for key, records in view.endpoints.items():
            for ip, record in records.items():
                if isinstance(record, RemoteEndpoint) and record.host == self.host:
                    self.kv.delete(self.endpoint_key(key, ip))
        for pool, claims in view.addresses.items():
            for ip, owner in claims.items():
                if owner == self.host:
                    self.kv.delete(self.address_key(pool, ip))
        return len(items) - len(self.kv.get_prefix(PREFIX))

    # -- endpoints --------------------------------------------------------
    def put_endpoint(self, net: str, ips: list[str], record: RemoteEndpoint) -> None:
        """The record under each of the endpoint's addresses (one transaction: a dual-stack endpoint
        is never in etcd by one address only)."""
        self.kv.txn({self.endpoint_key(net, ip): record.encode() for ip in ips})

    def delete_endpoint(self, net: str, ips: list[str]) -> None:
        self.kv.txn({}, [self.endpoint_key(net, ip) for ip in ips])

    def get_endpoint(self, net: str, ip: str) -> RemoteEndpoint | None:
        """The record of address `ip` on network `net`, if xmasq wrote one."""
        raw = self.kv.get(self.endpoint_key(net, ip))
        record = RemoteEndpoint.decode(raw) if raw else None
        return record if isinstance(record, RemoteEndpoint) else None

    # -- IPAM -------------------------------------------------------------
    def hold_pool(self, pool_id: str) -> None:
        key = self.holder_key(pool_key(pool_id))
        self.kv.put(key, str(int(self.kv.get(key) or 0) + 1))

    def set_holds(self, pool: str, holds: int) -> None:
        """This host's holds of a pool (by its key) as this host counts them."""
        self.kv.put(self.holder_key(pool), str(holds))

    def release_pool(self, pool_id: str) -> bool:
        """Drop one hold of this host; the last hold in the cluster frees every address."""
        key = self.holder_key(pool_key(pool_id))
        count = int(self.kv.get(key) or 0) - 1
        if count > 0:
            self.kv.put(key, str(count))
            return False
        self.kv.delete(key)
        return self.free_if_unheld(pool_key(pool_id))

    def free_if_unheld(self, pool: str) -> bool:
        """Free every address of the pool (by its key) once no host holds it."""
        if self.kv.get_prefix(f"{PREFIX}ipam/holders/{pool}/"):
            return False
        self.kv.txn({}, [f"{PREFIX}ipam/addresses/{pool}/"])
        return True

    def pool_held(self, pool_id: str) -> bool:
        return bool(self.kv.get_prefix(f"{PREFIX}ipam/holders/{pool_key(pool_id)}/"))

    def claim_address(self, pool_id: str, ip: Address, owner: str) -> bool:
        return self.kv.create(self.address_key(pool_key(pool_id), str(ip)), owner)

    def address_owner(self, pool_id: str, ip: Address) -> str | None:
        return self.kv.get(self.address_key(pool_key(pool_id), str(ip)))

    def claimed_addresses(self, pool_id: str) -> set[Address]:
        items = self.kv.get_prefix(f"{PREFIX}ipam/addresses/{pool_key(pool_id)}/")
        return {ipaddress.ip_address(k.rsplit("/", 1)[1]) for k in items}

    def release_address(self, pool_id: str, ip: Address) -> None:
        self.kv.delete(self.address_key(pool_key(pool_id), str(ip)))
