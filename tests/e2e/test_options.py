"""Every option Docker can pass to the driver is honoured or refused, through a real dockerd
(README, "Network options": the table this file checks row by row)."""

from __future__ import annotations

import ipaddress
import subprocess

import docker
import pytest

from tests.e2e.conftest import host_state


def _addresses(env, net, count: int, first: int = 0) -> list[ipaddress.IPv4Address]:
    """The addresses of `count` new containers on `net`."""
    return [
        ipaddress.IPv4Address(env.ip(env.run(f"{net.name[4:]}-{i}", net.name), net))
        for i in range(first, first + count)
    ]


def test_gateway_is_the_containers_default_route(env):
    net = env.network("gw", "10.244.1.0/24", pool={"gateway": "10.244.1.254"})
    a = env.run("a", net.name)
    assert "default via 10.244.1.254" in env.sh(a, "ip route")[1]
    env.sh(a, "ping -c 1 -W 2 10.244.1.254")


@pytest.mark.parametrize("space", ["", "opts-range"], ids=["docker-ipam", "xmasq-ipam"])
def test_ip_range_limits_the_addresses_given(env, space):
    net = env.network(f"range{bool(space):d}", "10.244.2.0/24", space=space, pool={"iprange": "10.244.2.64/30"})
    got = []
    with pytest.raises(docker.errors.APIError, match="no .*address"):
        for i in range(5):
            got += _addresses(env, net, 1, first=i)
    # Docker's IPAM gives .65-.67 of a /30 range, xmasq's its two host addresses: never one outside
    assert 2 <= len(got) <= 4 and all(ip in ipaddress.IPv4Network("10.244.2.64/30") for ip in got), got


@pytest.mark.parametrize("space", ["", "opts-aux"], ids=["docker-ipam", "xmasq-ipam"])
def test_aux_addresses_are_never_given_to_a_container(env, space):
    net = env.network(
        f"aux{bool(space):d}", "10.244.3.0/29", space=space, pool={"aux_addresses": {"router": "10.244.3.2"}}
    )
    got = _addresses(env, net, 4)
    assert ipaddress.IPv4Address("10.244.3.2") not in got and len(set(got)) == 4, got


def test_static_ip_and_mac_address(env):
    net = env.network("static", "10.244.4.0/24")
    endpoint = env.dk.api.create_endpoint_config(ipv4_address="10.244.4.99")
    c = env.run("static", net.name, mac_address="02:42:0a:f4:04:63", networking_config={net.name: endpoint})
    assert env.ip(c, net) == "10.244.4.99"
    assert env.sh(c, "cat /sys/class/net/eth0/address")[1].strip() == "02:42:0a:f4:04:63"
    b = env.run("peer", net.name)
    env.sh(b, "ping -c 1 -W 2 10.244.4.99")


def test_per_network_mac_and_two_networks_at_create(env, dk):
    """What API 1.44+ engines (Docker 25 and later) send that 20.10 could not: a MAC per network
    (Interface.MacAddress, and com.docker.network.endpoint.macaddress in the endpoint options) and a
    container created on two networks at once (two CreateEndpoints before the first Join)."""
    api = dk.api.api_version
    if not docker.utils.version_gte(api, "1.44"):
        pytest.skip(f"Docker {dk.version()['Version']} (API {api}) has neither: tests.release runs this on 26")
    a, b = env.network("mac-a", "10.244.14.0/24"), env.network("mac-b", "10.244.15.0/24")
    ep = dk.api.create_endpoint_config
    c = env.run(
        "mac",
        a.name,
        networking_config={a.name: ep(mac_address="02:42:0a:f4:0e:63"), b.name: ep(mac_address="02:42:0a:f4:0f:63")},
    )
    links = env.sh(c, "ip -o link")[1]
    assert "02:42:0a:f4:0e:63" in links and "02:42:0a:f4:0f:63" in links, links
    peer_a, peer_b = env.run("mac-pa", a.name), env.run("mac-pb", b.name)
    env.sh(peer_a, f"ping -c 1 -W 2 {env.ip(c, a)}")
    env.sh(peer_b, f"ping -c 1 -W 2 {env.ip(c, b)}")


