"""The loaded eBPF programs run on crafted packets (BPF_PROG_TEST_RUN), byte by byte.

The programs are compiled and loaded by the driver's own Datapath, with maps pinned in a
throwaway directory and filters on veth pairs this test creates (no traffic is sent).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
import subprocess

import pytest

from lab import testrun
from lab.packets import SPORT, arp, csum, frame, ipv6, link_local, mac_bytes, ndp, outer, udp
from xmasq_driver.dataplane.datapath import FASTPATH_MARK, Datapath, _addr, _be32
from xmasq_driver.dataplane.overlay import mac_for_ip

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
VNI, OTHER_VNI = 4242, 4343
ME, PEER, STRANGER, NEIGHBOUR = "10.9.0.2", "10.9.0.3", "10.9.0.9", "10.9.0.4"  # NEIGHBOUR: on this host
ME6, PEER6, STRANGER6, NEIGHBOUR6 = "fd00:9::2", "fd00:9::3", "fd00:9::9", "fd00:9::4"
MY_MAC, PEER_MAC, STRANGER_MAC, NEIGHBOUR_MAC = (mac_bytes(ip) for ip in (ME, PEER, STRANGER, NEIGHBOUR))
MAC = {ME: MY_MAC, ME6: MY_MAC, PEER: PEER_MAC, PEER6: PEER_MAC, STRANGER: STRANGER_MAC, STRANGER6: STRANGER_MAC}
MAC |= {NEIGHBOUR: NEIGHBOUR_MAC, NEIGHBOUR6: NEIGHBOUR_MAC}
FAMILIES = {"ipv4": (ME, PEER, STRANGER, NEIGHBOUR), "ipv6": (ME6, PEER6, STRANGER6, NEIGHBOUR6)}
LOCAL_HOST, REMOTE_HOST, OTHER_HOST = "192.0.2.1", "192.0.2.77", "192.0.2.88"


def run(dp: Datapath, prog: str, packet: bytes, ifindex: int = 0, mark: int = 0) -> tuple[int, bytes]:
    """Run a loaded program on packet with skb->ifindex / skb->mark set; (return code, packet after)."""
    done = testrun.Runner(dp._fns[prog].fd, packet, ifindex, mark)()
    return done.verdict, done.packet


def pkt(src: str, dst: str, sport: int = 40000, dport: int = 5001, payload: bytes = b"xmasq" * 20) -> bytes:
    """A container's UDP frame between two of the test's addresses, either version."""
    return frame(src, dst, sport, dport, payload, src_mac=MAC[src], dst_mac=MAC[dst])


def counted(dp: Datapath, before: dict[str, int]) -> dict[str, int]:
    """The counters that moved since `before`, by how much."""
    return {k: v - before[k] for k, v in dp.stats().items() if v != before[k]}


@pytest.fixture(scope="module")
def dp():
    if os.geteuid() != 0:
        pytest.fail("eBPF tests need root: run `make test` as root")
    devices = {"nic": "xmtbnic0", "lxc": "xmtblxc0", "nb": "xmtblxc2", "enc": "xmtblxc4"}
    d = testrun.Sandbox(f"/sys/fs/bpf/xmasq/test-{os.getpid()}", devices)
    try:
        assert d.load(), d.reason
        d.add_local("xmtblxc0", VNI, [ME, ME6], mac_for_ip(ipaddress.IPv4Address(ME)))
        d.add_local("xmtblxc2", VNI, [NEIGHBOUR, NEIGHBOUR6], mac_for_ip(ipaddress.IPv4Address(NEIGHBOUR)))
        d.update_remote(VNI, {}, {PEER: _peer(REMOTE_HOST), PEER6: _peer(REMOTE_HOST)})
        yield d
    finally:
        d.close()


@pytest.fixture
def clean(dp):
    """Each test starts with no flows and no learned tunnels."""
    dp.flush_flows()
    dp._maps["tunnels"].clear()
    return dp


def _peer(host: str) -> tuple[str, str]:
    """PEER's (mac, host) as the control plane programs it."""
    return mac_for_ip(ipaddress.IPv4Address(PEER)), host


