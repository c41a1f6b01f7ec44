"""NetworkDriver calls through the HTTP adapter, with fake backends."""

from __future__ import annotations

import json
import logging

import pytest

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import ENDPOINTS, MEMBERS, NETWORKS, VNIS
from xmasq_driver.dataplane.overlay import veth_names

EP = "e1" * 10
PORTMAP = "com.docker.network.portmap"


def test_activate_declares_both_drivers(h):
    assert h.ok("/Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}


def test_capabilities(h):
    assert h.ok("/NetworkDriver.GetCapabilities") == {"Scope": "local", "ConnectivityScope": "global"}


def test_debug_log_holds_each_request_as_docker_sent_it(h, caplog):
    """How docs/design-notes.md lists what each Docker engine sends (XMASQ_LOG_LEVEL=DEBUG)."""
    body = {"NetworkID": "n1", "Options": {"com.docker.network.generic": {}}, "IPv4Data": []}
    with caplog.at_level(logging.DEBUG, logger="xmasq.api"):
        h.call("/NetworkDriver.CreateNetwork", body)
    [record] = [r for r in caplog.records if r.getMessage() == "request"]
    assert record.fields == {"path": "/NetworkDriver.CreateNetwork", "body": json.dumps(body, sort_keys=True)}


def test_unknown_path_is_404_with_err(h):
    status, body = h.call("/NetworkDriver.Frobnicate", {})
    assert status == 404 and "Err" in body


def test_get_on_known_path_is_refused_with_err(h):
    resp = h.client.get("/NetworkDriver.CreateNetwork")
    assert resp.status_code == 405 and "Err" in json.loads(resp.data)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_are_refused(h, raw, message):
    assert message in h.err("/NetworkDriver.CreateNetwork", raw=raw)


def test_oversized_body_is_refused(h):
    assert "Err" in h.call("/NetworkDriver.CreateNetwork", raw=b" " * (2 << 20))[1]


def test_create_network_records_everything(h):
    h.create_network(generic={"xmasq.vni": "4242"})
    net = h.state.networks["n1"]
    assert net.vni == 4242 and net.subnets == ["10.1.0.0/24"] and net.mtu == 1350
    assert h.overlay.networks[4242] == ("10.1.0.1/24", 1350)
    assert h.firewall.networks[4242] == ("xmbr4242", "10.1.0.0/24", False)
    assert h.kv.data[VNIS.key("4242")] == "n1"
    assert json.loads(h.kv.data[NETWORKS.key("n1")])["subnet"] == "10.1.0.0/24"
    assert MEMBERS.key("n1", "host1") in h.kv.data


def test_vni_is_allocated_uniquely(h):
    h.create_network("n1")
    h.create_network("n2", subnet="10.2.0.0/24", gateway="10.2.0.1/24")
    assert {h.state.networks["n1"].vni, h.state.networks["n2"].vni} == {256, 257}


def test_requested_vni_in_use_is_refused_and_nothing_changes(h):
    h.create_network("n1", generic={"xmasq.vni": "500"})
    before = dict(h.kv.data)
    body = {
        "NetworkID": "n2",
        "Options": {"com.docker.network.generic": {"xmasq.vni": "500"}},
        "IPv4Data": [{"Pool": "10.2.0.0/24", "Gateway": "10.2.0.1/24"}],
    }
    assert "VNI 500 is already used by network n1" in h.err("/NetworkDriver.CreateNetwork", body)
    assert h.kv.data == before and "n2" not in h.state.networks and len(h.overlay.networks) == 1


def test_create_network_is_idempotent(h):
    h.create_network()
    h.create_network()
    assert len(h.state.networks) == 1


def test_internal_network(h):
    h.create_network(**{"com.docker.network.internal": True})
    assert h.firewall.networks[256][2] is True
    h.create_endpoint()
    reply = h.ok("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": EP, "SandboxKey": "/x"})
    assert "Gateway" not in reply


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "missing required field NetworkID"),
        ({"NetworkID": 7}, "field NetworkID must be a string"),
        ({"NetworkID": ""}, "field NetworkID must not be empty"),
        ({"NetworkID": "n", "IPv4Data": "x"}, "field IPv4Data must be a list"),
        ({"NetworkID": "n", "IPv4Data": [{"Gateway": "10.0.0.1/24"}]}, "missing required field Pool"),
        ({"NetworkID": "n", "IPv4Data": [1]}, "must be a JSON object"),
        ({"NetworkID": "n", "IPv4Data": []}, "exactly one IPv4 subnet"),
        ({"NetworkID": "n", "IPv4Data": [{"Pool": "nope"}]}, "is not an IPv4 subnet"),
        ({"NetworkID": "n", "IPv4Data": [{"Pool": "10.0.0.0/24", "Gateway": "10.9.0.1/24"}]}, "outside subnet"),
        (
            {"NetworkID": "n", "IPv4Data": [{"Pool": "10.0.0.0/24"}], "IPv6Data": [{"Pool": "fd00::/64"}]},
            "IPv6Data given for a network without IPv6 (create it with --ipv6)",
        ),
        ({"NetworkID": "n", "Options": [], "IPv4Data": [{"Pool": "10.0.0.0/24"}]}, "field Options must be an object"),
        (
            {"NetworkID": "n", "Options": {"com.docker.network.generic": "x"}, "IPv4Data": [{"Pool": "10.0.0.0/24"}]},
            "must be an object",
        ),
        (
            {
                "NetworkID": "n",
                "Options": {"com.docker.network.enable_ipv6": True},
                "IPv4Data": [{"Pool": "10.0.0.0/24"}],
            },
            "xmasq needs exactly one IPv6 subnet per network, got 0",
        ),
        *(
            (
                {
                    "NetworkID": "n",
                    "Options": {"com.docker.network.enable_ipv6": True},
                    "IPv4Data": [{"Pool": "10.0.0.0/24"}],
                    "IPv6Data": [v6],
                },
                message,
            )
            for v6, message in (
                ({"Pool": "10.1.0.0/24"}, "IPv6Data.Pool '10.1.0.0/24' is not an IPv6 subnet"),
                ({"Pool": "fd00::/127"}, "subnet fd00::/127 is too small (at most /126)"),
                ({"Pool": "fd00::/64", "Gateway": "fd01::1/64"}, "gateway fd01::1 is outside subnet fd00::/64"),
                ({"Pool": "fd00::/64", "Gateway": "10.0.0.1/24"}, "IPv6Data.Gateway '10.0.0.1/24' is not an IPv6"),
            )
        ),
        (
            {
                "NetworkID": "n",
                "Options": {"com.docker.network.enable_ipv4": False},
                "IPv4Data": [{"Pool": "10.0.0.0/24"}],
            },
            "IPv6-only networks are not supported",
        ),
        (
            {"NetworkID": "n", "Options": {"com.docker.network.new_thing": 1}, "IPv4Data": [{"Pool": "10.0.0.0/24"}]},
            "network setting com.docker.network.new_thing from Docker is not supported by xmasq",
        ),
    ],
)
def test_create_network_bad_requests(h, body, message):
    assert message in h.err("/NetworkDriver.CreateNetwork", body)
    assert not h.state.networks and not h.kv.data and not h.overlay.networks


