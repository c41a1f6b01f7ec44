"""Each host re-asserts its own records after etcd lost data (in-memory etcd, fake backends)."""

from __future__ import annotations

import json
import time

import pytest

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import ADDRESSES, ENDPOINTS, HOSTS, VNIS, pool_key
from xmasq_driver.control.model import HostRecord, Pool
from xmasq_driver.ops.metrics import render

GW = {"RequestAddressType": "com.docker.network.gateway"}
POOL = "10.7.0.0/24"
SHARED = {"xmasq.network": "shared"}


def _docker_network(h: Harness, nid: str) -> None:
    """What dockerd does for `docker network create -d xmasq --ipam-driver xmasq`: pool, gateway, network."""
    h.ok("/IpamDriver.RequestPool", {"AddressSpace": "xmasq", "Pool": POOL, "Options": {}})
    h.ok("/IpamDriver.RequestAddress", {"PoolID": POOL, "Options": GW})
    h.create_network(nid, subnet=POOL, gateway="10.7.0.1/24", generic=SHARED)


def _docker_run(h: Harness, nid: str, eid: str) -> str:
    """An address from the pool, then the endpoint (`docker run --network`); returns the address."""
    address = h.ok("/IpamDriver.RequestAddress", {"PoolID": POOL})["Address"]
    h.create_endpoint(nid, eid, address)
    return address.split("/")[0]


def _docker_rm(h: Harness, nid: str, eid: str, ip: str) -> None:
    h.ok("/NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
    h.ok("/IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": ip})


def _records(h: Harness) -> dict[str, str]:
    """Every etcd record except the hosts' liveness keys (those come back with the heartbeat)."""
    return {k: v for k, v in h.kv.data.items() if not k.startswith(HOSTS.prefix())}


def _restore(h: Harness, data: dict[str, str]) -> None:
    """etcd restored: its data replaced, its revision back to where it was (as after a restore)."""
    h.kv.restore(data)


@pytest.fixture
def two():
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    for i, h in enumerate((h1, h2), start=1):
        h.store.register_host(HostRecord(f"192.0.2.{i}"), h.kv.grant(10))
        _docker_network(h, f"n{i}")
    return h1, h2


def test_etcd_wiped_every_record_comes_back(two):
    h1, h2 = two
    a = _docker_run(h1, "n1", "a" * 20)
    b = _docker_run(h2, "n2", "b" * 20)
    before = _records(h1)
    for h in two:
        h.reconciler.sync_once()  # the revision each has seen
    _restore(h1, {})
    for h in two:
        h.reconciler.sync_once()
    assert _records(h1) == before
    assert json.loads(h1.kv.data[ENDPOINTS.key("shared", a)])["host"] == "host1"
    # new containers on each host get addresses nobody has
    c = _docker_run(h1, "n1", "c" * 20)
    d = _docker_run(h2, "n2", "d" * 20)
    assert len({a, b, c, d, "10.7.0.1"}) == 5
    health = h1.admin.status()["cluster"]["records"]
    assert health["data_loss"] == 1 and health["reasserted"] >= 5 and health["conflicts"] == []


def test_an_older_snapshot_is_corrected_to_what_runs(two):
    h1, h2 = two
    gone = _docker_run(h1, "n1", "a" * 20)
    snapshot = dict(h1.kv.data)
    for h in two:
        h.reconciler.sync_once()
    new = _docker_run(h1, "n1", "c" * 20)
    _docker_run(h2, "n2", "b" * 20)
    _docker_rm(h1, "n1", "a" * 20, gone)
    now = _records(h1)
    _restore(h1, snapshot)
    for h in two:
        h.reconciler.sync_once()
    assert _records(h1) == now
    assert ADDRESSES.key(pool_key(POOL), gone) not in h1.kv.data
    assert json.loads(h1.kv.data[ENDPOINTS.key("shared", new)])["endpoint"] == "c" * 20
    assert h1.reconciler.health()["stale_removed"] >= 1


