"""A small key-value interface over etcd v3 (through its HTTP gateway, etcd3gw).

The cluster store is written against `KV`; unit tests pass an in-memory one.
Every call is bounded by the configured timeout and fails with a BackendError
that names etcd and the endpoint, never with a library traceback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from .. import log
from ..config import Config
from ..errors import BackendError

T = TypeVar("T")
LIST_PAGE = 10000  # keys per range read
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
IDLE = 30.0  # seconds a quiet watch stream waits before it is reopened
_log = log.get("kv")


@dataclass(frozen=True)
class Changes:
    """What a watch saw: events in order, each (key, value; None if deleted)."""

    events: list[tuple[str, str | None]] = field(default_factory=list)
    revision: int = 0  # the revision of the last event (0: none)
    current: int = 0  # the store's revision when the watch began (it went back: etcd lost data)
    compacted: bool = False  # the history from the asked revision is gone: list again


class Compacted(BackendError):
    """A read at a revision etcd has compacted away: read the latest instead."""


class KV(Protocol):
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str, lease: int = 0) -> None: ...
    def create(self, key: str, value: str) -> bool:
        """Write key only if it does not exist; True if written."""
        ...

    def delete(self, key: str) -> None: ...
    def txn(self, puts: dict[str, str], deletes: Iterable[str] = ()) -> None:
        """Write `puts` and delete `deletes` in one transaction (at most MAX_TXN_OPS operations);
        a key that ends in "/" deletes every key under it."""
        ...

    def get_prefix(self, prefix: str) -> dict[str, str]: ...
    def list_prefix(self, prefix: str, revision: int = 0) -> tuple[dict[str, str], int]:
        """The keys under prefix as of `revision` (0: the latest) and the revision read at;
        Compacted if etcd no longer has that revision."""
        ...

    def watch(self, prefix: str, revision: int, timeout: float, fresh: bool = False) -> Changes:
        """The changes under prefix from revision on, as soon as there is one; none on timeout.
        `fresh`: on a new connection (the one kept may be half-open after a partition)."""
        ...

    def grant(self, ttl: int) -> int:
        """A new lease of ttl seconds; keys put with it vanish when it expires."""
        ...

    def keepalive(self, lease: int) -> bool:
        """Refresh a lease; False if it has already expired."""
        ...

    def reconnect(self) -> None:
        """Drop the connections kept for reuse and the watch's: the next requests make new ones."""
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
        self._stream: _Stream | None = None

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

    def txn(self, puts: dict[str, str], deletes: Iterable[str] = ()) -> None:
        ops: list[dict[str, Any]] = [{"request_put": {"key": _encode(k), "value": _encode(v)}} for k, v in puts.items()]
        for key in deletes:
            end = {"range_end": _encode(_prefix_end(key))} if key.endswith("/") else {}
            ops.append({"request_delete_range": {"key": _encode(key), **end}})
        if len(ops) > MAX_TXN_OPS:
            raise BackendError(f"etcd transaction of {len(ops)} operations: at most {MAX_TXN_OPS}")
        self._call("txn", lambda c: c.post(c.get_url("/kv/txn"), json={"success": ops}))

    def get_prefix(self, prefix: str) -> dict[str, str]:
        return self.list_prefix(prefix)[0]

    def list_prefix(self, prefix: str, revision: int = 0) -> tuple[dict[str, str], int]:
        """In pages of LIST_PAGE keys, all read at the first page's revision (a large cluster's
        records in one response would be one huge message)."""
        items: dict[str, str] = {}
        body: dict[str, Any] = {"key": _encode(prefix), "range_end": _encode(_prefix_end(prefix)), "limit": LIST_PAGE}
        if revision:
            body["revision"] = revision

        def page(c: Etcd3Client) -> Any:
            try:
                return c.post(c.get_url("/kv/range"), json=body)
            except Etcd3Exception as e:  # not another endpoint's to answer: they share the history
                if "required revision has been compacted" in str(e.detail_text):
                    raise Compacted(f"etcd list at revision {body['revision']}: compacted") from None
                raise

        while True:
            result = self._call("list", page)
            kvs = result.get("kvs", [])
            items.update((_decode(kv["key"]).decode(), _decode(kv.get("value", "")).decode()) for kv in kvs)
            body["revision"] = revision = int(body.get("revision") or result["header"]["revision"])
            if not result.get("more") or not kvs:
                return items, revision
            body["key"] = _encode(_decode(kvs[-1]["key"]).decode() + "\0")

    def watch(self, prefix: str, revision: int, timeout: float, fresh: bool = False) -> Changes:
        """From one watch stream that stays open between calls (a new one opened for each call
        would, for what was written in between, wait for etcd's catch-up, every 100 ms)."""
        stream = self._stream
        if fresh or stream is None or stream.closed or (stream.prefix, stream.next) != (prefix, revision):
            if stream is not None:
                stream.close()
            self._stream = None
            stream = self._stream = _Stream(self, prefix, revision)
        try:
            return stream.take(timeout)
        except BackendError:
            self._stream = None
            raise

    def _open_watch(self, prefix: str, revision: int) -> requests.Response:
        request: dict[str, Any] = {
            "create_request": {
                "key": _encode(prefix),
                "range_end": _encode(_prefix_end(prefix)),
                "start_revision": revision,
            }
        }

        def post(c: Etcd3Client) -> requests.Response:
            try:
                resp = c.session.post(c.get_url("/watch"), json=request, stream=True, timeout=(self._timeout, IDLE))
                resp.raise_for_status()
                return resp
            except requests.exceptions.RequestException as e:
                raise Etcd3Exception(str(e))

        return self._call("watch", post)

    def grant(self, ttl: int) -> int:
        return self._call("lease grant", lambda c: c.lease(ttl).id)

    def keepalive(self, lease: int) -> bool:
        result = self._call("lease keepalive", lambda c: c.post(c.get_url("/lease/keepalive"), json={"ID": lease}))
        return int(result.get("result", {}).get("TTL", -1)) > 0

    def reconnect(self) -> None:
        # A connection made from an address this host no longer has gets no answer: each one
        # reused would cost a request the whole timeout. New adapters, new pools; the old ones
        # are not closed under a request still in them, their sockets close as they are dropped.
        for c in self._clients:
            for scheme in ("https://", "http://"):
                c.session.mount(scheme, requests.adapters.HTTPAdapter())
        stream = self._stream
        if stream is not None:
            stream.close()  # the watch's connection too: the next watch call opens one from here