@pytest.mark.parametrize(
    "generic, message",
    [
        ({"xmasq.vni": "abc"}, "xmasq.vni='abc' is not an integer"),
        ({"xmasq.vni": "0"}, "out of range"),
        ({"xmasq.vni": "16777216"}, "out of range"),
        ({"xmasq.fastpath": "maybe"}, "must be on or off"),
        ({"xmasq.steer": "on"}, "option xmasq.steer='on' must be one of rfs, rps, off"),
        ({"xmasq.network": "bad/name"}, "xmasq.network"),
        ({"xmasq.typo": "1"}, "unknown option xmasq.typo"),
        ({"encrypted": "false"}, "Docker's overlay turns encryption on for any value"),
        ({"xmasq.encrypted": "yes"}, "option xmasq.encrypted='yes' must be true or false"),
        ({"encrypted": "", "com.docker.network.driver.mtu": "1300"}, "out of range 68..1290"),
        ({"com.docker.network.bridge.enable_icc": "false"}, "unknown option com.docker.network.bridge.enable_icc"),
        ({"com.docker.network.container_iface_prefix": "9x"}, "container_iface_prefix='9x' must be a letter"),
        ({"com.docker.network.container_iface_prefix": "abcdefghijkl"}, "must be a letter then up to 10"),
        ({"com.docker.network.driver.mtu": "9000"}, "out of range 68..1350"),
    ],
)
def test_bad_network_options(h, generic, message):
    body = {
        "NetworkID": "n1",
        "Options": {"com.docker.network.generic": generic},
        "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
    }
    assert message in h.err("/NetworkDriver.CreateNetwork", body)
    assert not h.kv.data