def learn(dp: Datapath, me: str = ME, peer: str = PEER) -> bytes:
    """The slow path carries me -> peer out (NIC egress) and peer -> me in (veth egress)."""
    slow = outer(LOCAL_HOST, REMOTE_HOST, VNI, pkt(me, peer))
    assert run(dp, "to_nic", slow, dp.ifindex["nic"])[0] == TC_ACT_OK
    assert run(dp, "to_container", pkt(peer, me, 5001, 40000), dp.ifindex["lxc"])[0] == TC_ACT_OK
    return slow


@pytest.mark.parametrize("family", FAMILIES)
def test_encap_is_byte_correct(clean, family):
    dp = clean
    me, peer, _, _ = FAMILIES[family]
    template = learn(dp, me, peer)[:50]
    packet = pkt(me, peer, payload=b"fast" * 100)
    rc, out = run(dp, "from_container", packet, dp.ifindex["lxc"])
    assert rc == TC_ACT_REDIRECT
    assert len(out) == len(packet) + 50
    assert out[:14] == template[:14]  # outer Ethernet as learned
    ip = out[14:34]
    assert ip[0] == 0x45 and ip[9] == 17 and ip[12:20] == template[26:34]  # addresses as learned
    assert struct.unpack("!H", ip[2:4])[0] == len(packet) + 50 - 14  # outer total length
    assert csum(ip) == 0  # a valid header checksum
    sport, dport, ulen, ucsum = struct.unpack("!HHHH", out[34:42])
    assert (sport, dport, ulen, ucsum) == (SPORT, 4789, len(packet) + 50 - 34, 0)
    assert out[42:50] == struct.pack("!II", 0x08000000, VNI << 8)
    assert out[50:] == packet  # the container's frame, untouched, is the inner frame


@pytest.mark.parametrize("family", FAMILIES)
def test_encap_needs_an_established_flow(clean, family):
    dp = clean
    me, peer, _, _ = FAMILIES[family]
    packet, before = pkt(me, peer), dp.stats()
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)
    run(dp, "to_nic", outer(LOCAL_HOST, REMOTE_HOST, VNI, packet), dp.ifindex["nic"])  # out only
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)
    assert counted(dp, before) == {"miss_not_established": 2, "learn_tunnel": 1, "learn_out": 1}


@pytest.mark.parametrize("family", FAMILIES)
def test_same_host_redirect_hands_the_frame_over_unchanged(clean, family):
    dp = clean
    me, _, _, neighbour = FAMILIES[family]
    packet, before = pkt(me, neighbour, payload=b"near" * 50), dp.stats()
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)  # not yet established
    assert run(dp, "to_container", packet, dp.ifindex["nb"])[0] == TC_ACT_OK  # the bridge delivered it...
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)  # ...one way only
    assert run(dp, "to_container", pkt(neighbour, me, 5001, 40000), dp.ifindex["lxc"])[0] == TC_ACT_OK  # and back
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_REDIRECT, packet)
    counts = counted(dp, before)
    assert counts["local_pkts"] == 1 and counts["local_miss_not_established"] == 2, counts


def test_fast_path_packets_are_not_learned_again(clean):
    dp = clean
    marked = outer(LOCAL_HOST, OTHER_HOST, VNI, frame(ME, PEER))  # would be a wrong template
    run(dp, "to_nic", marked, dp.ifindex["nic"], mark=FASTPATH_MARK)
    assert len(dp._maps["tunnels"]) == 0
    run(dp, "to_nic", marked, dp.ifindex["nic"])  # unmarked: still not learned, PEER lives on REMOTE_HOST
    assert len(dp._maps["tunnels"]) == 0


def test_learn_records_template_and_source_port(clean):
    dp = clean
    slow = learn(dp)
    cache = dp.cache()
    tunnel = {
        "host": REMOTE_HOST,
        "vni": VNI,
        "ifindex": dp.ifindex["nic"],
        "encrypted": False,
        "header": slow[:50].hex(),
    }
    assert cache["tunnels"] == [tunnel]
    assert cache["flows"][0]["seen_out"] and cache["flows"][0]["seen_in"]
    assert cache["flows"][0]["to"] == REMOTE_HOST  # where an established flow's packets go, without a lookup


