"""The socket load balancer (bpf/bpf_sock.c) in the kernel, with real sockets on loopback.

A Datapath loaded in a throwaway pin directory attaches its cgroup programs to the machine's
cgroup2 root while it has a VIP; the VIPs are loopback addresses that nothing listens on, the
backends loopback servers this test runs. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from xmasq_driver.dataplane.datapath import Datapath

VIP, VIP_B = "127.77.0.1", "127.77.0.2"  # loopback, unused: only a translated connect reaches anything
BACKENDS = ("127.0.0.2", "127.0.0.3")
VIP6 = "fd00:77::1"  # an IPv6 VIP balanced to [::1]
PORT = 47123
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _datapath(pin: str) -> Datapath:
    d = Datapath(pin, "lo", enabled=False, sizes={"FLOW_MAX": 1024, "REMOTE_MAX": 1024})
    assert d.load(), d.reason
    assert d.lb_loaded, d.lb_reason
    return d


@pytest.fixture
def pins() -> Iterator[list[str]]:
    if os.geteuid() != 0:
        pytest.fail("eBPF tests need root: run `make test` as root")
    base = f"/sys/fs/bpf/xmasq/test-lb-{os.getpid()}"
    before = _links()
    try:
        yield []
    finally:
        shutil.rmtree(base, ignore_errors=True)  # unpinning the links detaches what a failure left
    assert _links() == before


def _links() -> int:
    """Socket load balancer links on this machine (a testbed's drivers may have some too)."""
    out = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True, check=True).stdout
    return out.count("attach_type cgroup_inet4_connect")


def _pin(pins: list[str], name: str) -> str:
    pins.append(f"/sys/fs/bpf/xmasq/test-lb-{os.getpid()}/{name}")
    return pins[-1]


def _listener(family: int, addr: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((addr, PORT))
    s.listen(8)
    return s


def _in_new_netns(make: Callable[[], T]) -> T:
    """make()'s sockets, made in a new network namespace with lo up (the namespace lives as long as
    they do). A thread unshares its own network namespace only."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # forked from this thread: its netns
            done["value"] = make()
        except Exception as e:
            done["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in done:
        raise done["error"]
    return done["value"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def _servers(family: int, kind: int, addrs: tuple[str, ...]) -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for addr in addrs:
            s = socket.socket(family, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, PORT))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            s.settimeout(2)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _accepted_by(servers: list[socket.socket]) -> int:
    """Which server took the connection just made."""
    for i, s in enumerate(servers):
        s.setblocking(False)
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            continue
        finally:
            s.setblocking(True)
        conn.close()
        return i
    raise AssertionError("no server accepted the connection")


def test_tcp_udp_and_ipv6_through_a_vip(pins):
    d = _datapath(_pin(pins, "a"))
    before = _links()
    with _servers(socket.AF_INET, socket.SOCK_STREAM, BACKENDS) as tcp:
        assert d.set_services({VIP: BACKENDS}) == 1
        assert d.set_services({VIP: BACKENDS}) == 0  # nothing changed, nothing written
        hits = [0, 0]
        for _ in range(40):
            with socket.create_connection((VIP, PORT), timeout=2) as c:
                assert c.getpeername() == (VIP, PORT)  # the application still sees the VIP
                hits[_accepted_by(tcp)] += 1
        assert all(hits), hits  # both tasks answered
        # Scale to one task: every new connection goes to it.
        assert d.set_services({VIP: BACKENDS[1:]}) == 1
        for _ in range(10):
            with socket.create_connection((VIP, PORT), timeout=2):
                assert _accepted_by(tcp) == 1
    # UDP, unconnected: the datagram reaches a task, the reply comes from the VIP.
    with _servers(socket.AF_INET, socket.SOCK_DGRAM, BACKENDS[1:]) as (server,):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(2)
            c.sendto(b"ping", (VIP, PORT))
            data, peer = server.recvfrom(64)
            server.sendto(b"pong", peer)
            assert c.recvfrom(64) == (b"pong", (VIP, PORT))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:  # connected UDP
            c.settimeout(2)
            c.connect((VIP, PORT))
            assert c.getpeername() == (VIP, PORT)
            c.send(b"ping")
            _, peer = server.recvfrom(64)
            server.sendto(b"pong", peer)
            assert c.recv(64) == b"pong"
    # An IPv4 VIP through an IPv6 socket (v4-mapped, as dual-stack applications connect).
    with _servers(socket.AF_INET, socket.SOCK_STREAM, BACKENDS[1:]) as tcp, socket.socket(socket.AF_INET6) as c:
        c.settimeout(2)
        c.connect((f"::ffff:{VIP}", PORT))
        assert c.getpeername()[:2] == (f"::ffff:{VIP}", PORT)
        assert _accepted_by(tcp) == 0
    # An IPv6 VIP, in a namespace of the test's own: this one may have no IPv6 (a container's).
    assert d.set_services({VIP: BACKENDS[1:], VIP6: ("::1",)}) == 1
    server, c = _in_new_netns(lambda: (_listener(socket.AF_INET6, "::1"), socket.socket(socket.AF_INET6)))
    with server, c:
        c.settimeout(2)
        c.connect((VIP6, PORT))
        assert c.getpeername()[:2] == (VIP6, PORT)
        assert _accepted_by([server]) == 0
    counters = d.stats()
    assert counters["lb_connect"] >= 52 and counters["lb_sendmsg"] >= 1 and counters["lb_reverse"] >= 4, counters
    assert {s["vip"]: s["backends"] for s in d.cache()["services"]} == {VIP: [BACKENDS[1]], VIP6: ["::1"]}
    assert d.set_services({}) == 2
    assert _links() == before  # detached with the last VIP
    with pytest.raises(OSError):
        socket.create_connection((VIP, PORT), timeout=0.5)  # not translated any more: nothing there


def test_a_vip_without_tasks_refuses_at_once(pins):
    d = _datapath(_pin(pins, "a"))
    d.set_services({VIP: ()})
    with socket.socket() as c:
        c.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            c.connect((VIP, PORT))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        with pytest.raises(OSError) as e:
            c.sendto(b"x", (VIP, PORT))
        assert e.value.errno == errno.ECONNREFUSED
    assert d.stats()["lb_no_backend"] == 2
    d.set_services({})


def test_two_drivers_on_one_kernel_and_a_restart_in_place(pins):
    """Each driver acts only on its own VIPs; a restarted driver takes over its pinned links."""
    a, b = _datapath(_pin(pins, "a")), _datapath(_pin(pins, "b"))
    before = _links()
    with _servers(socket.AF_INET, socket.SOCK_STREAM, BACKENDS) as tcp:
        a.set_services({VIP: BACKENDS[:1]})
        b.set_services({VIP_B: BACKENDS[1:]})
        assert _links() == before + 2
        for vip, server in ((VIP, 0), (VIP_B, 1)):
            with socket.create_connection((vip, PORT), timeout=2) as c:
                assert c.getpeername() == (vip, PORT)
                assert _accepted_by(tcp) == server
        a2 = _datapath(pins[0])  # a's successor: same pins, maps adopted, links updated in place
        assert a2.services() == {VIP: (1, BACKENDS[:1])}
        a2.set_services({VIP: BACKENDS})
        assert _links() == before + 2  # replaced in place, not attached twice
        seen = set()
        for _ in range(30):
            with socket.create_connection((VIP, PORT), timeout=2):
                seen.add(_accepted_by(tcp))
        assert seen == {0, 1}
        a2.set_services({})
        b.set_services({})
    assert _links() == before
