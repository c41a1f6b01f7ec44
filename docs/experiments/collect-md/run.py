"""Cached outer headers written in place against a collect-metadata VXLAN device, nothing else
different (issue 34, item 1). A throwaway experiment, not part of the driver:

    sudo PYTHONPATH=. .venv/bin/python docs/experiments/collect-md/run.py [--rounds 3] [--seconds 3]

Two "hosts" (network namespaces joined by a veth underlay that carries nothing else), a
"container" namespace behind each on a veth, and one tc program on each container veth's host end:
  inplace  the driver's push_outer (bpf/lib/encap.h: bpf_skb_adjust_room, the outer headers
           written in place from a map), bpf_redirect to the underlay
  md       bpf_skb_set_tunnel_key, bpf_redirect to an `external` vxlan device (Cilium's tunnel
           mode): the kernel's vxlan_xmit, routing, iptunnel_xmit and neighbour layers build them
Both receive through the same decap program on the underlay's ingress (the driver's
parse_vxlan_pkt and pop_outer, then bpf_redirect_peer), so only the sending side differs. No
maps of endpoints or flows: this measures the encapsulation alone. The host namespaces have no
netfilter rules, which a real host (Docker's iptables) has: the md variant's figures are its best
case. Rounds interleave the two.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import time

from bcc import BPF
from pyroute2 import IPRoute

from bench.run import parse_sockperf  # run from the project root (PYTHONPATH=.)

HOSTS = {1: "xmcm-h1", 2: "xmcm-h2"}
CONTAINERS = {1: "xmcm-c1", 2: "xmcm-c2"}
UNDERLAY = {1: "10.200.0.1", 2: "10.200.0.2"}  # only between the two namespaces
INNER = {1: "10.201.0.1", 2: "10.201.0.2"}
VNI, CLONE_NEWNET = 42, 0x40000000
BPF_SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bpf")
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# The in-place variant and the decap are the driver's own push_outer and pop_outer (bpf/lib/encap.h).
PROGRAMS = r"""
#include "lib/encap.h"

BPF_ARRAY(tunnels, struct tunnel, 1);

int inplace(struct __sk_buff *skb)
{
    __u32 zero = 0;
    struct tunnel *t = tunnels.lookup(&zero);
    if (!t || push_outer(skb, t, bpf_htons(0xBEEF)))
        return TC_ACT_SHOT;
    return bpf_redirect(NIC, 0);
}

int md(struct __sk_buff *skb)
{
    struct bpf_tunnel_key key = {};
    key.remote_ipv4 = REMOTE; /* host byte order */
    key.tunnel_id = VNI;
    key.tunnel_ttl = 64;
    if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
        return TC_ACT_SHOT;
    return bpf_redirect(VXMD, 0);
}

int decap(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    if (parse_vxlan_pkt(data, data_end, &pkt) || pop_outer(skb, pkt.inner_eth))
        return TC_ACT_OK;
    return bpf_redirect_peer(LXC, 0);
}
"""


def sh(*argv: str, ns: str = "") -> str:
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def netns(name: str):
    """This thread in namespace `name` (so that netlink sockets opened here belong to it)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        _libc.setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


def ifindex(ns: str, dev: str) -> int:
    return int(sh("cat", f"/sys/class/net/{dev}/ifindex", ns=ns))


def mac(ns: str, dev: str) -> bytes:
    return bytes.fromhex(sh("cat", f"/sys/class/net/{dev}/address", ns=ns).strip().replace(":", ""))


def build() -> None:
    for i in (1, 2):
        sh("ip", "netns", "add", HOSTS[i])
        sh("ip", "netns", "add", CONTAINERS[i])
    sh("ip", "link", "add", "u1", "netns", HOSTS[1], "type", "veth", "peer", "name", "u2", "netns", HOSTS[2])
    for i in (1, 2):
        h, c = HOSTS[i], CONTAINERS[i]
        sh("ip", "link", "add", f"l{i}", "netns", h, "type", "veth", "peer", "name", "eth0", "netns", c)
        sh("ip", "addr", "add", f"{UNDERLAY[i]}/24", "dev", f"u{i}", ns=h)
        sh("ip", "addr", "add", f"{INNER[i]}/24", "dev", "eth0", ns=c)
        sh("ip", "link", "set", "eth0", "mtu", "1450", ns=c)
        sh("ip", "link", "add", "vxmd", "type", "vxlan", "external", "dstport", "4789", ns=h)
        for ns, devs in ((h, ("lo", f"u{i}", f"l{i}", "vxmd")), (c, ("lo", "eth0"))):
            for d in devs:
                sh("ip", "link", "set", d, "up", ns=ns)
    for i in (1, 2):  # each end knows the other's MACs: no ARP needed on either layer
        peer_u = ":".join(f"{b:02x}" for b in mac(HOSTS[3 - i], f"u{3 - i}"))
        sh("ip", "neigh", "replace", UNDERLAY[3 - i], "lladdr", peer_u, "dev", f"u{i}", ns=HOSTS[i])
        peer_c = ":".join(f"{b:02x}" for b in mac(CONTAINERS[3 - i], "eth0"))
        sh("ip", "neigh", "replace", INNER[3 - i], "lladdr", peer_c, "dev", "eth0", ns=CONTAINERS[i])