def test_a_same_host_flow_is_learned_with_the_receivers_veth(clean):
    dp = clean
    run(dp, "to_container", pkt(ME, NEIGHBOUR), dp.ifindex["nb"])  # the bridge delivered ME's packet to NEIGHBOUR
    flows = {(f["local"], f["remote"]): f for f in dp.cache()["flows"]}
    assert flows[(f"{ME}:40000", f"{NEIGHBOUR}:5001")]["to"] == dp.ifindex["nb"]  # ME's flow: redirected there
    assert flows[(f"{NEIGHBOUR}:5001", f"{ME}:40000")]["to"] == 0  # NEIGHBOUR's: not carried out yet


def with_ip_options(packet: bytes) -> bytes:
    """The same frame with a 4-byte IPv4 option (NOPs): the fast path leaves such packets alone."""
    ip = bytearray(packet[14:34])
    ip[0], ip[2:4] = 0x46, struct.pack("!H", len(packet) - 14 + 4)
    return packet[:14] + bytes(ip) + b"\x01" * 4 + packet[34:]


MY_LL, PEER_LL = link_local(MY_MAC), link_local(PEER_MAC)
ALL_NODES_MAC, ICMPV6 = bytes.fromhex("333300000001"), 58


def ext(nexthdr: int) -> bytes:
    """An 8-byte hop-by-hop or destination options header: router alert (as MLD has), then PadN."""
    return bytes([nexthdr, 0, 5, 2, 0, 0, 1, 0])


def v6(src: str, payload: bytes, nexthdr: int = 17) -> bytes:
    """An IPv6 packet ME's container sends from its own MAC with source address `src`."""
    return ipv6(MY_MAC, ALL_NODES_MAC, src, "ff02::1", nexthdr, payload)


SPOOFED = {
    "other source address": frame(STRANGER, PEER),
    "other source MAC": mac_bytes(PEER) + mac_bytes(PEER) + frame(ME, PEER)[12:],
    "other address behind IP options": with_ip_options(frame(STRANGER, PEER)),
    "ARP cut short": arp(MY_MAC, ME, PEER)[:30],  # (a cut IPv4 header never reaches tc: test_run refuses it)
    "ARP for another address": arp(MY_MAC, STRANGER, PEER),
    "ARP with another MAC inside": arp(mac_bytes(PEER), ME, PEER, frame_src=MY_MAC),
    "VLAN-tagged frame": frame(ME, PEER)[:12] + b"\x81\x00\x00\x05" + frame(ME, PEER)[12:],
    "IPv6 from another's link-local": v6(link_local(PEER_MAC), udp(40000, 5001, b"x")),
    "IPv6 from another address": v6(STRANGER6, udp(40000, 5001, b"x")),
    "IPv6 from another MAC": ipv6(PEER_MAC, ALL_NODES_MAC, MY_LL, PEER_LL, 17, udp(40000, 5001, b"x")),
    "NA for another's link-local": v6(MY_LL, ndp(136, PEER_LL, [(2, MY_MAC)]), ICMPV6),
    "NA for another address": v6(MY_LL, ndp(136, STRANGER6, [(2, MY_MAC)]), ICMPV6),
    "NA for itself naming another MAC": v6(MY_LL, ndp(136, ME6, [(2, PEER_MAC)]), ICMPV6),
    "NA with another MAC in a later option": v6(MY_LL, ndp(136, ME6, [(14, b"nonce!"), (2, PEER_MAC)]), ICMPV6),
    "NS naming another MAC": v6(MY_LL, ndp(135, PEER_LL, [(1, PEER_MAC)]), ICMPV6),
    "NS with a zero-length option": v6(MY_LL, ndp(135, PEER_LL, [])[:24] + b"\x01\x00" + b"\0" * 6, ICMPV6),
    "NS with more options than an honest one": v6(MY_LL, ndp(135, PEER_LL, [(14, b"n")] * 5), ICMPV6),
    "NA cut inside its target": v6(MY_LL, ndp(136, ME6, [])[:20], ICMPV6),
    "Router Advertisement": v6(MY_LL, struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0), ICMPV6),
    "extension header cut short": v6(MY_LL, b"\x3a", nexthdr=60),  # (a cut IPv6 header: as IPv4's)
    "NA for another address behind a destination options header": v6(
        MY_LL, ext(58) + ndp(136, STRANGER6, [(2, MY_MAC)]), nexthdr=60
    ),
    "NA behind more extension headers than are walked": v6(
        MY_LL, ext(60) + ext(60) + ext(60) + ext(60) + ext(58) + ndp(136, ME6, []), nexthdr=60
    ),
    "Redirect": v6(MY_LL, ndp(137, PEER_LL, []) + ipaddress.IPv6Address(STRANGER6).packed, ICMPV6),
}
HONEST = {
    "ARP request": arp(MY_MAC, ME, PEER),
    "ARP probe": arp(MY_MAC, "0.0.0.0", ME),
    "IPv4 with options": with_ip_options(frame(ME, PEER)),
    "IPv6 from the unspecified address": v6("::", b"", nexthdr=59),
    "IPv6 from its link-local": v6(MY_LL, udp(40000, 5001, b"x")),
    "IPv6 from its address": v6(ME6, udp(40000, 5001, b"x")),
    "NS for duplicate address detection": v6("::", ndp(135, ME6, []), ICMPV6),
    "NS with its MAC": v6(MY_LL, ndp(135, PEER_LL, [(1, MY_MAC)]), ICMPV6),
    "NA for its address with its MAC and a nonce": v6(ME6, ndp(136, ME6, [(2, MY_MAC), (14, b"nonce!")]), ICMPV6),
    "NA for its link-local, Ethernet padding after it": v6(MY_LL, ndp(136, MY_LL, []), ICMPV6) + b"\0" * 8,
    "MLD report behind hop-by-hop options": v6(MY_LL, ext(58) + struct.pack("!BBHHH", 143, 0, 0, 0, 0), nexthdr=0),
    "ICMPv6 echo request": v6(MY_LL, struct.pack("!BBHHH", 128, 0, 0, 1, 1), ICMPV6),
}


