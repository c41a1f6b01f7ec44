"""In-memory backends for unit tests of the driver logic (no root, no etcd)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from xmasq_driver.control.kv import Changes, Compacted
from xmasq_driver.control.model import Interface, PortMapping, TunnelPeer
from xmasq_driver.dataplane.overlay import Underlay, veth_names
from xmasq_driver.errors import BackendError, DriverError


class MemoryKV:
    """etcd semantics that the driver relies on: create-if-absent, revisions, leases."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.leases: dict[int, set[str]] = {}
        self.down = False
        self.revision = 1
        self.history: list[tuple[int, str, str | None]] = []  # (revision, key, value or None)
        self.compacted = 0  # history before this revision is gone
        self.base: dict[str, str] = {}  # the data as of `compacted` (or the start)
        self.listed = 0  # keys returned by list_prefix
        self._changed = threading.Condition()

    def _check(self) -> None:
        if self.down:
            raise BackendError("etcd get failed (timeout 3s): http://127.0.0.1:2379: connection refused")

    def _write(self, key: str, value: str | None) -> None:
        with self._changed:
            if value is None:
                if self.data.pop(key, None) is None:
                    return
            else:
                self.data[key] = value
            self.revision += 1
            self.history.append((self.revision, key, value))
            self._changed.notify_all()

    def restore(self, data: dict[str, str]) -> None:
        """What an etcd restored (empty or from a snapshot) looks like: its data replaced, its
        revision and history back to the start."""
        with self._changed:
            self.data, self.revision, self.history, self.compacted = dict(data), 1, [], 0
            self.base = dict(data)

    def compact(self) -> None:
        with self._changed:
            self.history, self.compacted, self.base = [], self.revision, dict(self.data)

    def get(self, key: str) -> str | None:
        self._check()
        return self.data.get(key)

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self._check()
        if lease:
            self.leases[lease].add(key)
        self._write(key, value)

    def create(self, key: str, value: str) -> bool:
        self._check()
        with self._changed:
            if key in self.data:
                return False
            self._write(key, value)
            return True

    def delete(self, key: str) -> None:
        self._check()
        self._write(key, None)

    def txn(self, puts: dict[str, str], deletes: Iterable[str] = ()) -> None:
        self._check()
        with self._changed:
            for key in deletes:
                for k in [k for k in self.data if k == key or (key.endswith("/") and k.startswith(key))]:
                    self._write(k, None)
            for k, v in puts.items():
                self._write(k, v)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        return self.list_prefix(prefix)[0]

    def list_prefix(self, prefix: str, revision: int = 0) -> tuple[dict[str, str], int]:
        self._check()
        with self._changed:
            data = self.data
            if revision:
                if revision < self.compacted:
                    raise Compacted(f"etcd list at revision {revision}: compacted")
                data = dict(self.base)  # replayed up to `revision`
                for _, k, v in (e for e in self.history if e[0] <= revision):
                    if v is None:
                        data.pop(k, None)
                    else:
                        data[k] = v
            found = {k: v for k, v in data.items() if k.startswith(prefix)}
            self.listed += len(found)
            return found, revision or self.revision

    def watch(self, prefix: str, revision: int, timeout: float, fresh: bool = False) -> Changes:
        self._check()
        with self._changed:
            current = self.revision
            if revision <= self.compacted:
                return Changes(current=current, compacted=True)

            def found() -> list[tuple[int, str, str | None]]:
                return [e for e in self.history if e[0] >= revision and e[1].startswith(prefix)]

            self._changed.wait_for(found, timeout)
            events = found()
            return Changes([(k, v) for _, k, v in events], events[-1][0] if events else 0, current)

    def grant(self, ttl: int) -> int:
        self._check()
        lease = len(self.leases) + 1
        self.leases[lease] = set()
        return lease

    def keepalive(self, lease: int) -> bool:
        self._check()
        return lease in self.leases

    def reconnect(self) -> None:
        pass  # no connections

    def expire(self, lease: int) -> None:
        """What etcd does when a lease is not renewed in time."""
        for key in self.leases.pop(lease):
            self._write(key, None)


