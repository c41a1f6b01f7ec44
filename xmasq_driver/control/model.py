"""What the driver keeps and shares, typed: one frozen dataclass per record, each with the JSON
shape it has in `state.json` or etcd (`to_json` / `from_json`), and the parsed network options.

No module below this one: records are data, backends and drivers import them. Their dict and
list fields are never changed in place (a change is a new record, `dataclasses.replace`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from .. import protocol as p
from ..config import STEER_MODES
from ..errors import DriverError

VNI_FIRST, VNI_LAST = 256, (1 << 24) - 1
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (passed to bpf/ as OUTER_LEN)
WIREGUARD_OVERHEAD = 60  # what WireGuard adds over an IPv4 underlay: IPv4 20 + UDP 8 + its header 16 + tag 16
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # network keys, IPAM spaces
NAME_RULE = "1-64 of A-Z a-z 0-9 _ . -"
# The longest prefix per IP version: a gateway and one container (IPv4 loses the network and
# broadcast addresses, IPv6 only the network's, its subnet-router anycast address).
SMALLEST_SUBNET = {4: 30, 6: 126}
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

OPT_VNI, OPT_NETWORK, OPT_FASTPATH, OPT_STEER = "xmasq.vni", "xmasq.network", "xmasq.fastpath", "xmasq.steer"
# Docker overlay's spelling (a flag: any value, even empty, turns it on) and xmasq's own (true/false).
OPT_ENCRYPTED, OPT_XMASQ_ENCRYPTED = "encrypted", "xmasq.encrypted"
# Every `-o` option a network may have; anything else is refused, never ignored.
KNOWN_OPTIONS = {
    OPT_VNI,
    OPT_NETWORK,
    OPT_FASTPATH,
    OPT_STEER,
    OPT_ENCRYPTED,
    OPT_XMASQ_ENCRYPTED,
    p.MTU,
    p.IFACE_PREFIX,
}
_IFACE_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,10}$")  # + Docker's index: at most 15 characters
_PROTOS = {6: "tcp", 17: "udp", 132: "sctp"}
T = TypeVar("T")


class EtcdRecord:
    """A record kept in etcd as JSON: `encode`, and `decode`, which gives back the raw text of a
    value xmasq did not write (someone else's: reported, never used)."""

    __slots__ = ()  # a subclass with slots keeps no __dict__: the view holds one per endpoint

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def encode(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls: type[T], data: dict[str, Any]) -> T:
        raise NotImplementedError

    @classmethod
    def decode(cls: type[T], raw: str) -> T | str:
        try:
            return cls.from_json(json.loads(raw))  # type: ignore[attr-defined,no-any-return]
        except (ValueError, KeyError, TypeError, AttributeError):
            return raw


# Each IP version's keys in the records' JSON. IPv6's are left out of a record that has none, so an
# IPv4-only network's or endpoint's record is what the releases before IPv6 wrote and read, and
# hosts of both versions share a cluster.
BLOCK_KEYS = {4: ("subnet", "gateway"), 6: ("subnet6", "gateway6")}
ADDRESS_KEYS = {4: "address", 6: "address6"}


def version_of(text: str) -> int:
    """The IP version of an address, interface or subnet in text."""
    return 6 if ":" in text else 4


@dataclass(frozen=True)
class Block:
    """A network's addresses of one IP version: its subnet and its gateway."""

    subnet: str
    gateway: str  # with the subnet's prefix length

    @property
    def version(self) -> int:
        return version_of(self.subnet)

    @property
    def gateway_ip(self) -> str:
        return str(ipaddress.ip_interface(self.gateway).ip)


def subnets_text(subnets: list[str]) -> str:
    """A network's subnets as its messages name them: "10.1.0.0/24" or "10.1.0.0/24 and fd00::/64"."""
    return " and ".join(subnets)


def check_name(option: str, value: str) -> str:
    if not NAME.match(value):
        raise DriverError(f"option {option}={value!r} must be {NAME_RULE}")
    return value


def check_subnet(subnet: Subnet) -> Subnet:
    if subnet.prefixlen > SMALLEST_SUBNET[subnet.version]:
        raise DriverError(f"subnet {subnet} is too small (at most /{SMALLEST_SUBNET[subnet.version]})")
    return subnet


def is_host_address(ip: Address, subnet: Subnet) -> bool:
    """An address a container or gateway may have in subnet: not the network's own address, nor
    (IPv4) its broadcast address."""
    if ip not in subnet or ip == subnet.network_address:
        return False
    return subnet.version == 6 or ip != subnet.broadcast_address


def _int_option(options: dict[str, str], key: str, low: int, high: int) -> int | None:
    raw = options.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw, 10)
    except ValueError:
        raise DriverError(f"option {key}={raw!r} is not an integer")
    if not low <= value <= high:
        raise DriverError(f"option {key}={value} is out of range {low}..{high}")
    return value


