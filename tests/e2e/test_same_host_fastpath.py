"""Same-host fast path: a direct veth-to-veth redirect once the bridge carried a flow both ways."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import report
from tests.e2e.cluster import mask_bits, udp_at_once
from tests.e2e.conftest import XMASQ
from xmasq_driver.dataplane.overlay import RFS_SOCK_FLOWS, RFS_VETH_FLOWS, SOCK_FLOWS_SYSCTL, rps_mask, veth_names
from xmasq_driver.ops import client as plugin

SERVE = "udpecho serve 5001 & udpecho serve 5002 & iperf3 -s -D >/dev/null; sleep 3600"


def stats(cfg) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return plugin.call(cfg.socket, "/Xmasq.Stats")[1]["counters"]


def delta(cfg, before: dict[str, int]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k: v - before[k] for k, v in stats(cfg).items()}


def redirect_share(d: dict[str, int]) -> float:
    total = d["local_pkts"] + d["local_miss_not_established"]
    return d["local_pkts"] / total if total else 0.0


def queue(container, net) -> str:  # type: ignore[no-untyped-def]
    """The receive queue of the container's host veth, where flow steering is set."""
    container.reload()
    host = veth_names(container.attrs["NetworkSettings"]["Networks"][net.name]["EndpointID"])[0]
    return f"/sys/class/net/{host}/queues/rx-0"


def steering(container, net) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(RPS: the CPUs a flow may be hashed to, RFS: the flow table's entries) of its host veth."""
    rx = queue(container, net)
    with open(f"{rx}/rps_cpus") as cpus, open(f"{rx}/rps_flow_cnt") as flows:
        return mask_bits(cpus.read()), int(flows.read())


def online_mask() -> str:
    with open("/sys/devices/system/cpu/online") as f:
        return rps_mask(f.read())


RFS = (0, RFS_VETH_FLOWS)  # the default: no hashing, a flow on its socket's CPU


def restart_driver(**env: str) -> None:
    subprocess.run([XMASQ, "daemon", "stop", "--kill"], check=True)
    subprocess.run([XMASQ, "daemon", "start"], check=True, env=dict(os.environ, **env))


def pin(container, cpu: int) -> None:  # type: ignore[no-untyped-def]
    for row in container.top(ps_args="-o pid")["Processes"]:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), row[0]], check=True, capture_output=True)


def rps_ipis(cpu: int) -> int:
    """Packets handed to this CPU by another one for processing (softnet_stat's received_rps)."""
    with open("/proc/net/softnet_stat") as f:
        return int(f.readlines()[cpu].split()[9], 16)


def pair(env, name: str, subnet: str, options: dict[str, str] | None = None, subnet6: str = "") -> tuple:  # type: ignore[no-untyped-def, type-arg]
    """A client and a server on one new network of this host; the server answers (at its IPv6
    address if the network has `subnet6`)."""
    net = env.network(name, subnet, options, subnet6=subnet6)
    a = env.run(f"{name}-a", net.name)
    b = env.run(f"{name}-b", net.name, SERVE)
    ip = env.ip6(b, net) if subnet6 else env.ip(b, net)
    env.sh(a, f"udpecho wait {ip} 5001 10")
    return net, a, b, ip


@pytest.mark.parametrize("subnet6", ["", "fd00:212:1::/64"], ids=["ipv4", "ipv6"])
def test_tcp_udp_icmp_take_the_redirect(env, cfg, subnet6):
    _, a, _, ip = pair(env, "redirect", "10.212.1.0/24", subnet6=subnet6)
    v = "IPv6 " if subnet6 else ""
    for name, command in (
        (f"{v}ICMP", f"ping -c 200 -i 0.01 -W 1 {ip}"),
        (f"{v}UDP request-response", f"udpecho send {ip} 5002 2000"),
        (f"{v}TCP (iperf3, 3 s)", f"iperf3 -c {ip} -t 3"),
    ):
        before = stats(cfg)
        env.sh(a, command)
        d = delta(cfg, before)
        report(f"same-host redirect, {name}: {d['local_pkts']} packets redirected ({redirect_share(d):.2%})")
        assert redirect_share(d) >= 0.99, (name, d)


