"""This host's networks, endpoints and IPAM pools, kept on disk.

Docker does not replay CreateNetwork after a driver restart, so the driver reloads
what it had from here; it is also what the driver re-asserts in etcd after etcd lost
data. Written atomically (temp file + rename) after every change. The records are
model.py's; the file keeps their JSON shape.

`pools` is None when the file predates it: the IPAM driver then adopts this host's
records from etcd.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .model import LocalEndpoint, LocalNetwork, Pool

R = TypeVar("R")


@dataclass(frozen=True)
class Snapshot:
    """The state at one moment (the records are immutable; the tables are copies)."""

    networks: dict[str, LocalNetwork]
    endpoints: dict[str, LocalEndpoint]
    pools: dict[str, Pool] | None


class LocalState:
    def __init__(self, path: str | None):
        """path None keeps state in memory only (unit tests)."""
        self.path = path
        self._lock = threading.Lock()  # the tables and the file
        # What orders changes of this host's networks, endpoints and pools (requests, and the
        # re-assertion of their records): `networks_lock` before a network's own, never after.
        self.networks_lock = threading.Lock()
        self.pools_lock = threading.Lock()
        self._network_locks: dict[str, threading.Lock] = {}
        self.networks: dict[str, LocalNetwork] = {}
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.pools: dict[str, Pool] | None = {}
        if path and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            self.networks = {k: LocalNetwork.from_json(v) for k, v in data.get("networks", {}).items()}
            self.endpoints = {k: LocalEndpoint.from_json(v) for k, v in data.get("endpoints", {}).items()}
            pools = data.get("pools")
            self.pools = None if pools is None else {k: Pool.from_json(v) for k, v in pools.items()}

    @contextmanager
    def changing(self, network_id: str) -> Iterator[None]:
        """Held while one network or its endpoints change."""
        with self._lock:
            lock = self._network_locks.setdefault(network_id, threading.Lock())
        with lock:
            yield

    def snapshot(self) -> Snapshot:
        with self._lock:
            pools = None if self.pools is None else dict(self.pools)
            return Snapshot(dict(self.networks), dict(self.endpoints), pools)

    def endpoints_of(self, keys: set[str]) -> dict[str, LocalEndpoint]:
        """This host's endpoints on networks with one of these cluster keys."""
        with self._lock:
            found = {}
            for eid, ep in self.endpoints.items():
                net = self.networks.get(ep.network_id)
                if net is not None and net.key in keys:
                    found[eid] = ep
            return found

    def set_network(self, nid: str, record: LocalNetwork | None) -> None:
        self._set(self.networks, nid, record)

    def set_endpoint(self, eid: str, record: LocalEndpoint | None) -> None:
        self._set(self.endpoints, eid, record)

    def set_pool(self, pool_id: str, record: Pool | None) -> None:
        assert self.pools is not None, "adopt_pools first"
        self._set(self.pools, pool_id, record)

    def adopt_pools(self, pools: dict[str, Pool]) -> None:
        with self._lock:
            self.pools = dict(pools)
            self._save()

    def _set(self, table: dict[str, R], key: str, record: R | None) -> None:
        with self._lock:
            if record is None:
                table.pop(key, None)
            else:
                table[key] = record
            self._save()

    def _save(self) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        data: dict[str, Any] = {
            "networks": {k: v.to_json() for k, v in self.networks.items()},
            "endpoints": {k: v.to_json() for k, v in self.endpoints.items()},
        }
        if self.pools is not None:
            data["pools"] = {k: v.to_json() for k, v in self.pools.items()}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
