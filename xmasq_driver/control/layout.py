"""The etcd layout: every key xmasq writes and what its value holds, one `Kind` per record kind.
Nothing else spells a key: the store, the view, the reconciler, lab/, bench/ and the tests build
and parse them here.

  hosts/<host>                 HostRecord {ip}, on a lease: present while the host's driver is alive
  networks/<net>               ClusterNetwork {vni, subnet, gateway, mtu, internal, options, ...}
  members/<net>/<host>         "1" while <host> has the network
  vnis/<vni>                   <net>            (unique: claimed with create)
  endpoints/<net>/<ip>         RemoteEndpoint {host, mac, endpoint}
  ipam/holders/<pool>/<host>   how many times <host> holds the pool
  ipam/addresses/<pool>/<ip>   "gateway" or the host that holds the address

All under PREFIX. A new record kind (service VIPs, host keys) is one more `Kind` here and one
table in store.ClusterView. A value xmasq did not write decodes to its raw text (reported,
never used).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .model import ClusterNetwork, HostRecord, RemoteEndpoint

V = TypeVar("V")
PREFIX = "/xmasq/v1/"
GATEWAY_OWNER = "gateway"  # an address claim shared by every host of the network
MEMBER = "1"  # the value of a membership: its key says it all


@dataclass(frozen=True)
class Kind(Generic[V]):
    """One kind of record: its keys are PREFIX + path + one segment per part."""

    path: str
    parts: tuple[str, ...]  # what each segment of the key names
    encode: Callable[[V], str]
    decode: Callable[[str], V | str]

    def key(self, *parts: str | int) -> str:
        assert len(parts) == len(self.parts), (self.path, parts)
        return f"{PREFIX}{self.path}/{'/'.join(map(str, parts))}"

    def prefix(self, *parts: str | int) -> str:
        """The prefix of every key of this kind whose leading segments are `parts`."""
        assert len(parts) < len(self.parts), (self.path, parts)
        return f"{PREFIX}{self.path}/" + "".join(f"{part}/" for part in parts)

    def parts_of(self, key: str) -> tuple[str, ...]:
        """The parts of one of this kind's keys (ValueError for any other key)."""
        parsed = parse(key)
        if parsed is None or parsed[0] is not self:
            raise ValueError(f"{key!r} is not a key of {self.path}")
        return parsed[1]


def _same(value: str) -> str:
    return value


def _count(raw: str) -> int | str:
    return int(raw) if raw.isdigit() else raw


HOSTS: Kind[HostRecord] = Kind("hosts", ("host",), HostRecord.encode, HostRecord.decode)
NETWORKS: Kind[ClusterNetwork] = Kind("networks", ("network",), ClusterNetwork.encode, ClusterNetwork.decode)
MEMBERS: Kind[str] = Kind("members", ("network", "host"), _same, _same)
VNIS: Kind[str] = Kind("vnis", ("vni",), _same, _same)
ENDPOINTS: Kind[RemoteEndpoint] = Kind("endpoints", ("network", "ip"), RemoteEndpoint.encode, RemoteEndpoint.decode)
HOLDERS: Kind[int] = Kind("ipam/holders", ("pool", "host"), str, _count)
ADDRESSES: Kind[str] = Kind("ipam/addresses", ("pool", "ip"), _same, _same)
KINDS: tuple[Kind, ...] = (HOSTS, NETWORKS, MEMBERS, VNIS, ENDPOINTS, HOLDERS, ADDRESSES)
_BY_PATH = {kind.path: kind for kind in KINDS}


def parse(key: str) -> tuple[Kind, tuple[str, ...]] | None:
    """The kind of `key` and its parts; None for a key that is none of xmasq's."""
    if not key.startswith(PREFIX):
        return None
    segments = key[len(PREFIX) :].split("/")
    for depth in (1, 2):  # "hosts/..." or "ipam/holders/..."
        kind = _BY_PATH.get("/".join(segments[:depth]))
        if kind is not None:
            parts = tuple(segments[depth:])
            return (kind, parts) if len(parts) == len(kind.parts) and all(parts) else None
    return None


def pool_key(pool_id: str) -> str:
    """A pool's id ("<subnet>[|<range>][@<space>]") as one key segment."""
    return pool_id.replace("/", "_")


def pool_id_of(key: str) -> str:
    """The inverse of pool_key: only the subnet and range (before any "@space") had slashes."""
    head, at, space = key.partition("@")
    return head.replace("_", "/") + at + space
