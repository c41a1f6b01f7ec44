"""Cached outer headers written in place against a collect-metadata VXLAN device, nothing else
different (issue 34, item 1), and the floors under both: the same container packets with no
encapsulation, and the host network itself. A throwaway experiment, not part of the driver:

    sudo PYTHONPATH=. .venv/bin/python docs/experiments/collect-md/run.py [--rounds 3] [--seconds 3] \
        [--variants inplace,md,...]

Two "hosts" (network namespaces joined by a veth underlay that carries nothing else), a
"container" namespace behind each on a veth, and one tc program on each container veth's host end:
  inplace  the driver's push_outer (bpf/lib/encap.h: bpf_skb_adjust_room, the outer headers
           written in place from a map), bpf_redirect to the underlay
  md       bpf_skb_set_tunnel_key, bpf_redirect to an `external` vxlan device (Cilium's tunnel
           mode): the kernel's vxlan_xmit, routing, iptunnel_xmit and neighbour layers build them
  redirect the frame as it is, bpf_redirect to the underlay: no outer headers at all (what any
           eBPF fast path between containers on a veth costs: the floor under the two above)
  dns      redirect, with the netfilter rules that Docker puts in every container on a user-defined
           network (its embedded DNS server's NAT rules: they make conntrack see every packet of the
           container's namespace; any driver's containers have them, the host network has not)
  inplace-dns  inplace, with those rules in the containers
  host     no container and no program: the two host namespaces to each other (the host network)
  host-nat host, with the NAT rules dockerd puts in a host's namespace for its default bridge (so
           conntrack sees the host network's packets too, as on a Docker host: `make bench`'s host)
The container variants receive through one program on the underlay's ingress: VXLAN goes
through the driver's parse_vxlan_pkt and pop_outer, a plain frame for the container as it is, then
bpf_redirect_peer; so only the sending side differs. No maps of endpoints or flows: this measures
the carrying alone, without the driver's lookups, Docker's cgroups and seccomp or the host's netfilter
rules (which the md variant's packets would cross on a real host: its figures are its best case).
Rounds interleave the variants, in an order that alternates.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import subprocess
import time

from bcc import BPF
from pyroute2 import IPRoute

from bench.ebpf import cost, stats_enabled  # run from the project root (PYTHONPATH=.)
from bench.report import summary
from bench.run import parse_iperf, parse_sockperf

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

int redirect(struct __sk_buff *skb)
{
    return bpf_redirect(NIC, 0);
}

int decap(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    if (!parse_vxlan_pkt(data, data_end, &pkt))
        return pop_outer(skb, pkt.inner_eth) ? TC_ACT_OK : bpf_redirect_peer(LXC, 0);
    struct iphdr *ip = parse_ipv4(data, data_end); /* the redirect variant's plain frame */
    return ip && ip->daddr == MINE ? bpf_redirect_peer(LXC, 0) : TC_ACT_OK;
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
        f"-DMINE={int.from_bytes(bytes(int(x) for x in INNER[i].split('.')), 'little')}u",  # as __be32 reads it
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
    return {"obj": obj, **{p: obj.load_func(p, BPF.SCHED_CLS) for p in ("inplace", "md", "redirect", "decap")}}


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


def run(seconds: int, pinned: bool, host: bool, tool: str) -> str:
    """One client's output against its server: container 1 to container 2, or (host) host 1 to host 2;
    tool "tcp" (iperf3) or "udp_rr" (sockperf ping-pong)."""
    pin = ["taskset", "-c", "1"] if pinned else []
    (client, server), addr = (HOSTS.values(), UNDERLAY[2]) if host else (CONTAINERS.values(), INNER[2])
    serve, argv = {
        "tcp": (["iperf3", "-s", "-1"], ["iperf3", "-J", "-c", addr, "-t", str(seconds)]),
        "udp_rr": (["sockperf", "server"], ["sockperf", "ping-pong", "-i", addr, "-t", str(seconds)]),
    }[tool]
    srv = subprocess.Popen(["ip", "netns", "exec", server, *pin, *serve], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        return sh(*pin, *argv, ns=client)
    finally:
        srv.kill()
        srv.wait()


def measure(seconds: int, pinned: bool, host: bool) -> dict[str, float]:
    tcp = parse_iperf(run(seconds, pinned, host, "tcp"))
    return {
        "tcp_gbps": tcp["end"]["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": tcp["end"]["sum_sent"]["retransmits"],
        "udp_rr_per_s": parse_sockperf(run(seconds, pinned, host, "udp_rr"))["rate"],
    }


def nat(ns: str, rules: str | None) -> None:
    """Namespace ns with these NAT rules (iptables-restore input), or with no NAT table at all: not
    an emptied one, whose base chains alone would keep conntrack on."""
    if rules:
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=rules, text=True, check=True)
    else:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "nat"], capture_output=True)


def program_costs(seconds: int, pinned: bool, tool: str) -> dict[str, float]:
    """ns per run of the programs that ran during one more client run, the kernel's statistics on
    only for it (they read the clock twice a run; the other figures run without)."""
    with stats_enabled():
        took = cost(functools.partial(run, seconds, pinned, False, tool), COSTED)
    return {p: ns for p, (_, ns) in took.items()}


# Each variant: the program on the container veths (None: host to host, nothing of ours on the
# underlay), and whether the containers and the hosts have Docker's NAT rules.
VARIANTS = {
    "inplace": ("inplace", False, False),
    "md": ("md", False, False),
    "redirect": ("redirect", False, False),
    "dns": ("redirect", True, False),
    "inplace-dns": ("inplace", True, False),
    "host": (None, False, False),
    "host-nat": (None, False, True),
}
# What Docker's embedded DNS server puts in a container's namespace (libnetwork's resolver; ports
# of its own choosing), as iptables-restore input.
DOCKER_DNS = """*nat
:DOCKER_OUTPUT - [0:0]
:DOCKER_POSTROUTING - [0:0]
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:37043
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:59511
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p tcp -m tcp --sport 37043 -j SNAT --to-source :53
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p udp -m udp --sport 59511 -j SNAT --to-source :53
COMMIT
"""
# And what dockerd puts in the host's (its default bridge's, docker0 absent here).
DOCKER_HOST = """*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
"""
COSTED = ("inplace", "redirect", "decap")  # programs whose ns per run the kernel's statistics give
METRICS = ("tcp_gbps", "retransmits", "udp_rr_per_s")
RATIOS = ("tcp_gbps", "udp_rr_per_s")  # of each container variant against each host variant


def cell(rounds: list[dict[str, float]], metric: str) -> str:
    """Median (min-max) over the rounds."""
    median, low, high = summary(rounds, metric)
    return f"{median:.4g} ({low:.4g}-{high:.4g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: %(default)s")
    args = parser.parse_args()
    wanted = args.variants.split(",")
    if unknown := set(wanted) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    results: dict[str, list[dict[str, float]]] = {}
    costs: dict[str, list[dict[str, float]]] = {}
    try:
        build()
        progs = {i: load(i) for i in (1, 2)}
        for r in range(args.rounds):
            for variant in wanted if r % 2 == 0 else wanted[::-1]:
                program, container_nat, host_nat = VARIANTS[variant]
                for i in (1, 2):
                    if program is None:  # nothing of ours on the underlay either (if it was there)
                        detach = ["tc", "qdisc", "del", "dev", f"u{i}", "clsact"]
                        subprocess.run(["ip", "netns", "exec", HOSTS[i], *detach], capture_output=True)
                    else:
                        attach(HOSTS[i], f"u{i}", progs[i]["decap"])
                        attach(HOSTS[i], f"l{i}", progs[i][program])
                    nat(CONTAINERS[i], DOCKER_DNS if container_nat else None)
                    nat(HOSTS[i], DOCKER_HOST if host_nat else None)
                for pinned in (False, True):
                    key = f"{variant} {'pinned' if pinned else 'unpinned'}"
                    results.setdefault(key, []).append(measure(args.seconds, pinned, program is None))
                    print(key, results[key][-1], flush=True)
                    if variant in ("inplace", "redirect"):  # what its programs cost under this traffic
                        for tool in ("tcp", "udp_rr"):
                            costs.setdefault(f"{key} {tool}", []).append(program_costs(args.seconds, pinned, tool))
    finally:
        for ns in (*HOSTS.values(), *CONTAINERS.values()):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    print("\n| variant | " + " | ".join(METRICS) + " |\n|---|---|---|---|")
    for key, rounds in results.items():
        print(f"| {key} | " + " | ".join(cell(rounds, m) for m in METRICS) + " |")
    for base in (v for v in wanted if VARIANTS[v][0] is None):
        print(f"\nPer round, against {base} (same round, same mode):\n")
        print(f"| variant / {base} | " + " | ".join(RATIOS) + " |\n|---|---|---|")
        for key, rounds in results.items():
            variant, mode = key.split()
            if VARIANTS[variant][0] is not None:
                pairs = zip(rounds, results[f"{base} {mode}"], strict=True)
                per_round = [{m: x[m] / h[m] for m in RATIOS} for x, h in pairs]  # their median, not the medians'
                print(f"| {key} | " + " | ".join(cell(per_round, m) for m in RATIOS) + " |")
    print("\nns per run of each program under that variant's traffic (kernel.bpf_stats_enabled, both hosts):\n")
    print("| variant, workload | " + " | ".join(COSTED) + " |\n|---|---|---|---|")
    for key, rounds in costs.items():
        ran = {p: [x for x in rounds if p in x] for p in COSTED}
        print(f"| {key} | " + " | ".join(cell(ran[p], p) if ran[p] else "-" for p in COSTED) + " |")


if __name__ == "__main__":
    main()