class _Stream:
    """A watch stream read by a thread of its own into a queue; `take` returns what has come.
    A quiet stream is reopened from where it was every IDLE seconds (so a half-open connection is
    noticed); one that etcd ends or breaks is reported as a BackendError."""

    def __init__(self, kv: EtcdKV, prefix: str, revision: int):
        self.kv, self.prefix, self.next = kv, prefix, revision
        self._queue: queue.Queue[Changes | BackendError] = queue.Queue()
        self._resp = kv._open_watch(prefix, revision)  # opened here: a failure is the caller's at once
        self.closed = False
        threading.Thread(target=self._read, name="etcd-watch", daemon=True).start()

    def take(self, timeout: float) -> Changes:
        """The events that came, waiting up to `timeout` for the first: merged in order, with the
        store's revision when the stream was (re)opened."""
        deadline = time.monotonic() + timeout
        events: list[tuple[str, str | None]] = []
        revision = current = 0
        while True:
            try:
                wait = 0.0 if events else max(0.0, deadline - time.monotonic())
                item = self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BackendError):
                self.close()
                raise item
            current = current or item.current
            if item.compacted:
                self.close()
                return Changes(current=current, compacted=True)
            events += item.events
            revision = max(revision, item.revision)
        if revision:
            self.next = revision + 1
        return Changes(events, revision, current)

    def _read(self) -> None:
        resp, reopen_from = self._resp, self.next
        while not self.closed:
            try:
                for line in resp.iter_lines():
                    result = json.loads(line).get("result", {}) if line else {}
                    header = int(result.get("header", {}).get("revision", 0))
                    if result.get("canceled"):  # compacted past its revision: list again
                        self._queue.put(Changes(current=header, compacted=True))
                        return
                    if result.get("created"):
                        self._queue.put(Changes(current=header))
                    elif result.get("events"):
                        changes = Changes(*_events(result["events"]))
                        reopen_from = changes.revision + 1
                        self._queue.put(changes)
                if not self.closed:  # etcd ended the stream (it stopped or restarted)
                    self._queue.put(BackendError("etcd watch stream closed by etcd"))
                return
            except (requests.exceptions.RequestException, AttributeError, ValueError) as e:
                # A response closed under its reader (a new watch replaced this one) fails inside
                # http.client's read with AttributeError or ValueError; a line that is not JSON
                # with ValueError: the stream is reported broken, never a dead thread.
                if self.closed:
                    return
                quiet = isinstance(e, requests.exceptions.ConnectionError) and "Read timed out" in str(e)
                if not (quiet or isinstance(e, requests.exceptions.ReadTimeout)):
                    self._queue.put(BackendError(f"etcd watch failed: {str(e)[:200]}"))
                    return
            try:  # quiet for IDLE seconds: the same watch, on a fresh connection
                resp.close()
                resp = self._resp = self.kv._open_watch(self.prefix, reopen_from)
            except BackendError as e:
                self._queue.put(e)
                return
            if self.closed:  # closed meanwhile: this connection too
                resp.close()

    def close(self) -> None:
        """Closed at once; its connection in the background: closing a response blocks while its
        reader is inside a read (a half-open connection's lasts until the IDLE timeout)."""
        self.closed = True
        threading.Thread(target=_close_quietly, args=(self._resp,), name="etcd-watch-close", daemon=True).start()


def _close_quietly(resp: requests.Response) -> None:
    with contextlib.suppress(Exception):
        resp.close()


def _events(events: list[dict[str, Any]]) -> tuple[list[tuple[str, str | None]], int]:
    """The gateway's watch events as (key, value or None), and the last one's revision."""
    out: list[tuple[str, str | None]] = []
    for e in events:
        kv = e["kv"]
        value = None if e.get("type") == "DELETE" else _decode(kv.get("value", "")).decode()
        out.append((_decode(kv["key"]).decode(), value))
    return out, int(events[-1]["kv"]["mod_revision"])


def _encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decode(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> str:
    """The first key after every key that starts with prefix (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()
