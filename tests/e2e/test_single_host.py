"""A real dockerd using the xmasq driver on one host: what a user would check."""

from __future__ import annotations

import json
import os
import stat
import statistics
import subprocess
import threading
import time

import docker
import pytest

from tests.conftest import report
from tests.e2e.cluster import until
from tests.e2e.conftest import XMASQ, published_page
from xmasq_driver.dataplane.overlay import Overlay
from xmasq_driver.ops import client as plugin


def _underlay_mtu() -> int:
    return Overlay().underlay().mtu


def test_socket_is_root_only_and_serves_the_plugin_api(env, cfg):
    st = os.stat(cfg.socket)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert plugin.call(cfg.socket, "/Plugin.Activate")[1] == {"Implements": ["NetworkDriver", "IpamDriver"]}
    status, body = plugin.call(cfg.socket, "/NetworkDriver.CreateNetwork", raw=b"{oops")
    assert status == 400 and "not valid JSON" in body["Err"]
    status, body = plugin.call(cfg.socket, "/NetworkDriver.Nope", {})
    assert status == 404 and "Err" in body


def test_two_containers_talk_icmp_tcp_udp(env):
    net = env.network("basic", "10.210.1.0/24")
    a = env.run("a", net.name)
    b = env.run("b", net.name, "udpecho serve 5001 & nc -l -p 5000 > /tmp/got; sleep 3600")
    ip_b = env.ip(b, net)
    env.sh(a, f"ping -c 2 -W 2 {ip_b}")
    env.sh(a, "ping -c 1 -W 2 10.210.1.1")  # the gateway
    env.sh(a, "ping -c 1 -W 2 xmt-b")  # Docker's DNS works on the network
    env.sh(a, f"echo over-tcp | nc -w 3 {ip_b} 5000")
    # Polled: on a loaded machine the file was still empty 0.3 s after the client had exited (CI).
    until(lambda: env.sh(b, "cat /tmp/got", check=False)[1] == "over-tcp\n", 5)
    assert "replies=20/20" in env.sh(a, f"udpecho send {ip_b} 5001 20")[1]


def test_mtu_default_and_option(env):
    default = env.network("mtu1", "10.210.2.0/24")
    small = env.network("mtu2", "10.210.3.0/24", {"com.docker.network.driver.mtu": "1300"})
    a = env.run("a", default.name)
    b = env.run("b", small.name)
    assert env.sh(a, "cat /sys/class/net/eth0/mtu")[1].strip() == str(_underlay_mtu() - 50)
    assert env.sh(b, "cat /sys/class/net/eth0/mtu")[1].strip() == "1300"
    # A full-size packet with DF crosses the network unfragmented.
    c = env.run("c", small.name)
    env.sh(b, f"ping -c 1 -W 2 -s {1300 - 28} {env.ip(c, small)}")


def test_inspect_shows_driver_and_options(env, dk):
    net = env.network("inspect", "10.210.4.0/24", {"xmasq.vni": "7001", "xmasq.fastpath": "off"})
    attrs = dk.networks.get(net.id).attrs
    assert attrs["Driver"] == "xmasq"
    assert attrs["Options"] == {"xmasq.vni": "7001", "xmasq.fastpath": "off"}
    assert attrs["IPAM"]["Config"][0]["Subnet"] == "10.210.4.0/24"
    assert "xmvx7001" in subprocess.run(["ip", "-d", "link", "show", "xmvx7001"], capture_output=True, text=True).stdout


def test_bad_option_is_refused_with_a_clear_error(env, dk):
    with pytest.raises(docker.errors.APIError, match="unknown option xmasq.vnii"):
        env.network("bad", "10.210.5.0/24", {"xmasq.vnii": "5"})


def test_an_encrypted_network_on_one_host(env, cfg):
    """`--opt encrypted` as Docker's overlay takes it: the host's WireGuard device comes up with the
    network (and goes with it: the env fixture checks links, rules and state), containers get the
    underlay's MTU less VXLAN and WireGuard, and same-host traffic (which never leaves) flows."""
    net = env.network("enc", "10.242.0.0/24", {"encrypted": ""})
    a, b = env.run("enc-a", net.name), env.run("enc-b", net.name)
    env.sh(a, f"ping -c 2 -W 2 {env.ip(b, net)}")
    assert env.sh(a, "cat /sys/class/net/eth0/mtu")[1].strip() == str(_underlay_mtu() - 110)
    encryption = plugin.call(cfg.socket, "/Xmasq.Status")[1]["encryption"]
    assert encryption["up"] and encryption["networks"] == 1 and encryption["kind"] in ("kernel", "userspace")
    assert encryption["public_key"] and "private" not in json.dumps(encryption)