class FakeOverlay:
    def __init__(self, mtu: int = 1400) -> None:
        self.networks: dict[int, tuple[str, int]] = {}
        self.veths: dict[str, tuple[int, str, int]] = {}
        self.peers: dict[int, dict[str, tuple[str, str]]] = {}
        self.fail_veth = False
        self.fail_peers = 0  # how many set_peers calls fail next
        self.steered: list[tuple[str, str | None]] = []  # (host veth, the network's own mode)
        self.gateways6: dict[int, str] = {}
        self.encrypted: dict[int, bool] = {}
        self.fdb: dict[int, set[tuple[str, str]]] = {}  # vni -> (mac, host), as the kernel's FDB
        self._mtu = mtu
        self.ip = "192.0.2.2"  # the underlay's address: a test renumbers the host by setting it
        self._announced_ip = self.ip

    def underlay(self) -> Underlay:
        return Underlay("eth0", 2, self.ip, self._mtu)

    def renumbered_underlay(self) -> str | None:
        if self.ip == self._announced_ip:
            return None
        self._announced_ip = self.ip
        return self.ip

    def ensure_network(self, vni: int, gateways: list[Interface], mtu: int, encrypted: bool = False) -> None:
        self.networks[vni] = (str(gateways[0]), mtu)
        self.encrypted[vni] = encrypted
        self.gateways6[vni] = "".join(str(gw) for gw in gateways if gw.version == 6)

    def delete_network(self, vni: int) -> None:
        self.networks.pop(vni, None)

    def create_veth(self, endpoint_id: str, vni: int, mac: str, mtu: int) -> str:
        if self.fail_veth:
            raise BackendError("netlink: create veth timed out after 5.0s")
        if vni not in self.networks:
            raise BackendError(f"bridge for vni {vni} is missing")
        self.veths[endpoint_id] = (vni, mac, mtu)
        return veth_names(endpoint_id)[1]

    def delete_veth(self, endpoint_id: str) -> None:
        self.veths.pop(endpoint_id, None)

    def steer(self, host: str, mode: str | None = None) -> None:
        self.steered.append((host, mode))

    def set_peers(self, vni: int, peers: dict[str, tuple[str, str]]) -> int:
        if self.fail_peers:
            self.fail_peers -= 1
            raise BackendError(f"netlink: read peers of vni {vni} timed out after 5.0s")
        return self._replace(vni, peers)

    def update_peers(
        self,
        vni: int,
        gone: dict[str, tuple[str, str]],
        new: dict[str, tuple[str, str]],
        kept: frozenset[tuple[str, str]] = frozenset(),
    ) -> int:
        peers = {ip: p for ip, p in self.peers.get(vni, {}).items() if ip not in gone}
        fdb = self.fdb.get(vni, set()) - (set(gone.values()) - kept) | set(new.values())
        return self._replace(vni, {**peers, **new}, fdb)

    def _replace(self, vni: int, peers: dict[str, tuple[str, str]], fdb: set[tuple[str, str]] | None = None) -> int:
        if vni not in self.networks:
            return 0
        changed = len(set(peers.items()) ^ set(self.peers.get(vni, {}).items()))
        self.peers[vni] = dict(peers)
        self.fdb[vni] = set(peers.values()) if fdb is None else fdb
        return changed


class FakeFirewall:
    def __init__(self) -> None:
        self.networks: dict[int, tuple[str, str, bool]] = {}
        self.ports: dict[str, list[PortMapping]] = {}
        self.fail_ports = False
        self.cluster_hosts: set[str] = set()
        self.subnets6: dict[int, str] = {}

    def set_cluster_hosts(self, hosts: set[str]) -> None:
        self.cluster_hosts = set(hosts)

    def ensure_base(self) -> None:
        pass

    def add_network(self, vni: int, bridge: str, subnets: list[str], internal: bool) -> None:
        self.networks[vni] = (bridge, subnets[0], internal)
        self.subnets6[vni] = "".join(subnets[1:])

    def remove_network(self, vni: int) -> None:
        self.networks.pop(vni, None)

    def add_ports(self, endpoint_id: str, bridge: str, ports: list[PortMapping]) -> None:
        if self.fail_ports:
            raise BackendError("iptables timed out")
        self.ports[endpoint_id] = ports

    def remove_ports(self, endpoint_id: str) -> None:
        self.ports.pop(endpoint_id, None)


