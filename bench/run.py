"""Benchmark on the testbed: xmasq against host networking, Docker's overlay and bridge drivers.

    .venv/bin/python -m bench.run [--quick] [--rounds N] [--seconds S] [--modes M] [--pin CPU] [--out results/]

Two testbed hosts (three with host-container; network namespaces on a veth underlay on this machine,
so absolute numbers are not NIC numbers), which also form a swarm for Docker's overlay driver.
Cross-host (client on h1, server on h2): the host network between the two host namespaces (the
ceiling), the same from containers run with `--network host` (host-container, h1 to h3 on a third
host: the ceiling with a container's cgroup, seccomp and exec costs, the honest upper bound for any
overlay), Docker's overlay (an attachable swarm network), xmasq with the fast path off (its standard
overlay), on (the default flow steering), and on without flow steering (`-o xmasq.steer=off`, the
setting the default trades against). Encrypted, across hosts: the bare tunnel (wireguard-go between
the two host namespaces, no overlay), the same with a namespace on a veth behind each end, routed
(wg-veth: the best a design that gives a container its own namespace can reach), plain xmasq, and an
`--opt encrypted` xmasq network with its fast path and without, and Docker's encrypted overlay
(`--opt encrypted`, IPsec) where the kernel has ESP (`modprobe esp4`; this one has not: the report
says it was not measured). Across hosts over IPv6: the host network on IPv6 addresses the benchmark
gives the underlay, and a dual-stack xmasq network (fast path on) carrying IPv6, measured with
iperf3 and redis (the tools here that speak IPv6; sockperf 3.7, memaslap and the image's nginx
configuration do not). Same host (client and server on h2): the host network (both in h2's
namespace; from containers: on h3), Docker's bridge driver, and the same three xmasq networks. Every
scenario runs in two modes, unpinned and with client and server pinned to one CPU (--pin, default
1), in one run: each round measures every mode and scenario back to back, and each figure is the
median over rounds with min and max. Metrics: TCP throughput with 1 and 4 streams and retransmits
(iperf3), CPU seconds per GB moved (the whole machine's busy time from /proc/stat during the
1-stream run), UDP throughput with 1400-byte datagrams (larger than an encrypted network's MTU of
1390: they fragment there), TCP and UDP request-response rate and latency p50/p99 (sockperf
ping-pong), and applications with their own clients: nginx serving a small file to wrk (requests/s,
p99), redis GET from redis-benchmark and memcached from memaslap, each with 1 and with 50
connections. Control plane: docker run -> first ping from the other host, and 50 containers starting
at once on one host (xmasq vs bridge). The eBPF programs' cost: ns per packet of each, from the
kernel's run-time statistics (on only then), during a TCP stream and a UDP ping-pong on the fast
path, across hosts and on one host, both modes. Writes a markdown table per mode (ratios of xmasq-on
to each alternative), a JSON file with every raw sample and the machine, and PNG charts: the ratios
at a glance (> 1: xmasq better) and each metric's values (bars with min-max whiskers). --quick (make
bench QUICK=1) measures host and xmasq-on in both modes, 2 rounds of 1 s: a check of a change in
under 4 minutes. The full run (make bench) takes about an hour.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench import ebpf
from bench.report import CROSS, ENCRYPTED, IPV6, MODES, SAME, Samples, write_report
from lab.image import NGINX_CONF, ensure_image
from lab.testbed import Testbed
from xmasq_driver.control.model import overhead

UNDERLAY6 = "fd00:fb::"  # the testbed hosts' IPv6 addresses while the benchmark runs (h<i>: UNDERLAY6 + i)
QUICK = ("host", "xmasq-on")  # a change check in under 4 minutes
EBPF_SCENARIOS = ("xmasq-on", "xmasq-on-local", "xmasq-enc")  # whose programs' ns per packet the report shows
# xmasq networks: the fast path's setting, flow steering (None: the driver's default), subnets, other options
XMASQ: dict[str, tuple[str, str | None, tuple[str, ...], dict[str, str]]] = {
    "off": ("off", None, ("10.250.0.0/24",), {}),
    "on": ("on", None, ("10.251.0.0/24",), {}),
    "nosteer": ("on", "off", ("10.253.0.0/24",), {}),
    "on6": ("on", None, ("10.254.0.0/24", "fd00:254::/64"), {}),
    "enc": ("on", None, ("10.249.0.0/24",), {"encrypted": ""}),
    "enc-off": ("off", None, ("10.248.0.0/24",), {"encrypted": ""}),
}
# Docker's overlay networks (attachable, on a swarm of h1 and h2): subnet, options
OVERLAYS: dict[str, tuple[str, dict[str, str]]] = {
    "overlay": ("10.252.0.0/24", {}),
    "overlay-enc": ("10.247.0.0/24", {"encrypted": ""}),  # IPsec: only where the kernel has ESP
}
# The bare tunnel (wg-bare): wireguard-go between the two host namespaces, no overlay (the best any
# encrypted design here can reach); its own devices, port and addresses beside the driver's.
BARE_WG = {"device": "xbwg-{host}", "port": 51899, "address": "10.99.0.{i}", "mtu": 1440}
# The bare tunnel with a container behind each end (wg-veth): a namespace on a veth, routed through
# the tunnel with no overlay, its MTU an encrypted xmasq network's: what any design that gives a
# container its own namespace can reach.
BEHIND_WG = {"netns": "xbwgc-{host}", "veth": "xbwgv-{host}", "subnet": "10.98.{i}.0/24", "address": "10.98.{i}.{n}"}
SERVERS = (
    "iperf3 -s -D; sockperf server -p 11111 >/dev/null & sockperf server --tcp -p 11112 >/dev/null &"
    " /usr/sbin/nginx -e /tmp/nginx-error.log -c /etc/nginx.conf &"
    " redis-server --port 6379 --protected-mode no --save '' --appendonly no >/dev/null &"
    " memcached -u root -p 11211 >/dev/null & sleep 100000"
)
SERVER_COMMS = ("iperf3", "sockperf", "nginx", "redis-server", "memcached")
PREFIX = "bench-"
Runner = Callable[[list[str]], str]


def parse_sockperf(out: str) -> dict[str, float]:
    m = re.search(r"RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", out)
    if not m:
        raise RuntimeError(f"sockperf output not understood:\n{out[-2000:]}")
    pct = {float(p): float(v) for p, v in re.findall(r"percentile\s+([\d.]+)\s+=\s+([\d.]+)", out)}
    return {"rate": int(m.group(3)) / float(m.group(1)), "p50_us": pct.get(50.0, 0.0), "p99_us": pct.get(99.0, 0.0)}


def parse_wrk(out: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    if not rps or not p99:
        raise RuntimeError(f"wrk output not understood:\n{out[-2000:]}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return {"rps": float(rps.group(1)), "p99_ms": float(p99.group(1)) * scale}


def parse_iperf(out: str) -> dict[str, Any]:
    """iperf3's JSON report; warnings it prints first (stderr is merged in containers) are skipped."""
    try:
        report = json.loads(out[out.index("{") :])
    except ValueError:
        raise RuntimeError(f"iperf3 output not understood:\n{out[-2000:]}")
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    return report  # type: ignore[no-any-return]


