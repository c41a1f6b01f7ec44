"""A cluster of testbed hosts for the multi-host tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from lab.image import ensure_image
from lab.testbed import Testbed
from xmasq_driver.config import Config
from xmasq_driver.control.kv import EtcdKV
from xmasq_driver.control.layout import NETWORKS
from xmasq_driver.dataplane.overlay import BRIDGE_PREFIX, HOST_VETH_PREFIX, VXLAN_PREFIX, vxlan_name
from xmasq_driver.ops import client as plugin

TTL, GRACE = 5, 3  # short host leases, so the eviction test takes seconds, not minutes


class Cluster:
    def __init__(self, tb: Testbed):
        self.tb = tb
        self.dk = {h: tb.docker(h) for h in tb.hosts}
        self.image = {h: ensure_image(self.dk[h]) for h in tb.hosts}
        self.kv = EtcdKV(Config(etcd_endpoints=tb.etcd_endpoint))
        self.containers: list[Any] = []
        self.networks: list[Any] = []

    def network(
        self,
        name: str,
        subnet: str,
        options: dict[str, str] | None = None,
        space: str = "",
        hosts: list[str] | None = None,
        subnet6: str = "",
    ) -> str:
        """The same cluster network on every host (or on `hosts`), addresses from the xmasq IPAM driver
        (from the pool of `space` if given: networks with the same subnet, separate addresses);
        with `subnet6`, dual stack."""
        pools = [IPAMPool(subnet=s) for s in (subnet, subnet6) if s]
        for h in hosts or self.tb.hosts:
            self.networks.append(
                self.dk[h].networks.create(
                    name,
                    driver="xmasq",
                    ipam=IPAMConfig(
                        driver="xmasq", pool_configs=pools, options={"xmasq.space": space} if space else None
                    ),
                    options={"xmasq.network": name, **(options or {})},
                    enable_ipv6=bool(subnet6),
                )
            )
        return name

    def vni(self, name: str) -> int:
        return json.loads(self.kv.get(NETWORKS.key(name)) or "{}")["vni"]

    # A day: longer than any test or make target runs (an hour once ended a soak's server midway).
    def run(self, host: str, name: str, network: str, command: str = "sleep 86400", **kw: Any) -> Any:
        c = self.dk[host].containers.run(
            self.image[host], ["sh", "-c", command], name=name, network=network, detach=True, **kw
        )
        self.containers.append(c)
        return c

    @staticmethod
    def sh(container: Any, command: str, check: bool = True) -> tuple[int, str]:
        code, out = container.exec_run(["sh", "-c", command])
        text = out.decode(errors="replace")
        if check:
            assert code == 0, f"{command!r} in {container.name} exited {code}: {text}"
        return code, text

    @staticmethod
    def ip(container: Any, network: str) -> str:
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]

    @staticmethod
    def ip6(container: Any, network: str) -> str:
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"]

    def peers(self, host: str, vni: int) -> set[str]:
        """IPs with a neighbour entry on the host's vxlan device (remote endpoints)."""
        out = subprocess.run(
            ["ip", "-n", self.tb.netns(host), "neigh", "show", "dev", vxlan_name(vni)], capture_output=True, text=True
        ).stdout
        return {line.split()[0] for line in out.splitlines() if "lladdr" in line}

    def sock(self, host: str) -> str:
        return self.tb.path(host, "plugins/xmasq.sock")

    def stats(self, host: str) -> dict[str, int]:
        return plugin.call(self.sock(host), "/Xmasq.Stats")[1]["counters"]

    def cache(self, host: str) -> dict[str, Any]:
        return plugin.call(self.sock(host), "/Xmasq.Cache")[1]

    def remove(self, container: Any) -> None:
        container.remove(force=True)
        self.containers.remove(container)

    def cleanup(self) -> None:
        remove_all(self.containers, self.networks)


def udp_in(cl: Cluster, container) -> int:  # type: ignore[no-untyped-def]
    """Datagrams the container's stack delivered to a socket (Udp InDatagrams)."""
    return int(cl.sh(container, "grep '^Udp:' /proc/net/snmp | tail -1 | cut -d' ' -f2")[1])


def arrived(cl: Cluster, receiver, send) -> int:  # type: ignore[no-untyped-def]
    before = udp_in(cl, receiver)
    send()
    time.sleep(0.5)
    return udp_in(cl, receiver) - before


@contextmanager
def capture(tb, host: str, interface: str, bpf_filter: str) -> Iterator[dict[str, bytes]]:  # type: ignore[no-untyped-def]
    """Packets seen on `interface` of `host` while the block runs: {"raw": pcap bytes, "text": tcpdump -nr}."""
    fd, path = tempfile.mkstemp(suffix=".pcap")
    os.close(fd)
    # --immediate-mode: without it the kernel's capture ring holds packets up to 1 s, and those
    # still held when tcpdump is stopped are lost (a swarm test's capture came back empty so)
    tcpdump = ["tcpdump", "-U", "--immediate-mode", "-ni", interface, "-w", path, bpf_filter]
    argv = ["ip", "netns", "exec", tb.netns(host), *tcpdump]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[str, bytes] = {}
    try:
        # tcpdump writes the file header once it captures (a fixed 1 s wait once caught nothing here)
        until(lambda: os.path.getsize(path) >= 24 or proc.poll() is not None, 20)
        assert proc.poll() is None, f"tcpdump {bpf_filter!r} on {host} {interface} exited"
        yield seen
        time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        with open(path, "rb") as f:
            seen["raw"] = f.read()
        seen["text"] = subprocess.run(["tcpdump", "-nr", path], capture_output=True).stdout
        os.unlink(path)