def test_network_alias_and_labels_are_dockers_and_work(env, dk):
    net = env.network("alias", "10.244.5.0/24", labels={"team": "net"})
    assert dk.networks.get(net.id).attrs["Labels"] == {"team": "net"}
    env.run("aliased", net.name, networking_config={net.name: env.dk.api.create_endpoint_config(aliases=["web"])})
    a = env.run("a", net.name)
    env.sh(a, "ping -c 1 -W 2 web")


def test_container_interface_prefix(env):
    net = env.network("prefix", "10.244.6.0/24", {"com.docker.network.container_iface_prefix": "xm"})
    a = env.run("a", net.name)
    assert "xm0" in {line.split(":")[1].strip().split("@")[0] for line in env.sh(a, "ip -o link")[1].splitlines()}
    env.sh(a, "ping -c 1 -W 2 10.244.6.1")


def test_config_from_a_config_only_network(env, dk):
    def cli(*args: str) -> None:  # the SDK has no --config-only
        subprocess.run(["docker", "network", "create", *args], check=True, capture_output=True)

    cli(
        "--config-only",
        "--subnet",
        "10.244.7.0/24",
        "--ip-range",
        "10.244.7.128/25",
        "-o",
        "xmasq.fastpath=off",
        "xmt-cfg",
    )
    env.networks.append(dk.networks.get("xmt-cfg"))
    cli("-d", "xmasq", "--config-from", "xmt-cfg", "xmt-fromcfg")
    net = dk.networks.get("xmt-fromcfg")
    env.networks.insert(0, net)  # removed before its config network
    assert _addresses(env, net, 1)[0] in ipaddress.IPv4Network("10.244.7.128/25")
    ours = [n for n in host_state(env.cfg)["state"].networks.values() if n.subnets == ["10.244.7.0/24"]]
    assert [n.fastpath for n in ours] == [False]


REFUSED = [
    ("encrypted-false", {"options": {"encrypted": "false"}}, "turns encryption on for any value"),
    (
        "bridge-option",
        {"options": {"com.docker.network.bridge.name": "br9"}},
        "unknown option com.docker.network.bridge.name",
    ),
    ("unknown-option", {"options": {"foo": "bar"}}, "unknown option foo"),
    ("bad-prefix", {"options": {"com.docker.network.container_iface_prefix": "x/y"}}, "container_iface_prefix"),
    ("two-ipv6-subnets", {"enable_ipv6": True, "extra": ["fd00:244::/64", "fd00:245::/64"]}, "exactly one IPv6"),
    ("two-subnets", {"extra": ["10.244.9.0/24"]}, "exactly one IPv4 subnet"),
    ("ipam-option", {"ipam_options": {"foo": "bar"}}, "unknown IPAM option foo"),
]


@pytest.mark.parametrize(("what", "args", "error"), REFUSED, ids=[r[0] for r in REFUSED])
def test_options_that_cannot_be_honoured_are_refused(env, dk, what, args, error):
    pools = [docker.types.IPAMPool(subnet="10.244.8.0/24")]
    pools += [docker.types.IPAMPool(subnet=extra) for extra in args.get("extra", [])]
    ipam_options = args.get("ipam_options")
    ipam = docker.types.IPAMConfig(
        driver="xmasq" if ipam_options else "default", pool_configs=pools, options=ipam_options
    )
    links = host_state(env.cfg)["links"]
    with pytest.raises(docker.errors.APIError, match=error):
        env.networks.append(
            dk.networks.create(
                f"xmt-{what}",
                driver="xmasq",
                ipam=ipam,
                options=args.get("options"),
                enable_ipv6=args.get("enable_ipv6", False),
            )
        )
    assert not dk.networks.list(names=[f"xmt-{what}"]) and host_state(env.cfg)["links"] == links


def test_an_endpoint_option_is_refused_and_leaves_nothing(env):
    net = env.network("epopt", "10.244.10.0/24")
    a = env.run("a", None)
    links = host_state(env.cfg)["links"]
    with pytest.raises(docker.errors.APIError, match="endpoint option foo is not supported"):
        net.connect(a, driver_opt={"foo": "bar"})
    assert host_state(env.cfg)["links"] == links
    net.connect(a)  # without it, fine
    env.sh(a, "ping -c 1 -W 2 10.244.10.1")
