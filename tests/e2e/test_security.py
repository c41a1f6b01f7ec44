"""Anti-spoofing and isolation on a testbed: frames a container forges with raw sockets, and
VXLAN packets crafted to inject frames into a network, sent from a container and from an
address on the underlay that is not a cluster host. Each attack has a control that shows the
same bytes do arrive when the sender is entitled to send them."""

from __future__ import annotations

import subprocess

import pytest

from lab.packets import VXLAN_PORT, arp, frame, ipv6, link_local, mac_bytes, ndp, udp, vxlan
from lab.testbed import BRIDGE
from tests.conftest import report
from tests.e2e.cluster import Cluster, arrived

N = 20
STRANGER_NS, STRANGER_LINK = "xmt-stranger", "xmtstranger0"


def send_frames(cl: Cluster, container, *frames: bytes) -> None:  # type: ignore[no-untyped-def]
    for f in frames:
        cl.sh(container, f"udpecho frame eth0 {f.hex()} {N}")


@pytest.mark.parametrize("fastpath", ["on", "off"])
def test_forged_source_address_or_mac_is_dropped_and_counted(cl, fastpath):
    net = cl.network(f"spoof-{fastpath}", "10.240.0.0/24", {"xmasq.fastpath": fastpath})
    a, c = cl.run("h1", "spoof-a", net), cl.run("h1", "spoof-c", net)
    b = cl.run("h2", "spoof-b", net, "udpecho serve 5001")
    ip_a, ip_b, ip_c = (cl.ip(x, net) for x in (a, b, c))
    cl.sh(c, f"udpecho wait {ip_b} 5001 10 && udpecho send {ip_b} 5001 5")  # C <-> B established
    flows = [f for f in cl.cache("h1")["flows"] if f["local"].startswith(ip_c + ":")]
    assert bool(flows) == (fastpath == "on"), flows  # so the forgery below would ride the fast path
    c_port = int(flows[0]["local"].split(":")[1]) if flows else 40000

    honest = frame(ip_a, ip_b, 40001, 5001)
    assert arrived(cl, b, lambda: send_frames(cl, a, honest)) == N  # the raw socket does deliver

    forged = {
        "C's address": frame(ip_c, ip_b, c_port, 5001, src_mac=mac_bytes(ip_a)),
        "C's address and MAC": frame(ip_c, ip_b, c_port, 5001),
        "C's MAC": frame(ip_a, ip_b, 40001, 5001, src_mac=mac_bytes(ip_c)),
        "ARP claiming C's address": arp(mac_bytes(ip_a), ip_c, ip_c),
    }
    before = cl.stats("h1")["drop_spoofed"]
    assert arrived(cl, b, lambda: send_frames(cl, a, *forged.values())) == 0
    dropped = cl.stats("h1")["drop_spoofed"] - before
    assert dropped == N * len(forged), dropped
    assert cl.sh(c, f"udpecho send {ip_b} 5001 5")[1] == "replies=5/5\n"  # C itself is unaffected
    report(
        f"anti-spoofing, fast path {fastpath}: {len(forged)} kinds x {N} forged frames: 0 delivered, "
        f"{dropped} counted in drop_spoofed"
    )


def rx_packets(cl: Cluster, container) -> int:  # type: ignore[no-untyped-def]
    return int(cl.sh(container, "cat /sys/class/net/eth0/statistics/rx_packets")[1])