@pytest.mark.parametrize("case", SPOOFED)
def test_spoofed_frames_are_dropped_and_counted(clean, case):
    dp = clean
    before = dp.stats()["drop_spoofed"]
    assert run(dp, "from_container", SPOOFED[case], dp.ifindex["lxc"])[0] == TC_ACT_SHOT
    assert dp.stats()["drop_spoofed"] == before + 1


@pytest.mark.parametrize("case", HONEST)
def test_honest_frames_pass_to_the_slow_path(clean, case):
    dp = clean
    before = dp.stats()["drop_spoofed"]
    assert run(dp, "from_container", HONEST[case], dp.ifindex["lxc"]) == (TC_ACT_OK, HONEST[case])
    assert dp.stats()["drop_spoofed"] == before


@pytest.mark.parametrize("family", FAMILIES)
def test_decap_restores_the_frame_exactly(clean, family):
    dp = clean
    me, peer, _, _ = FAMILIES[family]
    learn(dp, me, peer)
    inner = pkt(peer, me, 5001, 40000, payload=b"back" * 50)
    rc, out = run(dp, "from_nic", outer(REMOTE_HOST, LOCAL_HOST, VNI, inner), dp.ifindex["nic"])
    assert rc == TC_ACT_REDIRECT
    assert out == inner


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "case",
    [
        "wrong vni",
        "unknown outer source",
        "spoofed inner source",
        "unknown destination",
        "another MAC on the flow",
        "not established",
        "truncated",
        "not vxlan",
        "the other family's address of the flow",
    ],
)
def test_decap_leaves_everything_else_to_the_slow_path(clean, family, case):
    dp = clean
    me, peer, stranger, _ = FAMILIES[family]
    learn(dp, me, peer)
    inner = pkt(peer, me, 5001, 40000)
    packet = {
        "wrong vni": outer(REMOTE_HOST, LOCAL_HOST, OTHER_VNI, inner),
        "unknown outer source": outer(OTHER_HOST, LOCAL_HOST, VNI, inner),
        "spoofed inner source": outer(REMOTE_HOST, LOCAL_HOST, VNI, pkt(stranger, me, 5001, 40000)),
        "unknown destination": outer(REMOTE_HOST, LOCAL_HOST, VNI, pkt(peer, stranger, 5001, 40000)),
        "another MAC on the flow": outer(
            REMOTE_HOST, LOCAL_HOST, VNI, frame(peer, me, 5001, 40000, b"x", src_mac=MAC[peer], dst_mac=STRANGER_MAC)
        ),
        "not established": outer(REMOTE_HOST, LOCAL_HOST, VNI, pkt(peer, me, 5002, 40000)),
        "truncated": outer(REMOTE_HOST, LOCAL_HOST, VNI, inner)[:70],
        "not vxlan": outer(REMOTE_HOST, LOCAL_HOST, VNI, inner).replace(struct.pack("!H", 4789), b"\x12\x34", 1),
        # a flow learned over IPv4 is not one over IPv6, and the other way round
        "the other family's address of the flow": outer(
            REMOTE_HOST,
            LOCAL_HOST,
            VNI,
            pkt(PEER6, ME6, 5001, 40000) if family == "ipv4" else pkt(PEER, ME, 5001, 40000),
        ),
    }[case]
    assert run(dp, "from_nic", packet, dp.ifindex["nic"]) == (TC_ACT_OK, packet)


