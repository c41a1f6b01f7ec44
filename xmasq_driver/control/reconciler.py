"""Keeps this host's slow path and fast-path caches in step with the cluster in etcd.

Incremental. A full pass lists the whole cluster once (`sync_once`: at start, after the watch
failed or was compacted past its revision, after etcd lost data, and every `resync` seconds as
a safety pass that counts the drift it corrects); between full passes the watch's events are
applied to the in-memory `ClusterView` and only the endpoints they touch are re-programmed (FDB +
neighbour on the vxlan device, the fast path's remote entries). A burst of writes arrives as one
batch: what piles up while a batch is programmed is the next one.
The firewall lets VXLAN in from exactly the live hosts (liveness.py says which, with their grace
and the hold after etcd lost data); learned tunnel headers of hosts no longer live are dropped.
Each batch also has this host's records re-asserted against the view (records.py: they are
looked up through the view's per-host index, so this costs what the host has, not what the
cluster has).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .. import log, memory
from ..errors import BackendError
from .kv import Changes
from .layout import ENDPOINTS
from .liveness import Liveness
from .model import LocalNetwork, RemoteEndpoint, TunnelPeer
from .records import HostRecords
from .state import LocalState
from .store import ClusterStore, ClusterView

_log = log.get("reconciler")


Peer = tuple[str, str]  # (mac, underlay ip of its host)
UNDERLAY_POLL = 1.0  # seconds between reads of this host's underlay address


class PeerBackend(Protocol):
    def set_peers(self, vni: int, peers: dict[str, Peer]) -> int: ...
    def update_peers(
        self, vni: int, gone: dict[str, Peer], new: dict[str, Peer], kept: frozenset[Peer] = frozenset()
    ) -> int: ...
    def renumbered_underlay(self) -> str | None: ...


class RemoteCache(Protocol):
    def set_remote_all(self, by_vni: dict[int, dict[str, Peer]], encrypted: frozenset[int] = frozenset()) -> int: ...
    def update_remote(self, vni: int, gone: dict[str, Peer], new: dict[str, Peer], encrypted: bool = False) -> int: ...
    def prune_tunnels(self, live_hosts: set[str]) -> None: ...
    def forget_learned(self) -> None: ...


class SourceFilter(Protocol):
    def set_cluster_hosts(self, hosts: set[str]) -> None: ...


class TunnelPeers(Protocol):
    def set_peers(self, peers: dict[str, TunnelPeer]) -> int: ...


@dataclass
class SyncCounters:
    full_passes: int = 0  # the whole cluster listed
    batches: int = 0  # batches of watch events applied
    events: int = 0
    examined: int = 0  # endpoint records looked at by the batches
    drift: int = 0  # entries a safety pass found wrong


class Reconciler:
    def __init__(
        self,
        store: ClusterStore,
        state: LocalState,
        overlay: PeerBackend,
        datapath: RemoteCache,
        firewall: SourceFilter,
        liveness: Liveness,
        records: HostRecords,
        tunnel: TunnelPeers,
        resync: float = 300.0,
    ):
        self.store, self.state, self.overlay, self.datapath = store, state, overlay, datapath
        self.firewall, self.liveness, self.records, self.tunnel = firewall, liveness, records, tunnel
        self.resync = resync
        self.counters = SyncCounters()
        self._stop = threading.Event()
        self._view: ClusterView | None = None  # the cluster as of the last event applied
        self._full_due = "start"  # why the next step is a full pass ("": it is not)
        self._next_full = 0.0
        self._etcd_back = 0  # liveness.counters.etcd_back as last seen
        self._fresh_watch = False  # the next watch on a new connection
        self._programmed: dict[int, dict[str, Peer]] = {}  # vni -> peers last programmed
        self._live: dict[str, str] = {}  # hosts last taken as live
        self._keys: dict[str, tuple[str, int]] = {}  # their WireGuard keys (kept with them through grace)
        self._tunnel_peers: dict[str, TunnelPeer] | None = None  # as last programmed (None: again)

    def start(self) -> None:
        threading.Thread(target=self.liveness.heartbeat, args=(self._stop,), name="heartbeat", daemon=True).start()
        threading.Thread(target=self._sync_loop, name="sync", daemon=True).start()
        threading.Thread(target=self._follow_underlay, name="underlay", daemon=True).start()

    # -- this host's underlay address ---------------------------------------
    def _follow_underlay(self) -> None:
        """A new underlay address (DHCP, a moved VM): the vxlan devices send from it (the overlay
        re-points them), the fast path forgets the outer headers it cached with the old one, and
        the host record says it, so that every peer's entries follow from etcd."""
        while not self._stop.wait(UNDERLAY_POLL):
            try:
                ip = self.overlay.renumbered_underlay()
            except BackendError as e:
                _log.warning("underlay not re-read", error=e)
                continue
            if ip is not None:
                self.datapath.forget_learned()
                self.store.kv.reconnect()  # before the record goes out on a connection from the old one
                self.liveness.announce(dataclasses.replace(self.liveness.record, ip=ip))
                self._full_due = "underlay address changed"

    def stop(self) -> None:
        self._stop.set()

    # -- sync -------------------------------------------------------------
    def _sync_loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            self.state.flush()  # a removal a full disk kept from state.json, once it has room
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
        now, hold_until = time.monotonic(), self.liveness.hold_until
        if self.liveness.counters.etcd_back != self._etcd_back:
            # etcd is back after a partition: the watch connection kept from before may be
            # half-open, waiting for what will never come. A full pass, then a new connection.
            self._etcd_back = self.liveness.counters.etcd_back
            self._fresh_watch = True
            self._full_due = self._full_due or "etcd reachable again"
        if self._view is None or self._full_due or now >= self._next_full:
            self.sync_once(self._full_due or "periodic")
            return
        deadline = min(self._next_full, self.liveness.grace_ends, hold_until if hold_until > now else now + timeout)
        fresh, self._fresh_watch = self._fresh_watch, False
        changes = self.store.changes(self._view.revision + 1, max(0.01, min(timeout, deadline - now)), fresh)
        if changes.compacted:
            self.sync_once("compacted")
        elif changes.current and changes.current < self._view.revision:
            self.sync_once("revision went back")
        else:
            self.apply(changes)
            if self.liveness.hold_over():
                self.sync_once("hold over")  # what was held and is still gone goes now

    def sync_once(self, reason: str = "start") -> int:
        """A full pass: list the whole cluster, re-assert this host's records, program every peer.
        A safety pass lists at the revision the watch has reached: what differs then is drift,
        not a change still on its way through the watch (which goes on from there)."""
        view = self.store.view(self._view.revision if reason == "periodic" and self._view else 0)
        holding = self.liveness.seen(view.revision)
        # Jittered, so that hosts started together do not all list the cluster at the same moment.
        self._next_full = time.monotonic() + self.resync * random.uniform(0.9, 1.1)
        self._view, self._full_due = view, ""
        self.counters.full_passes += 1
        self.records.reassert(view)
        live = self._update_live(view, holding, full=True)
        wanted: dict[int, dict[str, Peer]] = {}
        fast: dict[int, dict[str, Peer]] = {}
        changed = 0
        networks = self.state.snapshot().networks
        for nid, net in networks.items():
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
        # longer has keeps none; an encrypted network's are marked so (only the tunnel carries them).
        encrypted = frozenset(net.vni for net in networks.values() if net.encrypted)
        changed += self.datapath.set_remote_all(fast, encrypted)
        self._programmed = wanted
        self._prune_tunnels(live)
        memory.give_back()  # the listing's transient peak
        if reason == "periodic":
            self.counters.drift += changed
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
            self.liveness.advanced(view.revision)
            self.counters.batches += 1
            self.counters.events += len(changes.events)
            self.records.reassert(view)
        holding = self.liveness.holding
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
        self.counters.examined += len(touched)
        by_network: dict[str, set[str]] = {}
        for key, ip in touched:
            if key in by_key:
                by_network.setdefault(key, set()).add(ip)
        for key, ips in by_network.items():
            self._program(view, live, by_key[key], ips, holding)
        if live != before:
            self._prune_tunnels(live)

    def _prune_tunnels(self, live: dict[str, str]) -> None:
        """Forget learned headers of addresses no live host has. After the peers are programmed:
        until then the kernel may still send to a host's old address, and the fast path learn it."""
        self.datapath.prune_tunnels(set(live.values()))

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
            changed += self.datapath.update_remote(net.vni, gone, new if net.fastpath else {}, net.encrypted)
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
        live = self.liveness.live(view.hosts)
        if holding:
            live = {**self._live, **live}
        changed, self._live = live != self._live, live
        if changed or full:
            live_ips = set(live.values())
            try:  # first: a new peer's VXLAN must not meet the drop rule
                self.firewall.set_cluster_hosts(live_ips)
            except BackendError as e:
                _log.warning("VXLAN source rules not updated", error=e)
        self._keys = {**{h: k for h, k in self._keys.items() if h not in view.hosts}, **view.keys}
        peers = {
            host: TunnelPeer(ip, *self._keys[host])
            for host, ip in live.items()
            if host != self.store.host and host in self._keys
        }
        if peers != self._tunnel_peers or full:
            try:
                self.tunnel.set_peers(peers)
                self._tunnel_peers = peers
            except BackendError as e:  # encrypted traffic to a new peer stays dropped meanwhile
                _log.warning("WireGuard peers not updated; retrying", error=e)
                self._full_due = "tunnel programming failed"
        return live

    def has_endpoint(self, key: str, ip: str) -> bool:
        """Whether etcd (as last seen) has an endpoint of network `key` at address ip, on any host."""
        view = self._view
        return view is not None and ip in view.endpoints.get(key, {})

    def health(self) -> dict[str, Any]:
        """For `xmasq status` and metrics: conflicts now, records re-asserted, data losses seen, the
        control plane's work so far, and the peers programmed per VNI."""
        return {
            "conflicts": [asdict(c) for c in self.records.conflicts.values()],
            **asdict(self.records.counters),
            **asdict(self.liveness.counters),
            **asdict(self.counters),
            "holding": self.liveness.holding,
            "peers": {str(vni): len(peers) for vni, peers in list(self._programmed.items())},
        }
