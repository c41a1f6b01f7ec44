"""Load, churn and fuzz against the real driver: 50 parallel `docker run`, 300 create/destroy
cycles across two hosts under traffic, and malformed requests on the live socket."""

from __future__ import annotations

import concurrent.futures
import statistics
import subprocess
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.results import percentile
from tests.conftest import report
from tests.e2e.cluster import driver_usage, links
from tests.e2e.conftest import host_state
from tests.fuzz import raw_bodies
from xmasq_driver.control.layout import ADDRESSES, ENDPOINTS
from xmasq_driver.dataplane.overlay import HOST_VETH_PREFIX, vxlan_name
from xmasq_driver.ops import client as plugin

LIVE_CASES = {"n": 0}
LIVE_PATHS = [
    "/NetworkDriver.CreateNetwork",
    "/NetworkDriver.CreateEndpoint",
    "/NetworkDriver.Join",
    "/NetworkDriver.Leave",
    "/NetworkDriver.DeleteEndpoint",
    "/NetworkDriver.DeleteNetwork",
    "/NetworkDriver.ProgramExternalConnectivity",
    "/NetworkDriver.AllocateNetwork",
    "/IpamDriver.RequestPool",
    "/IpamDriver.RequestAddress",
    "/IpamDriver.ReleaseAddress",
    "/IpamDriver.ReleasePool",
    "/Xmasq.Unknown",
]


def test_malformed_requests_on_the_live_socket_change_nothing(env, cfg):
    before = host_state(cfg)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(LIVE_PATHS), data=raw_bodies.filter(lambda b: b[:1] != b"{" or b"ID" not in b))
    def one(path, data):  # type: ignore[no-untyped-def]
        status, answer = plugin.call(cfg.socket, path, raw=data, timeout=30)
        LIVE_CASES["n"] += 1
        if status != 200:
            assert 400 <= status < 600 and isinstance(answer.get("Err"), str) and answer["Err"], answer

    one()
    assert plugin.call(cfg.socket, "/Plugin.Activate")[0] == 200  # still serving
    assert host_state(cfg) == before
    report(f"fuzz (live driver): {LIVE_CASES['n']} malformed requests, all answered with JSON, state unchanged")


def test_fifty_parallel_docker_runs_on_one_host(env):
    net = env.network("load", "10.246.0.0/24")

    def run(i: int) -> float:
        start = time.monotonic()
        env.run(f"load{i}", net.name)
        return time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        took = sorted(pool.map(run, range(50)))
    ips = {env.ip(c, net) for c in env.containers}
    assert len(ips) == 50
    env.sh(env.containers[0], f"ping -c 1 -W 2 {env.ip(env.containers[-1], net)}")
    p99 = percentile(took, 0.99)
    report(
        f"50 parallel docker run on one host: all running, 50 distinct addresses; docker run (endpoint "
        f"setup included) p50 {statistics.median(took):.2f} s, p99 {p99:.2f} s, max {took[-1]:.2f} s"
    )


CYCLES, WARMUP = 300, 20


def test_churn_of_300_containers_across_two_hosts_under_traffic(cl, tb):
    net = cl.network("churn", "10.247.0.0/24")
    s1, s2 = cl.run("h1", "churn-s1", net), cl.run("h2", "churn-s2", net, "udpecho serve 5001")
    ip2, vni = cl.ip(s2, net), cl.vni(net)
    cl.sh(s1, f"udpecho wait {ip2} 5001 10")
    rules = {h: _rules(tb, h) for h in ("h1", "h2")}

    def cycle(host: str, i: int) -> None:
        c = cl.dk[host].containers.run(
            cl.image[host], ["sleep", "30"], name=f"churn-{host}-{i}", network=net, detach=True
        )
        c.remove(force=True)

    def cycles(host: str, start: int, count: int) -> None:
        for i in range(start, start + count):
            cycle(host, i)

    for h in ("h1", "h2"):
        cycles(h, 0, WARMUP // 2)
    warm = {h: driver_usage(tb, h).rss_mib for h in ("h1", "h2")}
    pings: list[str] = []
    pinger = threading.Thread(
        target=lambda: pings.append(
            cl.sh(
                s1,
                f"ping -q -i 0.2 -w 600 {ip2} & "
                "sleep 1; while [ ! -e /tmp/stop ]; do sleep 0.2; done; "
                "kill -INT %1; wait",
                False,
            )[1]
        )
    )
    pinger.start()
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda h: cycles(h, WARMUP, CYCLES // 2), ("h1", "h2")))
    took = time.monotonic() - start
    cl.sh(s1, "touch /tmp/stop")
    pinger.join()
    time.sleep(1)  # Docker finishes DeleteEndpoint asynchronously
    assert cl.sh(s1, f"udpecho send {ip2} 5001 10")[1] == "replies=10/10\n"
    after = {h: driver_usage(tb, h).rss_mib for h in ("h1", "h2")}
    for h, other in (("h1", s2), ("h2", s1)):
        names = links(tb, h)
        assert len([n for n in names if n.startswith(HOST_VETH_PREFIX)]) == 1, names
        assert cl.peers(h, vni) == {cl.ip(other, net)}
        fdb = subprocess.run(
            ["bridge", "-n", tb.netns(h), "fdb", "show", "dev", vxlan_name(vni)], capture_output=True, text=True
        ).stdout
        assert sum(1 for line in fdb.splitlines() if " dst " in line) == 1, fdb
        cache = cl.cache(h)
        assert len([e for e in cache["local"] if e["vni"] == vni]) == 1
        assert [e["ip"] for e in cache["remote"] if e["vni"] == vni] == [cl.ip(other, net)]
        assert all(f["local"].split(":")[0] in (cl.ip(s1, net), ip2) for f in cache["flows"])
        assert _rules(tb, h) == rules[h]
        assert after[h] <= warm[h] * 1.2, (h, warm[h], after[h])
    endpoints = cl.kv.get_prefix(ENDPOINTS.prefix(net))
    addresses = [k for k in cl.kv.get_prefix(ADDRESSES.prefix()) if "10.247.0." in k]
    assert len(endpoints) == 2 and len(addresses) == 3, (endpoints, addresses)  # 2 survivors + the gateway
    loss = pings[0].split("packets received")[0].split(",")[-1].strip() if pings else "?"
    sent = pings[0].split(" packets transmitted")[0].split()[-1] if pings else "?"
    assert loss == sent, pings
    report(
        f"churn: {CYCLES} create/destroy cycles on 2 hosts in {took:.0f} s under a 5/s ping ({loss}/{sent} "
        f"replies); leaked: 0 veths, 0 FDB/neigh, 0 map entries or flows, 0 etcd keys, 0 rules, 0 addresses; "
        f"driver RSS after warm-up -> after: h1 {warm['h1']:.0f}->{after['h1']:.0f} MiB, "
        f"h2 {warm['h2']:.0f}->{after['h2']:.0f} MiB"
    )


def _rules(tb, host: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = tb.in_host(host, ["iptables-save"], capture_output=True, check=True).stdout
    return sorted(line for line in out.splitlines() if "xmasq:" in line)
