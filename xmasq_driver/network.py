"""NetworkDriver: networks, endpoints, join/leave and published ports.

Backends come in as arguments (cluster store, local state, overlay, firewall), so the
logic runs without root in unit tests. Every change is all-or-nothing: steps register
their undo, and a failure part way rolls back what was done (`Undo`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from . import log
from . import protocol as p
from .config import STEER_MODES
from .errors import BackendError, DriverError, NotFound
from .firewall import PortMapping, proto_name
from .overlay import VXLAN_OVERHEAD, Underlay, bridge_name, mac_for_ip, veth_names
from .state import LocalState
from .store import VNI_LAST, ClusterStore, ClusterView, Conflict, Reassertion, decode

_log = log.get("network")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
OPT_VNI, OPT_NETWORK, OPT_FASTPATH, OPT_STEER = "xmasq.vni", "xmasq.network", "xmasq.fastpath", "xmasq.steer"
# Every `-o` option a network may have; anything else is refused, never ignored.
_KNOWN_OPTIONS = {OPT_VNI, OPT_NETWORK, OPT_FASTPATH, OPT_STEER, p.MTU, p.IFACE_PREFIX}
# What Docker puts next to them in CreateNetwork.Options.
_NETWORK_REQUEST_KEYS = {p.GENERIC, p.INTERNAL, p.ENABLE_IPV6, p.ENABLE_IPV4}
OPT_ENCRYPTED = "encrypted"  # Docker's overlay: IPsec between hosts
_IFACE_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,10}$")  # + Docker's index: at most 15 characters


class OverlayBackend(Protocol):
    def underlay(self) -> Underlay: ...
    def ensure_network(self, vni: int, gateway: ipaddress.IPv4Interface, mtu: int) -> None: ...
    def delete_network(self, vni: int) -> None: ...
    def create_veth(self, endpoint_id: str, vni: int, mac: str, mtu: int) -> str: ...
    def delete_veth(self, endpoint_id: str) -> None: ...
    def steer(self, host: str, mode: str | None = None) -> None: ...


class DatapathBackend(Protocol):
    def add_local(self, ifname: str, vni: int, ip: str, mac: str, fast: bool) -> None: ...
    def remove_local(self, vni: int, ip: str) -> None: ...


class FirewallBackend(Protocol):
    def ensure_base(self) -> None: ...
    def add_network(self, vni: int, bridge: str, subnet: str, internal: bool) -> None: ...
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


def _int_option(options: dict[str, Any], key: str, low: int, high: int) -> int | None:
    raw = options.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(str(raw), 10)
    except ValueError:
        raise DriverError(f"option {key}={raw!r} is not an integer")
    if not low <= value <= high:
        raise DriverError(f"option {key}={value} is out of range {low}..{high}")
    return value


def _refuse_what_cannot_be_honoured(options: dict[str, Any]) -> None:
    """Unknown xmasq options, and encryption: accepted, it would mean plaintext on the underlay
    where the user asked for it to be encrypted."""
    if OPT_ENCRYPTED in options:
        raise DriverError(
            "option encrypted is not supported: xmasq does not encrypt traffic between hosts (no IPsec or"
            " WireGuard), so the network is not created rather than carrying it in plaintext"
        )
    for k in options:
        if k not in _KNOWN_OPTIONS:
            raise DriverError(f"unknown option {k}: xmasq supports {', '.join(sorted(_KNOWN_OPTIONS))}")


def parse_network_options(options: dict[str, Any], network_id: str, underlay_mtu: int) -> dict[str, Any]:
    """Validate the user's `-o` options; returns {key, vni, mtu, fastpath, options}."""
    _refuse_what_cannot_be_honoured(options)
    key = str(options.get(OPT_NETWORK) or network_id)
    if not _NAME.match(key):
        raise DriverError(f"option {OPT_NETWORK}={key!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    fastpath = str(options.get(OPT_FASTPATH, "on")).lower()
    if fastpath not in ("on", "off"):
        raise DriverError(f"option {OPT_FASTPATH}={fastpath!r} must be on or off")
    steer = options.get(OPT_STEER)
    if steer is not None and str(steer) not in STEER_MODES:
        raise DriverError(f"option {OPT_STEER}={steer!r} must be one of {', '.join(STEER_MODES)}")
    prefix = options.get(p.IFACE_PREFIX)
    if prefix is not None and not _IFACE_PREFIX.match(str(prefix)):
        raise DriverError(f"option {p.IFACE_PREFIX}={prefix!r} must be a letter then up to 10 of A-Z a-z 0-9 _ -")
    max_mtu = underlay_mtu - VXLAN_OVERHEAD
    mtu = _int_option(options, p.MTU, 68, max_mtu) or max_mtu
    return {
        "key": key,
        "vni": _int_option(options, OPT_VNI, 1, VNI_LAST),
        "mtu": mtu,
        "fastpath": fastpath == "on",
        "options": {str(k): str(v) for k, v in options.items()},
    }


def _refuse_what_docker_asks_beyond(req: p.NetworkRequest) -> None:
    """The network-wide settings Docker passes (--ipv6, IPv6-only, and any it adds in future)."""
    for k in req.options:
        if k not in _NETWORK_REQUEST_KEYS:
            raise DriverError(f"network setting {k} from Docker is not supported by xmasq")
    if req.options.get(p.ENABLE_IPV6) or req.ipv6:
        raise DriverError("IPv6 is not supported by xmasq yet (--ipv6)")
    if req.options.get(p.ENABLE_IPV4) is False:
        raise DriverError("IPv6-only networks are not supported by xmasq (--ipv4=false)")


def _subnet_and_gateway(req: p.NetworkRequest) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Interface]:
    if len(req.ipv4) != 1:
        raise DriverError(f"xmasq needs exactly one IPv4 subnet per network, got {len(req.ipv4)}")
    data = req.ipv4[0]
    try:
        subnet = ipaddress.IPv4Network(data.pool)
    except ValueError:
        raise DriverError(f"IPv4Data.Pool {data.pool!r} is not an IPv4 subnet")
    if subnet.prefixlen > 30:
        raise DriverError(f"subnet {subnet} is too small (at most /30)")
    try:
        gw = ipaddress.IPv4Interface(data.gateway) if data.gateway else None
    except ValueError:
        raise DriverError(f"IPv4Data.Gateway {data.gateway!r} is not an IPv4 address")
    if gw is None:
        gw = ipaddress.IPv4Interface(f"{next(subnet.hosts())}/{subnet.prefixlen}")
    gw = ipaddress.IPv4Interface(f"{gw.ip}/{subnet.prefixlen}")
    if gw.ip not in subnet:
        raise DriverError(f"gateway {gw.ip} is outside subnet {subnet}")
    return subnet, gw


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

    def _network(self, network_id: str) -> dict[str, Any]:
        net = self.state.networks.get(network_id)
        if net is None:
            raise NotFound(f"network {network_id[:12]} is not an xmasq network on this host")
        return net

    def _endpoint(self, endpoint_id: str) -> dict[str, Any]:
        ep = self.state.endpoints.get(endpoint_id)
        if ep is None:
            raise NotFound(f"endpoint {endpoint_id[:12]} does not exist")
        return ep

    # -- capabilities and discovery --------------------------------------
    def capabilities(self) -> dict[str, Any]:
        return {"Scope": self.scope, "ConnectivityScope": "global"}

    def discover(self, req: p.DiscoveryRequest, new: bool) -> dict[str, Any]:
        """Recorded and logged only: peers come from etcd, which also covers hosts outside swarm."""
        key = json.dumps(req.discovery_data, sort_keys=True)
        if new:
            self.discovered[key] = {"type": req.discovery_type, "data": req.discovery_data}
        else:
            self.discovered.pop(key, None)
        _log.info("discovery " + ("new" if new else "delete"), type=req.discovery_type, data=req.discovery_data)
        return {}

    # -- networks ---------------------------------------------------------
    def create_network(self, req: p.NetworkRequest) -> dict[str, Any]:
        generic = req.options.get(p.GENERIC) or {}
        if not isinstance(generic, dict):
            raise DriverError(f"Options.{p.GENERIC} must be an object")
        _refuse_what_docker_asks_beyond(req)
        subnet, gateway = _subnet_and_gateway(req)
        opts = parse_network_options(generic, req.network_id, self.overlay.underlay().mtu)
        internal = bool(req.options.get(p.INTERNAL, False))
        key, vni_wanted = opts["key"], opts["vni"]
        with self._networks_lock, self._locked(req.network_id):
            if req.network_id in self.state.networks:
                return {}
            undo = Undo()
            with undo.guard():
                existing = self.store.get_network(key)
                if existing and existing["subnet"] != str(subnet):
                    raise DriverError(f"network {key} already exists with subnet {existing['subnet']}, not {subnet}")
                if existing and vni_wanted is not None and existing["vni"] != vni_wanted:
                    raise DriverError(f"network {key} already exists with VNI {existing['vni']}")
                vni = existing["vni"] if existing else self.store.claim_vni(key, vni_wanted)
                undo.add("leave network in etcd", lambda: self.store.leave_network(key, vni))
                cluster_record = {
                    "vni": vni,
                    "subnet": str(subnet),
                    "gateway": str(gateway),
                    "mtu": opts["mtu"],
                    "internal": internal,
                    "options": opts["options"],
                }
                if not existing:
                    self.store.put_network(key, cluster_record)
                self.store.join_network(key)
                undo.add("delete devices", lambda: self.overlay.delete_network(vni))
                self.overlay.ensure_network(vni, gateway, opts["mtu"])
                undo.add("delete rules", lambda: self.firewall.remove_network(vni))
                self.firewall.add_network(vni, bridge_name(vni), str(subnet), internal)
                self.state.set_network(req.network_id, dict(cluster_record, key=key, fastpath=opts["fastpath"]))
        _log.info("network created", network=req.network_id[:12], key=key, vni=vni, subnet=subnet, internal=internal)
        return {}

    def delete_network(self, req: p.NetworkIdRequest) -> dict[str, Any]:
        with self._networks_lock, self._locked(req.network_id):
            net = self.state.networks.get(req.network_id)
            if net is None:
                return {}
            for eid, ep in list(self.state.endpoints.items()):
                if ep["network_id"] == req.network_id:
                    self._remove_endpoint(eid, ep, net)
            self.store.leave_network(net["key"], net["vni"])
            self.firewall.remove_network(net["vni"])
            self.overlay.delete_network(net["vni"])
            self.state.set_network(req.network_id, None)
        _log.info("network deleted", network=req.network_id[:12], key=net["key"], vni=net["vni"])
        return {}

    def allocate_network(self, req: p.NetworkRequest) -> dict[str, Any]:
        """Swarm manager: claim the VNI cluster-wide; echo the options plus what was allocated."""
        options = {str(k): str(v) for k, v in req.options.items()}
        _refuse_what_cannot_be_honoured(options)
        key = options.get(OPT_NETWORK) or req.network_id
        if not _NAME.match(key):
            raise DriverError(f"option {OPT_NETWORK}={key!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        vni = self.store.claim_vni(key, _int_option(options, OPT_VNI, 1, VNI_LAST))
        return {"Options": dict(options, **{OPT_VNI: str(vni)})}

    def free_network(self, req: p.NetworkIdRequest) -> dict[str, Any]:
        """Swarm manager: the network is gone. Its VNI goes now unless a host still has the network
        (then the last host to leave releases it)."""
        released = self.store.release_if_unused(req.network_id)
        _log.info("network freed", network=req.network_id[:12], vni_released=released)
        return {}

    # -- endpoints --------------------------------------------------------
    def create_endpoint(self, req: p.CreateEndpointRequest) -> dict[str, Any]:
        iface = req.interface
        for name in ("Address", "AddressIPv6", "MacAddress"):
            if not isinstance(iface.get(name) or "", str):
                raise DriverError(f"Interface.{name} must be a string")
        if iface.get("AddressIPv6"):
            raise DriverError("IPv6 is not supported by xmasq yet")
        for k in req.options:  # Docker's own keys are Docker's to honour; a user's --driver-opt is not
            if not k.startswith(p.DOCKER_PREFIX):
                raise DriverError(f"endpoint option {k} is not supported by xmasq (it has no endpoint options)")
        with self._locked(req.network_id):
            net = self._network(req.network_id)
            if req.endpoint_id in self.state.endpoints:
                return self._endpoint_reply(iface, self.state.endpoints[req.endpoint_id])
            address = iface.get("Address") or ""
            try:
                ip = ipaddress.IPv4Interface(address)
            except ValueError:
                raise DriverError(f"Interface.Address {address!r} is not an IPv4 address in CIDR form")
            if ip.ip not in ipaddress.IPv4Network(net["subnet"]):
                raise DriverError(f"address {ip.ip} is outside the network's subnet {net['subnet']}")
            mac = iface.get("MacAddress") or mac_for_ip(ip.ip)
            if not _MAC.match(mac):
                raise DriverError(f"Interface.MacAddress {mac!r} is not a MAC address")
            owner = self.store.endpoints(net["key"]).get(str(ip.ip))
            if owner and owner["host"] != self.store.host:
                raise DriverError(
                    f"address {ip.ip} is in use by endpoint {owner['endpoint'][:12]} on host {owner['host']}"
                )
            undo = Undo()
            with undo.guard():
                undo.add("delete veth", lambda: self.overlay.delete_veth(req.endpoint_id))
                ifname = self.overlay.create_veth(req.endpoint_id, net["vni"], mac, net["mtu"])
                host_veth = veth_names(req.endpoint_id)[0]
                self.overlay.steer(host_veth, _steering(net))
                undo.add("remove from eBPF maps", lambda: self.datapath.remove_local(net["vni"], str(ip.ip)))
                self.datapath.add_local(host_veth, net["vni"], str(ip.ip), mac, net["fastpath"])
                undo.add("delete endpoint in etcd", lambda: self.store.delete_endpoint(net["key"], str(ip.ip)))
                self.store.put_endpoint(net["key"], str(ip.ip), {"mac": mac, "endpoint": req.endpoint_id})
                ep: dict[str, Any] = {
                    "network_id": req.network_id,
                    "address": str(ip),
                    "mac": mac,
                    "ifname": ifname,
                    "ports": [],
                }
                self.state.set_endpoint(req.endpoint_id, ep)
        _log.info("endpoint created", network=req.network_id[:12], endpoint=req.endpoint_id[:12], address=ip, mac=mac)
        return self._endpoint_reply(iface, ep)

    @staticmethod
    def _endpoint_reply(iface: dict[str, Any], ep: dict[str, Any]) -> dict[str, Any]:
        # Docker rejects a reply that sets a field it already gave.
        if iface.get("MacAddress"):
            return {}
        return {"Interface": {"MacAddress": ep["mac"]}}

    def endpoint_oper_info(self, req: p.EndpointRequest) -> dict[str, Any]:
        ep = self._endpoint(req.endpoint_id)
        value: dict[str, Any] = {"ifname": ep["ifname"], "mac": ep["mac"]}
        if ep["ports"]:
            value[p.PORTMAP] = [PortMapping(**m).wire() for m in ep["ports"]]
        return {"Value": value}

    def delete_endpoint(self, req: p.EndpointRequest) -> dict[str, Any]:
        with self._locked(req.network_id):
            ep = self.state.endpoints.get(req.endpoint_id)
            if ep is None:
                return {}
            self._remove_endpoint(req.endpoint_id, ep, self.state.networks.get(ep["network_id"]))
        _log.info("endpoint deleted", network=req.network_id[:12], endpoint=req.endpoint_id[:12])
        return {}

    def _remove_endpoint(self, endpoint_id: str, ep: dict[str, Any], net: dict[str, Any] | None) -> None:
        if net is not None:
            ip = str(ipaddress.IPv4Interface(ep["address"]).ip)
            owner = self.store.endpoints(net["key"]).get(ip)
            if owner and owner.get("endpoint") == endpoint_id:
                self.store.delete_endpoint(net["key"], ip)
            self.datapath.remove_local(net["vni"], ip)
        self.firewall.remove_ports(endpoint_id)
        self.overlay.delete_veth(endpoint_id)
        self.state.set_endpoint(endpoint_id, None)

    def join(self, req: p.JoinRequest) -> dict[str, Any]:
        net = self._network(req.network_id)
        ep = self._endpoint(req.endpoint_id)
        reply: dict[str, Any] = {
            "InterfaceName": {"SrcName": ep["ifname"], "DstPrefix": net["options"].get(p.IFACE_PREFIX) or "eth"},
            "StaticRoutes": [],
            "DisableGatewayService": False,
        }
        if not net["internal"]:
            reply["Gateway"] = str(ipaddress.IPv4Interface(net["gateway"]).ip)
        _log.info(
            "endpoint joined", network=req.network_id[:12], endpoint=req.endpoint_id[:12], sandbox=req.sandbox_key
        )
        return reply

    def leave(self, req: p.EndpointRequest) -> dict[str, Any]:
        _log.info("endpoint left", network=req.network_id[:12], endpoint=req.endpoint_id[:12])
        return {}

    # -- published ports --------------------------------------------------
    def program_external_connectivity(self, req: p.ExternalConnectivityRequest) -> dict[str, Any]:
        raw = req.options.get(p.PORTMAP) or []
        if not isinstance(raw, list):
            raise DriverError(f"Options.{p.PORTMAP} must be a list")
        with self._locked(req.network_id):
            net = self._network(req.network_id)
            ep = self._endpoint(req.endpoint_id)
            if net["internal"] or not raw:
                return {}
            ports = [self._port_mapping(m, ep) for m in raw]
            undo = Undo()
            with undo.guard():
                undo.add("remove port rules", lambda: self.firewall.remove_ports(req.endpoint_id))
                self.firewall.add_ports(req.endpoint_id, bridge_name(net["vni"]), ports)
                self.state.set_endpoint(req.endpoint_id, dict(ep, ports=[vars(m) for m in ports]))
        _log.info(
            "ports published",
            network=req.network_id[:12],
            endpoint=req.endpoint_id[:12],
            ports=",".join(f"{m.host_port}->{m.port}/{m.proto}" for m in ports),
        )
        return {}

    @staticmethod
    def _port_mapping(m: Any, ep: dict[str, Any]) -> PortMapping:
        if not isinstance(m, dict):
            raise DriverError(f"{p.PORTMAP} entries must be objects")
        try:
            proto = proto_name(int(m.get("Proto", 6)))
            port, host_port = int(m["Port"]), int(m.get("HostPort") or 0)
            host_ip = str(m.get("HostIP") or "")
            if host_ip in ("0.0.0.0", "::"):
                host_ip = ""
            if host_ip:
                ipaddress.IPv4Address(host_ip)
        except (KeyError, TypeError, ValueError) as e:
            raise DriverError(f"bad {p.PORTMAP} entry {m!r}: {e}")
        if not 0 < port < 65536 or not 0 <= host_port < 65536:
            raise DriverError(f"bad {p.PORTMAP} entry {m!r}: port out of range")
        if host_port == 0:
            host_port = _free_port(proto)
        container_ip = str(ipaddress.IPv4Interface(ep["address"]).ip)
        return PortMapping(proto, container_ip, port, host_ip, host_port)

    def revoke_external_connectivity(self, req: p.EndpointRequest) -> dict[str, Any]:
        with self._locked(req.network_id):
            ep = self.state.endpoints.get(req.endpoint_id)
            if ep is None:
                return {}
            self.firewall.remove_ports(req.endpoint_id)
            self.state.set_endpoint(req.endpoint_id, dict(ep, ports=[]))
        return {}

    # -- the cluster's copy of this host's records -------------------------
    def reassert(self, view: ClusterView) -> Reassertion:
        """Write back what `view` lacks or shows stale of this host's networks (their records, VNIs,
        this host's membership) and endpoints; remove this host's records of what it no longer has.
        What another owner holds now is a conflict: reported, never overwritten."""
        done, host = Reassertion(), self.store.host
        with self._networks_lock:  # no network of this host appears or goes meanwhile
            keys = {net["key"] for net in self.state.networks.values()}
            for nid in list(self.state.networks):
                with self._locked(nid):
                    self._reassert_network(view, nid, done)
            for key, members in view.members.items():
                if host in members and key not in keys:
                    vnis = [int(vni) for vni, owner in view.vnis.items() if owner == key]
                    self.store.leave_network(key, vnis[0] if vnis else 0)
                    done.removed += 1
            for key, records in view.endpoints.items():
                if key not in keys:
                    done.removed += sum(self._remove_own_endpoint(key, ip) for ip in self._own(records))
        return done

    def _reassert_network(self, view: ClusterView, nid: str, done: Reassertion) -> None:
        net = self.state.networks.get(nid)
        if net is None:
            return
        key, vni, host = net["key"], net["vni"], self.store.host
        ours = {k: net[k] for k in ("vni", "subnet", "gateway", "mtu", "internal", "options")}
        theirs: Any = view.networks.get(key)
        if theirs is None:
            written, held = self.store.assert_key(self.store.network_key(key), json.dumps(ours, sort_keys=True))
            done.repaired += written
            theirs = None if held is None else decode(held)
        if theirs is not None and (
            not isinstance(theirs, dict) or (theirs.get("vni"), theirs.get("subnet")) != (vni, net["subnet"])
        ):
            done.conflicts.append(Conflict("network", key, _describe_network(ours), _describe_network(theirs)))
        if view.vnis.get(str(vni)) != key:
            written, owner = self.store.assert_key(self.store.vni_key(vni), key)
            done.repaired += written
            if owner is not None:
                done.conflicts.append(Conflict("vni", str(vni), key, owner))
        if host not in view.members.get(key, set()):
            self.store.join_network(key)
            done.repaired += 1
        mine = {  # endpoints of other networks may change meanwhile: a copy (this network's cannot)
            str(ipaddress.IPv4Interface(ep["address"]).ip): {"mac": ep["mac"], "endpoint": eid}
            for eid, ep in self.state.snapshot()["endpoints"].items()
            if self.state.networks.get(ep["network_id"], {}).get("key") == key
        }
        for ip, record in mine.items():
            if view.endpoints.get(key, {}).get(ip) == dict(record, host=host):
                continue
            written, held = self.store.assert_key(self.store.endpoint_key(key, ip), self.store.endpoint_value(record))
            other = None if held is None else decode(held)
            if isinstance(other, dict) and other.get("host") == host:  # this host's, stale: ours is the truth
                self.store.put_endpoint(key, ip, record)
                written = True
            elif other is not None:
                theirs_desc = (
                    f"{other.get('host')} {str(other.get('endpoint'))[:12]}" if isinstance(other, dict) else str(other)
                )
                done.conflicts.append(
                    Conflict("endpoint", f"{key} {ip}", f"{host} {record['endpoint'][:12]}", theirs_desc)
                )
            done.repaired += written
        stale = self._own(view.endpoints.get(key, {})) - mine.keys()
        done.removed += sum(self._remove_own_endpoint(key, ip) for ip in stale)

    def _own(self, records: dict[str, Any]) -> set[str]:
        """The addresses whose endpoint record is this host's."""
        return {ip for ip, r in records.items() if isinstance(r, dict) and r.get("host") == self.store.host}

    def _remove_own_endpoint(self, key: str, ip: str) -> bool:
        """Delete endpoint record key/ip if it is this host's (one that this host no longer has)."""
        return self.store.delete_if(self.store.endpoint_key(key, ip), lambda v: bool(self._own({ip: decode(v)})))

    # -- restart ----------------------------------------------------------
    def restore(self) -> None:
        """Re-create what the local state says this host has (after a driver restart)."""
        self.firewall.ensure_base()
        networks = self.state.networks
        for nid, net in networks.items():
            self.overlay.ensure_network(net["vni"], ipaddress.IPv4Interface(net["gateway"]), net["mtu"])
            self.firewall.add_network(net["vni"], bridge_name(net["vni"]), net["subnet"], net["internal"])
            _log.info("network restored", network=nid[:12], vni=net["vni"])
        endpoints = [
            (eid, ep, networks[ep["network_id"]])
            for eid, ep in self.state.endpoints.items()
            if ep["network_id"] in networks
        ]
        for eid, ep, net in endpoints:
            ip, host_veth = str(ipaddress.IPv4Interface(ep["address"]).ip), veth_names(eid)[0]
            self.datapath.add_local(host_veth, net["vni"], ip, ep["mac"], net["fastpath"])
            self.overlay.steer(host_veth, _steering(net))
            if ep["ports"]:
                self.firewall.add_ports(eid, bridge_name(net["vni"]), [PortMapping(**m) for m in ep["ports"]])
        try:
            for net in networks.values():
                self.store.join_network(net["key"])
            for eid, ep, net in endpoints:
                ip = str(ipaddress.IPv4Interface(ep["address"]).ip)
                self.store.put_endpoint(net["key"], ip, {"mac": ep["mac"], "endpoint": eid})
        except BackendError as e:
            _log.warning(
                "cluster state not refreshed at start (etcd unreachable); local networking is unaffected", error=e
            )


def _describe_network(record: Any) -> str:
    if isinstance(record, dict):
        return f"VNI {record.get('vni')} subnet {record.get('subnet')}"
    return str(record)


def _steering(net: dict[str, Any]) -> str | None:
    """The network's own flow steering (`-o xmasq.steer`), else None: the driver's setting."""
    return net["options"].get(OPT_STEER)


def _free_port(proto: str) -> int:
    """An ephemeral host port for `-p CONTAINERPORT` (no host port given)."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])