def parse_redis(out: str) -> float:
    """GET requests per second from `redis-benchmark -q`."""
    m = re.search(r"GET: ([\d.]+) requests per second", out)
    if not m:
        raise RuntimeError(f"redis-benchmark output not understood:\n{out[-2000:]}")
    return float(m.group(1))


def pin_processes(pids: list[int], cpu: int | None) -> None:
    """Every thread of each process onto `cpu`, or back onto all of this process's CPUs (None)."""
    cpus = str(cpu) if cpu is not None else ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True)


def http_load(run: Runner, url: str, seconds: float) -> dict[str, float]:
    """nginx's requests/s and p99 under wrk (1 thread, 8 connections) for about `seconds`."""
    return parse_wrk(run(["wrk", "-t", "1", "-c", "8", "-d", f"{max(1, round(seconds))}s", "--latency", url]))


def redis_gets(run: Runner, ip: str, connections: int, seconds: float) -> float:
    """GETs per second over `connections` connections, for about `seconds` (redis-benchmark counts
    requests, not time: a short run sizes the real one)."""
    argv = ["redis-benchmark", "-h", ip, "-p", "6379", "-t", "get", "-c", str(connections), "-q", "-n"]
    rate = parse_redis(run([*argv, str(1000 + 200 * connections)]))
    return parse_redis(run([*argv, str(max(1000, int(rate * seconds)))]))