def test_null_options_are_absent(h):
    body = {"NetworkID": "n1", "Options": None, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": None}]}
    h.ok("/NetworkDriver.CreateNetwork", body)
    assert h.state.networks["n1"].blocks[0].gateway == "10.1.0.1/24"


def test_user_mtu(h):
    h.create_network(generic={"com.docker.network.driver.mtu": "1200"})
    h.create_endpoint()
    assert h.overlay.veths[EP][2] == 1200


def test_same_cluster_network_with_other_subnet_is_refused(h):
    h.create_network("n1", generic={"xmasq.network": "shared"})
    body = {
        "NetworkID": "n2",
        "Options": {"com.docker.network.generic": {"xmasq.network": "shared"}},
        "IPv4Data": [{"Pool": "10.2.0.0/24"}],
    }
    assert "already exists with subnet 10.1.0.0/24" in h.err("/NetworkDriver.CreateNetwork", body)


def test_delete_network_removes_everything(h):
    h.create_network()
    h.create_endpoint()
    h.ok("/NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
    assert not h.kv.data and not h.overlay.networks and not h.overlay.veths
    assert not h.firewall.networks and not h.state.networks and not h.state.endpoints


def test_delete_network_keeps_cluster_record_while_other_hosts_use_it(h):
    other = Harness(kv=h.kv, host="host2")
    h.create_network(generic={"xmasq.network": "shared"})
    other.create_network("m1", generic={"xmasq.network": "shared"})
    assert other.state.networks["m1"].vni == h.state.networks["n1"].vni
    h.ok("/NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
    assert NETWORKS.key("shared") in h.kv.data
    other.ok("/NetworkDriver.DeleteNetwork", {"NetworkID": "m1"})
    assert not h.kv.data


@pytest.mark.parametrize(
    "path",
    [
        "/NetworkDriver.DeleteNetwork",
        "/NetworkDriver.DeleteEndpoint",
        "/NetworkDriver.Leave",
        "/NetworkDriver.RevokeExternalConnectivity",
        "/NetworkDriver.FreeNetwork",
    ],
)
def test_teardown_calls_succeed_for_unknown_ids(h, path):
    assert h.ok(path, {"NetworkID": "nope", "EndpointID": "nope"}) == {}


def test_create_endpoint_returns_only_missing_fields(h):
    h.create_network()
    assert h.create_endpoint() == {"Interface": {"MacAddress": "02:58:0a:01:00:02"}}
    assert h.create_endpoint(eid="e2" * 10, address="10.1.0.3/24", mac="02:00:00:00:00:09") == {}
    assert h.overlay.veths["e2" * 10][1] == "02:00:00:00:00:09"
    record = json.loads(h.kv.data[ENDPOINTS.key("n1", "10.1.0.2")])
    assert record == {"mac": "02:58:0a:01:00:02", "endpoint": EP, "host": "host1"}


def test_every_endpoint_is_guarded_and_the_switch_decides_the_fast_path(h):
    h.create_network()
    h.create_network("n2", "10.2.0.0/24", "10.2.0.1/24", generic={"xmasq.fastpath": "off"})
    h.create_endpoint()
    h.create_endpoint("n2", "e2" * 10, "10.2.0.2/24")
    vni1, vni2 = (h.state.networks[n].vni for n in ("n1", "n2"))
    assert h.datapath.local[(vni1, "10.1.0.2")][2] is True
    assert h.datapath.local[(vni2, "10.2.0.2")][2] is False  # anti-spoofing still applies


def test_a_network_can_choose_its_own_flow_steering(h, tmp_path):
    h.create_network()
    h.create_network("n2", "10.2.0.0/24", "10.2.0.1/24", generic={"xmasq.steer": "off"})
    h.create_endpoint()
    h.create_endpoint("n2", "e2" * 10, "10.2.0.2/24")
    chosen = [(veth_names("e1" * 10)[0], None), (veth_names("e2" * 10)[0], "off")]  # None: the driver's setting
    assert h.overlay.steered == chosen
    h.overlay.steered.clear()
    h.network.restore()  # at start too, so a changed setting reaches existing veths
    assert sorted(h.overlay.steered) == chosen


@pytest.mark.parametrize(
    "interface, message",
    [
        (None, "Interface.Address '' is not an IPv4 address"),
        ({"Address": "10.1.0.2"}, None),
        ({"Address": "10.9.0.2/24"}, "outside the network's subnet"),
        ({"Address": "garbage"}, "not an IPv4 address"),
        ({"Address": 5}, "Interface.Address must be a string"),
        ({"Address": "10.1.0.2/24", "AddressIPv6": "fd00::2/64"}, "network n1 has no IPv6 subnet"),
        ({"Address": "10.1.0.2/24", "MacAddress": "zz"}, "not a MAC address"),
    ],
)
def test_create_endpoint_bad_interface(h, interface, message):
    h.create_network()
    body = {"NetworkID": "n1", "EndpointID": EP, "Interface": interface, "Options": None}
    if message is None:  # an address without prefix length is accepted as a /32 inside the subnet
        h.ok("/NetworkDriver.CreateEndpoint", body)
        return
    assert message in h.err("/NetworkDriver.CreateEndpoint", body)
    assert not h.overlay.veths and not h.state.endpoints


def test_endpoint_driver_options_are_refused_and_dockers_own_pass(h):
    h.create_network()
    body = {"NetworkID": "n1", "EndpointID": EP, "Interface": {"Address": "10.1.0.2/24"}, "Options": {"foo": "bar"}}
    assert "endpoint option foo is not supported by xmasq" in h.err("/NetworkDriver.CreateEndpoint", body)
    assert not h.overlay.veths and not h.state.endpoints and not h.store.view().endpoints
    h.ok("/NetworkDriver.CreateEndpoint", dict(body, Options={"com.docker.network.endpoint.macaddress": "AhEiM0RV"}))


def test_container_interface_prefix_names_the_interface(h):
    h.create_network(generic={"com.docker.network.container_iface_prefix": "xm"})
    h.create_endpoint()
    reply = h.ok("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": "e1" * 10, "SandboxKey": "/x"})
    assert reply["InterfaceName"]["DstPrefix"] == "xm"


def test_create_endpoint_on_unknown_network_is_404(h):
    status, body = h.call(
        "/NetworkDriver.CreateEndpoint", {"NetworkID": "zz", "EndpointID": EP, "Interface": {"Address": "10.1.0.2/24"}}
    )
    assert status == 404 and "not an xmasq network" in body["Err"]


def test_create_endpoint_rolls_back_when_etcd_fails(h):
    h.create_network()
    h.kv.down = True
    assert "etcd" in h.err(
        "/NetworkDriver.CreateEndpoint", {"NetworkID": "n1", "EndpointID": EP, "Interface": {"Address": "10.1.0.2/24"}}
    )
    h.kv.down = False
    assert not h.overlay.veths and not h.state.endpoints
    assert not any("/endpoints/" in k for k in h.kv.data)


def test_create_endpoint_rolls_back_when_veth_fails(h):
    h.create_network()
    h.overlay.fail_veth = True
    assert "netlink" in h.err(
        "/NetworkDriver.CreateEndpoint", {"NetworkID": "n1", "EndpointID": EP, "Interface": {"Address": "10.1.0.2/24"}}
    )
    assert not h.state.endpoints and not any("/endpoints/" in k for k in h.kv.data)


def test_address_owned_by_another_host_is_refused(h):
    other = Harness(kv=h.kv, host="host2")
    h.create_network(generic={"xmasq.network": "shared"})
    other.create_network("m1", generic={"xmasq.network": "shared"})
    h.create_endpoint()
    body = {"NetworkID": "m1", "EndpointID": "f" * 20, "Interface": {"Address": "10.1.0.2/24"}}
    assert "in use by endpoint e1e1e1e1e1e1 on host host1" in other.err("/NetworkDriver.CreateEndpoint", body)


def test_join_leave(h):
    h.create_network()
    h.create_endpoint()
    reply = h.ok(
        "/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": EP, "SandboxKey": "/var/run/x", "Options": None}
    )
    assert reply["InterfaceName"] == {"SrcName": "xmce1e1e1e1e1e1", "DstPrefix": "eth"}
    assert reply["Gateway"] == "10.1.0.1"
    assert h.ok("/NetworkDriver.Leave", {"NetworkID": "n1", "EndpointID": EP}) == {}


def test_join_unknown_endpoint_is_404(h):
    h.create_network()
    status, body = h.call("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": "x"})
    assert status == 404 and "endpoint x does not exist" in body["Err"]


