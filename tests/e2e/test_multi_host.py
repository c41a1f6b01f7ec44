"""Three hosts (network namespaces, each with its own dockerd and driver) sharing one etcd."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import re
import statistics
import subprocess
import threading
import time

import docker
import pytest

from lab.results import percentile
from tests.conftest import report
from tests.e2e.cluster import GRACE, TTL, cut_off, until
from xmasq_driver.config import Config
from xmasq_driver.dataplane.overlay import vxlan_name
from xmasq_driver.ops import client as plugin

SERVE = "udpecho serve 5001 & httpd -f -p 8080 -h /www"


def test_full_mesh_and_isolation(cl):
    net = cl.network("mesh", "10.230.0.0/24")
    other = cl.network("other", "10.230.0.0/24")  # same subnet, another network
    members = [cl.run(h, f"m{h}{i}", net, SERVE) for h in cl.tb.hosts for i in (1, 2)]
    outsider = cl.run("h2", "outsider", other, SERVE)
    ips = [cl.ip(c, net) for c in members]
    assert len(set(ips)) == 6
    check = " ".join(
        f"ping -c 1 -W 2 {ip} >/dev/null && wget -O- http://{ip}:8080/index.html 2>/dev/null | grep -q xmasq"
        f" && udpecho send {ip} 5001 3 >/dev/null || echo FAIL {ip};"
        for ip in ips
    )
    for c in members:
        assert "FAIL" not in cl.sh(c, check)[1], c.name
    for ip in ips:  # the other network reaches none of them, on any host
        assert cl.sh(outsider, f"ping -c 1 -W 1 {ip}", check=False)[0] != 0
    assert cl.sh(members[0], f"ping -c 1 -W 1 {cl.ip(outsider, other)}", check=False)[0] != 0


def test_dual_stack_across_hosts_icmp_tcp_udp_over_ipv6_and_isolation(cl):
    """IPv6 inside the VXLAN overlay over the IPv4 underlay: the remote host's neighbour entry
    answers Neighbour Solicitations as ARP is answered; a network with the same IPv6 subnet is
    another world; removal takes the IPv6 entries along."""
    v6 = "fd00:234::/64"
    net = cl.network("mesh6", "10.234.0.0/24", subnet6=v6, space="mesh6")
    other = cl.network("other6", "10.234.0.0/24", subnet6=v6, space="other6")
    a = cl.run("h1", "m6a", net)
    b = cl.run("h2", "m6b", net, "udpecho serve 5001 & nc -l -p 5000 > /tmp/got; sleep 3600")
    outsider = cl.run("h3", "o6", other, "udpecho serve 5001")
    ip_b, ip6_b, vni = cl.ip(b, net), cl.ip6(b, net), cl.vni(net)
    until(lambda: {ip_b, ip6_b} <= cl.peers("h1", vni), 5)
    cl.sh(a, f"ping -6 -c 2 -W 2 {ip6_b}")
    cl.sh(a, f"echo over-tcp6 | nc -w 3 {ip6_b} 5000")
    until(lambda: cl.sh(b, "cat /tmp/got", check=False)[1] == "over-tcp6\n", 3)
    assert "replies=20/20" in cl.sh(a, f"udpecho send {ip6_b} 5001 20")[1]
    assert cl.ip6(outsider, other) == cl.ip6(a, net)  # the same address in the other network
    assert cl.sh(outsider, f"ping -6 -c 1 -W 1 {ip6_b}", check=False)[0] != 0
    cl.remove(b)
    until(lambda: not {ip_b, ip6_b} & cl.peers("h1", vni), 3)


def test_ipam_is_unique_under_contention(cl, tb):
    socks = {h: tb.path(h, "plugins/xmasq.sock") for h in tb.hosts}
    pool = "10.231.0.0/24"
    for s in socks.values():
        assert plugin.call(s, "/IpamDriver.RequestPool", {"Pool": pool})[0] == 200

    def grab(sock: str) -> str:
        status, body = plugin.call(sock, "/IpamDriver.RequestAddress", {"PoolID": pool})
        assert status == 200, body
        return body["Address"]

    try:
        requesters = [s for s in socks.values() for _ in range(30)]
        with concurrent.futures.ThreadPoolExecutor(90) as ex:
            got = list(ex.map(grab, requesters))
        assert len(got) == 90 and len(set(got)) == 90
        report(f"IPAM: 3 hosts x 30 parallel requests for one pool: {len(set(got))} distinct addresses of 90")
        for address, sock in zip(got, requesters, strict=True):  # each host releases what it was given
            plugin.call(sock, "/IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": address})
        for address, sock in zip(got, itertools.cycle(socks.values()), strict=False):
            status, body = plugin.call(sock, "/IpamDriver.RequestAddress", {"PoolID": pool, "Address": address})
            assert status == 200 and body["Address"] == address, body
    finally:
        for s in socks.values():
            plugin.call(s, "/IpamDriver.ReleasePool", {"PoolID": pool})


def test_removal_reaches_every_host_quickly(cl):
    net = cl.network("rm", "10.232.0.0/24")
    gone = cl.run("h2", "gone", net)
    ip = cl.ip(gone, net)
    vni = cl.vni(net)
    until(lambda: ip in cl.peers("h1", vni) and ip in cl.peers("h3", vni), 5)
    start = time.monotonic()
    cl.remove(gone)
    waited = until(lambda: ip not in cl.peers("h1", vni) and ip not in cl.peers("h3", vni), 2)
    report(
        f"container removed on h2 -> its entries gone on h1 and h3 after {waited * 1000:.0f} ms "
        f"({(time.monotonic() - start) * 1000:.0f} ms including docker rm)"
    )


def test_container_moving_to_another_host_keeps_its_traffic(cl):
    net = cl.network("move", "10.233.0.0/24")
    client = cl.run("h3", "client", net)
    first = cl.run(
        "h1",
        "svc",
        net,
        SERVE,
    )
    ip = cl.ip(first, net)
    cl.sh(client, f"udpecho send {ip} 5001 3")
    cl.remove(first)
    second = cl.dk["h2"].containers.run(
        cl.image["h2"],
        ["sh", "-c", SERVE],
        name="svc",
        detach=True,
        network=net,
        networking_config={net: cl.dk["h2"].api.create_endpoint_config(ipv4_address=ip)},
    )
    cl.containers.append(second)
    assert cl.ip(second, net) == ip
    assert cl.sh(client, f"udpecho wait {ip} 5001 5", check=False)[0] == 0, "traffic did not follow the move"
    assert (
        "PERMANENT"
        in subprocess.run(
            ["ip", "-n", cl.tb.netns("h3"), "neigh", "show", ip, "dev", vxlan_name(cl.vni(net))],
            capture_output=True,
            text=True,
        ).stdout
    )


def test_dead_host_is_evicted_and_rejoins(cl, tb):
    net = cl.network("evict", "10.234.0.0/24")
    probe = cl.run("h1", "probe", net)
    far = cl.run("h3", "far", net, SERVE)
    ip = cl.ip(far, net)
    vni = cl.vni(net)
    cl.sh(probe, f"udpecho wait {ip} 5001 5")
    tb.stop_driver("h3", kill=True)
    try:
        with cut_off(tb, "h3"):  # the host is gone: its driver, and its answers on the underlay
            waited = until(lambda: ip not in cl.peers("h1", vni) and ip not in cl.peers("h2", vni), TTL + GRACE + 10)
        report(
            f"h3 gone (driver SIGKILLed, underlay cut) -> its endpoints evicted on h1 and h2 after {waited:.1f} s "
            f"(lease ttl {TTL} s + grace {GRACE} s)"
        )
        assert waited >= TTL - 1, "evicted before the lease could have expired"
    finally:
        tb.start_driver("h3")
    back = until(lambda: ip in cl.peers("h1", vni), 10)
    cl.sh(probe, f"udpecho wait {ip} 5001 5")
    report(f"h3's driver restarted -> its endpoints back on h1 after {back:.1f} s")


ETCD_OUTAGE = 60.0


def test_etcd_outage_of_a_minute_under_traffic(cl, tb):
    net = cl.network("outage", "10.235.0.0/24")
    a = cl.run("h1", "out-a", net)
    b = cl.run("h2", "out-b", net, SERVE)
    ip_b, vni = cl.ip(b, net), cl.vni(net)
    cl.sh(a, f"udpecho wait {ip_b} 5001 5")
    pings: list[str] = []
    count = int((ETCD_OUTAGE + 10) / 0.2)
    pinger = threading.Thread(target=lambda: pings.append(cl.sh(a, f"ping -q -i 0.2 -c {count} {ip_b}", False)[1]))
    pinger.start()
    time.sleep(2)
    tb.stop_etcd()
    stopped = time.monotonic()
    try:
        with pytest.raises(docker.errors.APIError, match="etcd") as failure:
            cl.run("h1", "during", net)
        took = time.monotonic() - stopped
        timeout = Config().etcd_timeout
        report(f"etcd down: docker run failed after {took:.1f} s (etcd timeout {timeout} s): {failure.value}")
        assert took < 4 * timeout
        time.sleep(max(0.0, ETCD_OUTAGE - (time.monotonic() - stopped)))
        assert ip_b in cl.peers("h1", vni)  # nobody was evicted for etcd's absence
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            cl.dk["h1"].containers.get("during").remove(force=True)
        tb.start_etcd()
    back = time.monotonic()
    c = cl.run("h3", "after", net, SERVE)  # no driver restart needed
    cl.sh(a, f"udpecho wait {cl.ip(c, net)} 5001 10")
    ready = time.monotonic() - back
    pinger.join()
    loss = re.search(r"(\d+) packets transmitted, (\d+) packets received", pings[0])
    assert loss and loss.group(1) == loss.group(2), pings
    report(
        f"etcd stopped {ETCD_OUTAGE:.0f} s under a 5/s ping: {loss.group(2)}/{loss.group(1)} replies, "
        f"no eviction; after etcd returned a new container on h3 was reachable in {ready:.1f} s"
    )


def test_time_until_a_new_endpoint_is_reachable_from_other_hosts(cl):
    net = cl.network("reach", "10.236.0.0/24")
    prober = cl.run("h2", "prober", net)
    times = []
    for i in range(50):
        ip = f"10.236.0.{100 + i}"
        start = time.monotonic()
        c = cl.dk["h1"].containers.run(
            cl.image["h1"],
            ["udpecho", "serve", "5001"],
            name=f"new{i}",
            detach=True,
            network=net,
            networking_config={net: cl.dk["h1"].api.create_endpoint_config(ipv4_address=ip)},
        )
        cl.containers.append(c)
        cl.sh(prober, f"udpecho wait {ip} 5001 10")
        times.append(time.monotonic() - start)
        cl.remove(c)
    median, p99 = statistics.median(times), percentile(times, 0.99)
    report(
        f"docker run on h1 -> reachable from h2: median {median * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
        f"over {len(times)}"
    )
