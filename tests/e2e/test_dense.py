"""A dense host (issue 35): many containers on one network of one host, and many networks on one
host, each with what it costs (docker run p50/p99, driver memory and file descriptors, eBPF
programs and map entries) and a ping from another host to the last one made.

The suite runs a small host (XMASQ_TEST_DENSE=60 containers, 15 networks); `make dense` the
issue's 1,000 and 250 (CONTAINERS=, NETWORKS=). The limits that stop growth are in the README
("Limits")."""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import docker
import pytest

from lab.results import percentile
from tests.conftest import report
from tests.e2e.cluster import Cluster, Usage, driver_usage, links
from xmasq_driver.dataplane.overlay import BRIDGE_PORTS, BRIDGE_PREFIX, HOST_VETH_PREFIX, VXLAN_PREFIX, bridge_name

CONTAINERS = int(os.environ.get("XMASQ_TEST_DENSE", "60"))
NETWORKS = int(os.environ.get("XMASQ_TEST_DENSE_NETWORKS", "15"))
WORKERS = 4  # docker runs at once (what `docker compose up` does with a service's replicas)


def _timed(fn: Any, jobs: list[Any]) -> tuple[list[Any], list[float]]:
    """fn(job) for each job, WORKERS at a time: the results in order, and each call's seconds."""

    def one(job: Any) -> tuple[Any, float]:
        start = time.monotonic()
        return fn(job), time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(one, jobs))
    return [r for r, _ in done], [s for _, s in done]


def _took(seconds: list[float]) -> str:
    return f"p50 {statistics.median(seconds):.2f} s, p99 {percentile(seconds, 0.99):.2f} s"


def _grew(before: Usage, after: Usage) -> str:
    return f"driver RSS {before.rss_mib:.0f} -> {after.rss_mib:.0f} MiB, fds {before.fds} -> {after.fds}"


def _tc(tb: Any, host: str) -> tuple[int, int]:
    """Container veths with an eBPF program attached on the host, and the distinct programs."""
    out = subprocess.run(
        ["ip", "netns", "exec", tb.netns(host), "bpftool", "-j", "net", "show"], capture_output=True, text=True
    ).stdout
    tc = [a for section in json.loads(out or "[]") for a in section.get("tc", [])]
    ours = [a for a in tc if a.get("devname", "").startswith(HOST_VETH_PREFIX)]
    return len({a["devname"] for a in ours}), len({a["id"] for a in ours})


def _ping(cl: Cluster, client: Any, ip: str) -> float:
    """Milliseconds of the average round trip of 5 pings after a first (ARP, the flow learned),
    asserting all were answered."""
    cl.sh(client, f"ping -c 1 -W 2 {ip}")
    out = cl.sh(client, f"ping -c 5 -i 0.2 -W 2 {ip}")[1]
    return float(out.rsplit("=", 1)[1].split("/")[1])


def _remove(cl: Cluster, containers: list[Any]) -> None:
    _timed(cl.remove, containers)


def test_a_thousand_containers_on_one_network_of_one_host(cl, tb):
    net = cl.network("dense", "10.100.0.0/22")  # 1,021 addresses
    u0 = driver_usage(tb, "h1")
    made, took = _timed(lambda i: cl.run("h1", f"dense-{i}", net), list(range(CONTAINERS)))
    u1 = driver_usage(tb, "h1")
    veths, programs = _tc(tb, "h1")
    local = len(cl.cache("h1")["local"])
    assert veths == CONTAINERS and local == CONTAINERS, (veths, local)
    client = cl.run("h2", "dense-client", net)
    first, last = cl.ip(made[0], net), cl.ip(made[-1], net)
    rtt_first, rtt_last = _ping(cl, client, first), _ping(cl, client, last)
    report(
        f"dense host: {CONTAINERS} containers on one network of h1 ({WORKERS} docker runs at once): docker run"
        f" {_took(took)}; {_grew(u0, u1)} ({(u1.rss_mib - u0.rss_mib) * 1024 / CONTAINERS:.0f} KiB of RSS per"
        f" container); eBPF: {local} local endpoint entries, {veths} veths carrying {programs} distinct tc"
        f" programs; ping from h2 to the first"
        f" {rtt_first:.2f} ms, to the last {rtt_last:.2f} ms"
    )
    _remove(cl, made)


