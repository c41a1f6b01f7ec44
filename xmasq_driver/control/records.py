"""This host's records in etcd, derived from its local state.

The host owns: its membership of each of its networks, those networks' records and VNIs, its
endpoints (one record per address), its holds of IPAM pools and its address claims. Requests
change them here, each together with the local state (`join`, `publish`, `hold`, `claim`, ...);
`reassert` derives all of them from the local state, diffs that against the cluster view and
writes the difference: missing or stale records written back, records of this host that it no
longer has removed, records someone else now holds reported as conflicts and never overwritten.
The reconciler calls it on every full pass and batch of changes: at start right after the kernel
state is restored, and whenever etcd was restored empty or from an older snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .. import log
from ..errors import BackendError, StorageError
from .layout import ADDRESSES, ENDPOINTS, GATEWAY_OWNER, HOLDERS, MEMBERS, NETWORKS, VNIS, pool_id_of, pool_key
from .model import Address, ClusterNetwork, LocalEndpoint, LocalNetwork, Pool, RemoteEndpoint
from .state import LocalState
from .store import ClusterStore, ClusterView, Conflict, Reassertion

_log = log.get("records")
ADDRESS, GATEWAY = "address", "gateway"  # the kinds of claim in the local record of a pool


@dataclass
class RecordCounters:
    reasserted: int = 0  # records written back to etcd (missing or stale)
    stale_removed: int = 0  # records of this host etcd had that the host no longer has


class HostRecords:
    def __init__(self, store: ClusterStore, state: LocalState):
        self.store, self.state, self.host = store, state, store.host
        self.counters = RecordCounters()
        # Replaced whole by each pass (readers, such as `xmasq status`, see one pass's or the next's).
        self.conflicts: dict[tuple[str, str], Conflict] = {}

    # -- networks and endpoints (callers hold the network's lock) ----------
    def join(self, net: LocalNetwork, new: bool) -> None:
        """This host's membership, with the network's record when the network is new to the cluster."""
        self.store.join_network(net.key, net.cluster() if new else None)

    def leave(self, net: LocalNetwork) -> None:
        self.store.leave_network(net.key, net.vni)

    def publish(self, net: LocalNetwork, endpoint_id: str, ep: LocalEndpoint) -> None:
        self.store.put_endpoint(net.key, ep.ips, RemoteEndpoint(self.host, ep.mac, endpoint_id))

    def withdraw(self, net: LocalNetwork, endpoint_id: str, ep: LocalEndpoint) -> None:
        """The endpoint's records that are still its own (another's may have replaced one)."""
        records = {ip: self.store.get_endpoint(net.key, ip) for ip in ep.ips}
        ours = [ip for ip, record in records.items() if record and record.endpoint == endpoint_id]
        if ours:
            self.store.delete_endpoint(net.key, ours)

    # -- IPAM (callers hold state.pools_lock) ----------------------------------
    def pools(self, view: ClusterView | None = None) -> dict[str, Pool]:
        """This host's pools. A state file from before pools were recorded gets this host's records
        from etcd, once, rather than having them removed."""
        if self.state.pools is None:
            view = view or self.store.view()
            adopted: dict[str, Pool] = {}
            for pool, holders in view.holders.items():
                if self.host in holders:
                    claims = view.addresses.get(pool, {}).items()
                    mine = {ip: owner for ip, owner in claims if owner in (GATEWAY_OWNER, self.host)}
                    kinds = {ip: GATEWAY if owner == GATEWAY_OWNER else ADDRESS for ip, owner in mine.items()}
                    adopted[pool_id_of(pool)] = Pool(int(holders[self.host]), kinds)
            self.state.adopt_pools(adopted)
            _log.info("IPAM records adopted from etcd", pools=len(adopted))
        assert self.state.pools is not None
        return self.state.pools

    def hold(self, pool_id: str) -> None:
        self.pools()
        self.store.hold_pool(pool_id)
        with _undone_if_unsaved(lambda: self.store.release_pool(pool_id)):
            self._record(pool_id, holds=1)

    def release(self, pool_id: str) -> bool:
        """Drop one hold; this host's last hold forgets its claims. True if the pool was freed."""
        record = self.pools().get(pool_id)
        if record and record.holds > 1:
            self._record(pool_id, holds=-1)
        elif record:
            self.state.set_pool(pool_id, None)
        return self.store.release_pool(pool_id)

    def claim(self, pool_id: str, ip: Address, gateway: bool) -> bool:
        """Claim `ip` for this host (a gateway: for every host of the network); False if taken."""
        self.pools()
        claimed = self.store.claim_address(pool_id, ip, GATEWAY_OWNER if gateway else self.host)
        shared = gateway and not claimed and self.store.address_owner(pool_id, ip) == GATEWAY_OWNER
        if not claimed and not shared:  # (every host of the network shares the gateway)
            return False
        undo = (lambda: self.store.release_address(pool_id, ip)) if claimed else lambda: None
        with _undone_if_unsaved(undo):
            self._record(pool_id, address=str(ip), kind=GATEWAY if gateway else ADDRESS)
        return True

    def unclaim(self, pool_id: str, ip: Address) -> None:
        if pool_id in self.pools():
            self._record(pool_id, address=str(ip))
        self.store.release_address(pool_id, ip)

    def _record(self, pool_id: str, holds: int = 0, address: str = "", kind: str = "") -> None:
        """Change this host's record of a pool: holds by `holds`, an address added (kind) or
        removed (no kind). A pool with no holds left is forgotten."""
        old = self.pools().get(pool_id, Pool())
        addresses = dict(old.addresses)
        if address and kind:
            addresses[address] = kind
        elif address:
            addresses.pop(address, None)
        record = Pool(old.holds + holds, addresses)
        removal = holds < 0 or (bool(address) and not kind)
        self.state.set_pool(pool_id, record if record.holds > 0 or record.addresses else None, removal)

    # -- the cluster's copy ------------------------------------------------
    def reassert(self, view: ClusterView) -> Reassertion:
        """Diff what this host owns against `view` and write the difference; the conflicts found
        replace those known (unless etcd failed part way: then they stand until a whole pass)."""
        done, failed = Reassertion(), False
        for part in (self._networks, self._pools):
            try:
                done.add(part(view))
            except BackendError as e:
                _log.warning("records not re-asserted", records=part.__name__.strip("_"), error=e)
                failed = True
        if done.repaired or done.removed:
            _log.info("records re-asserted in etcd", host=self.host, written=done.repaired, removed=done.removed)
        self.counters.reasserted += done.repaired
        self.counters.stale_removed += done.removed
        if not failed:
            self._note_conflicts(done.conflicts)
        return done

    def _note_conflicts(self, found: list[Conflict]) -> None:
        current = {(c.kind, c.key): c for c in found}
        for k, c in current.items():
            if self.conflicts.get(k) != c:
                _log.warning("record conflict: this host's record kept, etcd's not overwritten", **asdict(c))
        for k, c in self.conflicts.items():
            if k not in current:
                _log.info("record conflict resolved", kind=c.kind, key=c.key)
        self.conflicts = current

    def _networks(self, view: ClusterView) -> Reassertion:
        done = Reassertion()
        with self.state.networks_lock:  # no network of this host appears or goes meanwhile
            keys = {net.key for net in self.state.networks.values()}
            for nid in list(self.state.networks):
                with self.state.changing(nid):
                    net = self.state.networks.get(nid)
                    if net is not None:
                        done.add(self._network(view, net))
            for key, _ in view.owned_by(self.host, MEMBERS):
                if key not in keys:
                    vnis = [int(vni) for vni, owner in view.vnis.items() if owner == key]
                    self.store.leave_network(key, vnis[0] if vnis else 0)
                    done.removed += 1
            for key, ip in view.owned_by(self.host, ENDPOINTS):
                if key not in keys:
                    done.removed += self._remove_own_endpoint(key, ip)
        return done

    def _network(self, view: ClusterView, net: LocalNetwork) -> Reassertion:
        done, key, ours = Reassertion(), net.key, net.cluster()
        theirs: ClusterNetwork | str | None = view.networks.get(key)
        if theirs is None:
            written, held = self.store.assert_key(NETWORKS.key(key), NETWORKS.encode(ours))
            done.repaired += written
            theirs = None if held is None else NETWORKS.decode(held)
        if theirs is not None and (not isinstance(theirs, ClusterNetwork) or not ours.same_network(theirs)):
            described = theirs.describe() if isinstance(theirs, ClusterNetwork) else theirs
            done.conflicts.append(Conflict("network", key, ours.describe(), described))
        if view.vnis.get(str(net.vni)) != key:
            written, owner = self.store.assert_key(VNIS.key(net.vni), key)
            done.repaired += written
            if owner is not None:
                done.conflicts.append(Conflict("vni", str(net.vni), key, owner))
        if self.host not in view.members.get(key, set()):
            self.store.join_network(key)
            done.repaired += 1
        # Endpoints of other networks may change meanwhile (a copy); this network's cannot.
        mine = {
            ip: RemoteEndpoint(self.host, ep.mac, eid)
            for eid, ep in self.state.endpoints_of({key}).items()
            for ip in ep.ips
        }
        for ip, record in mine.items():
            if view.endpoints.get(key, {}).get(ip) == record:
                continue
            written, held = self.store.assert_key(ENDPOINTS.key(key, ip), ENDPOINTS.encode(record))
            other = None if held is None else ENDPOINTS.decode(held)
            if isinstance(other, RemoteEndpoint) and other.host == self.host:  # this host's, stale: ours is the truth
                self.store.put_endpoint(key, [ip], record)
                written = True
            elif other is not None:
                described = other.describe() if isinstance(other, RemoteEndpoint) else other
                done.conflicts.append(Conflict("endpoint", f"{key} {ip}", record.describe(), described))
            done.repaired += written
        stale = {ip for k, ip in view.owned_by(self.host, ENDPOINTS) if k == key} - mine.keys()
        done.removed += sum(self._remove_own_endpoint(key, ip) for ip in stale)
        return done

    def _remove_own_endpoint(self, key: str, ip: str) -> bool:
        """Delete endpoint record key/ip if it is this host's (one that this host no longer has)."""

        def ours(value: str) -> bool:
            record = ENDPOINTS.decode(value)
            return isinstance(record, RemoteEndpoint) and record.host == self.host

        return self.store.delete_if(ENDPOINTS.key(key, ip), ours)

    def _pools(self, view: ClusterView) -> Reassertion:
        done = Reassertion()
        with self.state.pools_lock:
            pools = self.pools(view)
            for pool_id, record in pools.items():
                pool = pool_key(pool_id)
                if record.holds and view.holders.get(pool, {}).get(self.host) != HOLDERS.encode(record.holds):
                    self.store.set_holds(pool, record.holds)
                    done.repaired += 1
                for ip, kind in record.addresses.items():
                    owner = GATEWAY_OWNER if kind == GATEWAY else self.host
                    if view.addresses.get(pool, {}).get(ip) == owner:
                        continue
                    written, theirs = self.store.assert_key(ADDRESSES.key(pool, ip), owner)
                    done.repaired += written
                    if theirs is not None:
                        done.conflicts.append(Conflict("address", f"{pool_id} {ip}", owner, theirs))
            for pool, _ in view.owned_by(self.host, HOLDERS):
                if pool_id_of(pool) not in pools:
                    done.removed += self.store.delete_if(HOLDERS.key(pool, self.host), lambda _: True)
                    self.store.free_if_unheld(pool)
            for pool, ip in view.owned_by(self.host, ADDRESSES):
                if ip not in pools.get(pool_id_of(pool), Pool()).addresses:
                    done.removed += self.store.delete_if(ADDRESSES.key(pool, ip), lambda v: v == self.host)
        return done


@contextmanager
def _undone_if_unsaved(undo: Callable[[], object]) -> Iterator[None]:
    """What was written to etcd is undone if the local state cannot keep it (a full disk)."""
    try:
        yield
    except StorageError:
        undo()
        raise
