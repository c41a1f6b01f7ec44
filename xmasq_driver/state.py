"""This host's networks, endpoints and IPAM pools, kept on disk.

Docker does not replay CreateNetwork after a driver restart, so the driver reloads
what it had from here; it is also what the driver re-asserts in etcd after etcd lost
data. Written atomically (temp file + rename) after every change.

`pools` (pool id -> {"holds": n, "addresses": {ip: "gateway" | "address"}}) is None
when the file predates it: the IPAM driver then adopts this host's records from etcd.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from typing import Any


class LocalState:
    def __init__(self, path: str | None):
        """path None keeps state in memory only (unit tests)."""
        self.path = path
        self._lock = threading.Lock()
        self.networks: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] | None = {}
        if path and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            self.networks = data.get("networks", {})
            self.endpoints = data.get("endpoints", {})
            self.pools = data.get("pools")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy({"networks": self.networks, "endpoints": self.endpoints, "pools": self.pools})

    def set_network(self, nid: str, record: dict[str, Any] | None) -> None:
        self._set(self.networks, nid, record)

    def set_endpoint(self, eid: str, record: dict[str, Any] | None) -> None:
        self._set(self.endpoints, eid, record)

    def set_pool(self, pool_id: str, record: dict[str, Any] | None) -> None:
        assert self.pools is not None, "adopt_pools first"
        self._set(self.pools, pool_id, record)

    def adopt_pools(self, pools: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self.pools = copy.deepcopy(pools)
            self._save()

    def _set(self, table: dict[str, Any], key: str, record: dict[str, Any] | None) -> None:
        with self._lock:
            if record is None:
                table.pop(key, None)
            else:
                table[key] = copy.deepcopy(record)
            self._save()

    def _save(self) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            data: dict[str, Any] = {"networks": self.networks, "endpoints": self.endpoints}
            if self.pools is not None:
                data["pools"] = self.pools
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