UNPARSED6 = {
    "hop-by-hop options": (0, bytes([17, 0, 1, 4, 0, 0, 0, 0]) + udp(40000, 5001, b"x")),
    "fragment header": (44, struct.pack("!BBHI", 17, 0, 1, 7) + udp(40000, 5001, b"x")),
    "no next header": (59, b""),
}


@pytest.mark.parametrize("case", UNPARSED6)
def test_ipv6_with_extension_headers_is_left_to_the_slow_path(clean, case):
    """The fast path reads no extension header (a fragment header is one): such packets, even of
    an established flow, take the slow path, both ways."""
    dp = clean
    learn(dp, ME6, PEER6)
    nexthdr, payload = UNPARSED6[case]
    packet, before = ipv6(MY_MAC, PEER_MAC, ME6, PEER6, nexthdr, payload), dp.stats()
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)
    inbound = outer(REMOTE_HOST, LOCAL_HOST, VNI, ipv6(PEER_MAC, MY_MAC, PEER6, ME6, nexthdr, payload))
    assert run(dp, "from_nic", inbound, dp.ifindex["nic"]) == (TC_ACT_OK, inbound)
    assert counted(dp, before) == {"miss_unparsed": 1}  # from_nic: not a VXLAN packet it could carry, uncounted


def test_ipv6_multicast_such_as_neighbour_discovery_has_no_peer(clean):
    dp = clean
    packet, before = v6(MY_LL, ndp(135, PEER6, [(1, MY_MAC)]), ICMPV6), dp.stats()
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)
    assert counted(dp, before) == {"miss_no_peer": 1}


def test_removed_remote_endpoint_drops_its_flows(clean):
    dp = clean
    learn(dp)
    assert len(dp._maps["flows"]) == 1
    dp.update_remote(VNI, {PEER: _peer(REMOTE_HOST)}, {PEER: _peer(OTHER_HOST)})  # moved
    assert len(dp._maps["flows"]) == 0
    assert dp._maps["remote_eps"][dp._maps["remote_eps"].Key(VNI, _addr(PEER))].host == _be32(OTHER_HOST)
    packet = frame(ME, PEER)
    assert run(dp, "from_container", packet, dp.ifindex["lxc"]) == (TC_ACT_OK, packet)
    dp.update_remote(VNI, {PEER: _peer(OTHER_HOST)}, {PEER: _peer(REMOTE_HOST)})


def test_a_full_pass_makes_the_remote_map_exactly_what_it_is_given(clean):
    dp = clean

    def entries() -> set[tuple[int, str, str]]:
        return {(e["vni"], e["ip"], e["host"]) for e in dp.cache()["remote"]}

    other = {STRANGER: (mac_for_ip(ipaddress.IPv4Address(STRANGER)), OTHER_HOST)}
    mine = {PEER: _peer(REMOTE_HOST), PEER6: _peer(REMOTE_HOST)}
    assert dp.set_remote_all({VNI: mine, OTHER_VNI: other}) == 1  # one scan, one added
    assert entries() == {(VNI, PEER, REMOTE_HOST), (VNI, PEER6, REMOTE_HOST), (OTHER_VNI, STRANGER, OTHER_HOST)}
    assert dp.set_remote_all({VNI: mine}) == 1  # a VNI not given keeps none
    assert entries() == {(VNI, PEER, REMOTE_HOST), (VNI, PEER6, REMOTE_HOST)}