def test_the_network_switch_keeps_same_host_pairs_on_the_bridge(env, cfg):
    net, a, _, ip = pair(env, "bridged", "10.212.6.0/24", {"xmasq.fastpath": "off"})
    before = stats(cfg)
    assert "replies=200/200" in env.sh(a, f"udpecho send {ip} 5002 200")[1]
    env.sh(a, f"ping -c 20 -i 0.01 -W 1 {ip}")
    d = delta(cfg, before)
    assert d["local_pkts"] == 0 and d["local_miss_not_established"] == 0, d  # not even tried
    ips = {env.ip(a, net), ip}
    flows = plugin.call(cfg.socket, "/Xmasq.Cache")[1]["flows"]
    assert not [f for f in flows if f["local"].split(":")[0] in ips], flows  # nothing learned


def test_two_networks_with_the_same_addresses_on_one_host_stay_apart(env):
    nets = [env.network(f"same{x}", "10.212.2.0/24", space=f"same{x}") for x in "ab"]
    pairs = [(env.run(f"c{i}", n.name), env.run(f"s{i}", n.name, SERVE), n) for i, n in enumerate(nets)]
    ips = [env.ip(s, n) for _, s, n in pairs]
    assert ips[0] == ips[1]
    rx = udp_at_once(env.sh, [(c, s, ip) for (c, s, _), ip in zip(pairs, ips, strict=True)], 500)
    assert all(500 <= n < 520 for n in rx), rx


def test_docker_user_rule_between_same_host_containers_is_honoured(env, cfg):
    net, a, _, ip_b = pair(env, "policy", "10.212.3.0/24")
    ip_a = env.ip(a, net)
    rule = ["-s", ip_a, "-d", ip_b, "-p", "udp", "--dport", "5002", "-j", "DROP"]
    subprocess.run(["iptables", "-w", "-I", "DOCKER-USER", *rule], check=True)
    try:
        before = stats(cfg)
        assert "replies=0/30" in env.sh(a, f"udpecho send {ip_b} 5002 30 || true")[1]
        d = delta(cfg, before)
        assert d["local_pkts"] == 0 and d["local_miss_not_established"] >= 30, d
        assert "replies=30/30" in env.sh(a, f"udpecho send {ip_b} 5001 30")[1]  # other flows unaffected
    finally:
        subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", *rule], check=True)


def test_a_new_container_reusing_an_address_gets_no_old_flow(env, cfg):
    net, a, b, ip_b = pair(env, "reuse", "10.212.4.0/24")
    env.sh(a, f"udpecho send {ip_b} 5001 20")
    cache = plugin.call(cfg.socket, "/Xmasq.Cache")[1]
    assert any(f["remote"].startswith(ip_b + ":") for f in cache["flows"])
    b.remove(force=True)
    env.containers.remove(b)
    cache = plugin.call(cfg.socket, "/Xmasq.Cache")[1]
    assert not any(ip_b in (f["local"].split(":")[0], f["remote"].split(":")[0]) for f in cache["flows"]), cache
    new = env.dk.containers.run(
        env.image,
        ["sh", "-c", SERVE],
        name="xmt-b2",
        detach=True,
        network=net.name,
        networking_config={net.name: env.dk.api.create_endpoint_config(ipv4_address=ip_b)},
    )
    env.containers.append(new)
    before = stats(cfg)
    assert "replies=20/20" in env.sh(a, f"udpecho send {ip_b} 5001 20")[1]
    assert delta(cfg, before)["local_miss_not_established"] >= 1  # it started over on the bridge