@dataclass(frozen=True)
class NetworkOptions:
    """A network's `-o` options, checked: what CreateNetwork and AllocateNetwork both accept."""

    key: str  # the network's cluster identity
    vni: int | None  # None: the lowest free one
    mtu: int | None  # None: the underlay's MTU less the VXLAN overhead
    fastpath: bool
    steer: str | None  # None: the driver's setting
    iface_prefix: str | None
    given: dict[str, str]  # every option as given (kept in the records; `docker network inspect` shows them)
    encrypted: bool = False

    @classmethod
    def parse(cls, options: dict[str, Any], network_id: str, underlay_mtu: int | None = None) -> NetworkOptions:
        """`underlay_mtu` None (a swarm manager, which has no say in each host's underlay): the MTU
        is checked against the largest any underlay could carry."""
        given = {str(k): str(v) for k, v in options.items()}
        if given.get(OPT_ENCRYPTED, "").lower() not in ("", "true"):
            raise DriverError(
                f"option {OPT_ENCRYPTED}={given[OPT_ENCRYPTED]!r}: Docker's overlay turns encryption on for"
                f" any value, so xmasq takes only {OPT_ENCRYPTED} or {OPT_ENCRYPTED}=true (leave it out for a"
                " plain network)"
            )
        if given.get(OPT_XMASQ_ENCRYPTED, "true").lower() not in ("true", "false"):
            raise DriverError(f"option {OPT_XMASQ_ENCRYPTED}={given[OPT_XMASQ_ENCRYPTED]!r} must be true or false")
        for k in given:
            if k not in KNOWN_OPTIONS:
                raise DriverError(f"unknown option {k}: xmasq supports {', '.join(sorted(KNOWN_OPTIONS))}")
        fastpath = given.get(OPT_FASTPATH, "on").lower()
        if fastpath not in ("on", "off"):
            raise DriverError(f"option {OPT_FASTPATH}={fastpath!r} must be on or off")
        steer = given.get(OPT_STEER)
        if steer is not None and steer not in STEER_MODES:
            raise DriverError(f"option {OPT_STEER}={steer!r} must be one of {', '.join(STEER_MODES)}")
        prefix = given.get(p.IFACE_PREFIX)
        if prefix is not None and not _IFACE_PREFIX.match(prefix):
            raise DriverError(f"option {p.IFACE_PREFIX}={prefix!r} must be a letter then up to 10 of A-Z a-z 0-9 _ -")
        encrypted = encrypted_by(given)
        max_mtu = (underlay_mtu or 65535) - overhead(encrypted)
        return cls(
            key=check_name(OPT_NETWORK, given.get(OPT_NETWORK) or network_id),
            vni=_int_option(given, OPT_VNI, 1, VNI_LAST),
            mtu=_int_option(given, p.MTU, 68, max_mtu),
            fastpath=fastpath == "on",
            steer=steer,
            iface_prefix=prefix,
            given=given,
            encrypted=encrypted,
        )

    def local_mtu(self, underlay_mtu: int) -> int:
        """The MTU on a host with this underlay MTU: the one asked for, else what the headers leave."""
        return self.mtu or underlay_mtu - overhead(self.encrypted)