def parse_memaslap(out: str) -> float:
    """Operations per second (gets and sets) from memaslap's final report."""
    m = re.findall(r"TPS: (\d+)", out)
    if not m:
        raise RuntimeError(f"memaslap output not understood:\n{out[-2000:]}")
    return float(m[-1])


def busy_seconds() -> float:
    """CPU time this machine spent busy (all CPUs, every mode but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def esp_missing() -> str:
    """Why Docker's encrypted overlay cannot run here ("" if it can): its IPsec needs the kernel's ESP."""
    proc = subprocess.run(["modprobe", "esp4"], capture_output=True, text=True)
    if proc.returncode == 0:
        return ""
    return f"Docker's encrypted overlay needs the kernel's ESP: modprobe esp4: {proc.stderr.strip() or proc.returncode}"


def runnable(scenarios: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The scenarios this machine can run, and why each other one cannot."""
    skipped = {}
    if "overlay-enc" in scenarios and (why := esp_missing()):
        skipped["overlay-enc"] = why
    return tuple(s for s in scenarios if s not in skipped), skipped


class Bench:
    def __init__(self, tb: Testbed, seconds: float, scenarios: tuple[str, ...], pin: int = 1):
        self.tb, self.seconds, self.scenarios, self.pin = tb, seconds, scenarios, pin
        self.targets: dict[str, tuple[Runner, str]] = {}  # scenario -> (run a command at the client, server)
        self.servers: dict[str, Callable[[], list[int]]] = {}  # scenario -> the server's processes
        self.containers: dict[str, Any] = {}  # (name) -> container, on every host
        self.networks: list[Any] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.server_netns: list[str] = []
        self.swarm = False
        self.tmp = tempfile.mkdtemp(prefix="xmasq-bench-")

    # -- setup ------------------------------------------------------------
    def setup(self) -> None:
        h2 = self.tb.netns("h2")
        if {"host", "host-local", "wg-bare", "host6"} & set(self.scenarios):
            self._servers_in(h2)
            for scenario, client in (("host", "h1"), ("host-local", "h2")):
                self.targets[scenario] = (self._in_netns(self.tb.netns(client)), self.tb.host_ip("h2"))
                self.servers[scenario] = lambda: self._netns_servers(h2)
        if {"host-container", "host-container-local"} & set(self.scenarios):
            # The host network from inside containers (their cgroup, seccomp and exec): the honest
            # upper bound for any overlay. Server on h3, so its ports do not meet the host scenarios'.
            server = self._run("h3", f"{PREFIX}host-container-server", "host", SERVERS)
            for scenario, client in (("host-container", "h1"), ("host-container-local", "h3")):
                c = self._run(client, f"{PREFIX}{scenario}-client", "host", "sleep 100000")
                self.targets[scenario] = (lambda argv, c=c: _exec(c, argv), self.tb.host_ip("h3"))
                self.servers[scenario] = lambda s=server: _container_pids(s)
        if {"wg-bare", "wg-veth"} & set(self.scenarios):
            self._bare_wireguard()
            self.targets["wg-bare"] = (self._in_netns(self.tb.netns("h1")), BARE_WG["address"].format(i=2))
            self.servers["wg-bare"] = lambda: self._netns_servers(h2)
        if "wg-veth" in self.scenarios:
            for i, host in ((1, "h1"), (2, "h2")):
                self._behind_wireguard(i, host)
            server = BEHIND_WG["netns"].format(host="h2")
            self._servers_in(server)
            client = self._in_netns(BEHIND_WG["netns"].format(host="h1"))
            self.targets["wg-veth"] = (client, BEHIND_WG["address"].format(i=2, n=1))
            self.servers["wg-veth"] = lambda: self._netns_servers(server)
        if "host6" in self.scenarios:
            for host in ("h1", "h2"):
                self._underlay6(host, "add")
            self.targets["host6"] = (self._in_netns(self.tb.netns("h1")), _host_ip6("h2"))
            self.servers["host6"] = lambda: self._netns_servers(h2)
        for name, (fastpath, steer, subnets, extra) in XMASQ.items():
            if f"xmasq-{name}" in self.scenarios or f"xmasq-{name}-local" in self.scenarios:
                net = f"{PREFIX}{name}"
                options = {
                    "xmasq.network": net,
                    "xmasq.fastpath": fastpath,
                    **({"xmasq.steer": steer} if steer else {}),
                    **extra,
                }
                ipam = {"Driver": "xmasq", "Config": [{"Subnet": s} for s in subnets]}
                for host in ("h1", "h2"):
                    self._network(host, net, driver="xmasq", options=options, ipam=ipam, enable_ipv6=len(subnets) > 1)
                self._pair(f"xmasq-{name}", net)
        for scenario, (subnet, options) in OVERLAYS.items():
            if scenario in self.scenarios:
                if not self.swarm:
                    self.tb.swarm("h1", ["h2"])
                    self.swarm = True
                ipam = {"Config": [{"Subnet": subnet}]}
                net = f"{PREFIX}{scenario}"
                self._network("h1", net, driver="overlay", attachable=True, ipam=ipam, options=options)
                self._pair(scenario, net)
        if "bridge" in self.scenarios:
            self._network("h2", f"{PREFIX}bridge", driver="bridge")
            self._pair("bridge", f"{PREFIX}bridge", same_host_only=True)
        time.sleep(1)
        for scenario in self.scenarios:  # warm up: ARP and NDP, the slow path's first packets, fast-path learning
            runner, ip = self.targets[scenario]
            if scenario in IPV6:  # sockperf 3.7 speaks IPv4 only
                runner(["ping", "-6", "-c", "20", "-i", "0.05", ip])
            else:
                runner(["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", "1"])

    def _bare_wireguard(self) -> None:
        """wireguard-go in h1's and h2's namespaces, each the other's one peer, over the underlay."""
        keys = {}
        for host in ("h1", "h2"):
            key = os.path.join(self.tmp, f"{host}.key")
            with open(key, "w") as f:
                f.write(subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout)
            os.chmod(key, 0o600)
            with open(key) as f:
                keys[host] = subprocess.run(["wg", "pubkey"], input=f.read(), capture_output=True, text=True).stdout
        for i, host in ((1, "h1"), (2, "h2")):
            other, j = ("h2", 2) if host == "h1" else ("h1", 1)
            ns, dev = ["ip", "netns", "exec", self.tb.netns(host)], BARE_WG["device"].format(host=host)
            subprocess.run([*ns, "wireguard-go", dev], check=True, capture_output=True)
            for _ in range(100):  # its control socket answers a moment after it started
                if subprocess.run([*ns, "wg", "show", dev], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            peer = ["peer", keys[other].strip(), "endpoint", f"{self.tb.host_ip(other)}:{BARE_WG['port']}"]
            peer += ["allowed-ips", f"{BARE_WG['address'].format(i=j)}/32,{BEHIND_WG['subnet'].format(i=j)}"]
            argv = ["wg", "set", dev, "private-key", os.path.join(self.tmp, f"{host}.key")]
            subprocess.run([*ns, *argv, "listen-port", str(BARE_WG["port"]), *peer], check=True)
            mine, theirs = BARE_WG["address"].format(i=i), BARE_WG["address"].format(i=j)
            subprocess.run([*ns, "ip", "addr", "add", f"{mine}/32", "peer", f"{theirs}/32", "dev", dev], check=True)
            subprocess.run([*ns, "ip", "link", "set", dev, "mtu", str(BARE_WG["mtu"]), "up"], check=True)

    def _behind_wireguard(self, i: int, host: str) -> None:
        """A namespace behind host's bare tunnel: a veth, a route through the tunnel to the other's,
        forwarding allowed past the FORWARD policy dockerd sets."""
        ns, child, veth = self.tb.netns(host), BEHIND_WG["netns"].format(host=host), BEHIND_WG["veth"].format(host=host)
        tunnel, theirs = BARE_WG["device"].format(host=host), BEHIND_WG["subnet"].format(i=3 - i)
        run = functools.partial(subprocess.run, check=True)
        link = run(["ip", "-j", "-n", ns, "link", "show", "eth0"], capture_output=True, text=True)
        mtu = json.loads(link.stdout)[0]["mtu"] - overhead(encrypted=True)
        run(["ip", "netns", "add", child])
        run(["ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", child])
        run(["ip", "-n", ns, "addr", "add", f"{BEHIND_WG['address'].format(i=i, n=254)}/24", "dev", veth])
        run(["ip", "-n", ns, "link", "set", veth, "mtu", str(mtu), "up"])
        run(["ip", "-n", ns, "route", "add", theirs, "dev", tunnel])
        for rule in _forward_rules(veth):
            run(["ip", "netns", "exec", ns, "iptables", "-I", *rule])
        run(["ip", "-n", child, "link", "set", "lo", "up"])
        run(["ip", "-n", child, "addr", "add", f"{BEHIND_WG['address'].format(i=i, n=1)}/24", "dev", "eth0"])
        run(["ip", "-n", child, "link", "set", "eth0", "mtu", str(mtu), "up"])
        run(["ip", "-n", child, "route", "add", "default", "via", BEHIND_WG["address"].format(i=i, n=254)])

    def _underlay6(self, host: str, op: str) -> None:
        ns = self.tb.netns(host)
        subprocess.run(["ip", "-n", ns, "addr", op, f"{_host_ip6(host)}/64", "dev", "eth0", "nodad"], check=op == "add")

    def _network(self, host: str, name: str, **kw: Any) -> None:
        self.networks.append(self.tb.docker(host).networks.create(name, **kw))

    def _pair(self, scenario: str, net: str, same_host_only: bool = False) -> None:
        """A server on h2, a client on h1 (scenario) and one on h2 (scenario-local; IPv6: none)."""
        server = self._run("h2", f"{PREFIX}{scenario}-server", net, SERVERS)
        ip = _address(server, net, "GlobalIPv6Address" if scenario in IPV6 else "IPAddress")
        if not same_host_only:
            client = self._run("h1", f"{PREFIX}{scenario}-client", net, "sleep 100000")
            self.targets[scenario] = (lambda argv, c=client: _exec(c, argv), ip)
            self.servers[scenario] = lambda c=server: _container_pids(c)
        if scenario in IPV6:
            return
        local = self._run("h2", f"{PREFIX}{scenario}-local", net, "sleep 100000")
        name = scenario if same_host_only else f"{scenario}-local"
        self.targets[name] = (lambda argv, c=local: _exec(c, argv), ip)
        self.servers[name] = lambda c=server: _container_pids(c)

    def _run(self, host: str, name: str, net: str, command: str) -> Any:
        dk = self.tb.docker(host)
        c = dk.containers.run(ensure_image(dk), ["sh", "-c", command], name=name, network=net, detach=True)
        self.containers[name] = c
        return c

    def _in_netns(self, ns: str) -> Runner:
        def run(argv: list[str]) -> str:
            argv = ["ip", "netns", "exec", ns, *argv]
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.seconds + 60).stdout

        return run

    def _servers_in(self, ns: str) -> None:
        """The servers in a namespace (h2's for the host scenarios): nginx with the image's
        configuration, its root and pid file in this run's directory."""
        if not os.path.exists(f"{self.tmp}/nginx.conf"):
            with open(NGINX_CONF) as f:
                conf = f.read().replace("/www", f"{self.tmp}/www").replace("/tmp/nginx", f"{self.tmp}/nginx")
            os.makedirs(f"{self.tmp}/www")
            with open(f"{self.tmp}/www/index.html", "w") as f:
                f.write("hello from xmasq\n")
            with open(f"{self.tmp}/nginx.conf", "w") as f:
                f.write(conf)
        servers = SERVERS.replace("/etc/nginx.conf", f"{self.tmp}/nginx.conf")
        argv = ["ip", "netns", "exec", ns, "sh", "-c", servers]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.processes.append(subprocess.Popen(argv, **quiet, start_new_session=True))  # type: ignore[call-overload]
        self.server_netns.append(ns)

    @staticmethod
    def _netns_servers(ns: str) -> list[int]:
        """The servers started in a namespace (iperf3 daemonizes itself: found by name)."""
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(pid) for pid in pids.stdout.split() if _comm(int(pid)) in SERVER_COMMS]

    # -- one round of one scenario -----------------------------------------
    def client(self, scenario: str, pinned: bool) -> tuple[Runner, str]:
        """Run a command at the scenario's client (pinned: on the pinned CPU, as its server is then);
        the server's address."""
        target, ip = self.targets[scenario]
        pin_processes(self.servers[scenario](), self.pin if pinned else None)
        prefix = ["taskset", "-c", str(self.pin)] if pinned else []

        def run(argv: list[str]) -> str:
            return target([*prefix, *argv])

        return run, ip

    def measure(self, scenario: str, pinned: bool) -> dict[str, float]:
        """Every metric; over IPv6 those whose tools speak it (iperf3, redis: not sockperf 3.7, nginx's
        IPv4-only configuration, memaslap)."""
        run, ip = self.client(scenario, pinned)
        if scenario in IPV6:
            return {**self._iperf(run, ip), **self._redis_both(run, ip)}
        whole = f"{max(1, round(self.seconds))}s"
        url = f"http://{ip}:8080/index.html"
        pingpong = ["sockperf", "ping-pong", "--pre-warmup-wait", "1", "-i", ip, "-t", str(self.seconds)]
        tcp_rr = parse_sockperf(run([*pingpong, "--tcp", "-p", "11112"]))
        udp_rr = parse_sockperf(run([*pingpong, "-p", "11111"]))
        http = http_load(run, url, self.seconds)
        return {
            **self._iperf(run, ip),
            "tcp_rr_per_s": tcp_rr["rate"],
            "tcp_rr_p50_us": tcp_rr["p50_us"],
            "tcp_rr_p99_us": tcp_rr["p99_us"],
            "udp_rr_per_s": udp_rr["rate"],
            "udp_rr_p50_us": udp_rr["p50_us"],
            "udp_rr_p99_us": udp_rr["p99_us"],
            "http_rps": http["rps"],
            "http_p99_ms": http["p99_ms"],
            **self._redis_both(run, ip),
            "memcached_c1_per_s": self._memcached(run, ip, 1, whole),
            "memcached_c50_per_s": self._memcached(run, ip, 50, whole),
        }

    def _iperf(self, run: Runner, ip: str) -> dict[str, float]:
        t = str(self.seconds)
        busy = busy_seconds()
        tcp = parse_iperf(run(["iperf3", "-c", ip, "-t", t, "-J"]))
        busy = busy_seconds() - busy
        tcp4 = parse_iperf(run(["iperf3", "-c", ip, "-t", t, "-P", "4", "-J"]))
        udp = parse_iperf(run(["iperf3", "-c", ip, "-t", t, "-u", "-b", "0", "-l", "1400", "-J"]))
        moved_gb = tcp["end"]["sum_received"]["bytes"] / 1e9
        return {
            "tcp_gbps": tcp["end"]["sum_received"]["bits_per_second"] / 1e9,
            "tcp4_gbps": tcp4["end"]["sum_received"]["bits_per_second"] / 1e9,
            "tcp_retransmits": tcp["end"]["sum_sent"].get("retransmits", 0),
            "cpu_s_per_gb": busy / moved_gb if moved_gb else 0.0,
            "udp1400_gbps": udp["end"]["sum"]["bits_per_second"] * (1 - udp["end"]["sum"]["lost_percent"] / 100) / 1e9,
        }

    def _redis_both(self, run: Runner, ip: str) -> dict[str, float]:
        return {c: redis_gets(run, ip, n, self.seconds) for c, n in (("redis_c1_per_s", 1), ("redis_c50_per_s", 50))}

    @staticmethod
    def _memcached(run: Runner, ip: str, connections: int, seconds: str) -> float:
        argv = ["memcaslap", "-s", f"{ip}:11211", "-T", "1", "-c", str(connections), "-t", seconds]
        return parse_memaslap(run(argv))

    # -- control plane -----------------------------------------------------
    def run_to_ping(self, net: str, count: int) -> list[float]:
        """Seconds from `docker run` on h2 to the first ping that a client on h1 gets answered."""
        client, _ = self.targets["xmasq-on" if net.endswith("on") else "overlay"]
        took = []
        for i in range(count):
            start = time.monotonic()
            c = self._run("h2", f"{PREFIX}cp-{i}", net, "sleep 100000")
            ip = _address(c, net)
            while "1 packets received" not in client(["ping", "-c", "1", "-W", "1", ip]):
                if time.monotonic() - start > 30:
                    raise RuntimeError(f"{ip} not reachable within 30 s")
            took.append(time.monotonic() - start)
            self.containers.pop(f"{PREFIX}cp-{i}").remove(force=True)
        return took

    def start_many(self, net: str, count: int) -> float:
        """Seconds for `count` containers started at once on h2 to be running."""
        names = [f"{PREFIX}many-{net}-{i}" for i in range(count)]
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda n: self._run("h2", n, net, "sleep 100000"), names))
        took = time.monotonic() - start
        for n in names:
            self.containers.pop(n).remove(force=True)
        return took

    # -- the eBPF programs' cost -------------------------------------------
    def program_costs(self, scenario: str, pinned: bool) -> dict[str, dict[str, float]]:
        """ns per packet of each program, during a TCP stream and a UDP ping-pong (the kernel's
        statistics on for these only)."""
        run, ip = self.client(scenario, pinned)
        t = str(self.seconds)
        workloads = {
            "TCP": ["iperf3", "-c", ip, "-t", t],
            "UDP rr": ["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", t],
        }
        costs = {}
        with ebpf.stats_enabled():
            for what, argv in workloads.items():
                costs[what] = {name: ns for name, (_, ns) in ebpf.cost(lambda argv=argv: run(argv)).items()}
        return costs

    def close(self) -> None:
        for c in self.containers.values():
            c.remove(force=True)
        for n in self.networks:
            n.remove()
        for p in self.processes:
            p.kill()
        for ns in self.server_netns:
            for pid in self._netns_servers(ns):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if self.swarm:
            for h in ("h2", "h1"):
                self.tb.docker(h).swarm.leave(force=True)
        if "host6" in self.scenarios:
            for host in ("h1", "h2"):
                self._underlay6(host, "del")
        if "wg-veth" in self.scenarios:  # the namespace takes its veth along
            for host in ("h1", "h2"):
                subprocess.run(["ip", "netns", "del", BEHIND_WG["netns"].format(host=host)], capture_output=True)
                for rule in _forward_rules(BEHIND_WG["veth"].format(host=host)):
                    argv = ["ip", "netns", "exec", self.tb.netns(host), "iptables", "-D", *rule]
                    subprocess.run(argv, capture_output=True)
        if {"wg-bare", "wg-veth"} & set(self.scenarios):  # wireguard-go exits with its device
            for host in ("h1", "h2"):
                dev = BARE_WG["device"].format(host=host)
                subprocess.run(["ip", "-n", self.tb.netns(host), "link", "del", dev], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _address(container: Any, network: str, field: str = "IPAddress") -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network][field]  # type: ignore[no-any-return]


