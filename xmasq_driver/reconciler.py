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

Each pass also has this host's record owners (network and IPAM drivers) re-assert their
records from the same view: etcd restored empty or from an older snapshot is repaired within
a pass. Such a restore shows as etcd's revision going back; for `hold` seconds after that no
peer entry or host is removed, while every host writes its records back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from . import log
from .errors import BackendError
from .model import RemoteEndpoint
from .state import LocalState
from .store import ClusterStore, ClusterView, Conflict, Reassertion

_log = log.get("reconciler")


class PeerBackend(Protocol):
    def set_peers(self, vni: int, peers: dict[str, tuple[str, str]]) -> int: ...


class RemoteCache(Protocol):
    def set_remote(self, vni: int, peers: dict[str, tuple[str, str]]) -> int: ...
    def prune_tunnels(self, live_hosts: set[str]) -> None: ...


class SourceFilter(Protocol):
    def set_cluster_hosts(self, hosts: set[str]) -> None: ...


class RecordOwner(Protocol):
    def reassert(self, view: ClusterView) -> Reassertion: ...


class Reconciler:
    def __init__(
        self,
        store: ClusterStore,
        state: LocalState,
        overlay: PeerBackend,
        datapath: RemoteCache,
        firewall: SourceFilter,
        underlay_ip: str,
        owners: Sequence[RecordOwner] = (),
        ttl: int = 10,
        grace: float = 5.0,
        resync: float = 5.0,
        hold: float = 30.0,
    ):
        self.store, self.state, self.overlay, self.datapath = store, state, overlay, datapath
        self.firewall = firewall
        self.underlay_ip = underlay_ip
        self.owners = owners
        self.ttl, self.grace, self.resync, self.hold = ttl, grace, resync, hold
        self._stop = threading.Event()
        self._missing_since: dict[str, float] = {}
        self._last_ip: dict[str, str] = {}
        self._grace_ends = float("inf")
        self._revision = 0  # the highest etcd revision seen
        self._hold_until = 0.0
        self._programmed: dict[int, dict[str, tuple[str, str]]] = {}  # vni -> peers last programmed
        self._live: dict[str, str] = {}  # hosts last taken as live
        self.conflicts: dict[tuple[str, str], Conflict] = {}
        self.counters = {"reasserted": 0, "stale_removed": 0, "data_loss": 0}

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
                lease, registered = self.store.keep_registered(self.underlay_ip, self.ttl, lease)
                if registered:
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
        view = self.store.view()
        holding = self._notice_data_loss(view.revision)
        self._reassert(view)
        snap = self.state.snapshot()
        networks = snap.networks
        live = self._live_hosts(view.hosts)
        if holding:
            live = {**self._live, **live}
        self._live = live
        live_ips = set(live.values())
        try:  # first: a new peer's VXLAN must not meet the drop rule
            self.firewall.set_cluster_hosts(live_ips)
        except BackendError as e:
            _log.warning("VXLAN source rules not updated", error=e)
        local_ips = {ep.ip for ep in snap.endpoints.values()}
        for nid, net in networks.items():
            peers = {
                ip: (rec.mac, live[rec.host])
                for ip, rec in view.endpoints.get(net.key, {}).items()
                # a remote record for a local address is a conflict: the local endpoint is kept
                if isinstance(rec, RemoteEndpoint)
                and rec.host in live
                and rec.host != self.store.host
                and ip not in local_ips
            }
            if holding:
                peers = {**self._programmed.get(net.vni, {}), **peers}
            self._programmed[net.vni] = peers
            try:
                changed = self.overlay.set_peers(net.vni, peers)
                # The fast path's remote entries follow the same source of truth.
                changed += self.datapath.set_remote(net.vni, peers if net.fastpath else {})
            except BackendError as e:  # e.g. the network is being deleted right now
                _log.warning("peer programming failed", network=nid[:12], vni=net.vni, error=e)
                continue
            if changed:
                _log.info("peers programmed", network=nid[:12], vni=net.vni, peers=len(peers), changed=changed)
        for vni in set(self._programmed) - {net.vni for net in networks.values()}:
            self.datapath.set_remote(vni, {})  # a network this host no longer has: none of its entries stay
            del self._programmed[vni]
        self.datapath.prune_tunnels(live_ips)
        return view.revision

    def _notice_data_loss(self, revision: int) -> bool:
        """True while peers are held after etcd was seen to lose data (its revision went back)."""
        if revision < self._revision:
            self.counters["data_loss"] += 1
            self._hold_until = time.monotonic() + self.hold
            _log.warning(
                "etcd lost data: its revision went back; every peer entry is kept while hosts re-assert their records",
                revision_was=self._revision,
                revision=revision,
                hold=self.hold,
            )
        self._revision = revision
        return time.monotonic() < self._hold_until

    def _reassert(self, view: ClusterView) -> None:
        found, failed = Reassertion(), False
        for owner in self.owners:
            try:
                done = owner.reassert(view)
            except BackendError as e:
                _log.warning("records not re-asserted", owner=type(owner).__name__, error=e)
                failed = True
                continue
            found.repaired += done.repaired
            found.removed += done.removed
            found.conflicts += done.conflicts
        if found.repaired or found.removed:
            _log.info(
                "records re-asserted in etcd", host=self.store.host, written=found.repaired, removed=found.removed
            )
        self.counters["reasserted"] += found.repaired
        self.counters["stale_removed"] += found.removed
        if failed:
            return  # the conflicts known stand until a whole pass has looked again
        current = {(c.kind, c.key): c for c in found.conflicts}
        for k, c in current.items():
            if self.conflicts.get(k) != c:
                _log.warning("record conflict: this host's record kept, etcd's not overwritten", **asdict(c))
        for k, c in self.conflicts.items():
            if k not in current:
                _log.info("record conflict resolved", kind=c.kind, key=c.key)
        self.conflicts = current

    def health(self) -> dict[str, Any]:
        """For `xmasq status` and metrics: conflicts now, records re-asserted, data losses seen."""
        return {
            "conflicts": [asdict(c) for c in self.conflicts.values()],
            **self.counters,
            "holding": time.monotonic() < self._hold_until,
        }

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
