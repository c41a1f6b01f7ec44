"""The eBPF fast path across testbed hosts, checked with the driver's own counters and captures."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import report
from tests.e2e.cluster import Cluster, iperf_silence, udp_at_once

SERVE = "udpecho serve 5001 & udpecho serve 5002 & iperf3 -s -D >/dev/null; sleep 3600"
SENDER_MISSES = ("miss_no_peer", "miss_no_tunnel", "miss_not_established")
RECEIVER_MISSES = ("ingress_miss_unknown_source", "ingress_miss_unknown_dest", "ingress_miss_not_established")


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def fast_share(d: dict[str, int], fast: str, misses: tuple[str, ...]) -> float:
    total = d[fast] + sum(d[m] for m in misses)
    return d[fast] / total if total else 0.0


def pair(cl: Cluster, net: str, family: str = "ipv4") -> tuple:  # type: ignore[type-arg]
    """A client on h1 and a server on h2; the server's address of `family`."""
    client = cl.run("h1", "fp-client", net)
    server = cl.run("h2", "fp-server", net, SERVE)
    ip = cl.ip6(server, net) if family == "ipv6" else cl.ip(server, net)
    cl.sh(client, f"udpecho wait {ip} 5001 10")
    return client, server, ip


def measured(cl: Cluster, client, command: str) -> tuple[dict[str, int], dict[str, int], str]:  # type: ignore[no-untyped-def]
    before = {h: cl.stats(h) for h in ("h1", "h2")}
    out = cl.sh(client, command)[1]
    return delta(cl.stats("h1"), before["h1"]), delta(cl.stats("h2"), before["h2"]), out


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_udp_and_icmp_take_the_fast_path(cl, family):
    net = cl.network("fast", "10.240.0.0/24", subnet6="fd00:240::/64" if family == "ipv6" else "")
    client, _, ip = pair(cl, net, family)
    seconds, v = (10, "") if family == "ipv4" else (5, "IPv6 ")
    for name, command in (
        (f"{v}TCP (iperf3, {seconds} s)", f"iperf3 -c {ip} -t {seconds} -J"),
        (f"{v}UDP request-response", f"udpecho send {ip} 5002 2000"),
        # 400: the flow's first packet and, over IPv6, a Neighbour Discovery message of the same
        # ICMPv6 flow take the slow path; they must not decide the share
        (f"{v}ICMP (ping)", f"ping -c 400 -i 0.01 -W 1 {ip}"),
    ):
        h1, h2, out = measured(cl, client, command)
        out_share = fast_share(h1, "encap_pkts", SENDER_MISSES)
        in_share = fast_share(h2, "decap_pkts", RECEIVER_MISSES)
        back_share = fast_share(h2, "encap_pkts", SENDER_MISSES)
        report(
            f"fast path, {name}: {h1['encap_pkts']} packets h1->h2 ({out_share:.2%} fast), "
            f"{h2['decap_pkts']} delivered by decap ({in_share:.2%}), replies {back_share:.2%} fast"
        )
        assert out_share >= 0.99 and in_share >= 0.99 and back_share >= 0.99, (name, h1, h2)
        if "TCP" in name:
            result = json.loads(out)["end"]["sum_received"]
            report(f"  iperf3 through the fast path: {result['bits_per_second'] / 1e9:.2f} Gbit/s")


def test_tcp_across_hosts_is_not_reordered_by_the_default_steering(cl):
    """A container's TCP sender transmits from two CPUs (its process, and softirq where an ACK
    arrived); each CPU's backlog handed its segments to the NIC, out of order. The default flow
    steering (rfs) keeps a flow on one CPU's backlog; `-o xmasq.steer=off` is the comparison."""
    retransmits = {}
    clients = {}
    for steer, subnet in (("rfs", "10.240.8.0/24"), ("off", "10.240.9.0/24")):
        net = cl.network(f"order-{steer}", subnet, {"xmasq.steer": steer})
        client = cl.run("h1", f"order-{steer}-client", net)
        ip = cl.ip(cl.run("h2", f"order-{steer}-server", net, SERVE), net)
        cl.sh(client, f"udpecho wait {ip} 5001 10")
        clients[steer] = (client, ip)
        retransmits[steer] = 0
    for _ in range(3):  # interleaved, so both see the same machine
        for steer, (client, ip) in clients.items():
            out = cl.sh(client, f"iperf3 -c {ip} -t 3 -J")[1]
            retransmits[steer] += json.loads(out)["end"]["sum_sent"]["retransmits"]
    report(
        f"cross-host TCP, 3 x 3 s unpinned: retransmits rfs (default) {retransmits['rfs']}, off {retransmits['off']}"
    )
    assert retransmits["rfs"] <= retransmits["off"] + 10, retransmits