def test_many_networks_on_one_host(cl, tb):
    u0 = driver_usage(tb, "h1")
    names, took = _timed(
        lambda i: cl.network(f"dense-n{i}", f"10.101.{i}.0/24", hosts=["h1", "h2"]), list(range(NETWORKS))
    )
    made, _ = _timed(lambda i: cl.run("h1", f"dense-n{i}-a", names[i]), list(range(NETWORKS)))
    u1 = driver_usage(tb, "h1")
    devices = [n for n in links(tb, "h1") if n.startswith((BRIDGE_PREFIX, VXLAN_PREFIX))]
    assert len(devices) == 2 * NETWORKS, devices
    client = cl.run("h2", "dense-n-client", names[-1])
    rtt = _ping(cl, client, cl.ip(made[-1], names[-1]))
    report(
        f"dense host: {NETWORKS} networks on h1 and h2, a container each on h1: network create (both hosts)"
        f" {_took(took)}; {_grew(u0, u1)}; {len(devices)} bridges and vxlan devices; ping from h2 to the last"
        f" network's container {rtt:.2f} ms"
    )
    _remove(cl, made)


def test_a_host_whose_endpoint_table_is_full_refuses_the_next_naming_the_setting(cl, tb):
    """The eBPF maps hold XMASQ_LOCAL_MAX endpoints of a host: the one after is refused with an error
    that names the setting, and leaves nothing (h1's driver restarted with a table of 3)."""
    tb.stop_driver("h1")
    tb.start_driver("h1", env={"XMASQ_LOCAL_MAX": "3"})
    try:
        net = cl.network("full", "10.103.0.0/24")
        made = [cl.run("h1", f"full-{i}", net) for i in range(3)]
        with pytest.raises(docker.errors.APIError, match="raise XMASQ_LOCAL_MAX") as refused:
            cl.run("h1", "full-3", net)
        cl.containers.append(cl.dk["h1"].containers.get("full-3"))  # created, not started
        assert len(cl.cache("h1")["local"]) == 3
        _remove(cl, made)
    finally:
        tb.stop_driver("h1")
        tb.start_driver("h1")
    report(f"a host's endpoint table full (XMASQ_LOCAL_MAX=3): the 4th refused ({str(refused.value)[-90:]})")


def test_a_full_tunnel_table_leaves_the_next_networks_flows_on_the_slow_path(cl, tb):
    """XMASQ_TUNNEL_MAX (host, network) pairs get learned outer headers; the flows of the next pair
    are carried by the slow path, and answered (h1's driver restarted with a table of 1)."""
    tb.stop_driver("h1")
    tb.start_driver("h1", env={"XMASQ_TUNNEL_MAX": "1"})
    try:
        made, fast = [], []
        for i in range(2):  # two networks across h1 and h2: two (h2, network) pairs for h1
            net = cl.network(f"tunnels-{i}", f"10.104.{i}.0/24")
            a, b = cl.run("h1", f"tunnels-{i}-a", net), cl.run("h2", f"tunnels-{i}-b", net)
            made += [a, b]
            before = cl.stats("h1")
            out = cl.sh(a, f"ping -q -c 20 -i 0.05 -W 1 {cl.ip(b, net)}")[1]
            assert "20 packets transmitted, 20 packets received" in out, out
            after = cl.stats("h1")
            fast.append({k: after[k] - before[k] for k in ("encap_pkts", "miss_no_tunnel")})
        assert fast[0]["encap_pkts"] > 0 and fast[1]["encap_pkts"] == 0 and fast[1]["miss_no_tunnel"] > 0, fast
        assert len(cl.cache("h1")["tunnels"]) == 1
        _remove(cl, made)
    finally:
        tb.stop_driver("h1")
        tb.start_driver("h1")
    report(
        f"a host's tunnel table full (XMASQ_TUNNEL_MAX=1): the first network's flow fast ({fast[0]['encap_pkts']}"
        f" packets encapsulated), the second's on the slow path ({fast[1]['miss_no_tunnel']} missed), 20/20 answered"
    )


def test_a_full_bridge_refuses_the_next_endpoint_naming_the_limit():
    """A network's containers on one host share a Linux bridge, which has at most BRIDGE_PORTS ports
    (a kernel constant): the next endpoint is refused with an error that says so, and its veth
    is gone. The driver's overlay in a namespace of its own, with a bridge and no vxlan device."""
    ns = "xmtest-fullbr"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", bridge_name(999), "type", "bridge"], check=True)
        script = f"""
from xmasq_driver.dataplane.overlay import Overlay
from xmasq_driver.errors import BackendError
o, made = Overlay("lo"), 0
try:
    for i in range({BRIDGE_PORTS} + 1):
        o.create_veth(f"{{i:012x}}" + "0" * 52, 999, "02:00:00:00:%02x:%02x" % (i >> 8, i & 255), 1450)
        made += 1
except BackendError as e:
    print(made, e)
"""
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        made, error = out.strip().split(" ", 1)
        veths = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "type", "veth"], capture_output=True, text=True)
        assert int(made) == BRIDGE_PORTS and "at most 1023 ports" in error, out
        assert len(veths.stdout.splitlines()) == 2 * BRIDGE_PORTS  # the refused one's pair is gone
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    report(f"a network's bridge on one host full: endpoint {BRIDGE_PORTS + 1} refused ({error[:60]}...)")