def test_delete_endpoint(h):
    h.create_network()
    h.create_endpoint()
    h.ok("/NetworkDriver.DeleteEndpoint", {"NetworkID": "n1", "EndpointID": EP})
    assert not h.overlay.veths and not h.state.endpoints
    assert not any("/endpoints/" in k for k in h.kv.data)


def _portmap(*entries):
    return {"NetworkID": "n1", "EndpointID": EP, "Options": {PORTMAP: list(entries)}}


def test_published_ports(h):
    h.create_network()
    h.create_endpoint()
    h.ok(
        "/NetworkDriver.ProgramExternalConnectivity",
        _portmap(
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353},
        ),
    )
    ports = h.firewall.ports[EP]
    assert [(m.proto, m.container_ip, m.port, m.host_ip, m.host_port) for m in ports] == [
        ("tcp", "10.1.0.2", 80, "", 8080),
        ("udp", "10.1.0.2", 53, "127.0.0.1", 5353),
    ]
    info = h.ok("/NetworkDriver.EndpointOperInfo", {"NetworkID": "n1", "EndpointID": EP})
    assert info["Value"][PORTMAP][0]["HostPort"] == 8080
    h.ok("/NetworkDriver.RevokeExternalConnectivity", {"NetworkID": "n1", "EndpointID": EP})
    assert EP not in h.firewall.ports and h.state.endpoints[EP].ports == ()