def test_forged_ipv6_sources_and_ndp_answers_are_dropped_and_counted(cl):
    """On any xmasq network a container can send IPv6 (its link-local address) with a raw socket:
    it may send only as itself, and may not answer Neighbour Discovery for another container."""
    net = cl.network("spoof6", "10.241.0.0/24")
    a, c = cl.run("h1", "spoof6-a", net), cl.run("h1", "spoof6-c", net)
    mac_a, mac_c = (mac_bytes(cl.ip(x, net)) for x in (a, c))
    ll_a, ll_c = link_local(mac_a), link_local(mac_c)

    def to_c(src: str, payload: bytes, nexthdr: int = 17, src_mac: bytes = mac_a) -> bytes:
        return ipv6(src_mac, mac_c, src, ll_c, nexthdr, payload)

    datagram = udp(40000, 5001, b"xmasq")
    # Docker turns IPv6 off in a container on a network without it (disable_ipv6), but raw frames
    # still go out. The control: A's frames as itself reach C.
    before, rx = cl.stats("h1")["drop_spoofed"], rx_packets(cl, c)
    send_frames(cl, a, to_c(ll_a, datagram))
    assert rx_packets(cl, c) - rx >= N
    assert cl.stats("h1")["drop_spoofed"] == before

    forged = {
        "C's link-local": to_c(ll_c, datagram),
        "C's MAC": to_c(ll_a, datagram, src_mac=mac_c),
        "NA for C's address": to_c(ll_a, ndp(136, ll_c, [(2, mac_a)]), 58),
        "NA naming C's MAC": to_c(ll_a, ndp(136, ll_a, [(2, mac_c)]), 58),
        "Router Advertisement": to_c(ll_a, bytes([134]) + b"\0" * 15, 58),
    }
    rx = rx_packets(cl, c)
    send_frames(cl, a, *forged.values())
    assert rx_packets(cl, c) - rx < N  # none of them (what arrives is the network's own chatter)
    dropped = cl.stats("h1")["drop_spoofed"] - before
    assert dropped == N * len(forged), dropped
    report(f"IPv6 anti-spoofing: {len(forged)} kinds x {N} forged frames: {dropped} counted in drop_spoofed")


@pytest.fixture
def stranger(tb):
    """A namespace on the testbed's underlay with an address that is not a cluster host."""
    ip = tb.host_ip("h200")
    subprocess.run(["ip", "netns", "add", STRANGER_NS], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", STRANGER_LINK, "type", "veth", "peer", "name", "eth0", "netns", STRANGER_NS],
            check=True,
        )
        subprocess.run(["ip", "link", "set", STRANGER_LINK, "master", BRIDGE, "up"], check=True)
        subprocess.run(["ip", "-n", STRANGER_NS, "addr", "add", f"{ip}/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", STRANGER_NS, "link", "set", "eth0", "up"], check=True)
        yield STRANGER_NS
    finally:
        subprocess.run(["ip", "link", "del", STRANGER_LINK], check=False)
        subprocess.run(["ip", "netns", "del", STRANGER_NS], check=False)


def send_udp_from_ns(ns: str, host: str, payload: bytes) -> None:
    code = (
        "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"for _ in range({N}): s.sendto(bytes.fromhex(sys.argv[1]), ({host!r}, {VXLAN_PORT}))"
    )
    subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code, payload.hex()], check=True, timeout=20)


def test_crafted_vxlan_is_accepted_only_from_cluster_hosts(cl, tb, stranger):
    victim_net = cl.network("victim", "10.241.0.0/24", hosts=("h1", "h2"))
    attacker_net = cl.network("attacker", "10.242.0.0/24", hosts=("h1", "h3"))
    vni = cl.vni(victim_net)
    victim = {h: cl.run(h, f"victim-{h}", victim_net, "udpecho serve 5001") for h in ("h1", "h2")}
    attacker = {h: cl.run(h, f"attacker-{h}", attacker_net) for h in ("h1", "h3")}
    forged_src = "10.241.0.200"  # no such container
    packet = {h: vxlan(vni, frame(forged_src, cl.ip(v, victim_net), 40000, 5001)) for h, v in victim.items()}

    def from_container(c, target: str) -> None:  # type: ignore[no-untyped-def]
        cl.sh(attacker[c], f"udpecho payload {tb.host_ip(target)} {VXLAN_PORT} {packet[target].hex()} {N}")

    def from_ns(ns: str, target: str) -> None:
        send_udp_from_ns(ns, tb.host_ip(target), packet[target])

    # Controls: the same bytes from a cluster host's own address are valid VXLAN frames for the victims.
    assert arrived(cl, victim["h2"], lambda: from_ns(tb.netns("h3"), "h2")) == N
    assert arrived(cl, victim["h1"], lambda: from_ns(tb.netns("h2"), "h1")) == N
    # From a container on h3, which has no such network: would leave masqueraded as h3.
    assert arrived(cl, victim["h2"], lambda: from_container("h3", "h2")) == 0
    # From a container to its own host, which has the network.
    assert arrived(cl, victim["h1"], lambda: from_container("h1", "h1")) == 0
    # From an underlay address that is not a cluster host.
    assert arrived(cl, victim["h2"], lambda: from_ns(stranger, "h2")) == 0
    report(
        f"crafted VXLAN: {N} packets each from a container to another host, from a container to its own "
        "host and from a non-member underlay address: 0 delivered; from cluster hosts: all delivered"
    )