def between(tb, a: str, b: str) -> str:  # type: ignore[no-untyped-def]
    return f"ip and host {tb.host_ip(a)} and host {tb.host_ip(b)}"


def only_wireguard(text: bytes) -> list[str]:
    """The captured IPv4 packets that are not WireGuard between the two hosts' ports."""
    lines = text.decode().splitlines()
    return [line for line in lines if not (f".{WG_PORT} > " in line and f".{WG_PORT}: UDP" in line)]


@contextmanager
def cut_off(tb: Testbed, host: str, *match: str) -> Iterator[None]:
    """The host's underlay drops every packet in and out; with `match` (an iptables match of what it
    sends, such as "-p tcp -d 10.0.0.1 --dport 2379") only those and their answers."""
    ns = ["ip", "netns", "exec", tb.netns(host), "iptables"]
    rules = [("INPUT", "-i", "eth0", *_mirror(match)), ("OUTPUT", "-o", "eth0", *match)]
    for chain, *rule in rules:
        subprocess.run([*ns, "-I", chain, "1", *rule, "-j", "DROP"], check=True, capture_output=True)
    try:
        yield
    finally:
        for chain, *rule in rules:
            subprocess.run([*ns, "-D", chain, *rule, "-j", "DROP"], check=True, capture_output=True)


def _mirror(match: tuple[str, ...]) -> list[str]:
    """An outgoing match as the incoming one of the answers: -d <-> -s, --dport <-> --sport."""
    swap = {"-d": "-s", "-s": "-d", "--dport": "--sport", "--sport": "--dport"}
    return [swap.get(word, word) for word in match]


@dataclass(frozen=True)
class Usage:
    """What a host's driver process holds."""

    pid: int
    rss_mib: float
    fds: int


def driver_usage(tb: Testbed, host: str) -> Usage:
    with open(tb.pidfile(host)) as f:
        pid = int(f.read())
    with open(f"/proc/{pid}/status") as f:
        rss = int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))
    return Usage(pid, rss / 1024, len(os.listdir(f"/proc/{pid}/fd")))


def until(predicate, timeout: float, step: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    """Seconds until predicate() held; fails after timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def iperf_silence(
    client: Any, ip: str, during: Any, seconds: int = 6, interval: float = 0.25
) -> tuple[float, list[int]]:
    """iperf3 from `client` to `ip` for `seconds`, `during()` run after 2 s: the longest run of
    intervals that carried nothing, in seconds, and the bytes of every interval."""
    result: dict[str, str] = {}
    t = threading.Thread(
        target=lambda: result.update(out=Cluster.sh(client, f"iperf3 -c {ip} -t {seconds} -i {interval} -J")[1])
    )
    t.start()
    time.sleep(2)
    try:
        during()
    finally:
        t.join(seconds + 30)
    intervals = [i["sum"]["bytes"] for i in json.loads(result["out"])["intervals"]]
    zeros = "".join("0" if n == 0 else "1" for n in intervals).split("1")
    return max((len(run) for run in zeros), default=0) * interval, intervals


def links(tb: Testbed, host: str) -> list[str]:
    """Names of the links in a testbed host's namespace."""
    out = subprocess.run(["ip", "-n", tb.netns(host), "-o", "link"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]


def mask_bits(mask: str) -> int:
    """A kernel CPU bitmap as written or read back ("ffffffff,ffffffff", "3") as an int."""
    return int(mask.strip().replace(",", ""), 16)


WG_PORT = 51820  # the WireGuard port of every testbed host (the default)
XMASQ_LINKS = (BRIDGE_PREFIX, VXLAN_PREFIX, HOST_VETH_PREFIX, "xmwg")  # bridges, vxlan, veths, WireGuard


def remove_all(containers: list[Any], networks: list[Any]) -> None:
    """Containers first (their endpoints go), then networks; what is already gone is skipped."""
    for c in containers:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
    for n in networks:
        with contextlib.suppress(docker.errors.NotFound):
            n.remove()


def udp_at_once(sh, pairs: list[tuple[Any, Any, str]], count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Each (client, server, address) pair exchanges `count` datagrams, all pairs at the same time;
    asserts every reply came back and returns how many packets each server received."""

    def rx(server: Any) -> int:
        return int(sh(server, "cat /sys/class/net/eth0/statistics/rx_packets")[1])

    before = [rx(s) for _, s, _ in pairs]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda c=c, ip=ip: results.append(sh(c, f"udpecho send {ip} 5001 {count}")[1]))
        for c, _, ip in pairs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [f"replies={count}/{count}\n"] * len(pairs), results
    return [rx(s) - b for (_, s, _), b in zip(pairs, before, strict=True)]
