"""The reconciler over the in-memory etcd: what each host programs for its peers."""

from __future__ import annotations

import time

import pytest

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import ENDPOINTS, HOSTS
from xmasq_driver.control.model import HostRecord
from xmasq_driver.control.reconciler import Reconciler
from xmasq_driver.errors import BackendError

SHARED = {"xmasq.network": "shared"}


@pytest.fixture
def cluster():
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    h3 = Harness(kv=h1.kv, host="host3")
    for i, h in enumerate((h1, h2, h3), start=1):
        h.create_network(f"n{i}", generic=SHARED)
        h.lease = h.kv.grant(10)
        h.store.register_host(HostRecord(f"192.0.2.{i}"), h.lease)
    return h1, h2, h3


def _reconciler(h: Harness, grace: float = 5.0) -> Reconciler:
    return h.reconciler_with(grace=grace)


def test_remote_endpoints_are_programmed_and_removed(cluster):
    h1, h2, h3 = cluster
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    h3.create_endpoint("n3", "b" * 20, "10.1.0.3/24")
    h1.create_endpoint("n1", "c" * 20, "10.1.0.4/24")  # local: not a peer
    r = _reconciler(h1)
    r.sync_once()
    vni = h1.state.networks["n1"].vni
    assert h1.overlay.peers[vni] == {
        "10.1.0.2": ("02:58:0a:01:00:02", "192.0.2.2"),
        "10.1.0.3": ("02:58:0a:01:00:03", "192.0.2.3"),
    }
    h2.ok("/NetworkDriver.DeleteEndpoint", {"NetworkID": "n2", "EndpointID": "a" * 20})
    r.sync_once()
    assert set(h1.overlay.peers[vni]) == {"10.1.0.3"}


def test_moved_endpoint_follows_its_new_host(cluster):
    h1, h2, h3 = cluster
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    r = _reconciler(h1)
    r.sync_once()
    h2.ok("/NetworkDriver.DeleteEndpoint", {"NetworkID": "n2", "EndpointID": "a" * 20})
    h3.create_endpoint("n3", "d" * 20, "10.1.0.2/24")
    r.sync_once()
    assert h1.overlay.peers[h1.state.networks["n1"].vni]["10.1.0.2"][1] == "192.0.2.3"


def test_vanished_host_is_evicted_after_grace_and_returns(cluster):
    h1, h2, _ = cluster
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    r = _reconciler(h1, grace=0.3)
    vni = h1.state.networks["n1"].vni
    r.sync_once()
    h1.kv.expire(h2.lease)
    assert h1.firewall.cluster_hosts == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    r.sync_once()
    assert "10.1.0.2" in h1.overlay.peers[vni]  # within grace: kept
    assert "192.0.2.2" in h1.firewall.cluster_hosts
    time.sleep(0.35)
    r.sync_once()
    assert h1.overlay.peers[vni] == {}
    assert h1.firewall.cluster_hosts == {"192.0.2.1", "192.0.2.3"}  # its VXLAN is no longer let in
    h2.store.register_host(HostRecord("192.0.2.2"), h2.kv.grant(10))
    r.sync_once()
    assert "10.1.0.2" in h1.overlay.peers[vni]
    assert "192.0.2.2" in h1.firewall.cluster_hosts


def test_endpoints_of_a_host_never_seen_are_not_programmed(cluster):
    h1, h2, _ = cluster
    h2.kv.expire(h2.lease)
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    _reconciler(h1).sync_once()
    assert h1.overlay.peers[h1.state.networks["n1"].vni] == {}


def test_etcd_down_keeps_existing_entries(cluster):
    h1, h2, _ = cluster
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    r = _reconciler(h1)
    r.sync_once()
    h1.kv.down = True
    with pytest.raises(BackendError):
        r.sync_once()
    assert "10.1.0.2" in h1.overlay.peers[h1.state.networks["n1"].vni]


def test_running_reconciler_follows_changes_quickly(cluster):
    h1, h2, _ = cluster
    r = _reconciler(h1)
    r.start()
    try:
        h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
        vni = h1.state.networks["n1"].vni
        deadline = time.monotonic() + 2
        while "10.1.0.2" not in h1.overlay.peers.get(vni, {}) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "10.1.0.2" in h1.overlay.peers[vni]
        assert HOSTS.key("host1") in h1.kv.data  # the heartbeat registered this host
    finally:
        r.stop()


def test_forget_host_removes_exactly_its_records(cluster):
    h1, h2, _ = cluster
    pool = h2.ok("/IpamDriver.RequestPool", {"Pool": "10.9.0.0/24"})["PoolID"]
    h2.ok("/IpamDriver.RequestAddress", {"PoolID": pool, "Address": "10.9.0.5"})
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    h1.create_endpoint("n1", "c" * 20, "10.1.0.4/24")
    with pytest.raises(BackendError, match="registered"):
        h2.store.forget_host()
    h2.kv.expire(h2.lease)
    assert h2.store.forget_host() > 0
    left = [k for k in h1.kv.data if "host2" in k or "10.9.0." in k or k.endswith("/10.1.0.2")]
    assert left == [], left  # its membership, endpoint, pool hold and the pool's addresses
    assert ENDPOINTS.key("shared", "10.1.0.4") in h1.kv.data  # host1's records stay


def test_a_renumbered_host_republishes_its_address_and_its_peers_follow(cluster):
    h1, h2, _ = cluster
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    r1, r2 = _reconciler(h1), _reconciler(h2)
    r1.sync_once()
    vni = h1.state.networks["n1"].vni
    assert h1.overlay.peers[vni]["10.1.0.2"][1] == "192.0.2.2"
    r2.start()
    try:
        h2.overlay.ip = "192.0.2.103"  # its underlay got a new address
        deadline = time.monotonic() + 5
        while "192.0.2.103" not in h2.kv.data.get(HOSTS.key("host2"), "") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert HostRecord.decode(h2.kv.data[HOSTS.key("host2")]).ip == "192.0.2.103"
        assert h2.datapath.forgotten == 1  # its cached outer headers had the old source
    finally:
        r2.stop()
    r1.sync_once()
    assert h1.overlay.peers[vni]["10.1.0.2"][1] == "192.0.2.103"
    assert "192.0.2.2" not in h1.datapath.live_hosts
