"""The local state rebuilt when state.json could not be read at start (truncated, corrupt).

What this host has is in three places that outlive the file, and each gives its part:
- dockerd: which networks this host has, by Docker's id, with the options they were created with
  (parsed as CreateNetwork parses them: the cluster key, MTU, fast path);
- etcd: each network's record (VNI, subnets, options) and this host's endpoint records (id, MAC,
  addresses);
- the kernel: which of those endpoints still have a container at the other end of their veth (the
  others' containers went while the driver was down: left out; one whose veth outlived it is
  removed as DeleteEndpoint would have, records and eBPF entries with it). An endpoint Docker
  created but had not yet joined to its container when the driver went down looks orphaned too:
  its container's start fails and is retried by whoever started it.
Not recovered: an endpoint's published ports (their rules stay in the kernel and go with the
endpoint, but `docker network inspect`'s port list from the driver is empty until it is re-made).
IPAM pools are adopted from etcd, as for a state file from before they were kept.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import log
from ..errors import BackendError, DriverError
from .layout import ENDPOINTS
from .model import ClusterNetwork, LocalEndpoint, LocalNetwork, NetworkOptions, RemoteEndpoint, VethState
from .state import LocalState
from .store import ClusterView

_log = log.get("recovery")
RETRY = 2.0  # seconds between attempts while etcd or dockerd does not answer


@dataclass
class Rebuilt:
    networks: dict[str, LocalNetwork] = field(default_factory=dict)  # Docker network id -> network
    endpoints: dict[str, LocalEndpoint] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # what was not rebuilt, and why
    orphans: dict[str, LocalEndpoint] = field(default_factory=dict)  # their veth outlived their container


def rebuild(
    host: str,
    view: ClusterView,
    docker_networks: dict[str, dict[str, str]],
    veth_state: Callable[[str], VethState],
    underlay_mtu: int,
    veth_names: Callable[[str], tuple[str, str]],
) -> Rebuilt:
    """This host's networks and endpoints from dockerd's networks, etcd's records and the kernel
    (`veth_state`: Overlay.veth_state's answer for an endpoint; `veth_names`: its two ends)."""
    done = Rebuilt()
    by_key: dict[str, str] = {}
    for nid, options in docker_networks.items():
        try:
            opts = NetworkOptions.parse(options, nid, underlay_mtu)
        except DriverError:
            continue  # another driver's network (its options are not xmasq's)
        record = view.networks.get(opts.key)
        if not isinstance(record, ClusterNetwork):
            continue  # not an xmasq network (or etcd lost it: then there is no VNI to rebuild it with)
        done.networks[nid] = LocalNetwork(
            record.vni, record.blocks, opts.local_mtu(underlay_mtu), record.internal, record.options,
            key=opts.key, fastpath=opts.fastpath,
        )  # fmt: skip
        by_key[opts.key] = nid
    found: dict[str, tuple[str, str, list[str]]] = {}  # endpoint id -> (network key, mac, ips)
    for key, ip in view.owned_by(host, ENDPOINTS):
        rec = view.endpoints.get(key, {}).get(ip)
        if isinstance(rec, RemoteEndpoint):
            found.setdefault(rec.endpoint, (key, rec.mac, []))[2].append(ip)
    for eid, (key, mac, ips) in sorted(found.items()):
        if key not in by_key:
            done.skipped.append(f"endpoint {eid[:12]}: its network {key} is not on this host's dockerd")
            continue
        nid = by_key[key]
        addresses = []
        for block in done.networks[nid].blocks:
            subnet = ipaddress.ip_network(block.subnet)
            addresses += [f"{ip}/{subnet.prefixlen}" for ip in ips if ipaddress.ip_address(ip) in subnet]
        ep = LocalEndpoint(nid, tuple(addresses), mac, veth_names(eid)[1])
        veth = veth_state(eid)
        if veth == "container":
            done.endpoints[eid] = ep
            continue
        done.skipped.append(f"endpoint {eid[:12]}: its container stopped while the driver was down")
        if veth == "orphan":
            done.orphans[eid] = ep
    return done


def recover(
    state: LocalState,
    host: str,
    view: Callable[[], ClusterView],
    docker_networks: Callable[[], dict[str, dict[str, str]]],
    veth_state: Callable[[str], VethState],
    underlay_mtu: int,
    veth_names: Callable[[str], tuple[str, str]],
) -> Rebuilt:
    """Rebuild the state (waiting for etcd and dockerd as long as they do not answer: a driver
    that served from an empty state would withdraw every record this host has) and keep it. The
    orphans are the caller's to remove (as DeleteEndpoint would have)."""
    while True:
        try:
            done = rebuild(host, view(), docker_networks(), veth_state, underlay_mtu, veth_names)
            break
        except BackendError as e:
            _log.warning("local state rebuild waits for etcd and dockerd", error=e, retry_in=RETRY)
            time.sleep(RETRY)
    lost = state.lost
    state.rebuilt(done.networks, done.endpoints)
    _log.warning(
        "local state rebuilt from etcd, dockerd and the kernel",
        unreadable_file=lost,
        networks=",".join(sorted(n.key for n in done.networks.values())),
        endpoints=len(done.endpoints),
        not_rebuilt="; ".join(done.skipped) or "none",
    )
    return done