def test_a_flow_blocked_in_docker_user_never_takes_the_fast_path(cl, tb):
    net = cl.network("blocked", "10.241.0.0/24")
    client, _, ip = pair(cl, net)
    rule = ["-p", "udp", "-d", ip, "--dport", "5002", "-j", "DROP"]
    subprocess.run(["ip", "netns", "exec", tb.netns("h2"), "iptables", "-w", "-I", "DOCKER-USER", *rule], check=True)
    try:
        h1, _, out = measured(cl, client, f"udpecho send {ip} 5002 50 || true")
        assert "replies=0/50" in out
        assert h1["encap_pkts"] == 0 and h1["miss_not_established"] >= 50
        flows = [f for f in cl.cache("h1")["flows"] if f["remote"] == f"{ip}:5002"]
        assert flows and not any(f["seen_out"] and f["seen_in"] for f in flows), flows
    finally:
        subprocess.run(["ip", "netns", "exec", tb.netns("h2"), "iptables", "-w", "-D", "DOCKER-USER", *rule])


def test_two_networks_with_the_same_addresses_stay_apart(cl):
    nets = [cl.network(f"iso{x}", "10.242.0.0/24", space=f"iso{x}") for x in "ab"]
    pairs = []
    for net in nets:
        c = cl.run("h1", f"c-{net}", net)
        s = cl.run("h2", f"s-{net}", net, SERVE)
        pairs.append((c, s, cl.ip(s, net)))
    assert pairs[0][2] == pairs[1][2]  # the same server address in both networks
    assert cl.ip(pairs[0][0], nets[0]) == cl.ip(pairs[1][0], nets[1])
    rx = udp_at_once(cl.sh, pairs, 500)
    report(f"isolation: two networks, same addresses, 500 datagrams each at once: servers received {rx}")
    assert all(500 <= n < 520 for n in rx), rx  # each got its own 500 (plus a little ARP), none of the other's


def test_a_replaced_container_gets_the_traffic_and_the_old_host_none(cl, tb):
    net = cl.network("stale", "10.243.0.0/24")
    client, server, ip = pair(cl, net)
    cl.sh(client, f"udpecho send {ip} 5001 50")  # established on the fast path to h2
    cl.remove(server)
    new = cl.dk["h1"].containers.run(
        cl.image["h1"],
        ["sh", "-c", SERVE],
        name="fp-server2",
        detach=True,
        network=net,
        networking_config={net: cl.dk["h1"].api.create_endpoint_config(ipv4_address=ip)},
    )
    cl.containers.append(new)
    capture = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            tb.netns("h2"),
            "timeout",
            "6",
            "tcpdump",
            "-lnq",
            "--immediate-mode",  # else packets still in the capture ring at the timeout are lost
            "-i",
            "eth0",
            f"udp port 4789 and src host {tb.host_ip('h1')}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(1)
    out = cl.sh(client, f"udpecho wait {ip} 5001 5 && udpecho send {ip} 5001 100")[1]
    seen_on_old_host = capture.communicate()[0].strip().splitlines()
    assert "replies=100/100" in out
    assert seen_on_old_host == [], seen_on_old_host[:5]


def test_driver_restart_under_load_keeps_the_fast_path(cl, tb):
    net = cl.network("restart", "10.244.0.0/24")
    client, _, ip = pair(cl, net)
    cl.sh(client, f"udpecho send {ip} 5001 10")
    cache_before = cl.cache("h1")
    before = cl.stats("h1")

    def restart() -> None:
        tb.stop_driver("h1", kill=True)
        tb.start_driver("h1")

    longest_gap, intervals = iperf_silence(client, ip, restart, seconds=8)
    d = delta(cl.stats("h1"), before)
    report(
        f"driver SIGKILL + restart under iperf3: longest gap {longest_gap:.2f} s, "
        f"{fast_share(d, 'encap_pkts', SENDER_MISSES):.2%} of packets on the fast path"
    )
    assert longest_gap < 1.0, intervals
    assert fast_share(d, "encap_pkts", SENDER_MISSES) >= 0.99, d
    after = cl.cache("h1")
    for table in ("local", "remote"):  # adopted, not duplicated or wiped
        assert sorted(map(json.dumps, after[table])) == sorted(map(json.dumps, cache_before[table])), table
    # Tunnel headers are relearned from every slow-path packet (IP ID, lengths vary): same keys.
    assert [(t["host"], t["vni"]) for t in after["tunnels"]] == [(t["host"], t["vni"]) for t in cache_before["tunnels"]]


def test_fastpath_off_network_stays_on_the_slow_path(cl):
    net = cl.network("slow", "10.245.0.0/24", options={"xmasq.fastpath": "off"})
    client, _, ip = pair(cl, net)
    h1, h2, out = measured(cl, client, f"udpecho send {ip} 5001 200")
    assert "replies=200/200" in out
    assert h1["encap_pkts"] == 0 and h2["decap_pkts"] == 0
    cache = cl.cache("h1")
    assert [e["vni"] for e in cache["local"]] == [cl.vni(net)]  # guarded against spoofing, nothing more
    assert cache["remote"] == [] and cache["flows"] == []