def test_published_port_without_host_port_gets_one(h):
    h.create_network()
    h.create_endpoint()
    h.ok("/NetworkDriver.ProgramExternalConnectivity", _portmap({"Proto": 6, "Port": 80, "HostPort": 0}))
    assert 0 < h.firewall.ports[EP][0].host_port < 65536


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"Proto": 1, "Port": 80, "HostPort": 80}, "unsupported protocol number 1"),
        ({"Proto": 6, "HostPort": 80}, "bad com.docker.network.portmap entry"),
        ({"Proto": 6, "Port": 70000, "HostPort": 80}, "port out of range"),
        ({"Proto": 6, "Port": 80, "HostPort": 80, "HostIP": "bogus"}, "bad com.docker.network.portmap entry"),
        (
            {"Proto": 6, "Port": 80, "HostPort": 80, "HostIP": "::1"},
            "an IPv6 host address (HostIP ::1) is not supported",
        ),
        ("80:80", "entries must be objects"),
    ],
)
def test_bad_port_mappings_change_nothing(h, entry, message):
    h.create_network()
    h.create_endpoint()
    assert message in h.err("/NetworkDriver.ProgramExternalConnectivity", _portmap(entry))
    assert EP not in h.firewall.ports and h.state.endpoints[EP].ports == ()


