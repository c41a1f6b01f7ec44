"""NetworkDriver: networks, endpoints, join/leave and published ports.

Backends come in as arguments (cluster store, local state, overlay, firewall), so the
logic runs without root in unit tests. Every change is all-or-nothing: steps register
their undo, and a failure part way rolls back what was done (`Undo`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

from .. import log
from .. import protocol as p
from ..control.layout import ENDPOINTS, MEMBERS, NETWORKS, VNIS
from ..control.model import (
    OPT_VNI,
    VXLAN_OVERHEAD,
    ClusterNetwork,
    Interface,
    LocalEndpoint,
    LocalNetwork,
    NetworkOptions,
    PortMapping,
    RemoteEndpoint,
    Subnet,
    check_subnet,
    proto_name,
    subnets_text,
)
from ..control.state import LocalState
from ..control.store import ClusterStore, ClusterView, Conflict, Reassertion
from ..dataplane.overlay import Underlay, bridge_name, mac_for_ip, veth_names
from ..errors import BackendError, DriverError, NotFound

_log = log.get("network")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# What Docker puts next to the `-o` options in CreateNetwork.Options.
_NETWORK_REQUEST_KEYS = {p.GENERIC, p.INTERNAL, p.ENABLE_IPV6, p.ENABLE_IPV4}
IPV6_MIN_MTU = 1280  # RFC 8200


class OverlayBackend(Protocol):
    def underlay(self) -> Underlay: ...
    def ensure_network(
        self, vni: int, gateway: ipaddress.IPv4Interface, mtu: int, gateway6: ipaddress.IPv6Interface | None = None
    ) -> None: ...
    def delete_network(self, vni: int) -> None: ...
    def create_veth(self, endpoint_id: str, vni: int, mac: str, mtu: int) -> str: ...
    def delete_veth(self, endpoint_id: str) -> None: ...
    def steer(self, host: str, mode: str | None = None) -> None: ...


class DatapathBackend(Protocol):
    def add_local(self, ifname: str, vni: int, ip: str, mac: str, fast: bool, ip6: str | None = None) -> None: ...
    def remove_local(self, vni: int, ip: str) -> None: ...


class FirewallBackend(Protocol):
    def ensure_base(self) -> None: ...
    def add_network(self, vni: int, bridge: str, subnet: str, internal: bool, subnet6: str = "") -> None: ...
    def remove_network(self, vni: int) -> None: ...
    def add_ports(self, endpoint_id: str, bridge: str, ports: list[PortMapping]) -> None: ...
    def remove_ports(self, endpoint_id: str) -> None: ...


class Undo:
    """Collects undo steps; runs them in reverse if the block fails."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, step: Callable[[], Any]) -> None:
        self._steps.append((what, step))

    @contextmanager
    def guard(self) -> Iterator[Undo]:
        try:
            yield self
        except BaseException:
            for what, step in reversed(self._steps):
                try:
                    step()
                except Exception as e:  # keep undoing; report what could not be
                    _log.error("rollback step failed", step=what, error=e)
            raise


def _refuse_what_docker_asks_beyond(req: p.NetworkRequest) -> None:
    """The network-wide settings Docker passes (--ipv6, IPv6-only, and any it adds in future)."""
    for k in req.options:
        if k not in _NETWORK_REQUEST_KEYS:
            raise DriverError(f"network setting {k} from Docker is not supported by xmasq")
    if req.options.get(p.ENABLE_IPV4) is False:
        raise DriverError("IPv6-only networks are not supported by xmasq (--ipv4=false): the underlay is IPv4")
    if req.ipv6 and not req.options.get(p.ENABLE_IPV6):
        raise DriverError("IPv6Data given for a network without IPv6 (create it with --ipv6)")


def _parsed(parse: Callable[[str], Any], text: str, version: int, error: str) -> Any:
    """`text` parsed as an address or network of IP `version` ("" stays None), else DriverError."""
    if not text:
        return None
    try:
        value = parse(text)
    except ValueError:
        raise DriverError(error)
    if value.version != version:
        raise DriverError(error)
    return value


