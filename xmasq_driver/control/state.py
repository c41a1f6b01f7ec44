"""This host's networks, endpoints and IPAM pools, kept on disk.

Docker does not replay CreateNetwork after a driver restart, so the driver reloads
what it had from here; it is also what the driver re-asserts in etcd after etcd lost
data. Written atomically (temp file + rename) after every change. The records are
model.py's; the file keeps their JSON shape.

`pools` is None when the file predates it: the IPAM driver then adopts this host's
records from etcd.

A write that adds or changes a record and fails (a full or read-only disk) changes nothing, on
disk or in memory, and raises StorageError naming the file and the cause: the request that asked
for it is undone. A removal is never refused (what it removed is gone from the kernel already, and
a user frees space by removing): it is kept in memory and written with the next write that
succeeds, which `flush` (called by the reconciler's passes) retries. A file that
cannot be read at start (truncated, corrupt) is moved aside and `lost` says where to: the driver
then rebuilds the state from etcd, dockerd and the kernel (recovery.py) before it serves.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import log
from ..errors import StorageError
from .model import LocalEndpoint, LocalNetwork, Pool

R = TypeVar("R")
_log = log.get("state")
_MISSING: Any = object()


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
        self.lost: str | None = None  # where an unreadable state file was moved to
        self.unsaved = False  # a removal is not on disk yet
        if path and os.path.exists(path):
            try:
                self._load(path)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                self.networks, self.endpoints, self.pools = {}, {}, None
                self.lost = f"{path}.corrupt-{int(time.time())}"
                try:
                    os.replace(path, self.lost)
                except OSError:  # a read-only disk: it stays, and is replaced by the first write
                    self.lost = path
                _log.error("local state unreadable: set aside, to be rebuilt", path=path, moved_to=self.lost, error=e)

    def _load(self, path: str) -> None:
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

    def set_endpoint(self, eid: str, record: LocalEndpoint | None, removal: bool = False) -> None:
        """`removal`: the record is what is left after a removal (its published ports went)."""
        self._set(self.endpoints, eid, record, removal)

    def set_pool(self, pool_id: str, record: Pool | None, removal: bool = False) -> None:
        """`removal`: the record is what is left after a removal (a hold or an address went)."""
        assert self.pools is not None, "adopt_pools first"
        self._set(self.pools, pool_id, record, removal)

    def adopt_pools(self, pools: dict[str, Pool]) -> None:
        with self._lock:
            old, self.pools = self.pools, dict(pools)
            self._write(f"pools adopted: {len(pools)}", undo=lambda: setattr(self, "pools", old))

    def rebuilt(self, networks: dict[str, LocalNetwork], endpoints: dict[str, LocalEndpoint]) -> None:
        """The tables as recovery made them, written at once (or, on a disk that takes nothing,
        with the first write that succeeds)."""
        with self._lock:
            self.networks, self.endpoints, self.lost = dict(networks), dict(endpoints), None
            self._write("rebuilt tables")

    def _set(self, table: dict[str, R], key: str, record: R | None, removal: bool = False) -> None:
        with self._lock:
            old = table.get(key, _MISSING)
            if record is None:
                table.pop(key, None)
            else:
                table[key] = record

            def undo() -> None:
                if old is _MISSING:
                    table.pop(key, None)
                else:
                    table[key] = old

            self._write(key, None if record is None or removal else undo)

    def _write(self, what: str, undo: Callable[[], object] | None = None) -> None:
        """Save (under the lock) the change just made in memory. If the disk refuses it: with
        `undo`, the change is undone and StorageError raised (the caller's request fails); without,
        it is kept, unsaved, for the next write that succeeds (a removal, a rebuild)."""
        try:
            self._save()
        except StorageError as e:
            if undo is not None:
                undo()
                raise
            self.unsaved = True
            _log.error("local state not written: the change is kept and written later", change=what, error=e)

    def flush(self) -> None:
        """Write what a failed removal left unsaved, if the disk takes it now (no-op if nothing is)."""
        with self._lock:
            if self.unsaved:
                with suppress(StorageError):
                    self._save()
                    _log.info("local state written again", path=self.path)

    def _save(self) -> None:
        if not self.path:
            return
        data: dict[str, Any] = {
            "networks": {k: v.to_json() for k, v in self.networks.items()},
            "endpoints": {k: v.to_json() for k, v in self.endpoints.items()},
        }
        if self.pools is not None:
            data["pools"] = {k: v.to_json() for k, v in self.pools.items()}
        tmp = self.path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.unsaved = False
        except OSError as e:
            with suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot write the local state {self.path}: {e.strerror or e}") from e
