"""The reconciler applies etcd's watch events as deltas (in-memory etcd, fake backends): a change
costs what it touches, not what the cluster holds; a lost or compacted watch, a burst and a
restart part way through one all end with exactly what etcd says programmed."""

from __future__ import annotations

import ipaddress
import time

import pytest

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import ENDPOINTS
from xmasq_driver.control.model import HostRecord, RemoteEndpoint
from xmasq_driver.control.reconciler import Reconciler
from xmasq_driver.dataplane.overlay import mac_for_ip
from xmasq_driver.errors import BackendError

SHARED = {"xmasq.network": "shared"}


@pytest.fixture
def two():
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    for i, h in enumerate((h1, h2), start=1):
        h.create_network(f"n{i}", subnet="10.1.0.0/16", gateway="10.1.0.1/16", generic=SHARED)
        h.lease = h.kv.grant(10)
        h.store.register_host(HostRecord(f"192.0.2.{i}"), h.lease)
    return h1, h2


def _write(h: Harness, ips: list[str], host: str | None = None) -> None:
    """Endpoint records as a host's driver writes them (directly: thousands of them)."""
    for ip in ips:
        record = RemoteEndpoint(host or h.store.host, mac_for_ip_text(ip), "e" * 12)
        h.kv.put(ENDPOINTS.key("shared", ip), record.encode())


def mac_for_ip_text(ip: str) -> str:
    return mac_for_ip(ipaddress.IPv4Address(ip))


def _ips(n: int, start: int = 0) -> list[str]:
    return [f"10.1.{(i + 2) // 250}.{(i + 2) % 250 + 2}" for i in range(start, start + n)]


def _expected(h: Harness, host_ips: dict[str, str]) -> dict[str, tuple[str, str]]:
    """What etcd says host h should program: every remote endpoint of a live host."""
    out = {}
    for key, value in h.kv.data.items():
        if key.startswith(ENDPOINTS.prefix("shared")):
            rec = RemoteEndpoint.decode(value)
            if isinstance(rec, RemoteEndpoint) and rec.host != h.store.host and rec.host in host_ips:
                out[ENDPOINTS.parts_of(key)[1]] = (rec.mac, host_ips[rec.host])
    return out


def _programmed(h: Harness) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    vni = h.state.networks["n1"].vni
    return h.overlay.peers.get(vni, {}), h.datapath.remote.get(vni, {})


def _settle(r: Reconciler, h: Harness, want: dict[str, tuple[str, str]], steps: int = 50) -> None:
    for _ in range(steps):
        if _programmed(h) == (want, want):
            return
        r.step(0.05)
    assert _programmed(h) == (want, want)


LIVE = {"host1": "192.0.2.1", "host2": "192.0.2.2"}


def test_one_change_costs_what_it_touches_not_the_cluster(two):
    h1, h2 = two
    r = h1.reconciler_with()
    _write(h2, _ips(5000))
    r.sync_once()
    assert len(_programmed(h1)[0]) == 5000
    listed, examined = h1.kv.listed, r.counters.examined
    h2.create_endpoint("n2", "f" * 20, "10.1.200.9/16")
    r.step(0.5)
    assert "10.1.200.9" in _programmed(h1)[0] and "10.1.200.9" in _programmed(h1)[1]
    assert h1.kv.listed == listed  # nothing listed again
    assert r.counters.examined - examined == 1  # one record looked at, not 5,001
    assert r.counters.full_passes == 1


def test_a_burst_is_applied_in_batches_and_ends_exact(two):
    h1, h2 = two
    r = h1.reconciler_with()
    r.sync_once()
    _write(h2, _ips(300))
    for ip in _ips(100):  # and some of them gone again, in the same burst
        h1.kv.delete(ENDPOINTS.key("shared", ip))
    r.step(0.5)
    assert r.counters.batches == 1 and r.counters.events == 400
    assert _programmed(h1)[0] == _expected(h1, LIVE) and len(_programmed(h1)[0]) == 200
    assert r.counters.examined == 300  # each address once, however often it changed


def test_events_apply_in_order(two):
    h1, h2 = two
    r = h1.reconciler_with()
    r.sync_once()
    ip = "10.1.0.9"
    _write(h2, [ip])
    h1.kv.delete(ENDPOINTS.key("shared", ip))
    r.step(0.5)
    assert ip not in _programmed(h1)[0]  # written then deleted: not there
    h1.kv.delete(ENDPOINTS.key("shared", ip))
    _write(h2, [ip])
    _write(h2, [ip], host="host1")  # then it moved here (a local address: not a peer)
    _write(h2, [ip])  # and back to host2
    r.step(0.5)
    assert _programmed(h1)[0][ip] == (mac_for_ip_text(ip), "192.0.2.2")


def test_a_compacted_watch_lists_again(two):
    h1, h2 = two
    r = h1.reconciler_with()
    r.sync_once()
    _write(h2, _ips(20))
    h1.kv.compact()  # the events are gone from history before the watch reads them
    r.step(0.5)
    assert r.counters.full_passes == 2
    assert _programmed(h1) == (_expected(h1, LIVE), _expected(h1, LIVE)) and len(_programmed(h1)[0]) == 20