def encrypted_by(options: dict[str, str]) -> bool:
    """Whether a network's options ask for encryption between hosts (either spelling)."""
    return OPT_ENCRYPTED in options or options.get(OPT_XMASQ_ENCRYPTED, "").lower() == "true"


def overhead(encrypted: bool) -> int:
    """Bytes a network's packets gain between hosts: VXLAN's, and WireGuard's around it if encrypted."""
    return VXLAN_OVERHEAD + (WIREGUARD_OVERHEAD if encrypted else 0)


@dataclass(frozen=True)
class ClusterNetwork(EtcdRecord):
    """A network as the cluster records it: etcd `networks/<key>`."""

    vni: int
    blocks: tuple[Block, ...]  # IPv4's, then IPv6's if it has one (--ipv6)
    mtu: int
    internal: bool
    options: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"vni": self.vni, "mtu": self.mtu, "internal": self.internal, "options": self.options}
        for block in self.blocks:
            subnet, gateway = BLOCK_KEYS[block.version]
            data[subnet], data[gateway] = block.subnet, block.gateway
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterNetwork:
        return ClusterNetwork(data["vni"], _blocks(data), data["mtu"], data["internal"], data.get("options", {}))

    @property
    def subnets(self) -> list[str]:
        return [block.subnet for block in self.blocks]

    @property
    def encrypted(self) -> bool:
        return encrypted_by(self.options)

    def describe(self) -> str:
        return f"VNI {self.vni} subnet {subnets_text(self.subnets)}"

    def same_network(self, other: ClusterNetwork) -> bool:
        """The same identity: VNI and subnets (hosts may differ in options such as the MTU)."""
        return (self.vni, self.subnets) == (other.vni, other.subnets)


def _blocks(data: dict[str, Any]) -> tuple[Block, ...]:
    """The blocks a record's JSON names (IPv4's always)."""
    found = []
    for version, (subnet, gateway) in BLOCK_KEYS.items():
        if version == 4 or data.get(subnet):
            found.append(Block(data[subnet], data[gateway]))
    return tuple(found)


@dataclass(frozen=True)
class LocalNetwork(ClusterNetwork):
    """A network as this host records it: `state.json` networks[<docker network id>]."""

    key: str = ""
    fastpath: bool = True

    def to_json(self) -> dict[str, Any]:
        return dict(super().to_json(), key=self.key, fastpath=self.fastpath)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalNetwork:
        net = ClusterNetwork.from_json(data)
        return LocalNetwork(
            net.vni, net.blocks, net.mtu, net.internal, net.options, data.get("key", ""), data.get("fastpath", True)
        )

    def cluster(self) -> ClusterNetwork:
        return ClusterNetwork(self.vni, self.blocks, self.mtu, self.internal, self.options)

    @property
    def steer(self) -> str | None:
        """The network's own flow steering (`-o xmasq.steer`), else None: the driver's setting."""
        return self.options.get(OPT_STEER)

    @property
    def iface_prefix(self) -> str:
        return self.options.get(p.IFACE_PREFIX) or "eth"


@dataclass(frozen=True)
class PortMapping:
    """A published port (`-p`) of an endpoint."""

    proto: str
    container_ip: str
    port: int
    host_ip: str
    host_port: int

    def wire(self) -> dict[str, object]:
        number = {v: k for k, v in _PROTOS.items()}[self.proto]
        return {
            "Proto": number,
            "IP": self.container_ip,
            "Port": self.port,
            "HostIP": self.host_ip,
            "HostPort": self.host_port,
            "HostPortEnd": self.host_port,
        }


def proto_name(number: int) -> str:
    if number not in _PROTOS:
        raise ValueError(f"unsupported protocol number {number}")
    return _PROTOS[number]


# Where an endpoint's veth is (Overlay.veth_state): its other end in a container; both ends on the
# host (the container stopped and Docker moved its end back, the driver not told); no veth at all
VethState = Literal["container", "orphan", "gone"]


