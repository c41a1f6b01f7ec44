"""The operator's view, served on the plugin socket under /Xmasq.* (used by `xmasq status`,
`xmasq stats`, `xmasq cache [flush]`, `xmasq rotate-key`). Read-only except the flow-cache flush
and the key rotation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..control.model import BLOCK_KEYS, LocalNetwork
from ..control.state import LocalState, Snapshot
from ..control.store import ClusterStore
from ..errors import BackendError


class DatapathView(Protocol):
    loaded: bool
    enabled: bool
    reason: str
    lb_reason: str

    def stats(self) -> dict[str, int]: ...
    def cache(self) -> dict[str, Any]: ...
    def flush_flows(self) -> int: ...


class ClusterHealth(Protocol):
    def health(self) -> dict[str, Any]: ...


class ServicesView(Protocol):
    def view(self) -> dict[str, Any]: ...


class TunnelView(Protocol):
    def view(self) -> dict[str, Any]: ...
    def drops(self) -> dict[str, int]: ...


class Admin:
    def __init__(
        self,
        store: ClusterStore,
        state: LocalState,
        datapath: DatapathView,
        cluster: ClusterHealth,
        discovered: Mapping[str, Any],
        tunnel: TunnelView,
        rotate: Callable[[], str],
        services: ServicesView | None = None,
    ):
        """`discovered`: the nodes Docker told the network driver about (DiscoverNew), as it keeps them;
        `rotate`: replaces this host's WireGuard key and publishes it (returns the public key);
        `services`: the swarm service watcher (global scope only)."""
        self.store, self.state, self.datapath, self.cluster = store, state, datapath, cluster
        self.discovered, self.tunnel, self.rotate = discovered, tunnel, rotate
        self.services = services

    def status(self, _: Any = None) -> dict[str, Any]:
        snap = self.state.snapshot()
        try:
            cluster: dict[str, Any] = {"hosts": self.store.hosts()[0]}
        except BackendError as e:
            cluster = {"error": str(e)}
        cluster["records"] = self.cluster.health()
        services = self.services.view() if self.services else {"networks": {}}
        by_network = services.pop("networks")
        return {
            "host": self.store.host,
            "fastpath": {
                "loaded": self.datapath.loaded,
                "enabled": self.datapath.enabled,
                "reason": self.datapath.reason,
            },
            "cluster": cluster,
            "encryption": self.tunnel.view(),
            "discovered": list(self.discovered.values()),
            "services": {
                "watching": self.services is not None,
                "load_balancer": self.datapath.lb_reason,
                **services,
            },
            "networks": [self._network(nid, n, snap, by_network.get(nid, [])) for nid, n in snap.networks.items()],
        }

    @staticmethod
    def _network(nid: str, n: LocalNetwork, snap: Snapshot, services: list[dict[str, Any]]) -> dict[str, Any]:
        endpoints = sum(1 for e in snap.endpoints.values() if e.network_id == nid)
        return {
            "id": nid[:12],
            "name": n.key,
            "vni": n.vni,
            **{BLOCK_KEYS[b.version][0]: b.subnet for b in n.blocks},
            "internal": n.internal,
            "encrypted": n.encrypted,
            "fastpath": n.fastpath,
            "endpoints": endpoints,
            "services": services,
        }

    def stats(self, _: Any = None) -> dict[str, Any]:
        return {
            "fastpath": self.datapath.loaded and self.datapath.enabled,
            "counters": self.datapath.stats(),
            "encryption": self.tunnel.drops(),
        }

    def cache(self, _: Any = None) -> dict[str, Any]:
        return self.datapath.cache()

    def flush(self, _: Any = None) -> dict[str, Any]:
        return {"flushed_flows": self.datapath.flush_flows()}

    def rotate_key(self, _: Any = None) -> dict[str, Any]:
        return {"public_key": self.rotate()}