def _forward_rules(dev: str) -> tuple[tuple[str, ...], ...]:
    """iptables rules that let a device's traffic be forwarded past dockerd's FORWARD policy."""
    return ("FORWARD", "-i", dev, "-j", "ACCEPT"), ("FORWARD", "-o", dev, "-j", "ACCEPT")


def _host_ip6(host: str) -> str:
    return f"{UNDERLAY6}{host[1:]}"


def _exec(container: Any, argv: list[str]) -> str:
    return container.exec_run(argv)[1].decode(errors="replace")


def _container_pids(container: Any) -> list[int]:
    """The container's processes, as this machine's pids."""
    top = container.top(ps_args="-o pid")
    return [int(row[0]) for row in top["Processes"]]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"2 rounds of 1 s of {','.join(QUICK)}, 3 containers for the control plane"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3, help="seconds per measurement")
    parser.add_argument("--modes", default=",".join(MODES), help="unpinned, pinned or both (comma-separated)")
    parser.add_argument("--pin", type=int, default=1, metavar="CPU", help="the CPU of the pinned mode")
    parser.add_argument("--scenarios", default="", help="comma-separated subset (default: all; --quick: fewer)")
    parser.add_argument("--containers", type=int, default=50, help="containers for the control-plane figures")
    parser.add_argument("--use-testbed", action="store_true", help="use the testbed that is up (else make one)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    args = parser.parse_args(argv)
    rounds, seconds, containers = (2, 1.0, 3) if args.quick else (args.rounds, args.seconds, args.containers)
    every = CROSS + SAME + IPV6 + ENCRYPTED
    wanted = args.scenarios.split(",") if args.scenarios else QUICK if args.quick else every
    scenarios, skipped = runnable(tuple(dict.fromkeys(s for s in every if s in wanted)))  # no twice: xmasq-on
    for scenario, why in skipped.items():
        print(f"[bench] {scenario} not measured: {why}", file=sys.stderr, flush=True)
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    if not modes:
        parser.error(f"--modes: one or both of {', '.join(MODES)}")
    tb = Testbed.load() if args.use_testbed else None
    own = tb is None
    hosts = 3 if {"host-container", "host-container-local"} & set(scenarios) else 2
    tb = tb or Testbed.up(hosts)
    bench = Bench(tb, seconds, scenarios, args.pin)
    by_mode: dict[str, Samples] = {m: {s: [] for s in scenarios} for m in modes}
    control: dict[str, Any] = {}
    started = time.monotonic()
    try:
        bench.setup()
        steps = [(m, s) for m in modes for s in scenarios]
        total = rounds * len(steps)
        for r in range(rounds):
            for i, (mode, scenario) in enumerate(steps):
                done = r * len(steps) + i
                eta = (time.monotonic() - started) / done * (total - done) if done else 0
                print(
                    f"[bench] round {r + 1}/{rounds} {mode} {scenario} (ETA {eta:.0f} s)", file=sys.stderr, flush=True
                )
                by_mode[mode][scenario].append(bench.measure(scenario, mode == "pinned"))
        print(f"[bench] control plane ({containers} containers)", file=sys.stderr, flush=True)
        for net, key in ((f"{PREFIX}on", "xmasq-on"), (f"{PREFIX}overlay", "overlay")):
            if key in scenarios:
                control[f"run_to_ping_s[{key}]"] = bench.run_to_ping(net, containers)
        for net, key in ((f"{PREFIX}on", "xmasq-on-local"), (f"{PREFIX}bridge", "bridge")):
            if key in scenarios:
                control[f"start_{containers}_s[{key.replace('-local', '')}]"] = bench.start_many(net, containers)
        measured = [s for s in EBPF_SCENARIOS if s in scenarios]
        if measured:
            print(f"[bench] eBPF ns per packet ({', '.join(measured)})", file=sys.stderr, flush=True)
        programs = {m: {s: bench.program_costs(s, m == "pinned") for s in measured} for m in modes if measured}
    finally:
        bench.close()
        if own:
            tb.down()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "when": stamp,
        "rounds": rounds,
        "seconds": seconds,
        "pin": args.pin,
        "samples": by_mode,
        "control": control,
        "programs": programs,
        "skipped": skipped,
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "testbed": f"{len(tb.hosts)} hosts, veth underlay",
        },
    }
    name = "quick" if args.quick else "full"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"bench-{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(write_report(record, args.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
