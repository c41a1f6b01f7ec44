"""Encrypted networks (`--opt encrypted`) across testbed hosts. This kernel has no WireGuard, so
every test runs wireguard-go (the driver's code path is the kernel's but for making the device).

What a user checks: a capture on the underlay between two hosts shows only WireGuard's UDP, never
what the containers sent (the same capture of a plain network shows it: the capture works);
plaintext VXLAN injected for the network's VNI reaches no container; the tunnel's process killed
under traffic leaks nothing and the driver brings it back; a key rotation loses no connection;
nothing of the tunnel is left once the last encrypted network is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lab.packets import frame, vxlan
from tests.conftest import report
from tests.e2e.cluster import (
    GRACE,
    TTL,
    WG_PORT,
    arrived,
    between,
    capture,
    cut_off,
    iperf_silence,
    only_wireguard,
    until,
)
from xmasq_driver.control.layout import PREFIX
from xmasq_driver.dataplane.firewall import ENC_IN, ENC_OUT
from xmasq_driver.dataplane.overlay import ENCRYPTED_VXLAN_PORT, VXLAN_PORT
from xmasq_driver.dataplane.tunnel import ROUTE_TABLE
from xmasq_driver.ops import client as plugin

MARK = "xmasq-secret-7f3a9c"  # what must never be seen on the underlay of an encrypted network
SERVE = "udpecho serve 5001 & nc -l -p 5000 > /tmp/got & sleep 3600"


def _send_marks(cl, client, ip: str, ip6: str = "") -> None:  # type: ignore[no-untyped-def]
    """The marker over TCP and UDP, pings of full size (busybox's ping pads with one byte only),
    and over IPv6 if given."""
    cl.sh(client, f"echo {MARK} | nc -w 3 {ip} 5000")
    cl.sh(client, f"udpecho payload {ip} 5001 {MARK.encode().hex()} 5")
    cl.sh(client, f"ping -c 2 -W 2 -s 1300 {ip}")
    if ip6:
        cl.sh(client, f"udpecho payload {ip6} 5001 {MARK.encode().hex()} 5")
        cl.sh(client, f"ping -6 -c 2 -W 2 {ip6}")


def _wg(tb, host: str, *args: str) -> str:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        ["ip", "netns", "exec", tb.netns(host), "wg", *args], capture_output=True, text=True, timeout=10
    )
    return proc.stdout


def _status(cl, host: str) -> dict:  # type: ignore[type-arg]
    return plugin.call(cl.sock(host), "/Xmasq.Status")[1]


def _drops(cl, host: str) -> dict[str, int]:
    return plugin.call(cl.sock(host), "/Xmasq.Stats")[1]["encryption"]


def _no_tunnel_left(tb) -> None:  # type: ignore[no-untyped-def]
    """No device, process, routing rule or firewall chain of the tunnel on any host."""
    for h in tb.hosts:
        ns = ["ip", "netns", "exec", tb.netns(h)]
        links = subprocess.run([*ns, "ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f"xmwg-{h}" not in links, (h, links)
        rules = subprocess.run([*ns, "ip", "rule"], capture_output=True, text=True).stdout
        assert f"{ROUTE_TABLE}:" not in rules, (h, rules)
        chains = subprocess.run([*ns, "iptables", "-S"], capture_output=True, text=True).stdout
        assert ENC_IN not in chains and ENC_OUT not in chains, (h, chains)
    until(lambda: subprocess.run(["pgrep", "-f", "wireguard-go xmwg-h"], capture_output=True).returncode != 0, 5)


def test_an_encrypted_network_shows_nothing_in_plaintext_on_the_underlay(cl, tb):
    enc = cl.network("enc", "10.236.0.0/24", {"encrypted": ""}, subnet6="fd00:236::/64", space="enc")
    plain = cl.network("plain", "10.237.0.0/24")
    a, b = cl.run("h1", "enc-a", enc), cl.run("h2", "enc-b", enc, SERVE)
    pa, pb = cl.run("h1", "plain-a", plain), cl.run("h2", "plain-b", plain, SERVE)
    ip, ip6 = cl.ip(b, enc), cl.ip6(b, enc)
    status = _status(cl, "h1")
    assert status["encryption"]["kind"] == "userspace" and status["encryption"]["up"], status["encryption"]
    # Underlay 1500 less VXLAN (50) and WireGuard over IPv4 (60): nothing fragments.
    assert cl.sh(a, "cat /sys/class/net/eth0/mtu")[1].strip() == "1390"
    assert cl.sh(pa, "cat /sys/class/net/eth0/mtu")[1].strip() == "1450"
    until(lambda: cl.sh(a, f"udpecho wait {ip} 5001 1", check=False)[0] == 0, 15)
    with capture(tb, "h2", "eth0", between(tb, "h1", "h2")) as enc_seen:
        _send_marks(cl, a, ip, ip6)
    assert cl.sh(b, "cat /tmp/got")[1].strip() == MARK  # it arrived, decrypted
    assert MARK.encode() not in enc_seen["raw"]
    assert enc_seen["text"] and only_wireguard(enc_seen["text"]) == [], only_wireguard(enc_seen["text"])[:5]
    # The control: the same capture shows a plain network's traffic.
    pip = cl.ip(pb, plain)
    until(lambda: cl.sh(pa, f"udpecho wait {pip} 5001 1", check=False)[0] == 0, 15)
    with capture(tb, "h2", "eth0", between(tb, "h1", "h2")) as plain_seen:
        _send_marks(cl, pa, pip)
    assert MARK.encode() in plain_seen["raw"]
    assert f".{VXLAN_PORT}: " in plain_seen["text"].decode() or "VXLAN" in plain_seen["text"].decode()
    report(
        f"encrypted network: {len(enc_seen['text'].splitlines())} packets h1<->h2 captured, all WireGuard UDP"
        f" {WG_PORT}, marker absent (TCP, UDP, ICMP, ICMPv6); on a plain network the marker was seen"
    )
    # Nothing of the tunnel is left once its last network is gone.
    cl.cleanup()
    _no_tunnel_left(tb)


def test_plaintext_vxlan_for_an_encrypted_vni_is_dropped(cl, tb):
    """Injected from a cluster host's own address (what VXLAN source filtering lets in), to both
    ports: from h3, which has no encrypted network, so its stack sends them in plaintext (from h1,
    whose tunnel is up, the kernel routes them into the tunnel: encrypted, from a trusted host)."""
    enc = cl.network("inj", "10.238.0.0/24", {"xmasq.encrypted": "true"}, hosts=["h1", "h2"])
    plain = cl.network("injp", "10.239.0.0/24")
    victims = {net: cl.run("h2", f"victim-{net}", net, SERVE) for net in (enc, plain)}
    cl.run("h1", "inj-keep", enc)  # h1 has the encrypted network (its tunnel is up)
    before = _drops(cl, "h2")

    def inject(net: str, port: int) -> None:
        dst = cl.ip(victims[net], net)
        packet = vxlan(
            cl.vni(net), frame("10.238.0.99" if net == enc else "10.239.0.99", dst, 40000, 5001, MARK.encode())
        )
        code = (
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for _ in range(20): s.sendto(bytes.fromhex(sys.argv[1]), ({tb.host_ip('h2')!r}, {port}))"
        )
        tb.in_host("h3", [sys.executable, "-c", code, packet.hex()], check=True)

    assert arrived(cl, victims[enc], lambda: inject(enc, ENCRYPTED_VXLAN_PORT)) == 0
    assert arrived(cl, victims[enc], lambda: inject(enc, VXLAN_PORT)) == 0
    assert arrived(cl, victims[plain], lambda: inject(plain, VXLAN_PORT)) == 20  # the control: well-formed
    after = _drops(cl, "h2")
    assert after["plaintext_in_dropped"] - before.get("plaintext_in_dropped", 0) >= 20, (before, after)
    report("plaintext VXLAN injected for an encrypted VNI (ports 4790 and 4789): 0 of 40 delivered, 20 counted")


def test_the_tunnel_process_killed_under_traffic_leaks_nothing_and_comes_back(cl, tb):
    enc = cl.network("kill", "10.240.0.0/24", {"encrypted": ""})
    a, b = cl.run("h1", "kill-a", enc), cl.run("h2", "kill-b", enc, SERVE)
    ip = cl.ip(b, enc)
    until(lambda: cl.sh(a, f"udpecho wait {ip} 5001 1", check=False)[0] == 0, 15)
    before = _drops(cl, "h1")
    with capture(tb, "h2", "eth0", between(tb, "h1", "h2")) as seen:
        killed = time.monotonic()
        subprocess.run(["pkill", "-9", "-f", "wireguard-go xmwg-h1"], check=True)
        cl.sh(a, f"udpecho payload {ip} 5001 {MARK.encode().hex()} 50")  # into the outage
        cl.sh(a, f"udpecho wait {ip} 5001 15")  # back once the driver made the device again
        back = time.monotonic() - killed
    assert MARK.encode() not in seen["raw"]
    assert only_wireguard(seen["text"]) == [], only_wireguard(seen["text"])[:5]
    assert _status(cl, "h1")["encryption"]["restarts"] == 1
    dropped = _drops(cl, "h1")["encrypted_unroutable"] - before["encrypted_unroutable"]
    assert dropped > 0, (before, _drops(cl, "h1"))
    report(
        f"wireguard-go SIGKILLed under traffic: nothing in plaintext, {dropped} packets dropped,"
        f" back after {back:.2f} s"
    )


def test_a_key_rotation_under_traffic_loses_no_connection(cl, tb):
    enc = cl.network("rot", "10.241.0.0/24", {"encrypted": ""})
    a, b = cl.run("h1", "rot-a", enc), cl.run("h2", "rot-b", enc, "iperf3 -s")
    ip = cl.ip(b, enc)
    until(lambda: cl.sh(a, f"nc -w 1 {ip} 5201 </dev/null", check=False)[0] == 0, 15)
    old = _status(cl, "h1")["encryption"]["public_key"]
    rotated: dict[str, str] = {}
    gap, intervals = iperf_silence(a, ip, lambda: rotated.update(plugin.call(cl.sock("h1"), "/Xmasq.RotateKey")[1]))
    new = rotated["public_key"]
    assert new != old
    until(
        lambda: (
            new in _wg(tb, "h2", "show", "xmwg-h2", "peers") and old not in _wg(tb, "h2", "show", "xmwg-h2", "peers")
        ),
        5,
    )
    key_file = os.path.join(tb.data_dir, "h1", "state", "wireguard.key")
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    with open(key_file) as f, open(tb.path("h1", "xmasq.log")) as log:
        private, logged = f.read().strip(), log.read()
    assert private not in json.dumps(cl.kv.get_prefix(PREFIX)) and private not in logged
    report(f"WireGuard key rotated under iperf3: the connection survived, longest gap {gap:.2f} s")
    assert gap < 2.0, intervals


def test_a_driver_crash_keeps_the_tunnel_and_its_restart_takes_it_over(cl, tb):
    """SIGKILL of h1's driver under traffic: wireguard-go and the kernel's routing live on (as the
    pinned maps do), nothing is sent in plaintext, and the restarted driver adopts the device."""
    enc = cl.network("crash", "10.242.0.0/24", {"encrypted": ""})
    a, b = cl.run("h1", "crash-a", enc), cl.run("h2", "crash-b", enc, SERVE)
    ip = cl.ip(b, enc)
    until(lambda: cl.sh(a, f"udpecho wait {ip} 5001 1", check=False)[0] == 0, 15)
    key = _status(cl, "h1")["encryption"]["public_key"]
    with capture(tb, "h2", "eth0", between(tb, "h1", "h2")) as seen:
        tb.stop_driver("h1", kill=True)
        try:
            down = cl.sh(a, f"udpecho send {ip} 5001 50")[1].strip()  # with no driver on h1
            cl.sh(a, f"udpecho payload {ip} 5001 {MARK.encode().hex()} 5")
        finally:
            tb.start_driver("h1")
        up = cl.sh(a, f"udpecho wait {ip} 5001 10 && udpecho send {ip} 5001 50")[1].strip()
    assert down == "replies=50/50" and up.endswith("replies=50/50"), (down, up)
    assert MARK.encode() not in seen["raw"] and only_wireguard(seen["text"]) == []
    encryption = _status(cl, "h1")["encryption"]
    assert encryption["up"] and encryption["restarts"] == 0 and encryption["public_key"] == key, encryption
    report(
        "h1's driver SIGKILLed under encrypted traffic: 50/50 answered without it, nothing in plaintext; "
        "the restarted driver took the device over (same key, no restart of wireguard-go)"
    )


def test_a_host_gone_for_good_leaves_no_key_behind(cl, tb):
    """Its WireGuard peer goes from the others' devices with its endpoints (lease + grace), and comes
    back when it does."""
    enc = cl.network("gone", "10.243.0.0/24", {"encrypted": ""})
    a, far = cl.run("h1", "gone-a", enc), cl.run("h3", "gone-far", enc, SERVE)
    ip = cl.ip(far, enc)
    until(lambda: cl.sh(a, f"udpecho wait {ip} 5001 1", check=False)[0] == 0, 15)
    key = _status(cl, "h3")["encryption"]["public_key"]
    assert key in _wg(tb, "h1", "show", "xmwg-h1", "peers")
    tb.stop_driver("h3", kill=True)
    try:
        with cut_off(tb, "h3"):  # gone: no driver, no answer on the underlay
            waited = until(lambda: key not in _wg(tb, "h1", "show", "xmwg-h1", "peers"), TTL + GRACE + 10)
    finally:
        tb.start_driver("h3")
    until(lambda: key in _wg(tb, "h1", "show", "xmwg-h1", "peers"), 15)
    cl.sh(a, f"udpecho wait {ip} 5001 10")
    report(
        f"h3 gone (driver SIGKILLed, underlay cut): its WireGuard peer gone from h1 after {waited:.1f} s"
        f" (ttl {TTL} + grace {GRACE})"
    )


def test_the_fast_path_hands_encrypted_flows_to_the_tunnel(cl, tb):
    """Once the slow path carried a flow both ways, h1's veth program encapsulates it and hands it to
    the WireGuard device, and the device's program hands what it decrypted straight to the container:
    counted as the fast path's, and still nothing but WireGuard on the wire."""
    enc = cl.network("fast", "10.244.0.0/24", {"encrypted": ""})
    a, b = cl.run("h1", "fast-a", enc), cl.run("h2", "fast-b", enc, f"{SERVE} & iperf3 -s")
    ip = cl.ip(b, enc)
    until(lambda: cl.sh(a, f"udpecho wait {ip} 5001 1", check=False)[0] == 0, 15)
    cl.sh(a, f"udpecho send {ip} 5001 20")  # established both ways
    before = cl.stats("h1")
    with capture(tb, "h2", "eth0", between(tb, "h1", "h2")) as seen:
        assert cl.sh(a, f"udpecho send {ip} 5001 200")[1].strip() == "replies=200/200"
        tcp = json.loads(cl.sh(a, f"iperf3 -c {ip} -t 2 -J")[1])["end"]["sum_received"]["bits_per_second"] / 1e9
    after = cl.stats("h1")
    fast, back = (after[k] - before[k] for k in ("encap_pkts", "decap_pkts"))
    assert fast >= 190 and back >= 190, (before, after)  # out into the tunnel, and the replies from it
    assert only_wireguard(seen["text"]) == [], only_wireguard(seen["text"])[:5]
    device = int(
        subprocess.run(
            ["ip", "netns", "exec", tb.netns("h1"), "cat", "/sys/class/net/xmwg-h1/ifindex"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    tunnels = [t for t in cl.cache("h1")["tunnels"] if t["vni"] == cl.vni(enc)]
    assert tunnels and all(t["encrypted"] and t["ifindex"] == device for t in tunnels), tunnels
    report(
        f"encrypted fast path: {fast} packets h1->h2 encapsulated into the tunnel by eBPF, {back} taken from it"
        f" straight to the container; TCP {tcp:.2f} Gbit/s, only WireGuard on the wire"
    )
