"""NetworkDriver: networks, endpoints, join/leave and published ports.

Backends come in as arguments (cluster store, host records, local state, overlay, firewall,
datapath), so the logic runs without root in unit tests. Every change is all-or-nothing: a
network and an endpoint are made, restored and deleted by plumbing.py's steps, whose undo runs
if a step fails part way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
from collections.abc import Callable
from typing import Any

from .. import log
from .. import protocol as p
from ..control.model import (
    OPT_VNI,
    Block,
    Interface,
    LocalEndpoint,
    LocalNetwork,
    NetworkOptions,
    PortMapping,
    check_subnet,
    proto_name,
    subnets_text,
)
from ..control.records import HostRecords
from ..control.state import LocalState
from ..control.store import ClusterStore
from ..dataplane.overlay import bridge_name, mac_for_ip, veth_names
from ..errors import DriverError, NotFound
from . import plumbing
from .plumbing import DatapathBackend, FirewallBackend, OverlayBackend, Plumbing, Step, TunnelBackend

_log = log.get("network")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# What Docker puts next to the `-o` options in CreateNetwork.Options.
_NETWORK_REQUEST_KEYS = {p.GENERIC, p.INTERNAL, p.ENABLE_IPV6, p.ENABLE_IPV4}
IPV6_MIN_MTU = 1280  # RFC 8200


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


def _block(req: p.NetworkRequest, version: int) -> Block:
    """The network's subnet of IP `version` and its gateway (given, else the subnet's first host)."""
    field, data = ("IPv4Data", req.ipv4) if version == 4 else ("IPv6Data", req.ipv6)
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
    return Block(str(subnet), f"{gw}/{subnet.prefixlen}")


class NetworkDriver:
    def __init__(
        self,
        store: ClusterStore,
        records: HostRecords,
        state: LocalState,
        overlay: OverlayBackend,
        firewall: FirewallBackend,
        datapath: DatapathBackend,
        tunnel: TunnelBackend,
        scope: str = "local",
    ):
        self.store = store
        self.state = state
        self.overlay = overlay
        self.firewall = firewall
        self.tunnel = tunnel
        self.plumbing = Plumbing(overlay, firewall, datapath, records, tunnel)
        self.scope = scope
        self.discovered: dict[str, Any] = {}  # DiscoverNew/Delete: nodes Docker told us about

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
        blocks = tuple(_block(req, v) for v in (4, 6) if v == 4 or req.options.get(p.ENABLE_IPV6))
        underlay_mtu = self.overlay.underlay().mtu
        opts = NetworkOptions.parse(generic, req.network_id, underlay_mtu)
        if opts.encrypted:
            self.tunnel.require()
        internal = bool(req.options.get(p.INTERNAL, False))
        key, mtu = opts.key, opts.local_mtu(underlay_mtu)
        if len(blocks) > 1 and mtu < IPV6_MIN_MTU:  # the kernel turns IPv6 off on a smaller interface
            raise DriverError(f"an IPv6 network needs an MTU of at least {IPV6_MIN_MTU}, not {mtu}")
        with self.state.networks_lock, self.state.changing(req.network_id):
            if req.network_id in self.state.networks:
                return p.Empty()
            existing = self.store.get_network(key)
            asked, had = subnets_text([b.subnet for b in blocks]), subnets_text(existing.subnets) if existing else ""
            if existing and had != asked:
                raise DriverError(f"network {key} already exists with subnet {had}, not {asked}")
            if existing and opts.vni is not None and existing.vni != opts.vni:
                raise DriverError(f"network {key} already exists with VNI {existing.vni}")
            if existing and existing.encrypted != opts.encrypted:
                how = "encrypted" if existing.encrypted else "not encrypted"
                raise DriverError(f"network {key} already exists {how}: every host must create it the same way")
            vni = existing.vni if existing else self.store.claim_vni(key, opts.vni)
            net = LocalNetwork(vni, blocks, mtu, internal, opts.given, key=key, fastpath=opts.fastpath)
            plumbing.create(
                self.plumbing.network(net, new=existing is None),
                f"network {key}",
                lambda: self.state.set_network(req.network_id, net),
            )
        _log.info(
            "network created", network=req.network_id[:12], key=key, vni=vni, subnet=asked, internal=internal
        )  # fmt: skip
        return p.Empty()

    def delete_network(self, req: p.NetworkIdRequest) -> p.Empty:
        with self.state.networks_lock, self.state.changing(req.network_id):
            net = self.state.networks.get(req.network_id)
            if net is None:
                return p.Empty()
            for eid, ep in list(self.state.endpoints.items()):
                if ep.network_id == req.network_id:
                    self._remove_endpoint(eid, ep, net)
            plumbing.delete(self.plumbing.network(net), lambda: self.state.set_network(req.network_id, None))
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
        for name in (*p.ADDRESS_FIELDS.values(), "MacAddress"):
            if not isinstance(iface.get(name) or "", str):
                raise DriverError(f"Interface.{name} must be a string")
        for k in req.options:  # Docker's own keys are Docker's to honour; a user's --driver-opt is not
            if not k.startswith(p.DOCKER_PREFIX):
                raise DriverError(f"endpoint option {k} is not supported by xmasq (it has no endpoint options)")
        with self.state.changing(req.network_id):
            net = self._network(req.network_id)
            if req.endpoint_id in self.state.endpoints:
                return self._endpoint_reply(iface, self.state.endpoints[req.endpoint_id])
            versions = {b.version for b in net.blocks}
            for version, name in p.ADDRESS_FIELDS.items():
                if iface.get(name) and version not in versions:
                    raise DriverError(f"Interface.{name} given, but network {net.key} has no IPv{version} subnet")
            addresses = tuple(_address(iface, p.ADDRESS_FIELDS[b.version], b.version, b.subnet) for b in net.blocks)
            mac = iface.get("MacAddress") or mac_for_ip(ipaddress.IPv4Address(addresses[0].ip))
            if not _MAC.match(mac):
                raise DriverError(f"Interface.MacAddress {mac!r} is not a MAC address")
            ep = LocalEndpoint(req.network_id, tuple(map(str, addresses)), mac, veth_names(req.endpoint_id)[1])
            for addr in ep.ips:
                owner = self.store.get_endpoint(net.key, addr)
                if owner and owner.host != self.store.host:
                    raise DriverError(
                        f"address {addr} is in use by endpoint {owner.endpoint[:12]} on host {owner.host}"
                    )
            plumbing.create(
                self.plumbing.endpoint(req.endpoint_id, ep, net),
                f"endpoint {req.endpoint_id[:12]}",
                lambda: self.state.set_endpoint(req.endpoint_id, ep),
            )
        _log.info(
            "endpoint created", network=req.network_id[:12], endpoint=req.endpoint_id[:12],
            address=",".join(ep.addresses), mac=mac,
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
        with self.state.changing(req.network_id):
            ep = self.state.endpoints.get(req.endpoint_id)
            if ep is None:
                return p.Empty()
            self._remove_endpoint(req.endpoint_id, ep, self.state.networks.get(ep.network_id))
        _log.info("endpoint deleted", network=req.network_id[:12], endpoint=req.endpoint_id[:12])
        return p.Empty()

    def remove_orphans(self, orphans: dict[str, LocalEndpoint]) -> None:
        """Endpoints whose container went while the driver could not hear DeleteEndpoint (recovery's
        orphans): removed as DeleteEndpoint removes them."""
        for eid, ep in orphans.items():
            with self.state.changing(ep.network_id):
                self._remove_endpoint(eid, ep, self.state.networks.get(ep.network_id))
            _log.info("orphaned endpoint removed", network=ep.network_id[:12], endpoint=eid[:12], address=ep.ip)

    def _remove_endpoint(self, endpoint_id: str, ep: LocalEndpoint, net: LocalNetwork | None) -> None:
        steps = self.plumbing.endpoint(endpoint_id, ep, net)
        plumbing.delete(steps, lambda: self.state.set_endpoint(endpoint_id, None))

    def join(self, req: p.JoinRequest) -> p.JoinResponse:
        net = self._network(req.network_id)
        ep = self._endpoint(req.endpoint_id)
        # A gateway per IP version of the network (the endpoint has an address of each); none if internal.
        gateways = {} if net.internal else {b.version: b.gateway_ip for b in net.blocks}
        reply = p.JoinResponse(p.InterfaceName(ep.ifname, net.iface_prefix), gateways.get(4), gateways.get(6))
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
        with self.state.changing(req.network_id):
            net = self._network(req.network_id)
            ep = self._endpoint(req.endpoint_id)
            if net.internal or not raw:
                return p.Empty()
            ports = [self._port_mapping(m, ep) for m in raw]
            step = Step(
                "port rules",
                lambda: self.firewall.add_ports(req.endpoint_id, bridge_name(net.vni), ports),
                lambda: self.firewall.remove_ports(req.endpoint_id),
            )
            published = dataclasses.replace(ep, ports=tuple(ports))
            plumbing.create(
                [step], f"ports of {req.endpoint_id[:12]}", lambda: self.state.set_endpoint(req.endpoint_id, published)
            )
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
        with self.state.changing(req.network_id):
            ep = self.state.endpoints.get(req.endpoint_id)
            if ep is None:
                return p.Empty()
            self.firewall.remove_ports(req.endpoint_id)
            self.state.set_endpoint(req.endpoint_id, dataclasses.replace(ep, ports=()), removal=True)
        return p.Empty()

    # -- restart ----------------------------------------------------------
    def restore(self) -> None:
        """Re-make what the local state says this host has (after a driver restart): the same steps
        as a create, but for the veths (they outlive the driver) and the records, which the
        reconciler's first full pass, started right after, re-asserts (it lists the cluster for
        its peers anyway: one listing at start, not two)."""
        self.firewall.ensure_base()
        snap = self.state.snapshot()
        for nid, net in snap.networks.items():
            plumbing.restore(self.plumbing.network(net), f"network {net.key}")
            _log.info("network restored", network=nid[:12], vni=net.vni)
        for eid, ep in snap.endpoints.items():
            if ep.network_id in snap.networks:
                plumbing.restore(self.plumbing.endpoint(eid, ep, snap.networks[ep.network_id]), f"endpoint {eid[:12]}")


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
