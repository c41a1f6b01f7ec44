"""IpamDriver calls through the HTTP adapter over an in-memory etcd."""

from __future__ import annotations

import threading

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import ADDRESSES

GW = {"RequestAddressType": "com.docker.network.gateway"}


def _pool(h, subnet="10.3.0.0/24", **extra):
    return h.ok(
        "/IpamDriver.RequestPool",
        {"AddressSpace": "xmasq", "Pool": subnet, "SubPool": "", "Options": {}, "V6": False, **extra},
    )


def test_capabilities_and_spaces(h):
    assert h.ok("/IpamDriver.GetCapabilities") == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
    assert h.ok("/IpamDriver.GetDefaultAddressSpaces") == {
        "LocalDefaultAddressSpace": "xmasq",
        "GlobalDefaultAddressSpace": "xmasq",
    }


def test_pool_needs_a_subnet_of_the_version_docker_asked_for(h):
    assert "needs a subnet" in h.err("/IpamDriver.RequestPool", {"Pool": ""})
    assert "pool fd00::/64 is not an IPv4 subnet" in h.err("/IpamDriver.RequestPool", {"Pool": "fd00::/64"})
    assert "pool 10.0.0.0/24 is not an IPv6 subnet" in h.err(
        "/IpamDriver.RequestPool", {"Pool": "10.0.0.0/24", "V6": True}
    )
    assert "not an IPv6 subnet" in h.err(
        "/IpamDriver.RequestPool", {"Pool": "fd00::/64", "SubPool": "10.0.0.0/25", "V6": True}
    )
    assert "too small (at most /126)" in h.err("/IpamDriver.RequestPool", {"Pool": "fd00::/127", "V6": True})
    assert "bad pool" in h.err("/IpamDriver.RequestPool", {"Pool": "10.0.0.0/33"})
    assert "not inside" in h.err("/IpamDriver.RequestPool", {"Pool": "10.0.0.0/24", "SubPool": "10.1.0.0/25"})
    assert "field V6 must be a boolean" in h.err("/IpamDriver.RequestPool", {"Pool": "10.0.0.0/24", "V6": "yes"})
    assert "unknown IPAM option foo: xmasq supports xmasq.space" in h.err(
        "/IpamDriver.RequestPool", {"Pool": "10.0.0.0/24", "Options": {"foo": "bar"}}
    )
    assert not h.kv.data and not h.state.pools


def test_addresses_are_sequential_and_gateway_first(h):
    pool = _pool(h)
    assert pool == {"PoolID": "10.3.0.0/24", "Pool": "10.3.0.0/24", "Data": {}}
    gw = h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24", "Address": "", "Options": GW})
    assert gw["Address"] == "10.3.0.1/24"
    a = h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24"})
    b = h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24"})
    assert (a["Address"], b["Address"]) == ("10.3.0.2/24", "10.3.0.3/24")


def test_ipv6_pool_gives_unique_addresses_across_hosts(h):
    """Dual stack (#19): an IPv6 pool in the same etcd scheme as IPv4's, gateway first."""
    other = Harness(kv=h.kv, host="host2")
    for x in (h, other):
        assert _pool(x, "fd00:3::/126", V6=True) == {"PoolID": "fd00:3::/126", "Pool": "fd00:3::/126", "Data": {}}
    pid = {"PoolID": "fd00:3::/126"}
    assert h.ok("/IpamDriver.RequestAddress", {**pid, "Options": GW})["Address"] == "fd00:3::1/126"
    assert h.ok("/IpamDriver.RequestAddress", pid)["Address"] == "fd00:3::2/126"
    assert other.ok("/IpamDriver.RequestAddress", pid)["Address"] == "fd00:3::3/126"  # no broadcast in IPv6
    assert "no free address left in fd00:3::/126" in h.err("/IpamDriver.RequestAddress", pid)
    assert h.kv.data[ADDRESSES.key("fd00:3::_126", "fd00:3::3")] == "host2"
    assert "held by host host2" in h.err("/IpamDriver.ReleaseAddress", {**pid, "Address": "fd00:3::3"})
    h.ok("/IpamDriver.ReleaseAddress", {**pid, "Address": "fd00:3::2"})
    assert h.ok("/IpamDriver.RequestAddress", {**pid, "Address": "fd00:3::2/126"})["Address"] == "fd00:3::2/126"
    assert "not a host address" in h.err("/IpamDriver.RequestAddress", {**pid, "Address": "fd00:3::"})
    assert "not a host address" in h.err("/IpamDriver.RequestAddress", {**pid, "Address": "10.0.0.1"})


