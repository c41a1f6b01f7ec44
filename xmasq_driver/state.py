"""This host's networks and endpoints, kept on disk.

Docker does not replay CreateNetwork after a driver restart, so the driver reloads
what it had from here. Written atomically (temp file + rename) after every change.
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
        if path and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            self.networks = data.get("networks", {})
            self.endpoints = data.get("endpoints", {})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy({"networks": self.networks, "endpoints": self.endpoints})

    def set_network(self, nid: str, record: dict[str, Any] | None) -> None:
        self._set(self.networks, nid, record)

    def set_endpoint(self, eid: str, record: dict[str, Any] | None) -> None:
        self._set(self.endpoints, eid, record)

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
            json.dump({"networks": self.networks, "endpoints": self.endpoints}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