def _subnet_and_gateway(data: list[p.IPData], version: int) -> tuple[Subnet, Interface]:
    """The network's subnet of IP `version` and its gateway (given, else the subnet's first host)."""
    field = "IPv4Data" if version == 4 else "IPv6Data"
    if len(data) != 1:
        raise DriverError(f"xmasq needs exactly one IPv{version} subnet per network, got {len(data)}")
    pool, gateway = data[0].pool, data[0].gateway
    subnet = check_subnet(
        _parsed(ipaddress.ip_network, pool, version, f"{field}.Pool {pool!r} is not an IPv{version} subnet")
    )
    given = _parsed(
        ipaddress.ip_interface, gateway, version, f"{field}.Gateway {gateway!r} is not an IPv{version} address"
    )
    gw = given.ip if given else next(subnet.hosts())
    if gw not in subnet:
        raise DriverError(f"gateway {gw} is outside subnet {subnet}")
    return subnet, ipaddress.ip_interface(f"{gw}/{subnet.prefixlen}")


class NetworkDriver:
    def __init__(
        self,
        store: ClusterStore,
        state: LocalState,
        overlay: OverlayBackend,
        firewall: FirewallBackend,
        datapath: DatapathBackend,
        scope: str = "local",
    ):
        self.store = store
        self.state = state
        self.overlay = overlay
        self.firewall = firewall
        self.datapath = datapath
        self.scope = scope
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._networks_lock = threading.Lock()  # taken before a network's own lock, never after
        self.discovered: dict[str, Any] = {}  # DiscoverNew/Delete: nodes Docker told us about

    @contextmanager
    def _locked(self, network_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(network_id, threading.Lock())
        with lock:
            yield

    def _network(self, network_id: str) -> LocalNetwork:
        net = self.state.networks.get(network_id)
        if net is None:
            raise NotFound(f"network {network_id[:12]} is not an xmasq network on this host")
        return net

    def _endpoint(self, endpoint_id: str) -> LocalEndpoint:
        ep = self.state.endpoints.get(endpoint_id)
        if ep is None:
            raise NotFound(f"endpoint {endpoint_id[:12]} does not exist")
        return ep

    # -- capabilities and discovery --------------------------------------
    def capabilities(self) -> p.CapabilitiesResponse:
        return p.CapabilitiesResponse(self.scope, "global")

    def discover(self, req: p.DiscoveryRequest, new: bool) -> p.Empty:
        """Recorded and logged only: peers come from etcd, which also covers hosts outside swarm."""
        key = json.dumps(req.discovery_data, sort_keys=True)
        if new:
            self.discovered[key] = {"type": req.discovery_type, "data": req.discovery_data}
        else:
            self.discovered.pop(key, None)
        _log.info("discovery " + ("new" if new else "delete"), type=req.discovery_type, data=req.discovery_data)
        return p.Empty()

    # -- networks ---------------------------------------------------------
    def create_network(self, req: p.NetworkRequest) -> p.Empty:
        generic = req.options.get(p.GENERIC) or {}
        if not isinstance(generic, dict):
            raise DriverError(f"Options.{p.GENERIC} must be an object")
        _refuse_what_docker_asks_beyond(req)
        subnet, gateway = _subnet_and_gateway(req.ipv4, 4)
        subnet6, gateway6 = _subnet_and_gateway(req.ipv6, 6) if req.options.get(p.ENABLE_IPV6) else (None, None)
        v6 = {"subnet6": str(subnet6), "gateway6": str(gateway6)} if subnet6 else {}
        underlay_mtu = self.overlay.underlay().mtu
        opts = NetworkOptions.parse(generic, req.network_id, underlay_mtu)
        internal = bool(req.options.get(p.INTERNAL, False))
        key, mtu = opts.key, opts.mtu or underlay_mtu - VXLAN_OVERHEAD
        if subnet6 and mtu < IPV6_MIN_MTU:  # the kernel turns IPv6 off on a smaller interface
            raise DriverError(f"an IPv6 network needs an MTU of at least {IPV6_MIN_MTU}, not {mtu}")
        with self._networks_lock, self._locked(req.network_id):
            if req.network_id in self.state.networks:
                return p.Empty()
            undo = Undo()
            with undo.guard():
                existing = self.store.get_network(key)
                had = subnets_text(existing.subnet, existing.subnet6) if existing else ""
                asked = subnets_text(str(subnet), v6.get("subnet6", ""))
                if existing and had != asked:
                    raise DriverError(f"network {key} already exists with subnet {had}, not {asked}")
                if existing and opts.vni is not None and existing.vni != opts.vni:
                    raise DriverError(f"network {key} already exists with VNI {existing.vni}")
                vni = existing.vni if existing else self.store.claim_vni(key, opts.vni)
                undo.add("leave network in etcd", lambda: self.store.leave_network(key, vni))
                net = LocalNetwork(
                    vni, str(subnet), str(gateway), mtu, internal, opts.given, **v6, key=key, fastpath=opts.fastpath
                )
                self.store.join_network(key, None if existing else net.cluster())
                undo.add("delete devices", lambda: self.overlay.delete_network(vni))
                self._ensure_devices(net)
                undo.add("delete rules", lambda: self.firewall.remove_network(vni))
                self.firewall.add_network(vni, bridge_name(vni), net.subnet, internal, net.subnet6)
                self.state.set_network(req.network_id, net)
        _log.info(
            "network created", network=req.network_id[:12], key=key, vni=vni, subnet=subnet, subnet6=subnet6,
            internal=internal,
        )  # fmt: skip
        return p.Empty()

    def _ensure_devices(self, net: LocalNetwork) -> None:
        gateway6 = ipaddress.IPv6Interface(net.gateway6) if net.gateway6 else None
        self.overlay.ensure_network(net.vni, ipaddress.IPv4Interface(net.gateway), net.mtu, gateway6)

    def delete_network(self, req: p.NetworkIdRequest) -> p.Empty:
        with self._networks_lock, self._locked(req.network_id):
            net = self.state.networks.get(req.network_id)
            if net is None:
                return p.Empty()
            for eid, ep in list(self.state.endpoints.items()):
                if ep.network_id == req.network_id:
                    self._remove_endpoint(eid, ep, net)
            self.store.leave_network(net.key, net.vni)
            self.firewall.remove_network(net.vni)
            self.overlay.delete_network(net.vni)
            self.state.set_network(req.network_id, None)
        _log.info("network deleted", network=req.network_id[:12], key=net.key, vni=net.vni)
        return p.Empty()

    def allocate_network(self, req: p.NetworkRequest) -> p.AllocateNetworkResponse:
        """Swarm manager: claim the VNI cluster-wide; echo the options plus what was allocated.
        The same checks as CreateNetwork, so a network a host would refuse is never allocated."""
        opts = NetworkOptions.parse(req.options, req.network_id)
        vni = self.store.claim_vni(opts.key, opts.vni)
        return p.AllocateNetworkResponse(dict(opts.given, **{OPT_VNI: str(vni)}))

    def free_network(self, req: p.NetworkIdRequest) -> p.Empty:
        """Swarm manager: the network is gone. Its VNI goes now unless a host still has the network
        (then the last host to leave releases it)."""
        released = self.store.release_if_unused(req.network_id)
        _log.info("network freed", network=req.network_id[:12], vni_released=released)
        return p.Empty()

    # -- endpoints --------------------------------------------------------
    def create_endpoint(self, req: p.CreateEndpointRequest) -> p.CreateEndpointResponse:
        iface = req.interface
        for name in ("Address", "AddressIPv6", "MacAddress"):
            if not isinstance(iface.get(name) or "", str):
                raise DriverError(f"Interface.{name} must be a string")
        for k in req.options:  # Docker's own keys are Docker's to honour; a user's --driver-opt is not
            if not k.startswith(p.DOCKER_PREFIX):
                raise DriverError(f"endpoint option {k} is not supported by xmasq (it has no endpoint options)")
        with self._locked(req.network_id):
            net = self._network(req.network_id)
            if req.endpoint_id in self.state.endpoints:
                return self._endpoint_reply(iface, self.state.endpoints[req.endpoint_id])
            ip = cast(ipaddress.IPv4Interface, _address(iface, "Address", 4, net.subnet))
            ip6 = _address(iface, "AddressIPv6", 6, net.subnet6) if net.subnet6 else None
            if iface.get("AddressIPv6") and ip6 is None:
                raise DriverError(f"Interface.AddressIPv6 given, but network {net.key} has no IPv6 subnet")
            mac = iface.get("MacAddress") or mac_for_ip(ip.ip)
            if not _MAC.match(mac):
                raise DriverError(f"Interface.MacAddress {mac!r} is not a MAC address")
            ep = LocalEndpoint(req.network_id, str(ip), mac, "", address6=str(ip6) if ip6 else "")
            for addr in ep.ips:
                owner = self.store.get_endpoint(net.key, addr)
                if owner and owner.host != self.store.host:
                    raise DriverError(
                        f"address {addr} is in use by endpoint {owner.endpoint[:12]} on host {owner.host}"
                    )
            undo = Undo()
            with undo.guard():
                undo.add("delete veth", lambda: self.overlay.delete_veth(req.endpoint_id))
                ifname = self.overlay.create_veth(req.endpoint_id, net.vni, mac, net.mtu)
                host_veth = veth_names(req.endpoint_id)[0]
                self.overlay.steer(host_veth, net.steer)
                undo.add("remove from eBPF maps", lambda: self.datapath.remove_local(net.vni, ep.ip))
                self.datapath.add_local(host_veth, net.vni, ep.ip, mac, net.fastpath, ep.ip6)
                undo.add("delete endpoint in etcd", lambda: self.store.delete_endpoint(net.key, ep.ips))
                self.store.put_endpoint(net.key, ep.ips, RemoteEndpoint(self.store.host, mac, req.endpoint_id))
                ep = dataclasses.replace(ep, ifname=ifname)
                self.state.set_endpoint(req.endpoint_id, ep)
        _log.info(
            "endpoint created", network=req.network_id[:12], endpoint=req.endpoint_id[:12], address=ip,
            address6=ip6, mac=mac,
        )  # fmt: skip
        return self._endpoint_reply(iface, ep)

    @staticmethod
    def _endpoint_reply(iface: dict[str, Any], ep: LocalEndpoint) -> p.CreateEndpointResponse:
        # Docker rejects a reply that sets a field it already gave.
        return p.CreateEndpointResponse(None if iface.get("MacAddress") else p.EndpointInterface(ep.mac))

    def endpoint_oper_info(self, req: p.EndpointRequest) -> p.EndpointOperInfoResponse:
        ep = self._endpoint(req.endpoint_id)
        value: dict[str, Any] = {"ifname": ep.ifname, "mac": ep.mac}
        if ep.ports:
            value[p.PORTMAP] = [m.wire() for m in ep.ports]
        return p.EndpointOperInfoResponse(value)

    def delete_endpoint(self, req: p.EndpointRequest) -> p.Empty:
        with self._locked(req.network_id):
            ep = self.state.endpoints.get(req.endpoint_id)
            if ep is None:
                return p.Empty()
            self._remove_endpoint(req.endpoint_id, ep, self.state.networks.get(ep.network_id))
        _log.info("endpoint deleted", network=req.network_id[:12], endpoint=req.endpoint_id[:12])
        return p.Empty()

    def _remove_endpoint(self, endpoint_id: str, ep: LocalEndpoint, net: LocalNetwork | None) -> None:
        if net is not None:
            records = {ip: self.store.get_endpoint(net.key, ip) for ip in ep.ips}
            ours = [ip for ip, record in records.items() if record and record.endpoint == endpoint_id]
            if ours:
                self.store.delete_endpoint(net.key, ours)
            self.datapath.remove_local(net.vni, ep.ip)
        self.firewall.remove_ports(endpoint_id)
        self.overlay.delete_veth(endpoint_id)
        self.state.set_endpoint(endpoint_id, None)

    def join(self, req: p.JoinRequest) -> p.JoinResponse:
        net = self._network(req.network_id)
        ep = self._endpoint(req.endpoint_id)
        gateways = (None, None) if net.internal else (net.gateway_ip, net.gateway6_ip if ep.ip6 else None)
        reply = p.JoinResponse(p.InterfaceName(ep.ifname, net.iface_prefix), *gateways)
        _log.info(
            "endpoint joined", network=req.network_id[:12], endpoint=req.endpoint_id[:12], sandbox=req.sandbox_key
        )
        return reply

    def leave(self, req: p.EndpointRequest) -> p.Empty:
        _log.info("endpoint left", network=req.network_id[:12], endpoint=req.endpoint_id[:12])
        return p.Empty()

    # -- published ports --------------------------------------------------
    def program_external_connectivity(self, req: p.ExternalConnectivityRequest) -> p.Empty:
        raw = req.options.get(p.PORTMAP) or []
        if not isinstance(raw, list):
            raise DriverError(f"Options.{p.PORTMAP} must be a list")
        with self._locked(req.network_id):
            net = self._network(req.network_id)
            ep = self._endpoint(req.endpoint_id)
            if net.internal or not raw:
                return p.Empty()
            ports = [self._port_mapping(m, ep) for m in raw]
            undo = Undo()
            with undo.guard():
                undo.add("remove port rules", lambda: self.firewall.remove_ports(req.endpoint_id))
                self.firewall.add_ports(req.endpoint_id, bridge_name(net.vni), ports)
                self.state.set_endpoint(req.endpoint_id, dataclasses.replace(ep, ports=tuple(ports)))
        _log.info(
            "ports published",
            network=req.network_id[:12],
            endpoint=req.endpoint_id[:12],
            ports=",".join(f"{m.host_port}->{m.port}/{m.proto}" for m in ports),
        )
        return p.Empty()

    @staticmethod
    def _port_mapping(m: Any, ep: LocalEndpoint) -> PortMapping:
        if not isinstance(m, dict):
            raise DriverError(f"{p.PORTMAP} entries must be objects")
        try:
            proto = proto_name(int(m.get("Proto", 6)))
            port, host_port = int(m["Port"]), int(m.get("HostPort") or 0)
            host_ip = str(m.get("HostIP") or "")
            if host_ip in ("0.0.0.0", "::"):
                host_ip = ""
            if host_ip and ipaddress.ip_address(host_ip).version == 6:
                raise DriverError(
                    f"a port published on an IPv6 host address (HostIP {host_ip}) is not supported by xmasq"
                )
        except (KeyError, TypeError, ValueError) as e:
            raise DriverError(f"bad {p.PORTMAP} entry {m!r}: {e}")
        if not 0 < port < 65536 or not 0 <= host_port < 65536:
            raise DriverError(f"bad {p.PORTMAP} entry {m!r}: port out of range")
        if host_port == 0:
            host_port = _free_port(proto)
        return PortMapping(proto, ep.ip, port, host_ip, host_port)

    def revoke_external_connectivity(self, req: p.EndpointRequest) -> p.Empty:
        with self._locked(req.network_id):
            ep = self.state.endpoints.get(req.endpoint_id)
            if ep is None:
                return p.Empty()
            self.firewall.remove_ports(req.endpoint_id)
            self.state.set_endpoint(req.endpoint_id, dataclasses.replace(ep, ports=()))
        return p.Empty()

    # -- the cluster's copy of this host's records -------------------------
    def reassert(self, view: ClusterView) -> Reassertion:
        """Write back what `view` lacks or shows stale of this host's networks (their records, VNIs,
        this host's membership) and endpoints; remove this host's records of what it no longer has.
        What another owner holds now is a conflict: reported, never overwritten."""
        done, host = Reassertion(), self.store.host
        with self._networks_lock:  # no network of this host appears or goes meanwhile
            keys = {net.key for net in self.state.networks.values()}
            for nid in list(self.state.networks):
                with self._locked(nid):
                    self._reassert_network(view, nid, done)
            for key, _ in view.owned_by(host, MEMBERS):
                if key not in keys:
                    vnis = [int(vni) for vni, owner in view.vnis.items() if owner == key]
                    self.store.leave_network(key, vnis[0] if vnis else 0)
                    done.removed += 1
            for key, ip in view.owned_by(host, ENDPOINTS):
                if key not in keys:
                    done.removed += self._remove_own_endpoint(key, ip)
        return done

    def _reassert_network(self, view: ClusterView, nid: str, done: Reassertion) -> None:
        net = self.state.networks.get(nid)
        if net is None:
            return
        key, host, ours = net.key, self.store.host, net.cluster()
        theirs: ClusterNetwork | str | None = view.networks.get(key)
        if theirs is None:
            written, held = self.store.assert_key(NETWORKS.key(key), ours.encode())
            done.repaired += written
            theirs = None if held is None else ClusterNetwork.decode(held)
        if theirs is not None and (not isinstance(theirs, ClusterNetwork) or not ours.same_network(theirs)):
            described = theirs.describe() if isinstance(theirs, ClusterNetwork) else theirs
            done.conflicts.append(Conflict("network", key, ours.describe(), described))
        if view.vnis.get(str(net.vni)) != key:
            written, owner = self.store.assert_key(VNIS.key(net.vni), key)
            done.repaired += written
            if owner is not None:
                done.conflicts.append(Conflict("vni", str(net.vni), key, owner))
        if host not in view.members.get(key, set()):
            self.store.join_network(key)
            done.repaired += 1
        # Endpoints of other networks may change meanwhile (a copy); this network's cannot.
        mine = {
            ip: RemoteEndpoint(host, ep.mac, eid) for eid, ep in self.state.endpoints_of({key}).items() for ip in ep.ips
        }
        for ip, record in mine.items():
            if view.endpoints.get(key, {}).get(ip) == record:
                continue
            written, held = self.store.assert_key(ENDPOINTS.key(key, ip), record.encode())
            other = None if held is None else RemoteEndpoint.decode(held)
            if isinstance(other, RemoteEndpoint) and other.host == host:  # this host's, stale: ours is the truth
                self.store.put_endpoint(key, [ip], record)
                written = True
            elif other is not None:
                described = other.describe() if isinstance(other, RemoteEndpoint) else other
                done.conflicts.append(Conflict("endpoint", f"{key} {ip}", record.describe(), described))
            done.repaired += written
        stale = {ip for k, ip in view.owned_by(host, ENDPOINTS) if k == key} - mine.keys()
        done.removed += sum(self._remove_own_endpoint(key, ip) for ip in stale)

    def _remove_own_endpoint(self, key: str, ip: str) -> bool:
        """Delete endpoint record key/ip if it is this host's (one that this host no longer has)."""

        def ours(value: str) -> bool:
            record = RemoteEndpoint.decode(value)
            return isinstance(record, RemoteEndpoint) and record.host == self.store.host

        return self.store.delete_if(ENDPOINTS.key(key, ip), ours)

    # -- restart ----------------------------------------------------------
    def restore(self) -> None:
        """Re-create what the local state says this host has (after a driver restart)."""
        self.firewall.ensure_base()
        networks = self.state.networks
        for nid, net in networks.items():
            self._ensure_devices(net)
            self.firewall.add_network(net.vni, bridge_name(net.vni), net.subnet, net.internal, net.subnet6)
            _log.info("network restored", network=nid[:12], vni=net.vni)
        endpoints = [
            (eid, ep, networks[ep.network_id]) for eid, ep in self.state.endpoints.items() if ep.network_id in networks
        ]
        for eid, ep, net in endpoints:
            host_veth = veth_names(eid)[0]
            self.datapath.add_local(host_veth, net.vni, ep.ip, ep.mac, net.fastpath, ep.ip6)
            self.overlay.steer(host_veth, net.steer)
            if ep.ports:
                self.firewall.add_ports(eid, bridge_name(net.vni), list(ep.ports))
        try:
            for net in networks.values():
                self.store.join_network(net.key)
            for eid, ep, net in endpoints:
                self.store.put_endpoint(net.key, ep.ips, RemoteEndpoint(self.store.host, ep.mac, eid))
        except BackendError as e:
            _log.warning(
                "cluster state not refreshed at start (etcd unreachable); local networking is unaffected", error=e
            )


def _address(iface: dict[str, Any], name: str, version: int, subnet: str) -> Interface:
    """The endpoint's address `name` (IP `version`, CIDR form) as Docker gave it, in `subnet`."""
    text = iface.get(name) or ""
    error = f"Interface.{name} {text!r} is not an IPv{version} address in CIDR form"
    ip = _parsed(ipaddress.ip_interface, text, version, error)
    if ip is None:
        raise DriverError(error)
    if ip.ip not in ipaddress.ip_network(subnet):
        raise DriverError(f"address {ip.ip} is outside the network's subnet {subnet}")
    return ip  # type: ignore[no-any-return]


def _free_port(proto: str) -> int:
    """An ephemeral host port for `-p CONTAINERPORT` (no host port given)."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])
