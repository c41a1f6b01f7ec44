"""A minimal HTTP client for the plugin's unix socket (for the CLI and tests)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def call(
    sock_path: str, path: str, body: Any = None, raw: bytes | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """POST to the plugin; returns (status, decoded JSON body)."""
    conn = _UnixConnection(sock_path, timeout)
    try:
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        conn.request("POST", path, body=data)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()