def test_a_restart_applies_the_steering_setting_to_every_veth(env, cfg):
    net, a, _, ip = pair(env, "steer", "10.212.7.0/24")
    assert steering(a, net) == RFS
    if os.path.exists(SOCK_FLOWS_SYSCTL):
        with open(SOCK_FLOWS_SYSCTL) as f:
            assert int(f.read()) >= RFS_SOCK_FLOWS  # the host's socket flow table, which RFS needs
    else:  # only the machine's first network namespace has the table (a host in a container has not)
        with open(cfg.logfile) as f:
            assert "rps_sock_flow_entries is not visible in this network namespace" in f.read()
    with open(f"{queue(a, net)}/rps_cpus", "w") as f:
        f.write(online_mask())  # as an older driver's rps left it
    with open(f"{queue(a, net)}/rps_flow_cnt", "w") as f:
        f.write("0")
    try:
        restart_driver()
        assert steering(a, net) == RFS
        restart_driver(XMASQ_STEER_FLOWS="rps")  # a switch to another setting takes effect on existing veths
        assert steering(a, net) == (mask_bits(online_mask()), 0)
        restart_driver(XMASQ_STEER_FLOWS="off")
        assert steering(a, net) == (0, 0)
    finally:
        restart_driver()
    assert steering(a, net) == RFS
    assert "replies=20/20" in env.sh(a, f"udpecho send {ip} 5001 20")[1]


def test_pinned_to_one_cpu_a_flow_is_never_handed_to_another(env, cfg):
    """#15: hashing each flow to a CPU (rps) handed a pinned client's packets to the other CPU
    whenever the hash picked it, a wake-up per packet that cost more than the round trip; the
    default (rfs) keeps a flow on the CPU its socket runs on. Counted by the kernel's own
    cross-CPU hand-offs, on a network with the default and one with `-o xmasq.steer=rps`."""
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "needs two CPUs: one to pin to, one to watch"
    other = cpus[0]
    handed = {}
    for name, subnet, options in (("rfs", "10.212.8.0/24", None), ("rps", "10.212.9.0/24", {"xmasq.steer": "rps"})):
        net, a, b, ip = pair(env, f"pin{name}", subnet, options)
        pin(a, cpus[1])
        pin(b, cpus[1])
        before = rps_ipis(other)
        for _ in range(8):  # 8 flows (a new source port each), so rps's hash picks the other CPU for some
            assert "replies=300/300" in env.sh(a, f"taskset -c {cpus[1]} udpecho send {ip} 5002 300")[1]
        handed[name] = rps_ipis(other) - before
    counts = f"rfs (default) {handed['rfs']}, rps {handed['rps']}"
    report(f"pinned to CPU {cpus[1]}, 8 x 300 UDP request-responses: packets handed to CPU {other}: {counts}")
    assert handed["rps"] > 100, handed  # the measurement sees hand-offs where there are some
    assert handed["rfs"] <= 24, handed  # under 0.5 % of the 4,800 packets


def test_tcp_through_the_redirect_retransmits_no_more_than_through_dockers_bridge(env, cfg):
    """Unpinned on this machine's CPUs, a sender's segments used to be reordered at its veth (the
    backlog of whichever CPU sent each one) and the redirect path showed ~10x the bridge's spurious
    retransmits; flow steering (XMASQ_STEER_FLOWS, default rfs) keeps a flow's packets on one
    CPU's backlog, moving it only once that backlog has drained."""
    net, a, _, ip = pair(env, "order", "10.212.5.0/24")
    assert steering(a, net) == RFS
    bridge = env.dk.networks.create("xmt-order-bridge", driver="bridge")
    env.networks.append(bridge)
    bc = env.run("order-bc", bridge.name)
    bs = env.run("order-bs", bridge.name, SERVE)
    bip = env.ip(bs, bridge)
    env.sh(bc, f"udpecho wait {bip} 5001 10")
    retransmits = {"xmasq": 0, "bridge": 0}
    before = stats(cfg)
    for _ in range(3):  # interleaved, so both see the same machine
        for path, client, server in (("xmasq", a, ip), ("bridge", bc, bip)):
            out = env.sh(client, f"iperf3 -c {server} -t 3 -J")[1]
            retransmits[path] += json.loads(out[out.index("{") :])["end"]["sum_sent"]["retransmits"]
    d = delta(cfg, before)
    report(
        f"same-host TCP, 3 x 3 s unpinned: retransmits xmasq redirect {retransmits['xmasq']},"
        f" Docker's bridge {retransmits['bridge']}; {redirect_share(d):.2%} redirected"
    )
    assert redirect_share(d) >= 0.99, d
    assert retransmits["xmasq"] <= retransmits["bridge"] + 10, retransmits