def test_with_the_fast_path_disabled_only_the_guard_runs():
    devices = {"nic": "xmtboff0", "lxc": "xmhtestoff0", "nb": "xmhtestoff2"}
    on = testrun.Sandbox(f"/sys/fs/bpf/xmasq/test-off-{os.getpid()}", devices)
    neighbour = "10.9.0.4"  # a container on this host
    try:
        assert on.load(), on.reason
        assert "xmasq_" in _filters("xmtboff0")
        off = Datapath(on.pin_dir, "xmtboff0", enabled=False, sizes=testrun.SIZES)
        assert off.load() and off.reason == "disabled by configuration (anti-spoofing only)"
        assert "xmasq_" not in _filters("xmtboff0")  # the NIC hooks of the earlier run are gone
        off.add_local("xmhtestoff0", VNI, [ME], mac_for_ip(ipaddress.IPv4Address(ME)))
        off.add_local("xmhtestoff2", VNI, [neighbour], mac_for_ip(ipaddress.IPv4Address(neighbour)))
        off.update_remote(VNI, {}, {PEER: _peer(REMOTE_HOST)})
        assert off.cache()["remote"] == []  # nothing to encapsulate to
        lxc = on.ifindex["lxc"]
        assert "xmasq_from_container" in _filters("xmhtestoff0")
        run(off, "to_container", frame(PEER, ME, 5001, 40000), lxc)
        run(off, "to_container", frame(neighbour, ME, 5001, 40000), lxc)
        assert off.cache()["flows"] == []  # nothing learned, across hosts or on this one
        for packet in (frame(ME, PEER), frame(ME, neighbour, 40000, 5001)):
            assert run(off, "from_container", packet, lxc) == (TC_ACT_OK, packet)
        assert run(off, "from_container", frame(STRANGER, PEER), lxc)[0] == TC_ACT_SHOT
        assert off.stats()["drop_spoofed"] == 1
    finally:
        on.close()


def _filters(dev: str) -> str:
    return "".join(
        subprocess.run(["tc", "filter", "show", "dev", dev, direction], capture_output=True, text=True).stdout
        for direction in ("ingress", "egress")
    )


def test_the_cache_shows_ipv6_entries_readably(clean):
    dp = clean
    learn(dp, ME6, PEER6)
    cache = dp.cache()
    assert {(e["ip"], e["ifindex"]) for e in cache["local"]} >= {(ME, dp.ifindex["lxc"]), (ME6, dp.ifindex["lxc"])}
    assert (VNI, PEER6, REMOTE_HOST) in {(e["vni"], e["ip"], e["host"]) for e in cache["remote"]}
    assert [(f["local"], f["remote"]) for f in cache["flows"]] == [("[fd00:9::2]:40000", "[fd00:9::3]:5001")]


def test_a_removed_endpoint_takes_both_addresses_and_their_flows(clean):
    dp = clean
    for me, neighbour in ((ME, NEIGHBOUR), (ME6, NEIGHBOUR6)):  # same-host flows of both versions
        run(dp, "to_container", pkt(me, neighbour), dp.ifindex["nb"])
        run(dp, "to_container", pkt(neighbour, me, 5001, 40000), dp.ifindex["lxc"])
    assert len(dp._maps["flows"]) == 4
    dp.remove_local(VNI, NEIGHBOUR)
    try:
        assert {e["ip"] for e in dp.cache()["local"]} == {ME, ME6}
        assert len(dp._maps["flows"]) == 0
    finally:
        dp.add_local("xmtblxc2", VNI, [NEIGHBOUR, NEIGHBOUR6], mac_for_ip(ipaddress.IPv4Address(NEIGHBOUR)))


