"""The operator's view, served on the plugin socket under /Xmasq.* (used by `xmasq status`,
`xmasq stats`, `xmasq cache [flush]`). Read-only except the flow-cache flush."""

from __future__ import annotations

from typing import Any, Protocol

from .errors import BackendError
from .network import NetworkDriver


class DatapathView(Protocol):
    loaded: bool
    enabled: bool
    reason: str

    def stats(self) -> dict[str, int]: ...
    def cache(self) -> dict[str, Any]: ...
    def flush_flows(self) -> int: ...


class ClusterHealth(Protocol):
    def health(self) -> dict[str, Any]: ...


class Admin:
    def __init__(self, network: NetworkDriver, datapath: DatapathView, cluster: ClusterHealth):
        self.network = network
        self.datapath = datapath
        self.cluster = cluster

    def status(self, _: Any = None) -> dict[str, Any]:
        snap = self.network.state.snapshot()
        try:
            cluster: dict[str, Any] = {"hosts": self.network.store.hosts()[0]}
        except BackendError as e:
            cluster = {"error": str(e)}
        cluster["records"] = self.cluster.health()
        return {
            "host": self.network.store.host,
            "fastpath": {
                "loaded": self.datapath.loaded,
                "enabled": self.datapath.enabled,
                "reason": self.datapath.reason,
            },
            "cluster": cluster,
            "discovered": list(self.network.discovered.values()),
            "networks": [
                {
                    "id": nid[:12],
                    "name": n["key"],
                    "vni": n["vni"],
                    "subnet": n["subnet"],
                    "internal": n["internal"],
                    "fastpath": n["fastpath"],
                    "endpoints": sum(1 for e in snap["endpoints"].values() if e["network_id"] == nid),
                }
                for nid, n in snap["networks"].items()
            ],  # fmt: skip
        }

    def stats(self, _: Any = None) -> dict[str, Any]:
        return {"fastpath": self.datapath.loaded and self.datapath.enabled, "counters": self.datapath.stats()}

    def cache(self, _: Any = None) -> dict[str, Any]:
        return self.datapath.cache()

    def flush(self, _: Any = None) -> dict[str, Any]:
        return {"flushed_flows": self.datapath.flush_flows()}
