"""A small key-value interface over etcd v3 (through its HTTP gateway, etcd3gw).

The cluster store is written against `KV`; unit tests pass an in-memory one.
Every call is bounded by the configured timeout and fails with a BackendError
that names etcd and the endpoint, never with a library traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from . import log
from .config import Config
from .errors import BackendError

T = TypeVar("T")
_log = log.get("kv")


class KV(Protocol):
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str) -> None: ...
    def create(self, key: str, value: str) -> bool:
        """Write key only if it does not exist; True if written."""
        ...

    def delete(self, key: str) -> None: ...
    def get_prefix(self, prefix: str) -> dict[str, str]: ...


class EtcdKV:
    def __init__(self, config: Config):
        self._timeout = config.etcd_timeout
        self._clients = [self._client(url, config) for url in config.etcd_endpoint_list]
        if not self._clients:
            raise BackendError("no etcd endpoint configured (XMASQ_ETCD_ENDPOINTS)")
        self._urls = config.etcd_endpoint_list
        self._current = 0
        self._lock = threading.Lock()

    def _client(self, url: str, config: Config) -> Etcd3Client:
        u = urlparse(url if "://" in url else "http://" + url)
        tls: dict[str, Any] = {}
        if u.scheme == "https":
            tls = {
                "ca_cert": config.etcd_ca or None,
                "cert_cert": config.etcd_cert or None,
                "cert_key": config.etcd_key or None,
            }
        return Etcd3Client(
            host=u.hostname or "127.0.0.1",
            port=u.port or 2379,
            protocol=u.scheme,
            timeout=config.etcd_timeout,
            **tls,
        )

    def _call(self, what: str, fn: Callable[[Etcd3Client], T]) -> T:
        """Run fn on the current endpoint, failing over to the others in turn."""
        errors = []
        with self._lock:
            start = self._current
        for i in range(len(self._clients)):
            idx = (start + i) % len(self._clients)
            try:
                result = fn(self._clients[idx])
            except (Etcd3Exception, OSError) as e:
                errors.append(f"{self._urls[idx]}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
                continue
            if idx != start:
                with self._lock:
                    self._current = idx
                _log.info("etcd endpoint switched", endpoint=self._urls[idx])
            return result
        raise BackendError(f"etcd {what} failed (timeout {self._timeout}s): " + "; ".join(errors))

    def get(self, key: str) -> str | None:
        values = self._call("get", lambda c: c.get(key))
        return values[0].decode() if values else None

    def put(self, key: str, value: str) -> None:
        self._call("put", lambda c: c.put(key, value))

    def create(self, key: str, value: str) -> bool:
        return bool(self._call("create", lambda c: c.create(key, value)))

    def delete(self, key: str) -> None:
        self._call("delete", lambda c: c.delete(key))

    def get_prefix(self, prefix: str) -> dict[str, str]:
        items = self._call("list", lambda c: c.get_prefix(prefix))
        return {meta["key"].decode(): value.decode() for value, meta in items}
