"""Frames built byte by byte: for the eBPF unit tests, the anti-spoofing tests and the programs benchmark."""

from __future__ import annotations

import ipaddress
import struct

from xmasq_driver.dataplane.overlay import mac_for_ip

VXLAN_PORT = 4789


def csum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(ip: str) -> bytes:
    """The MAC the driver gives the container with this address."""
    return bytes.fromhex(mac_for_ip(ipaddress.IPv4Address(ip)).replace(":", ""))


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        ident,
        0x4000,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def frame(
    src: str,
    dst: str,
    sport: int = 40000,
    dport: int = 5001,
    payload: bytes = b"xmasq" * 20,
    src_mac: bytes | None = None,
    dst_mac: bytes | None = None,
) -> bytes:
    """What a container sends: Ethernet, IPv4 or IPv6 (by the addresses), UDP. The MACs are the
    addresses' unless given (IPv6 addresses have none: they must be given)."""
    datagram = udp(sport, dport, payload)
    if ipaddress.ip_address(src).version == 6:
        assert src_mac and dst_mac, "an IPv6 frame needs its MACs"
        return ipv6(src_mac, dst_mac, src, dst, 17, datagram)
    eth = (dst_mac or mac_bytes(dst)) + (src_mac or mac_bytes(src)) + b"\x08\x00"
    return eth + ipv4(src, dst, 17, datagram)


def arp(sender_mac: bytes, sender_ip: str, target_ip: str, frame_src: bytes | None = None) -> bytes:
    """A broadcast ARP request (a gratuitous one when target_ip is sender_ip)."""
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + sender_mac + ipaddress.IPv4Address(sender_ip).packed
    body += b"\0" * 6 + ipaddress.IPv4Address(target_ip).packed
    return b"\xff" * 6 + (frame_src or sender_mac) + b"\x08\x06" + body


def link_local(mac: bytes) -> str:
    """fe80::/64 with the modified EUI-64 of `mac`: the kernel's link-local address for it."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui))


def ipv6(src_mac: bytes, dst_mac: bytes, src: str, dst: str, nexthdr: int, payload: bytes) -> bytes:
    """An Ethernet frame with an IPv6 packet (checksums are not needed by what reads them here)."""
    hdr = struct.pack("!IHBB", 6 << 28, len(payload), nexthdr, 64)
    hdr += ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return dst_mac + src_mac + b"\x86\xdd" + hdr + payload


def ndp(icmp_type: int, target: str, options: list[tuple[int, bytes]]) -> bytes:
    """An NDP message (135 solicitation, 136 advertisement, ...): ICMPv6 header, reserved word,
    target address, then each (type, value) option padded to 8-byte units."""
    body = struct.pack("!BBHI", icmp_type, 0, 0, 0) + ipaddress.IPv6Address(target).packed
    for kind, value in options:
        units = (len(value) + 2 + 7) // 8
        body += struct.pack("!BB", kind, units) + value.ljust(units * 8 - 2, b"\0")
    return body


def vxlan(vni: int, inner: bytes) -> bytes:
    """A VXLAN header and the inner frame: the payload of a UDP datagram to VXLAN_PORT."""
    return struct.pack("!II", 0x08000000, vni << 8) + inner


NIC_MAC, GW_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")  # a test host's NIC and its next hop
SPORT = 0xBEEF  # the outer UDP source port of test VXLAN packets


def outer(src_host: str, dst_host: str, vni: int, inner: bytes, sport: int = SPORT, port: int = VXLAN_PORT) -> bytes:
    """inner in VXLAN between two test hosts, as a NIC carries it."""
    return GW_MAC + NIC_MAC + b"\x08\x00" + ipv4(src_host, dst_host, 17, udp(sport, port, vxlan(vni, inner)), ident=7)
