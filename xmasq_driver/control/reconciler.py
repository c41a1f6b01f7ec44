"""Keeps this host's slow path and fast-path caches in step with the cluster in etcd.

Two threads:
- heartbeat: this host's key `hosts/<id>` {underlay ip} on a lease, refreshed every
  ttl/3, re-registered if the lease expired (e.g. etcd was down longer than the ttl);
- sync: incremental. A full pass lists the whole cluster once (`sync_once`: at start, after
  the watch failed or was compacted past its revision, after etcd lost data, and every `resync`
  seconds as a safety pass that counts the drift it corrects); between full passes the watch's
  events are applied to the in-memory `ClusterView` and only the endpoints they touch are
  re-programmed (FDB + neighbour on the vxlan device, the fast path's remote entries). A burst
  of writes arrives as one batch: what piles up while a batch is programmed is the next one.
The firewall lets VXLAN in from exactly the live hosts; learned tunnel headers of hosts no
longer live are dropped.
A host whose key is gone keeps its entries for `grace` seconds more, so a driver that
restarts (or a short etcd hiccup) does not flap its containers' reachability.

Each batch also has this host's record owners (network and IPAM drivers) re-assert their
records against the view (they look up their own records through its per-host index, so this
costs what the host has, not what the cluster has): etcd restored empty or from an older
snapshot is repaired at once. Such a restore shows as etcd's revision going back; for `hold`
seconds after that no peer entry or host is removed, while every host writes its records back.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from .. import log, memory
from ..errors import BackendError
from .kv import Changes
from .layout import ENDPOINTS
from .model import LocalNetwork, RemoteEndpoint
from .state import LocalState
from .store import ClusterStore, ClusterView, Conflict, Reassertion

_log = log.get("reconciler")


Peer = tuple[str, str]  # (mac, underlay ip of its host)


class PeerBackend(Protocol):
    def set_peers(self, vni: int, peers: dict[str, Peer]) -> int: ...
    def update_peers(
        self, vni: int, gone: dict[str, Peer], new: dict[str, Peer], kept: frozenset[Peer] = frozenset()
    ) -> int: ...


class RemoteCache(Protocol):
    def set_remote_all(self, by_vni: dict[int, dict[str, Peer]]) -> int: ...
    def update_remote(self, vni: int, gone: dict[str, Peer], new: dict[str, Peer]) -> int: ...
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
        resync: float = 300.0,
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
        self._revision = 0  # the highest etcd revision seen (a full pass's or an event's)
        self._hold_until = 0.0
        self._view: ClusterView | None = None  # the cluster as of the last event applied
        self._full_due = "start"  # why the next step is a full pass ("": it is not)
        self._next_full = 0.0
        self._programmed: dict[int, dict[str, Peer]] = {}  # vni -> peers last programmed
        self._live: dict[str, str] = {}  # hosts last taken as live
        self.conflicts: dict[tuple[str, str], Conflict] = {}
        self.counters = dict.fromkeys(
            ("reasserted", "stale_removed", "data_loss", "full_passes", "batches", "events", "examined", "drift"), 0
        )

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
                self.step()
                failing = False
            except BackendError as e:
                if not failing:
                    _log.warning("sync failed; existing entries kept, retrying", error=e)
                failing = True
                self._full_due = "watch lost"  # events may have been missed meanwhile
                self._stop.wait(1.0)

    def step(self, timeout: float = 1.0) -> None:
        """A full pass if one is due, else wait up to `timeout` for changes and apply them."""
        now = time.monotonic()
        if self._view is None or self._full_due or now >= self._next_full:
            self.sync_once(self._full_due or "periodic")
            return
        deadline = min(self._next_full, self._grace_ends, self._hold_until if self._hold_until > now else now + timeout)
        changes = self.store.changes(self._view.revision + 1, max(0.01, min(timeout, deadline - now)))
        if changes.compacted:
            self.sync_once("compacted")
        elif changes.current and changes.current < self._view.revision:
            self.sync_once("revision went back")
        else:
            self.apply(changes)
            if self._hold_until and time.monotonic() >= self._hold_until:
                self._hold_until = 0.0
                self.sync_once("hold over")  # what was held and is still gone goes now

    def sync_once(self, reason: str = "start") -> int:
        """A full pass: list the whole cluster, re-assert this host's records, program every peer."""
        view = self.store.view()
        holding = self._notice_data_loss(view.revision)
        # Jittered, so that hosts started together do not all list the cluster at the same moment.
        self._next_full = time.monotonic() + self.resync * random.uniform(0.9, 1.1)
        self._view, self._full_due = view, ""
        self.counters["full_passes"] += 1
        self._reassert(view)
        live = self._update_live(view, holding, full=True)
        wanted: dict[int, dict[str, Peer]] = {}
        fast: dict[int, dict[str, Peer]] = {}
        changed = 0
        for nid, net in self.state.snapshot().networks.items():
            local = self._local_ips(net.key)
            peers = {
                ip: p for ip in view.endpoints.get(net.key, {}) if (p := self._peer(view, live, local, net.key, ip))
            }
            if holding:
                peers = {**self._programmed.get(net.vni, {}), **peers}
            try:
                n = self.overlay.set_peers(net.vni, peers)
            except BackendError as e:  # e.g. the network is being deleted right now: again in a second
                _log.warning("peer programming failed", network=nid[:12], vni=net.vni, error=e)
                peers, n = self._programmed.get(net.vni, {}), 0  # what was programmed stays known
                self._next_full = time.monotonic() + 1.0
            wanted[net.vni], fast[net.vni], changed = peers, peers if net.fastpath else {}, changed + n
            if n:
                _log.info("peers programmed", network=nid[:12], vni=net.vni, peers=len(peers), changed=n)
        # The fast path's remote entries follow the same source of truth; a network this host no
        # longer has keeps none.
        changed += self.datapath.set_remote_all(fast)
        self._programmed = wanted
        memory.give_back()  # the listing's transient peak
        if reason == "periodic":
            self.counters["drift"] += changed
            if changed:
                _log.warning("safety pass corrected drift", entries=changed)
        elif reason != "start":
            _log.info("full pass", reason=reason, changed=changed, revision=view.revision)
        return view.revision

    def apply(self, changes: Changes) -> None:
        """Apply a batch of watch events to the view; program the endpoints they touch."""
        view = self._view
        assert view is not None
        touched: set[tuple[str, str]] = set()
        for key, value in changes.events:
            parsed = view.apply(key, value)
            if parsed is not None and parsed[0] is ENDPOINTS:
                network, ip = parsed[1]
                touched.add((network, ip))
        if changes.events:
            view.revision = max(view.revision, changes.revision)
            self._revision = max(self._revision, view.revision)
            self.counters["batches"] += 1
            self.counters["events"] += len(changes.events)
            self._reassert(view)
        holding = time.monotonic() < self._hold_until
        before = dict(self._live)
        live = self._update_live(view, holding)
        for host in before.keys() | live.keys():
            if before.get(host) != live.get(host):
                touched.update(view.owned_by(host, ENDPOINTS))
        networks = {net.vni: net for net in self.state.snapshot().networks.values()}
        for vni in self._programmed.keys() - networks.keys():  # a network this host no longer has
            self.datapath.update_remote(vni, self._programmed.pop(vni), {})
        by_key = {}
        for vni, net in networks.items():
            by_key[net.key] = net
            if vni not in self._programmed:  # a network new on this host: all of its peers
                self._programmed[vni] = {}
                touched.update((net.key, ip) for ip in view.endpoints.get(net.key, {}))
        self.counters["examined"] += len(touched)
        by_network: dict[str, set[str]] = {}
        for key, ip in touched:
            if key in by_key:
                by_network.setdefault(key, set()).add(ip)
        for key, ips in by_network.items():
            self._program(view, live, by_key[key], ips, holding)

    def _program(
        self, view: ClusterView, live: dict[str, str], net: LocalNetwork, ips: set[str], holding: bool
    ) -> None:
        """Program the peers at `ips` of one network as the view has them now."""
        have = self._programmed[net.vni]
        local = self._local_ips(net.key)
        gone: dict[str, Peer] = {}
        new: dict[str, Peer] = {}
        for ip in ips:
            old, want = have.get(ip), self._peer(view, live, local, net.key, ip)
            if want is None and holding:
                continue
            if old is not None and (want is None or want[0] != old[0]):
                gone[ip] = old
            if want is not None and want != old:
                new[ip] = want
        if not gone and not new:
            return
        kept = frozenset(peer for ip, peer in {**have, **new}.items() if ip not in gone or ip in new)
        try:
            changed = self.overlay.update_peers(net.vni, gone, new, kept)
            changed += self.datapath.update_remote(net.vni, gone, new if net.fastpath else {})
        except BackendError as e:  # e.g. the network is being deleted right now: a full pass sorts it out
            _log.warning("peer programming failed", network=net.key, vni=net.vni, error=e)
            self._full_due = "programming failed"
            return
        for ip in gone:
            have.pop(ip, None)
        have.update(new)
        _log.info("peers updated", network=net.key, vni=net.vni, added=len(new), removed=len(gone), changed=changed)

    def _peer(self, view: ClusterView, live: dict[str, str], local: set[str], key: str, ip: str) -> Peer | None:
        """What the record of key/ip asks this host to program, if anything."""
        rec = view.endpoints.get(key, {}).get(ip)
        # a remote record for a local address is a conflict: the local endpoint is kept
        if isinstance(rec, RemoteEndpoint) and rec.host in live and rec.host != self.store.host and ip not in local:
            return rec.mac, live[rec.host]
        return None

    def _local_ips(self, key: str) -> set[str]:
        return {ip for ep in self.state.endpoints_of({key}).values() for ip in ep.ips}

    def _update_live(self, view: ClusterView, holding: bool, full: bool = False) -> dict[str, str]:
        """Take the hosts now live; on a change (or a full pass) the firewall and tunnels follow."""
        live = self._live_hosts(view.hosts)
        if holding:
            live = {**self._live, **live}
        changed, self._live = live != self._live, live
        if changed or full:
            live_ips = set(live.values())
            try:  # first: a new peer's VXLAN must not meet the drop rule
                self.firewall.set_cluster_hosts(live_ips)
            except BackendError as e:
                _log.warning("VXLAN source rules not updated", error=e)
            self.datapath.prune_tunnels(live_ips)
        return live

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

    def has_endpoint(self, key: str, ip: str) -> bool:
        """Whether etcd (as last seen) has an endpoint of network `key` at address ip, on any host."""
        view = self._view
        return view is not None and ip in view.endpoints.get(key, {})

    def health(self) -> dict[str, Any]:
        """For `xmasq status` and metrics: conflicts now, records re-asserted, data losses seen, the
        control plane's work so far, and the peers programmed per VNI."""
        return {
            "conflicts": [asdict(c) for c in self.conflicts.values()],
            **self.counters,
            "holding": time.monotonic() < self._hold_until,
            "peers": {str(vni): len(peers) for vni, peers in list(self._programmed.items())},
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