@dataclass(frozen=True)
class LocalEndpoint:
    """An endpoint on this host: `state.json` endpoints[<endpoint id>]."""

    network_id: str
    addresses: tuple[str, ...]  # with the subnet's prefix length: one per block of its network
    mac: str
    ifname: str  # the container end of its veth, as handed to Docker
    ports: tuple[PortMapping, ...] = ()

    @property
    def ips(self) -> list[str]:
        """Its addresses: each has an endpoint record of its own in etcd, with the same content."""
        return [str(ipaddress.ip_interface(a).ip) for a in self.addresses]

    @property
    def ip(self) -> str:
        """Its IPv4 address (every network has IPv4): the one its eBPF and port entries are keyed by."""
        return self.ips[0]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"network_id": self.network_id, "mac": self.mac, "ifname": self.ifname}
        data["ports"] = [asdict(m) for m in self.ports]
        data.update({ADDRESS_KEYS[version_of(a)]: a for a in self.addresses})
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalEndpoint:
        ports = tuple(PortMapping(**m) for m in data.get("ports", []))
        addresses = tuple(data[k] for k in ADDRESS_KEYS.values() if data.get(k))
        return cls(data["network_id"], addresses, data["mac"], data["ifname"], ports)


@dataclass(frozen=True, slots=True)
class RemoteEndpoint(EtcdRecord):
    """An endpoint as the cluster records it: etcd `endpoints/<key>/<ip>` (any host's)."""

    host: str
    mac: str
    endpoint: str  # the endpoint id

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteEndpoint:
        if not all(isinstance(data[k], str) for k in ("host", "mac", "endpoint")):
            raise TypeError("not an endpoint record")
        return RemoteEndpoint(data["host"], data["mac"], data["endpoint"])

    def describe(self) -> str:
        return f"{self.host} {self.endpoint[:12]}"


@dataclass(frozen=True, slots=True)
class HostRecord(EtcdRecord):
    """A live host as the cluster records it: etcd `hosts/<host>` (on the host's lease)."""

    ip: str  # its underlay address
    # Its WireGuard public key and UDP port, for encrypted networks (left out when it has none:
    # the record is then what the releases before encryption wrote and read).
    key: str = ""
    port: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, **({"key": self.key, "port": self.port} if self.key else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostRecord:
        if not isinstance(data["ip"], str) or not isinstance(data.get("key", ""), str):
            raise TypeError("not a host record")
        return HostRecord(data["ip"], data.get("key", ""), int(data.get("port", 0)))


@dataclass(frozen=True)
class TunnelPeer:
    """Another live host as this host's WireGuard device has it (from its HostRecord)."""

    ip: str  # its underlay address: its WireGuard endpoint, and the one address it may send from
    key: str  # its public key
    port: int


@dataclass(frozen=True)
class Pool:
    """This host's holds of an IPAM pool and its claims in it: `state.json` pools[<pool id>]."""

    holds: int = 0
    addresses: dict[str, str] = field(default_factory=dict)  # ip -> "gateway" | "address"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pool:
        return cls(data["holds"], data.get("addresses", {}))


@dataclass(frozen=True)
class Service:
    """A Swarm service's virtual IP on one xmasq network and its running tasks' addresses there,
    as this host's dockerd lists them (`docker network inspect --verbose`: Services, kept by
    Swarm's gossip on every node, workers too). Read, never stored."""

    network_id: str
    name: str
    vip: str
    tasks: tuple[str, ...]  # sorted

    @classmethod
    def from_docker(cls, network_id: str, name: str, data: dict[str, Any]) -> Service | None:
        """The service of one `Services` entry; None for one without a VIP (--endpoint-mode dnsrr)
        or with addresses that do not parse (not Docker's)."""
        try:
            vip = str(ipaddress.ip_interface(data.get("VIP") or "").ip)
            tasks = {
                str(ipaddress.ip_interface(t["EndpointIP"]).ip) for t in data.get("Tasks") or [] if t.get("EndpointIP")
            }
        except (ValueError, TypeError, AttributeError):
            return None
        return cls(network_id, name, vip, tuple(sorted(tasks, key=ipaddress.ip_address)))
