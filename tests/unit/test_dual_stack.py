"""Dual-stack networks (--ipv6) over fake backends: what the driver asks of the kernel, etcd and
the fast path for an IPv6 subnet next to the IPv4 one (the kernel's side: tests/e2e/test_ipv6.py)."""

from __future__ import annotations

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import ENDPOINTS, NETWORKS
from xmasq_driver.control.model import Block, HostRecord, RemoteEndpoint

EP = "e1" * 10
V6 = "fd00:1::/64"
SHARED = {"xmasq.network": "shared"}


def _records(h: Harness, key: str = "n1") -> dict[str, RemoteEndpoint]:
    prefix = ENDPOINTS.prefix(key)
    return {k[len(prefix) :]: RemoteEndpoint.decode(v) for k, v in h.kv.data.items() if k.startswith(prefix)}


def test_an_ipv6_network_gets_its_gateway_rules_and_record(h):
    h.create_network(subnet6=V6)
    net = h.state.networks["n1"]
    assert net.blocks[1] == Block(V6, "fd00:1::1/64")  # no gateway given: the subnet's first address
    assert h.overlay.gateways6[net.vni] == "fd00:1::1/64"
    assert h.firewall.subnets6[net.vni] == V6
    assert h.store.get_network("n1").subnets == ["10.1.0.0/24", V6]


def test_an_ipv4_only_record_is_what_the_release_before_ipv6_wrote(h):
    """No empty IPv6 fields: hosts of both releases read each other's records."""
    h.create_network()
    h.create_endpoint()
    assert "subnet6" not in h.kv.data[NETWORKS.key("n1")]
    assert "address6" not in h.state.endpoints[EP].to_json()


def test_a_dual_stack_endpoint_has_a_record_per_address_and_both_gateways(h):
    h.create_network(subnet6=V6)
    h.create_endpoint(address6="fd00:1::2/64")
    ep = h.state.endpoints[EP]
    assert ep.ips == ["10.1.0.2", "fd00:1::2"]
    records = _records(h)
    assert set(records) == {"10.1.0.2", "fd00:1::2"} and records["10.1.0.2"] == records["fd00:1::2"]
    assert h.datapath.local6[(256, "10.1.0.2")] == "fd00:1::2"  # its IPv6 source is its own
    reply = h.ok("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": EP, "SandboxKey": "/x"})
    assert (reply["Gateway"], reply["GatewayIPv6"]) == ("10.1.0.1", "fd00:1::1")
    h.ok("/NetworkDriver.DeleteEndpoint", {"NetworkID": "n1", "EndpointID": EP})
    assert not _records(h) and not h.datapath.local and not h.datapath.local6


def test_internal_dual_stack_network_has_no_gateway_of_either_version(h):
    h.create_network(subnet6=V6, **{"com.docker.network.internal": True})
    h.create_endpoint(address6="fd00:1::2/64")
    reply = h.ok("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": EP, "SandboxKey": "/x"})
    assert "Gateway" not in reply and "GatewayIPv6" not in reply


def test_bad_ipv6_endpoint_addresses_are_refused_and_leave_nothing(h):
    h.create_network(subnet6=V6)
    for address6, message in (
        ("fd00:9::2/64", "address fd00:9::2 is outside the network's subnet fd00:1::/64"),
        ("10.1.0.3/24", "Interface.AddressIPv6 '10.1.0.3/24' is not an IPv6 address"),
        ("nope", "is not an IPv6 address"),
    ):
        body = {
            "NetworkID": "n1",
            "EndpointID": EP,
            "Interface": {"Address": "10.1.0.2/24", "AddressIPv6": address6},
        }
        assert message in h.err("/NetworkDriver.CreateEndpoint", body)
        assert not h.state.endpoints and not h.overlay.veths and not _records(h) and not h.datapath.local


