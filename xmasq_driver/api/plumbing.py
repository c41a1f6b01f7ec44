"""What makes a network or an endpoint on this host: one ordered list of steps each, with their
undo, used by requests and by the restore at start alike.

- create: every step in order, then the local state's write; on a failure the undo of every step
  begun, in reverse (a step's undo is safe to run after its own do failed part way), so nothing
  is left half made;
- restore at start: the steps that re-make what the kernel lost with the driver (not the veth,
  which outlives it, nor the records: the reconciler's first pass re-asserts those);
- delete: every undo, in reverse, then the local state's write (each undo is idempotent: a delete
  that failed part way is repeated, and the state still has what to repeat it for).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .. import log
from ..control.model import Interface, LocalEndpoint, LocalNetwork, PortMapping
from ..control.records import HostRecords
from ..dataplane.overlay import Underlay, bridge_name, veth_names

_log = log.get("plumbing")


class OverlayBackend(Protocol):
    def underlay(self) -> Underlay: ...
    def ensure_network(self, vni: int, gateways: list[Interface], mtu: int, encrypted: bool = False) -> None: ...
    def delete_network(self, vni: int) -> None: ...
    def create_veth(self, endpoint_id: str, vni: int, mac: str, mtu: int) -> str: ...
    def delete_veth(self, endpoint_id: str) -> None: ...
    def steer(self, host: str, mode: str | None = None) -> None: ...


class DatapathBackend(Protocol):
    def add_local(self, ifname: str, vni: int, ips: list[str], mac: str, fast: bool) -> None: ...
    def remove_local(self, vni: int, ip: str) -> None: ...


class TunnelBackend(Protocol):
    def require(self, what: str = ...) -> None: ...
    def attach(self, vni: int) -> None: ...
    def detach(self, vni: int) -> None: ...


class FirewallBackend(Protocol):
    def ensure_base(self) -> None: ...
    def add_network(self, vni: int, bridge: str, subnets: list[str], internal: bool) -> None: ...
    def remove_network(self, vni: int) -> None: ...
    def add_ports(self, endpoint_id: str, bridge: str, ports: list[PortMapping]) -> None: ...
    def remove_ports(self, endpoint_id: str) -> None: ...


@dataclass(frozen=True)
class Step:
    name: str
    do: Callable[[], Any]
    undo: Callable[[], Any]
    restore: bool = True  # part of the restore at start


def create(steps: Sequence[Step], what: str, commit: Callable[[], Any] = lambda: None) -> None:
    """Every step, then `commit` (the local state's write); on a failure the undo of every step
    begun, in reverse."""
    begun: list[Step] = []
    try:
        for step in steps:
            begun.append(step)
            step.do()
        commit()
    except BaseException:
        for step in reversed(begun):
            try:
                step.undo()
            except Exception as e:  # keep undoing; report what could not be
                _log.error("rollback step failed", step=step.name, of=what, error=e)
        raise


def restore(steps: Sequence[Step], what: str) -> None:
    create([s for s in steps if s.restore], what)


def delete(steps: Sequence[Step], commit: Callable[[], Any]) -> None:
    """Every undo in reverse, then `commit` (the local state forgets it only once all is gone)."""
    for step in reversed(steps):
        step.undo()
    commit()


def _nothing() -> None:
    pass


class Plumbing:
    """The steps of a network and of an endpoint, over the host's backends."""

    def __init__(
        self,
        overlay: OverlayBackend,
        firewall: FirewallBackend,
        datapath: DatapathBackend,
        records: HostRecords,
        tunnel: TunnelBackend,
    ):
        self.overlay, self.firewall, self.datapath, self.records = overlay, firewall, datapath, records
        self.tunnel = tunnel

    def network(self, net: LocalNetwork, new: bool = False) -> list[Step]:
        """`new`: the network is new to the cluster (its record is written with the membership). An
        encrypted network's tunnel comes before its devices and goes after them: no moment where
        its vxlan device could send outside the tunnel."""
        gateways = [ipaddress.ip_interface(b.gateway) for b in net.blocks]
        bridge = bridge_name(net.vni)
        tunnel = [Step("tunnel", lambda: self.tunnel.attach(net.vni), lambda: self.tunnel.detach(net.vni))]
        return [
            Step("membership in etcd", lambda: self.records.join(net, new), lambda: self.records.leave(net), False),
            *(tunnel if net.encrypted else []),
            Step(
                "devices",
                lambda: self.overlay.ensure_network(net.vni, gateways, net.mtu, net.encrypted),
                lambda: self.overlay.delete_network(net.vni),
            ),
            Step(
                "rules",
                lambda: self.firewall.add_network(net.vni, bridge, net.subnets, net.internal),
                lambda: self.firewall.remove_network(net.vni),
            ),
        ]

    def endpoint(self, endpoint_id: str, ep: LocalEndpoint, net: LocalNetwork | None) -> list[Step]:
        delete_veth = Step("veth", _nothing, lambda: self.overlay.delete_veth(endpoint_id), restore=False)
        delete_ports = Step("port rules", _nothing, lambda: self.firewall.remove_ports(endpoint_id))
        if net is None:  # an endpoint whose network this host lost track of: its devices, to delete
            return [delete_veth, delete_ports]
        host_veth, bridge = veth_names(endpoint_id)[0], bridge_name(net.vni)

        def ports() -> None:
            if ep.ports:  # a restored endpoint's (a new one has none yet)
                self.firewall.add_ports(endpoint_id, bridge, list(ep.ports))

        return [
            replace(delete_veth, do=lambda: self.overlay.create_veth(endpoint_id, net.vni, ep.mac, net.mtu)),
            Step("steering", lambda: self.overlay.steer(host_veth, net.steer), _nothing),
            Step(
                "eBPF maps",
                lambda: self.datapath.add_local(host_veth, net.vni, ep.ips, ep.mac, net.fastpath),
                lambda: self.datapath.remove_local(net.vni, ep.ip),
            ),
            replace(delete_ports, do=ports),
            Step(
                "endpoint in etcd",
                lambda: self.records.publish(net, endpoint_id, ep),
                lambda: self.records.withdraw(net, endpoint_id, ep),
                restore=False,
            ),
        ]
