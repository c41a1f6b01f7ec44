"""IPv6 (#19), through a real dockerd: dual-stack xmasq networks on one host (across hosts:
test_multi_host.py), and the xmasq IPAM's IPv6 pools."""

from __future__ import annotations

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from tests.e2e.cluster import until
from tests.e2e.conftest import published_page
from xmasq_driver.control.kv import EtcdKV
from xmasq_driver.control.layout import ADDRESSES, ENDPOINTS
from xmasq_driver.dataplane.firewall import Firewall, net_owner
from xmasq_driver.ops import client as plugin

SERVE = "udpecho serve 5001 & nc -l -p 5000 > /tmp/got; sleep 3600"


def test_a_dual_stack_network_carries_icmp_tcp_and_udp_over_ipv6(env):
    net = env.network("v6", "10.244.18.0/24", subnet6="fd00:244:18::/64")
    a, b = env.run("v6a", net.name), env.run("v6b", net.name, SERVE)
    ip6_b = env.ip6(b, net)
    b.reload()
    settings = b.attrs["NetworkSettings"]["Networks"][net.name]
    assert ip6_b.startswith("fd00:244:18::") and settings["IPv6Gateway"] == "fd00:244:18::1"
    assert "default via fd00:244:18::1" in env.sh(a, "ip -6 route")[1]
    env.sh(a, f"ping -6 -c 2 -W 2 {ip6_b}")
    env.sh(a, "ping -6 -c 1 -W 2 fd00:244:18::1")  # the gateway, on the network's bridge
    env.sh(a, f"ping -c 1 -W 2 {env.ip(b, net)}")  # and IPv4 beside it
    env.sh(a, f"echo over-tcp6 | nc -w 3 {ip6_b} 5000")
    until(lambda: env.sh(b, "cat /tmp/got", check=False)[1] == "over-tcp6\n", 5)
    assert "replies=20/20" in env.sh(a, f"udpecho send {ip6_b} 5001 20")[1]
    # What `xmasq status` and `xmasq cache` show
    status = plugin.call(env.cfg.socket, "/Xmasq.Status")[1]
    assert {n.get("subnet6") for n in status["networks"] if n["subnet"] == "10.244.18.0/24"} == {"fd00:244:18::/64"}
    local = plugin.call(env.cfg.socket, "/Xmasq.Cache")[1]["local"]
    ifindex = {e["ip"]: e["ifindex"] for e in local}
    assert ifindex[ip6_b] == ifindex[env.ip(b, net)]  # both addresses lead to b's veth


def test_ipv6_rules_equal_the_ipv4_ones_and_go_with_the_network(env):
    """Forward, isolation and masquerade in ip6tables as in iptables; not the IPv4 underlay's VXLAN
    filter, nor the masquerade of ports published to 127.0.0.1 (IPv4 only)."""
    env.network("v6rules", "10.244.19.0/24", subnet6="fd00:244:19::/64")
    status = plugin.call(env.cfg.socket, "/Xmasq.Status")[1]
    owner = net_owner(next(n["vni"] for n in status["networks"] if n["subnet"] == "10.244.19.0/24"))
    rules: dict[int, set[tuple[str, str]]] = {4: set(), 6: set()}
    for v, table, rule in Firewall().owned_rules(owner):
        if "XMASQ-VXLAN" not in rule:
            rules[v].add((table, rule.replace("10.244.19.0/24", "SUBNET").replace("fd00:244:19::/64", "SUBNET")))
    assert len(rules[6]) == 5 and rules[6] == {r for r in rules[4] if "127.0.0.0/8" not in r[1]}, rules
    # The env fixture checks that none is left once the network is gone (IPv6 rules included).


def test_two_networks_with_the_same_ipv6_subnet_are_isolated(env, dk):
    one = env.network("v6one", "10.244.20.0/24", subnet6="fd00:244:20::/64", space="v6one")
    two = env.network("v6two", "10.244.20.0/24", subnet6="fd00:244:20::/64", space="v6two")
    a, b = env.run("v6iso-a", one.name), env.run("v6iso-b", two.name, SERVE)
    b2 = env.run("v6iso-b2", two.name, SERVE)
    assert env.ip6(a, one) == env.ip6(b, two)  # the same address, on two networks
    env.sh(b, f"ping -6 -c 1 -W 2 {env.ip6(b2, two)}")
    assert env.sh(a, f"ping -6 -c 1 -W 1 {env.ip6(b2, two)}", check=False)[0] != 0
    assert "replies=0/3" in env.sh(a, f"udpecho send {env.ip6(b2, two)} 5001 3", check=False)[1]


def test_an_internal_dual_stack_network_has_no_ipv6_way_out(env):
    internal = env.network("v6internal", "10.244.21.0/24", subnet6="fd00:244:21::/64", internal=True)
    a, b = env.run("v6in-a", internal.name), env.run("v6in-b", internal.name)
    assert "default" not in env.sh(a, "ip -6 route")[1]
    env.sh(a, f"ping -6 -c 1 -W 2 {env.ip6(b, internal)}")  # members still reach each other


def test_the_xmasq_ipam_gives_a_dual_stack_network_unique_ipv6_addresses(env, dk, cfg):
    pools = [IPAMPool(subnet="10.244.16.0/24"), IPAMPool(subnet="fd00:244:16::/64")]
    net = dk.networks.create(
        "xmt-v6ipam", driver="bridge", enable_ipv6=True, ipam=IPAMConfig(driver="xmasq", pool_configs=pools)
    )
    env.networks.append(net)
    a, b = env.run("v6ipam-a", net.name), env.run("v6ipam-b", net.name)
    settings = [env.ip6(c, net) for c in (a, b)]
    assert settings == ["fd00:244:16::2", "fd00:244:16::3"]
    claims = EtcdKV(cfg).get_prefix(ADDRESSES.prefix("fd00:244:16::_64"))
    assert {ADDRESSES.parts_of(k)[1]: v for k, v in claims.items()} == {
        "fd00:244:16::1": "gateway",
        "fd00:244:16::2": cfg.host,
        "fd00:244:16::3": cfg.host,
    }
    env.sh(a, "ping -c 1 -W 2 fd00:244:16::3")


def test_an_xmasq_dual_stack_network_takes_its_ipv6_addresses_from_the_xmasq_ipam(env, cfg):
    net = env.network("v6xipam", "10.244.22.0/24", subnet6="fd00:244:22::/64", space="v6xipam")
    a, b = env.run("v6x-a", net.name), env.run("v6x-b", net.name)
    assert [env.ip6(c, net) for c in (a, b)] == ["fd00:244:22::2", "fd00:244:22::3"]
    records = EtcdKV(cfg).get_prefix(ENDPOINTS.prefix())
    assert {ENDPOINTS.parts_of(k)[1] for k in records} >= {"fd00:244:22::2", "fd00:244:22::3"}
    env.sh(a, "ping -6 -c 1 -W 2 fd00:244:22::3")


def test_a_published_port_of_a_dual_stack_container_answers_on_ipv4_and_ipv6_host_ips_are_refused(env, dk):
    net = env.network("v6ports", "10.244.23.0/24", subnet6="fd00:244:23::/64")
    env.run("v6web", net.name, "httpd -f -p 8080 -h /www", ports={"8080/tcp": 18083})
    assert published_page("http://127.0.0.1:18083/index.html") == "hello from xmasq\n"
    with pytest.raises(docker.errors.APIError, match=r"published on an IPv6 host address \(HostIP ::1\)"):
        env.run("v6web6", net.name, "httpd -f -p 8080 -h /www", ports={"8080/tcp": ("::1", 18084)})