def test_port_rules_roll_back_on_failure(h):
    h.create_network()
    h.create_endpoint()
    h.firewall.fail_ports = True
    assert "iptables" in h.err(
        "/NetworkDriver.ProgramExternalConnectivity", _portmap({"Proto": 6, "Port": 80, "HostPort": 8080})
    )
    assert h.state.endpoints[EP].ports == ()


def test_discovery_is_recorded(h):
    node = {"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.9", "self": False}}
    assert h.ok("/NetworkDriver.DiscoverNew", node) == {}
    assert h.ok("/Xmasq.Status")["discovered"] == [{"type": 1, "data": node["DiscoveryData"]}]
    assert h.ok("/NetworkDriver.DiscoverDelete", node) == {}
    assert h.ok("/Xmasq.Status")["discovered"] == []
    assert h.ok("/NetworkDriver.DiscoverDelete", {"DiscoveryType": 1, "DiscoveryData": None}) == {}


def test_allocate_network_echoes_options_with_vni(h):
    reply = h.ok(
        "/NetworkDriver.AllocateNetwork",
        {"NetworkID": "s" * 25, "Options": {"xmasq.fastpath": "off"}, "IPv4Data": [{"Pool": "10.5.0.0/24"}]},
    )
    assert reply == {"Options": {"xmasq.fastpath": "off", "xmasq.vni": "256"}}
    again = h.ok(
        "/NetworkDriver.AllocateNetwork",
        {"NetworkID": "s" * 25, "Options": reply["Options"], "IPv4Data": [{"Pool": "10.5.0.0/24"}]},
    )
    assert again == reply


def test_a_swarm_network_asking_for_encryption_is_allocated_with_it(h):
    body = {"NetworkID": "s" * 25, "Options": {"encrypted": ""}, "IPv4Data": [{"Pool": "10.5.0.0/24"}]}
    reply = h.ok("/NetworkDriver.AllocateNetwork", body)
    assert reply["Options"]["encrypted"] == ""  # what every node's CreateNetwork then gets


def test_restart_restores_networks_and_ports(tmp_path):
    path = str(tmp_path / "state.json")
    first = Harness(path)
    first.create_network()
    first.create_endpoint()
    first.ok("/NetworkDriver.ProgramExternalConnectivity", _portmap({"Proto": 6, "Port": 80, "HostPort": 8080}))
    second = Harness(path, kv=first.kv)
    second.network.restore()
    assert second.overlay.networks == first.overlay.networks
    assert second.firewall.networks == first.firewall.networks
    assert second.firewall.ports == first.firewall.ports
    assert second.overlay.steered == [(veth_names(EP)[0], None)]  # also a veth an older driver made
    assert second.ok("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": EP})["Gateway"] == "10.1.0.1"


def test_allocate_is_idempotent_with_its_own_output_and_free_releases_the_vni(h):
    body = {"NetworkID": "s" * 25, "Options": {"xmasq.fastpath": "off"}, "IPv4Data": [{"Pool": "10.5.0.0/24"}]}
    options = h.ok("/NetworkDriver.AllocateNetwork", body)["Options"]
    again = h.ok("/NetworkDriver.AllocateNetwork", dict(body, Options=options))["Options"]
    assert again == options and options["xmasq.fastpath"] == "off"
    assert h.kv.data[VNIS.key(options["xmasq.vni"])] == "s" * 25
    h.create_network("s" * 25, "10.5.0.0/24", "10.5.0.1/24", generic=options)  # a node creates it lazily
    h.ok("/NetworkDriver.FreeNetwork", {"NetworkID": "s" * 25})
    assert VNIS.key(options["xmasq.vni"]) in h.kv.data  # still used by a node
    h.ok("/NetworkDriver.DeleteNetwork", {"NetworkID": "s" * 25})
    assert not [k for k in h.kv.data if "s" * 25 in k or k.startswith(VNIS.prefix())]
    h.ok("/NetworkDriver.AllocateNetwork", body)
    h.ok("/NetworkDriver.FreeNetwork", {"NetworkID": "s" * 25})  # never deployed: freed at once
    assert not [k for k in h.kv.data if k.startswith(VNIS.prefix())]
