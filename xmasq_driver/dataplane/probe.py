"""Whether a host answers on the underlay: an ICMP echo to its address.

A host whose record left etcd (its lease expired) may only have lost etcd, or its driver may
have stopped, while its containers and the kernel's forwarding run on: its peers keep its entries
while it answers, and evict it once it does not (liveness.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Collection

TIMEOUT = 0.5  # seconds an echo is waited for
_ECHO, _REPLY = 8, 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def answering(ips: Collection[str], timeout: float = TIMEOUT) -> set[str]:
    """Those of `ips` that answer an ICMP echo within `timeout` seconds: all asked at once, on one
    socket (a rack of hosts lost together costs one timeout, not one each)."""
    wanted, got = set(ips), set[str]()
    if not wanted:
        return got
    ident, seq = os.getpid() & 0xFFFF, int(time.monotonic() * 1000) & 0xFFFF
    body = b"xmasq-liveness"
    header = struct.pack("!BBHHH", _ECHO, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", _ECHO, 0, _checksum(header + body), ident, seq) + body
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            for ip in wanted:
                with contextlib.suppress(OSError):  # no route to this one: it does not answer
                    s.sendto(packet, (ip, 0))
            while got != wanted and (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                data, (source, _) = s.recvfrom(2048)
                start = (data[0] & 0x0F) * 4  # past the IP header
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[start : start + 8])
                if source in wanted and kind == _REPLY and (rid, rseq) == (ident, seq):
                    got.add(source)
    except OSError:  # timed out
        pass
    return got