def test_connect_and_disconnect(env):
    one = env.network("one", "10.210.6.0/24")
    two = env.network("two", "10.210.7.0/24")
    a = env.run("a", one.name)
    b = env.run("b", two.name)
    assert env.sh(a, f"ping -c 1 -W 1 {env.ip(b, two)}", check=False)[0] != 0  # networks are isolated
    two.connect(a)
    env.sh(a, "ip link show eth1")
    env.sh(a, f"ping -c 1 -W 2 {env.ip(b, two)}")
    two.disconnect(a)
    assert env.sh(a, "ip link show eth1", check=False)[0] != 0
    assert env.sh(a, f"ping -c 1 -W 1 {env.ip(b, two)}", check=False)[0] != 0


def test_published_port_from_loopback_and_from_another_namespace(env):
    net = env.network("ports", "10.210.8.0/24")
    env.run("web", net.name, "httpd -f -p 8080 -h /www", ports={"8080/tcp": 18080})
    assert published_page("http://127.0.0.1:18080/index.html") == "hello from xmasq\n"
    env.host_ns("cli", "198.51.100.1/30")  # the host is .1 there, the namespace .2
    out = env.in_ns("cli", "curl", "-s", "-m", "3", "http://198.51.100.1:18080/index.html")
    assert out.stdout == "hello from xmasq\n", out.stderr


def test_internal_network_has_no_way_out(env):
    outside = env.host_ns("out", "198.51.100.5/30")
    internal = env.network("internal", "10.210.9.0/24", internal=True)
    normal = env.network("normal", "10.210.10.0/24")
    a = env.run("a", internal.name)
    b = env.run("b", internal.name)
    c = env.run("c", normal.name)
    assert "default" not in env.sh(a, "ip route")[1]
    env.sh(a, f"ping -c 1 -W 2 {env.ip(b, internal)}")  # members still reach each other
    env.sh(c, f"ping -c 1 -W 2 {outside}")  # a normal network reaches the namespace host...
    assert env.sh(a, f"ping -c 1 -W 2 {outside}", check=False)[0] != 0  # ...an internal one does not


def test_driver_restart_keeps_traffic_and_serves_new_containers(env):
    net = env.network("restart", "10.210.11.0/24")
    a = env.run("a", net.name)
    b = env.run("b", net.name)
    ip_b = env.ip(b, net)
    result: dict[str, str] = {}

    def pinger() -> None:
        result["out"] = env.sh(a, f"ping -c 40 -i 0.1 -W 1 {ip_b}", check=False)[1]

    t = threading.Thread(target=pinger)
    t.start()
    time.sleep(0.5)
    subprocess.run([XMASQ, "daemon", "stop", "--kill"], check=True)
    subprocess.run([XMASQ, "daemon", "start"], check=True)
    t.join()
    assert "40 packets transmitted, 40 packets received" in result["out"], result["out"]
    c = env.run("c", net.name)
    env.sh(c, f"ping -c 1 -W 2 {ip_b}")


def test_removal_leaves_nothing_behind(env, dk):
    net = env.network("rm", "10.210.12.0/24", {"xmasq.vni": "7002"})
    a = env.run("a", net.name, ports={"8080/tcp": 18081})
    env.run("b", net.name)
    assert subprocess.run(["ip", "link", "show", "xmvx7002"], capture_output=True).returncode == 0
    a.remove(force=True)
    net_containers = [c for c in env.containers if c.id != a.id]
    for c in net_containers:
        c.remove(force=True)
    env.containers.clear()
    net.remove()
    env.networks.clear()
    # the env fixture now checks links, rules, etcd keys and state against the snapshot


def test_time_from_docker_run_to_ping(env):
    net = env.network("timing", "10.210.13.0/24")
    target = env.run("target", net.name)
    ip = env.ip(target, net)
    times = []
    for i in range(10):
        start = time.monotonic()
        c = env.run(
            f"t{i}",
            net.name,
            f"n=0; until ping -c 1 -W 1 {ip} >/dev/null; do n=$((n+1)); "
            "[ $n -gt 100 ] && exit 1; done; echo ready; sleep 3600",
        )
        for chunk in c.logs(stream=True, follow=True):
            if b"ready" in chunk:
                break
        else:
            pytest.fail(f"container {i} never reached {ip}")
        times.append(time.monotonic() - start)
    median = statistics.median(times)
    report(
        f"docker run -> first successful ping: median {median * 1000:.0f} ms over 10 "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"
    )
    assert median < 10, times