# An encrypted network: its local endpoint on a veth of its own, its remote one marked encrypted.
ENC_VNI, ENC_ME, ENC_PEER = 4545, "10.9.1.2", "10.9.1.3"
MAC |= {ENC_ME: mac_bytes(ENC_ME), ENC_PEER: mac_bytes(ENC_PEER)}
TUN_INDEX = 999  # where a tunnel learned on the WireGuard device sends (to_tun runs on real traffic only:
# BPF_PROG_TEST_RUN gives a tc program an Ethernet frame, never an L3 device's packet)


@pytest.fixture
def encrypted(clean):
    peer = {ENC_PEER: (mac_for_ip(ipaddress.IPv4Address(ENC_PEER)), REMOTE_HOST)}
    try:
        clean.add_local("xmtblxc4", ENC_VNI, [ENC_ME], mac_for_ip(ipaddress.IPv4Address(ENC_ME)))
        clean.update_remote(ENC_VNI, {}, peer, encrypted=True)
        yield clean, clean.ifindex["enc"]
    finally:
        clean.update_remote(ENC_VNI, peer, {})
        clean.remove_local(ENC_VNI, ENC_ME)


def _tunnel(dp: Datapath, encrypted: bool) -> bytes:
    """A tunnel to REMOTE_HOST for ENC_VNI as to_tun (encrypted) or to_nic would learn it, and the
    flow ENC_ME -> ENC_PEER established as the slow path would leave it."""
    inner = pkt(ENC_ME, ENC_PEER)
    port = 4790 if encrypted else 4789
    hdr = outer(LOCAL_HOST, REMOTE_HOST, ENC_VNI, inner, port=port)
    tunnels, flows = dp._maps["tunnels"], dp._maps["flows"]
    leaf = tunnels.Leaf()
    ctypes.memmove(leaf.hdr, hdr[:50], 50)
    leaf.encrypted, leaf.ifindex = int(encrypted), TUN_INDEX if encrypted else dp.ifindex["nic"]
    tunnels[tunnels.Key(_be32(REMOTE_HOST), ENC_VNI)] = leaf
    key = flows.Key(ENC_VNI, _addr(ENC_ME), _addr(ENC_PEER), socket.htons(40000), socket.htons(5001), 17)
    leaf = flows.Leaf(seen_out=1, seen_in=1, sport=socket.htons(SPORT), host=_be32(REMOTE_HOST), encrypted=1)
    leaf.local_ifindex = dp.ifindex["enc"]
    ctypes.memmove(leaf.local_mac, MAC[ENC_ME], 6)
    flows[key] = leaf
    return hdr[:50]


def test_plaintext_vxlan_for_an_encrypted_endpoint_is_dropped_on_the_nic(encrypted):
    dp, _ = encrypted
    before = dp.stats()
    slow = outer(REMOTE_HOST, LOCAL_HOST, ENC_VNI, pkt(ENC_PEER, ENC_ME))
    assert run(dp, "from_nic", slow, dp.ifindex["nic"])[0] == TC_ACT_SHOT
    assert counted(dp, before) == {"drop_plaintext": 1}


def test_an_encrypted_network_is_not_learned_on_the_nic(encrypted):
    dp, _ = encrypted
    run(dp, "to_nic", outer(LOCAL_HOST, REMOTE_HOST, ENC_VNI, pkt(ENC_ME, ENC_PEER)), dp.ifindex["nic"])
    assert len(dp._maps["tunnels"]) == 0


def test_an_encrypted_endpoint_is_encapsulated_only_into_the_tunnel(encrypted):
    dp, lxc = encrypted
    packet = pkt(ENC_ME, ENC_PEER, payload=b"wg" * 100)
    _tunnel(dp, encrypted=False)  # a NIC's tunnel (which the NIC hook would never learn for it)
    before = dp.stats()
    assert run(dp, "from_container", packet, lxc) == (TC_ACT_OK, packet)
    assert counted(dp, before) == {"miss_no_tunnel": 1}
    template = _tunnel(dp, encrypted=True)
    rc, out = run(dp, "from_container", packet, lxc)
    assert rc == TC_ACT_REDIRECT and out[26:34] == template[26:34]  # the learned addresses
    assert struct.unpack("!H", out[36:38])[0] == 4790 and out[42:50] == template[42:50]  # encrypted port, its VNI
    assert out[50:] == packet  # the container's frame, untouched, is the inner frame