def test_a_lost_watch_lists_again_and_finds_what_it_missed(two, monkeypatch):
    h1, h2 = two
    r = h1.reconciler_with()
    r.sync_once()
    watch = h1.kv.watch
    failed: list[bool] = []

    def flaky(prefix: str, revision: int, timeout: float, fresh: bool = False):  # type: ignore[no-untyped-def]
        if not failed:
            failed.append(True)
            # what happens while the stream is down is never delivered as events
            h1.kv.data[ENDPOINTS.key("shared", "10.1.0.7")] = RemoteEndpoint(
                "host2", mac_for_ip_text("10.1.0.7"), "e" * 12
            ).encode()
            h1.kv.revision += 1
            raise BackendError("etcd watch failed (timeout 3s): stream closed")
        return watch(prefix, revision, timeout)

    monkeypatch.setattr(h1.kv, "watch", flaky)
    r.start()
    try:
        deadline = time.monotonic() + 5
        while "10.1.0.7" not in _programmed(h1)[0] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        r.stop()
    assert "10.1.0.7" in _programmed(h1)[0] and r.counters.full_passes >= 2


def test_a_restart_part_way_through_a_burst_ends_exact(two):
    h1, h2 = two
    r = h1.reconciler_with()
    r.sync_once()
    _write(h2, _ips(150))
    r.step(0.5)
    r.stop()  # the driver stops; the kernel keeps what it programmed
    _write(h2, _ips(150, 150))
    for ip in _ips(50, 100):
        h1.kv.delete(ENDPOINTS.key("shared", ip))
    again = h1.reconciler_with()  # a new process: nothing in memory
    again.sync_once()
    _write(h2, _ips(50, 300))
    _settle(again, h1, _expected(h1, LIVE))
    assert len(_programmed(h1)[0]) == 300


def test_a_full_pass_that_fails_for_a_network_is_retried_and_removes_what_went(two):
    """After a restart the kernel holds entries of endpoints deleted meanwhile; if programming the
    network fails (a netlink deadline) they must still go, not be left behind by later deltas."""
    h1, h2 = two
    r = h1.reconciler_with()
    _write(h2, _ips(10))
    r.sync_once()
    r.stop()
    for ip in _ips(4):  # deleted while the driver is down
        h1.kv.delete(ENDPOINTS.key("shared", ip))
    again = h1.reconciler_with()
    h1.overlay.fail_peers = 1
    again.sync_once()
    _write(h2, _ips(2, 50))  # and changes come in meanwhile
    deadline = time.monotonic() + 5
    while _programmed(h1)[0] != _expected(h1, LIVE) and time.monotonic() < deadline:
        again.step(0.2)
    assert _programmed(h1) == (_expected(h1, LIVE), _expected(h1, LIVE)) and len(_programmed(h1)[0]) == 8
    assert again.counters.full_passes == 2  # retried within a second, not at the safety pass


def test_the_safety_pass_corrects_and_counts_drift(two):
    h1, h2 = two
    r = h1.reconciler_with(resync=0.3)
    _write(h2, _ips(10))
    r.sync_once()
    vni = h1.state.networks["n1"].vni
    del h1.overlay.peers[vni][_ips(1)[0]]  # someone removed an FDB entry behind the driver's back
    for _ in range(3):  # no event: the safety pass finds it, in at most `resync` seconds
        r.step(1.0)
    assert r.counters.full_passes == 2
    assert _programmed(h1)[0] == _expected(h1, LIVE)
    assert r.counters.drift == 1 and r.health()["drift"] == 1


def test_a_change_still_on_its_way_through_the_watch_is_not_drift(two):
    """The safety pass reads at the revision the watch has reached (a 60-minute soak counted
    3 entries of drift that were only changes not yet applied); the watch then brings them."""
    h1, h2 = two
    r = h1.reconciler_with(resync=300)
    _write(h2, _ips(5))
    r.sync_once()
    _write(h2, _ips(3, 5))  # written, not yet seen through the watch
    r.sync_once("periodic")
    assert r.counters.drift == 0 and len(_programmed(h1)[0]) == 5
    r.step(1.0)
    assert _programmed(h1)[0] == _expected(h1, LIVE) and len(_programmed(h1)[0]) == 8


def test_a_safety_pass_after_compaction_past_its_revision_reads_the_latest(two):
    h1, h2 = two
    r = h1.reconciler_with(resync=300)
    r.sync_once()
    _write(h2, _ips(4))
    h1.kv.compact()  # the watch's revision is gone: the pass reads what is there now
    r.sync_once("periodic")
    assert _programmed(h1)[0] == _expected(h1, LIVE) and len(_programmed(h1)[0]) == 4
    assert r.counters.drift == 8  # counted (4 FDB and 4 fast-path entries): the pass cannot tell


def test_a_vanished_host_goes_after_grace_without_a_full_pass(two):
    h1, h2 = two
    r = h1.reconciler_with(grace=0.3)
    _write(h2, _ips(5))
    r.sync_once()
    h2.kv.expire(h2.lease)
    r.step(0.1)
    assert len(_programmed(h1)[0]) == 5  # within grace
    deadline = time.monotonic() + 3
    while _programmed(h1)[0] and time.monotonic() < deadline:
        r.step(0.2)
    assert _programmed(h1) == ({}, {}) and r.counters.full_passes == 1