class FakeDatapath:
    """Records what the driver asks of the fast path."""

    def __init__(self) -> None:
        self.loaded = True
        self.enabled = True
        self.reason = "loaded"
        self.lb_reason = "loaded"
        self.services: dict[str, tuple[str, ...]] = {}  # the VIP table, as set_services last made it
        self.local: dict[tuple[int, str], tuple[str, str, bool]] = {}
        self.remote: dict[int, dict[str, tuple[str, str]]] = {}
        self.encrypted: set[int] = set()  # VNIs whose remote entries are marked encrypted
        self.live_hosts: set[str] = set()
        self.local6: dict[tuple[int, str], str | None] = {}  # the IPv6 address add_local was given
        self.flows = 3
        self.forgotten = 0  # times every learned header was forgotten

    def add_local(self, ifname: str, vni: int, ips: list[str], mac: str, fast: bool) -> None:
        self.local[(vni, ips[0])] = (ifname, mac, fast)
        self.local6[(vni, ips[0])] = ips[1] if len(ips) > 1 else None

    def remove_local(self, vni: int, ip: str) -> None:
        self.local.pop((vni, ip), None)
        self.local6.pop((vni, ip), None)

    def set_remote_all(
        self, by_vni: dict[int, dict[str, tuple[str, str]]], encrypted: frozenset[int] = frozenset()
    ) -> int:
        self.encrypted = set(encrypted)
        return sum(self._set(vni, by_vni.get(vni, {})) for vni in self.remote.keys() | by_vni.keys())

    def update_remote(
        self, vni: int, gone: dict[str, tuple[str, str]], new: dict[str, tuple[str, str]], encrypted: bool = False
    ) -> int:
        (self.encrypted.add if encrypted else self.encrypted.discard)(vni)
        peers = {ip: p for ip, p in self.remote.get(vni, {}).items() if ip not in gone}
        return self._set(vni, {**peers, **new})

    def _set(self, vni: int, peers: dict[str, tuple[str, str]]) -> int:
        changed = len(set(peers.items()) ^ set(self.remote.get(vni, {}).items()))
        self.remote[vni] = dict(peers)
        return changed

    def prune_tunnels(self, live_hosts: set[str]) -> None:
        self.live_hosts = set(live_hosts)

    def forget_learned(self) -> None:
        self.forgotten += 1

    def set_services(self, table: dict[str, tuple[str, ...]]) -> int:
        changed = sum(table.get(v) != self.services.get(v) for v in table.keys() | self.services.keys())
        self.services = dict(table)
        return changed

    def stats(self) -> dict[str, int]:
        return {"encap_pkts": 7}

    def cache(self) -> dict[str, object]:
        return {"local": [{"vni": vni, "ip": ip} for vni, ip in self.local]}

    def flush_flows(self) -> int:
        flushed, self.flows = self.flows, 0
        return flushed


class FakeTunnel:
    """The WireGuard device as tunnel.py keeps it: which networks use it, the peers asked for."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason  # non-empty: this host cannot encrypt
        self.users: set[int] = set()
        self.peers: dict[str, TunnelPeer] = {}
        self.public_key = "pub-1"
        self.fail_attach = False

    def require(self, what: str = "create an encrypted network") -> None:
        if self.reason:
            raise DriverError(f"cannot {what}: {self.reason}")

    def attach(self, vni: int) -> None:
        if self.fail_attach:
            raise BackendError("wireguard-go did not start")
        self.users.add(vni)

    def detach(self, vni: int) -> None:
        self.users.discard(vni)

    def set_peers(self, peers: dict[str, TunnelPeer]) -> int:
        changed = len(set(peers.items()) ^ set(self.peers.items()))
        self.peers = dict(peers)
        return changed

    def rotate(self) -> str:
        self.require("rotate the WireGuard key")
        self.public_key = f"pub-{int(self.public_key.split('-')[1]) + 1}"
        return self.public_key

    def view(self) -> dict[str, object]:
        kind = "" if self.reason else "userspace"
        return {
            "kind": kind,
            "reason": self.reason,
            "up": bool(self.users),
            "networks": len(self.users),
            "restarts": 0,
            "rotations": 1,
        }

    def drops(self) -> dict[str, int]:
        return {"plaintext_out_dropped": 0}
