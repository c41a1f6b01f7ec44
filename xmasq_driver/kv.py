"""A small key-value interface over etcd v3 (through its HTTP gateway, etcd3gw).

The cluster store is written against `KV`; unit tests pass an in-memory one.
Every call is bounded by the configured timeout and fails with a BackendError
that names etcd and the endpoint, never with a library traceback.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from . import log
from .config import Config
from .errors import BackendError

T = TypeVar("T")
_log = log.get("kv")


class KV(Protocol):
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str, lease: int = 0) -> None: ...
    def create(self, key: str, value: str) -> bool:
        """Write key only if it does not exist; True if written."""
        ...

    def delete(self, key: str) -> None: ...
    def get_prefix(self, prefix: str) -> dict[str, str]: ...
    def list_prefix(self, prefix: str) -> tuple[dict[str, str], int]:
        """The keys under prefix and the store revision they were read at."""
        ...

    def wait(self, prefix: str, revision: int, timeout: float) -> bool:
        """Block until a key under prefix changes at or after revision; False on timeout."""
        ...

    def grant(self, ttl: int) -> int:
        """A new lease of ttl seconds; keys put with it vanish when it expires."""
        ...

    def keepalive(self, lease: int) -> bool:
        """Refresh a lease; False if it has already expired."""
        ...


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
        client = Etcd3Client(
            host=u.hostname or "127.0.0.1",
            port=u.port or 2379,
            protocol=u.scheme,
            timeout=config.etcd_timeout,
            **tls,
        )
        # Talk to etcd directly with exactly the configured CA: no HTTP proxy and no
        # REQUESTS_CA_BUNDLE from the environment (requests would let those override).
        client.session.trust_env = False
        return client

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

    def put(self, key: str, value: str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _encode(key), "value": _encode(value)}
        if lease:
            body["lease"] = lease
        self._call("put", lambda c: c.post(c.get_url("/kv/put"), json=body))

    def create(self, key: str, value: str) -> bool:
        return bool(self._call("create", lambda c: c.create(key, value)))

    def delete(self, key: str) -> None:
        self._call("delete", lambda c: c.delete(key))

    def get_prefix(self, prefix: str) -> dict[str, str]:
        return self.list_prefix(prefix)[0]

    def list_prefix(self, prefix: str) -> tuple[dict[str, str], int]:
        body = {"key": _encode(prefix), "range_end": _encode(_prefix_end(prefix))}
        result = self._call("list", lambda c: c.post(c.get_url("/kv/range"), json=body))
        items = {_decode(kv["key"]).decode(): _decode(kv.get("value", "")).decode() for kv in result.get("kvs", [])}
        return items, int(result["header"]["revision"])

    def wait(self, prefix: str, revision: int, timeout: float) -> bool:
        request: dict[str, Any] = {
            "create_request": {
                "key": _encode(prefix),
                "range_end": _encode(_prefix_end(prefix)),
                "start_revision": revision,
            }
        }

        def watch(c: Etcd3Client) -> bool:
            try:
                with c.session.post(
                    c.get_url("/watch"), json=request, stream=True, timeout=(self._timeout, timeout)
                ) as resp:
                    for line in resp.iter_lines():
                        result = json.loads(line).get("result", {}) if line else {}
                        # A watch cancelled because its revision was compacted away also says
                        # "list again": the caller's view may have missed changes.
                        if result.get("events") or result.get("canceled"):
                            return True
            except requests.exceptions.RequestException as e:
                # A quiet stream ends in a read timeout: no change, not a failure.
                if isinstance(e, requests.exceptions.ReadTimeout) or "Read timed out" in str(e):
                    return False
                raise Etcd3Exception(str(e))
            return False

        return self._call("watch", watch)

    def grant(self, ttl: int) -> int:
        return self._call("lease grant", lambda c: c.lease(ttl).id)

    def keepalive(self, lease: int) -> bool:
        result = self._call("lease keepalive", lambda c: c.post(c.get_url("/lease/keepalive"), json={"ID": lease}))
        return int(result.get("result", {}).get("TTL", -1)) > 0


def _encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decode(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> str:
    """The first key after every key that starts with prefix (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()