def test_a_conflicting_claim_is_reported_not_overwritten(two):
    h1, h2 = two
    a = _docker_run(h1, "n1", "a" * 20)
    claim = ADDRESSES.key(pool_key(POOL), a)
    h1.kv.put(claim, "ghost")  # a host that has no driver to remove its record
    h1.reconciler.sync_once()
    assert h1.kv.data[claim] == "ghost"
    conflicts = h1.admin.status()["cluster"]["records"]["conflicts"]
    assert conflicts == [{"kind": "address", "key": f"{POOL} {a}", "ours": "host1", "theirs": "ghost"}]
    assert "xmasq_etcd_conflicts 1" in render(h1.admin)
    assert json.loads(h1.kv.data[ENDPOINTS.key("shared", a)])["host"] == "host1"  # the rest is served
    h1.kv.delete(claim)  # the operator resolves it
    h1.reconciler.sync_once()
    assert h1.kv.data[claim] == "host1"
    assert h1.reconciler.health()["conflicts"] == [] and "xmasq_etcd_conflicts 0" in render(h1.admin)


def test_a_live_host_removes_its_own_stale_claim_and_the_owner_reasserts(two):
    h1, h2 = two
    a = _docker_run(h1, "n1", "a" * 20)
    claim = ADDRESSES.key(pool_key(POOL), a)
    h1.kv.put(claim, "host2")  # e.g. an old snapshot from when host2 had this address
    h2.reconciler.sync_once()  # host2 does not have it: its stale record goes
    h1.reconciler.sync_once()
    assert h1.kv.data[claim] == "host1" and h1.reconciler.health()["conflicts"] == []


def test_endpoint_and_vni_conflicts_keep_the_local_endpoint(two):
    h1, h2 = two
    a = _docker_run(h1, "n1", "a" * 20)
    vni = h1.state.networks["n1"].vni
    key = ENDPOINTS.key("shared", a)
    planted = json.dumps({"host": "ghost", "mac": "02:00:00:00:00:01", "endpoint": "f" * 20})
    h1.kv.put(key, planted)
    h1.kv.put(VNIS.key(vni), "other-network")
    h1.kv.put(HOSTS.key("ghost"), HostRecord("192.0.2.9").encode())
    h1.reconciler.sync_once()
    kinds = {c["kind"]: c for c in h1.reconciler.health()["conflicts"]}
    assert kinds["endpoint"]["theirs"] == f"ghost {'f' * 12}" and kinds["vni"]["theirs"] == "other-network"
    assert h1.kv.data[key] == planted and h1.kv.data[VNIS.key(vni)] == "other-network"
    assert a not in h1.overlay.peers.get(vni, {})  # not routed away from the local container


def test_peers_are_held_while_hosts_reassert_then_released(two):
    h1, h2 = two
    b = _docker_run(h2, "n2", "b" * 20)
    r = h1.reconciler_with(hold=0.3)
    r.sync_once()
    vni = h1.state.networks["n1"].vni
    assert b in h1.overlay.peers[vni]
    _restore(h1, {})  # host2 has not re-asserted yet
    r.sync_once()
    assert b in h1.overlay.peers[vni] and b in h1.datapath.remote[vni] and r.health()["holding"]
    time.sleep(0.35)
    r.sync_once()
    assert b not in h1.overlay.peers[vni]  # host2 never came back: after the hold its endpoint goes


def test_a_network_deleted_while_peers_are_held_leaves_no_fast_path_entry(two):
    h1, h2 = two
    b = _docker_run(h2, "n2", "b" * 20)
    h1.reconciler.sync_once()
    vni = h1.state.networks["n1"].vni
    _restore(h1, {})
    h1.reconciler.sync_once()
    assert b in h1.datapath.remote[vni]
    h1.ok("/NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
    h1.reconciler.sync_once()
    assert h1.datapath.remote[vni] == {}


def test_state_from_before_pool_records_is_adopted_not_removed(tmp_path):
    path = str(tmp_path / "state.json")
    old = Harness(path, host="host1")
    _docker_network(old, "n1")
    a = _docker_run(old, "n1", "a" * 20)
    with open(path) as f:
        data = json.load(f)
    del data["pools"]  # as the previous release wrote it
    with open(path, "w") as f:
        json.dump(data, f)
    before = _records(old)
    h = Harness(path, kv=old.kv, host="host1")
    assert h.state.pools is None
    h.reconciler.sync_once()
    assert _records(h) == before
    assert h.state.pools == {POOL: Pool(holds=1, addresses={"10.7.0.1": "gateway", a: "address"})}


def test_only_the_holder_releases_an_address(two):
    h1, h2 = two
    a = _docker_run(h1, "n1", "a" * 20)
    claim = ADDRESSES.key(pool_key(POOL), a)
    error = h2.err("/IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": a})
    assert error == f"address {a} is held by host host1: only that host releases it"
    assert h1.kv.data[claim] == "host1"