def test_a_large_ipv6_pool_is_never_listed(h):
    _pool(h, "fd00:4::/64", V6=True)  # 2^64 addresses: counted up to the first free one
    addresses = [h.ok("/IpamDriver.RequestAddress", {"PoolID": "fd00:4::/64"})["Address"] for _ in range(3)]
    assert addresses == ["fd00:4::1/64", "fd00:4::2/64", "fd00:4::3/64"]


def test_sub_pool_limits_the_range(h):
    pool = _pool(h, SubPool="10.3.0.128/25")
    assert pool["PoolID"] == "10.3.0.0/24|10.3.0.128/25"
    assert h.ok("/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"] == "10.3.0.129/24"


def test_gateway_is_shared_between_hosts_and_never_released_by_one(h):
    other = Harness(kv=h.kv, host="host2")
    _pool(h)
    _pool(other)
    for x in (h, other):
        assert x.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24", "Options": GW})["Address"] == "10.3.0.1/24"
    h.ok("/IpamDriver.ReleaseAddress", {"PoolID": "10.3.0.0/24", "Address": "10.3.0.1"})
    assert h.kv.data[ADDRESSES.key("10.3.0.0_24", "10.3.0.1")] == "gateway"


def test_specific_address_conflict_and_release(h):
    _pool(h)
    h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24", "Address": "10.3.0.7"})
    assert "10.3.0.7 is already in use" in h.err(
        "/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24", "Address": "10.3.0.7"}
    )
    h.ok("/IpamDriver.ReleaseAddress", {"PoolID": "10.3.0.0/24", "Address": "10.3.0.7"})
    h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24", "Address": "10.3.0.7"})
    assert "not a host address" in h.err(
        "/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24", "Address": "10.3.0.255"}
    )


def test_pool_exhaustion(h):
    _pool(h, subnet="10.4.0.0/30")
    h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.4.0.0/30"})
    h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.4.0.0/30"})
    assert "no free address left" in h.err("/IpamDriver.RequestAddress", {"PoolID": "10.4.0.0/30"})


def test_unknown_pool(h):
    status, body = h.call("/IpamDriver.RequestAddress", {"PoolID": "10.9.0.0/24"})
    assert status == 404 and "RequestPool first" in body["Err"]
    assert "not an xmasq pool" in h.err("/IpamDriver.ReleasePool", {"PoolID": "garbage"})


def test_release_pool_is_reference_counted_across_hosts(h):
    other = Harness(kv=h.kv, host="host2")
    _pool(h)
    _pool(h)
    _pool(other)
    h.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24"})
    h.ok("/IpamDriver.ReleasePool", {"PoolID": "10.3.0.0/24"})
    h.ok("/IpamDriver.ReleasePool", {"PoolID": "10.3.0.0/24"})
    assert any("/ipam/addresses/" in k for k in h.kv.data)
    other.ok("/IpamDriver.ReleasePool", {"PoolID": "10.3.0.0/24"})
    assert not h.kv.data


def test_parallel_requests_get_distinct_addresses(h):
    hosts = [h] + [Harness(kv=h.kv, host=f"host{i}") for i in (2, 3)]
    for x in hosts:
        _pool(x)
    got: list[str] = []

    def grab(x):
        for _ in range(10):
            got.append(x.ok("/IpamDriver.RequestAddress", {"PoolID": "10.3.0.0/24"})["Address"])

    threads = [threading.Thread(target=grab, args=(x,)) for x in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 30 and len(set(got)) == 30


def test_a_named_space_is_a_separate_pool(h):
    plain = _pool(h)["PoolID"]
    spaced = _pool(h, Options={"xmasq.space": "blue"})["PoolID"]
    assert spaced == "10.3.0.0/24@blue"
    a = h.ok("/IpamDriver.RequestAddress", {"PoolID": plain})["Address"]
    b = h.ok("/IpamDriver.RequestAddress", {"PoolID": spaced})["Address"]
    assert a == b == "10.3.0.1/24"  # the same address, from two pools
    assert "xmasq.space" in h.err("/IpamDriver.RequestPool", {"Pool": "10.3.0.0/24", "Options": {"xmasq.space": "a/b"}})
