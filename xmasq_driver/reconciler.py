"""Keeps this host's slow path in step with the cluster in etcd.

Two threads:
- heartbeat: this host's key `hosts/<id>` {underlay ip} on a lease, refreshed every
  ttl/3, re-registered if the lease expired (e.g. etcd was down longer than the ttl);
- sync: level-triggered. Read the hosts and the endpoints of this host's networks,
  program every remote endpoint (FDB + neighbour on the vxlan device), remove the
  rest; then wait for any change in etcd from the revision read (a watch), or for
  `resync` seconds, and do it again. A missed event or an etcd outage costs at most
  one resync, never a wrong entry that stays.
The fast path's remote-endpoint cache is written from the same view, and its learned
tunnel headers of hosts no longer live are dropped; the firewall lets VXLAN in from
exactly the live hosts.
A host whose key is gone keeps its entries for `grace` seconds more, so a driver that
restarts (or a short etcd hiccup) does not flap its containers' reachability.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from . import log
from .errors import BackendError
from .state import LocalState
from .store import ClusterStore

_log = log.get("reconciler")


class PeerBackend(Protocol):
    def set_peers(self, vni: int, peers: dict[str, tuple[str, str]]) -> int: ...


class RemoteCache(Protocol):
    def set_remote(self, vni: int, peers: dict[str, tuple[str, str]]) -> int: ...
    def prune_tunnels(self, live_hosts: set[str]) -> None: ...


class SourceFilter(Protocol):
    def set_cluster_hosts(self, hosts: set[str]) -> None: ...


class Reconciler:
    def __init__(
        self,
        store: ClusterStore,
        state: LocalState,
        overlay: PeerBackend,
        datapath: RemoteCache,
        firewall: SourceFilter,
        underlay_ip: str,
        ttl: int = 10,
        grace: float = 5.0,
        resync: float = 5.0,
    ):
        self.store, self.state, self.overlay, self.datapath = store, state, overlay, datapath
        self.firewall = firewall
        self.underlay_ip = underlay_ip
        self.ttl, self.grace, self.resync = ttl, grace, resync
        self._stop = threading.Event()
        self._missing_since: dict[str, float] = {}
        self._last_ip: dict[str, str] = {}
        self._grace_ends = float("inf")

    def start(self) -> None:
        for name, target in (("heartbeat", self._heartbeat), ("sync", self._sync_loop)):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    # -- heartbeat --------------------------------------------------------
    def _heartbeat(self) -> None:
        lease, failing = 0, False
        while not self._stop.is_set():
            try:
                if not lease or not self.store.kv.keepalive(lease):
                    lease = self.store.kv.grant(self.ttl)
                    self.store.register_host(self.underlay_ip, lease)
                    _log.info("host registered", host=self.store.host, ip=self.underlay_ip, ttl=self.ttl)
                if failing:
                    _log.info("etcd reachable again", host=self.store.host)
                failing = False
            except BackendError as e:
                if not failing:
                    _log.warning("heartbeat failed; retrying", error=e)
                failing = True
            self._stop.wait(self.ttl / 3)

    # -- sync -------------------------------------------------------------
    def _sync_loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                revision = self.sync_once()
                failing = False
                self._wait(revision)
            except BackendError as e:
                if not failing:
                    _log.warning("sync failed; existing entries kept, retrying", error=e)
                failing = True
                self._stop.wait(1.0)

    def _wait(self, revision: int) -> None:
        """Until etcd changes after `revision`, stop(), or the resync interval."""
        deadline = min(time.monotonic() + self.resync, self._grace_ends)  # evict on time, not a resync late
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.store.wait_for_change(revision + 1, min(remaining, 1.0)):
                return

    def sync_once(self) -> int:
        networks = self.state.snapshot()["networks"]
        hosts, endpoints, revision = self.store.cluster_view(sorted({n["key"] for n in networks.values()}))
        live = self._live_hosts(hosts)
        live_ips = set(live.values())
        try:  # first: a new peer's VXLAN must not meet the drop rule
            self.firewall.set_cluster_hosts(live_ips)
        except BackendError as e:
            _log.warning("VXLAN source rules not updated", error=e)
        for nid, net in networks.items():
            peers = {
                ip: (rec["mac"], live[rec["host"]])
                for ip, rec in endpoints[net["key"]].items()
                if rec["host"] != self.store.host and rec["host"] in live
            }
            try:
                changed = self.overlay.set_peers(net["vni"], peers)
                # The fast path's remote entries follow the same source of truth.
                changed += self.datapath.set_remote(net["vni"], peers if net["fastpath"] else {})
            except BackendError as e:  # e.g. the network is being deleted right now
                _log.warning("peer programming failed", network=nid[:12], vni=net["vni"], error=e)
                continue
            if changed:
                _log.info("peers programmed", network=nid[:12], vni=net["vni"], peers=len(peers), changed=changed)
        self.datapath.prune_tunnels(live_ips)
        return revision

    def _live_hosts(self, hosts: dict[str, str]) -> dict[str, str]:
        """Hosts with a key, plus those gone for less than the grace period."""
        now = time.monotonic()
        self._last_ip.update(hosts)
        for host in list(self._missing_since):
            if host in hosts:
                del self._missing_since[host]
                _log.info("host back", host=host, ip=hosts[host])
        live = dict(hosts)
        self._grace_ends = float("inf")
        for host, ip in self._last_ip.items():
            if host in hosts:
                continue
            since = self._missing_since.setdefault(host, now)
            if now - since < self.grace:
                live[host] = ip
                self._grace_ends = min(self._grace_ends, since + self.grace)
            elif since != -1:
                _log.warning("host gone; its endpoints removed", host=host, ip=ip)
                self._missing_since[host] = -1  # reported; stays evicted until it comes back
        return live