def load(i: int) -> dict[str, object]:
    h = HOSTS[i]
    remote = int.from_bytes(bytes(int(x) for x in UNDERLAY[3 - i].split(".")), "big")
    cflags = [
        f"-DNIC={ifindex(h, f'u{i}')}",
        f"-DVXMD={ifindex(h, 'vxmd')}",
        f"-DLXC={ifindex(h, f'l{i}')}",
        f"-DREMOTE={remote}u",
        f"-DVNI={VNI}",
        f"-I{BPF_SRC}",
        "-DOUTER_LEN=50",
        "-DVXLAN_PORT=4789",
        "-DENCRYPTED_VXLAN_PORT=4790",  # unused here; lib/encap.h names it
    ]
    obj = BPF(text=PROGRAMS, cflags=cflags)
    tunnel = obj["tunnels"].Leaf()
    outer = (
        mac(HOSTS[3 - i], f"u{3 - i}")
        + mac(h, f"u{i}")
        + b"\x08\x00"
        + bytes([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0])
        + bytes(int(x) for x in UNDERLAY[i].split("."))
        + bytes(int(x) for x in UNDERLAY[3 - i].split("."))
        + (0xBEEF).to_bytes(2, "big")
        + (4789).to_bytes(2, "big")
        + b"\0\0\0\0"
        + bytes([0x08, 0, 0, 0])
        + (VNI << 8).to_bytes(4, "big")
    )
    ctypes.memmove(tunnel.hdr, outer, len(outer))
    tunnel.ifindex = ifindex(h, f"u{i}")
    obj["tunnels"][ctypes.c_int(0)] = tunnel
    return {"obj": obj, **{p: obj.load_func(p, BPF.SCHED_CLS) for p in ("inplace", "md", "decap")}}


def attach(ns: str, dev: str, fn) -> None:
    with netns(ns), IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        with contextlib.suppress(Exception):
            ipr.tc("add", "clsact", idx)
        ipr.tc(
            "replace-filter",
            "bpf",
            idx,
            ":1",
            fd=fn.fd,
            name=fn.name,
            parent="ffff:fff2",
            classid=1,
            direct_action=True,
        )


def measure(seconds: int, pinned: bool) -> dict[str, float]:
    pin = ["taskset", "-c", "1"] if pinned else []
    c1, c2 = CONTAINERS[1], CONTAINERS[2]
    srv = [
        subprocess.Popen(["ip", "netns", "exec", c2, *pin, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL),
        subprocess.Popen(["ip", "netns", "exec", c2, *pin, "sockperf", "server"], stdout=subprocess.DEVNULL),
    ]
    time.sleep(0.5)
    try:
        tcp = json.loads(sh(*pin, "iperf3", "-J", "-c", INNER[2], "-t", str(seconds), ns=c1))
        pp = sh(*pin, "sockperf", "ping-pong", "-i", INNER[2], "-t", str(seconds), ns=c1)
    finally:
        for p in srv:
            p.kill()
            p.wait()
    return {
        "tcp_gbps": tcp["end"]["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": tcp["end"]["sum_sent"]["retransmits"],
        "udp_rr_per_s": parse_sockperf(pp)["rate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    try:
        build()
        progs = {i: load(i) for i in (1, 2)}
        for i in (1, 2):
            attach(HOSTS[i], f"u{i}", progs[i]["decap"])
        for r in range(args.rounds):
            for variant in ("inplace", "md") if r % 2 == 0 else ("md", "inplace"):
                for i in (1, 2):
                    attach(HOSTS[i], f"l{i}", progs[i][variant])
                for pinned in (False, True):
                    key = f"{variant} {'pinned' if pinned else 'unpinned'}"
                    results.setdefault(key, []).append(measure(args.seconds, pinned))
                    print(key, results[key][-1], flush=True)
    finally:
        for ns in (*HOSTS.values(), *CONTAINERS.values()):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    print("\n| variant | tcp_gbps | retransmits | udp_rr_per_s |\n|---|---|---|---|")
    for key, rounds in results.items():
        cells = []
        for m in ("tcp_gbps", "retransmits", "udp_rr_per_s"):
            v = [x[m] for x in rounds]
            cells.append(f"{statistics.median(v):.4g} ({min(v):.4g}-{max(v):.4g})")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