def test_an_ipv6_address_in_use_on_another_host_is_refused(h):
    h.create_network(subnet6=V6)
    h.kv.put(ENDPOINTS.key("n1", "fd00:1::2"), RemoteEndpoint("host9", "02:58:0a:01:00:09", "f" * 12).encode())
    body = {"NetworkID": "n1", "EndpointID": EP, "Interface": {"Address": "10.1.0.2/24", "AddressIPv6": "fd00:1::2/64"}}
    assert "address fd00:1::2 is in use by endpoint ffffffffffff on host host9" in h.err(
        "/NetworkDriver.CreateEndpoint", body
    )
    assert not h.state.endpoints and set(_records(h)) == {"fd00:1::2"}  # the other host's record is untouched


def test_the_same_cluster_network_with_another_ipv6_subnet_is_refused(h):
    h.create_network(generic=SHARED, subnet6=V6)
    body = {
        "NetworkID": "n2",
        "Options": {"com.docker.network.generic": SHARED, "com.docker.network.enable_ipv6": True},
        "IPv4Data": [{"Pool": "10.1.0.0/24"}],
        "IPv6Data": [{"Pool": "fd00:2::/64"}],
    }
    message = "network shared already exists with subnet 10.1.0.0/24 and fd00:1::/64, not 10.1.0.0/24 and fd00:2::/64"
    assert message in h.err("/NetworkDriver.CreateNetwork", body)
    without = dict(body, Options={"com.docker.network.generic": SHARED}, IPv6Data=[])
    assert "already exists with subnet 10.1.0.0/24 and fd00:1::/64, not 10.1.0.0/24" in h.err(
        "/NetworkDriver.CreateNetwork", without
    )


def test_restart_restores_the_ipv6_gateway_and_address(tmp_path):
    path = str(tmp_path / "state.json")
    h = Harness(path)
    h.create_network(subnet6=V6)
    h.create_endpoint(address6="fd00:1::2/64")
    again = Harness(path, kv=h.kv)
    again.network.restore()
    assert again.overlay.gateways6[256] == "fd00:1::1/64" and again.firewall.subnets6[256] == V6
    assert again.datapath.local6[(256, "10.1.0.2")] == "fd00:1::2"


def test_remote_dual_stack_peers_share_one_fdb_entry_until_both_addresses_go():
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    for i, h in enumerate((h1, h2), start=1):
        h.create_network(f"n{i}", generic=SHARED, subnet6=V6)
        h.store.register_host(HostRecord(f"192.0.2.{i}"), h.kv.grant(10))
    r = h1.reconciler_with()
    r.sync_once()
    h2.create_endpoint("n2", "f" * 20, "10.1.0.9/24", address6="fd00:1::9/64")
    r.step(0.5)
    mac = h2.state.endpoints["f" * 20].mac
    peer = (mac, "192.0.2.2")
    assert h1.overlay.peers[256] == {"10.1.0.9": peer, "fd00:1::9": peer}
    assert h1.overlay.fdb[256] == {peer}
    h1.kv.delete(ENDPOINTS.key("shared", "fd00:1::9"))  # one address gone (say, a conflict resolved)
    r.step(0.5)
    assert h1.overlay.peers[256] == {"10.1.0.9": peer} and h1.overlay.fdb[256] == {peer}  # still reachable
    h1.kv.delete(ENDPOINTS.key("shared", "10.1.0.9"))
    r.step(0.5)
    assert h1.overlay.peers[256] == {} and h1.overlay.fdb[256] == set()


def test_an_ipv6_network_below_the_ipv6_minimum_mtu_is_refused(h):
    body = {
        "NetworkID": "n1",
        "Options": {
            "com.docker.network.generic": {"com.docker.network.driver.mtu": "1200"},
            "com.docker.network.enable_ipv6": True,
        },
        "IPv4Data": [{"Pool": "10.1.0.0/24"}],
        "IPv6Data": [{"Pool": V6}],
    }
    assert "an IPv6 network needs an MTU of at least 1280, not 1200" in h.err("/NetworkDriver.CreateNetwork", body)
    assert not h.state.networks and not h.kv.data and not h.overlay.networks
    h.create_network(generic={"com.docker.network.driver.mtu": "1280"}, subnet6=V6)
