"""Control plane at scale: a real driver and a real etcd, with simulated hosts and endpoints.

The driver runs in a network namespace of its own with its own etcd there (`lab.standalone`);
the harness writes the records of simulated hosts straight into that etcd, as their drivers
would. Their underlay addresses are in 127.2.0.0/16, loopback that carries no traffic: the driver
only makes FDB, neighbour and eBPF entries for them, no packet is sent. What it measures: initial
programming time, per-change latency (p50, p99) until the entry is in the kernel, driver CPU and
etcd bytes sent per change, driver RSS; and after churn (bursts of creates and deletes, a driver
restart in the middle of one), every FDB, neighbour and eBPF entry against etcd, entry by entry.
Used by `make scale` (bench/scale.py) and, at a size that fits `make test`, by tests/e2e/test_scale.py.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

from lab.results import percentile
from lab.standalone import NS_SIDE, Standalone
from xmasq_driver.config import Config
from xmasq_driver.control.kv import MAX_TXN_OPS, EtcdKV
from xmasq_driver.control.layout import ENDPOINTS, HOSTS, MEMBER, MEMBERS
from xmasq_driver.control.model import HostRecord, RemoteEndpoint
from xmasq_driver.dataplane.overlay import NUD_PERMANENT, mac_for_ip, peer_entries, vxlan_name

NETWORK_ID = "5ca1e" * 12 + "0000"  # as Docker's: 64 characters
KEY = "scale"  # the network's cluster name
SUBNET = ipaddress.IPv4Network("10.64.0.0/14")  # room for 260,000 endpoints
ETCD_BYTES = "etcd_network_client_grpc_sent_bytes_total"


def sim_host(i: int) -> tuple[str, str]:
    """Simulated host i: its id and its underlay address (loopback: carries nothing)."""
    return f"sim-{i:04d}", f"127.2.{i // 250}.{i % 250 + 1}"


def address(i: int) -> str:
    return str(SUBNET.network_address + 2 + i)


def has_neighbour(ns: NetNS, ifindex: int, ip: str) -> bool:
    """Whether the device in namespace `ns` has a permanent neighbour entry for ip (one netlink get,
    not a dump). A get racing the driver's delete leaves the entry behind as FAILED (the kernel
    unlinks only what no one holds), seen in 91 of 3,000 deletes under two `ip neigh get` loops."""
    try:
        return any(n["state"] & NUD_PERMANENT for n in ns.neigh("get", dst=ip, ifindex=ifindex))
    except NetlinkError as e:
        if e.code == errno.ENOENT:
            return False
        raise


@dataclass
class Figures:
    """What one run measured (times in seconds, CPU in seconds of the driver process)."""

    hosts: int
    endpoints: int
    write_s: float = 0.0  # writing the endpoints into etcd
    program_s: float = 0.0  # from the last write until every entry was programmed
    change_ms: list[float] = field(default_factory=list)  # a new endpoint until in the kernel
    removal_ms: list[float] = field(default_factory=list)  # a removal until gone from the kernel
    cpu_ms_per_change: float = 0.0
    etcd_bytes_per_change: dict[str, float] = field(default_factory=dict)  # by endpoints at the time
    examined_per_change: float = 0.0  # endpoint records the driver looked at per change
    full_passes_during_changes: int = 0
    rss_mb: float = 0.0
    etcd_db_mb: float = 0.0  # etcd's database in use after the endpoints were written
    churn: dict[str, Any] = field(default_factory=dict)
    # Docker's requests (CreateEndpoint, DeleteEndpoint of a local endpoint) answered while the
    # driver programmed the endpoints written by `fill`
    api_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def spread(ms: list[float]) -> dict[str, float]:
            return {"p50": statistics.median(ms), "p99": percentile(ms, 0.99), "max": max(ms)} if ms else {}

        return {
            "hosts": self.hosts,
            "endpoints": self.endpoints,
            "write_s": round(self.write_s, 2),
            "program_s": round(self.program_s, 2),
            "change_ms": spread(self.change_ms),
            "removal_ms": spread(self.removal_ms),
            "cpu_ms_per_change": round(self.cpu_ms_per_change, 2),
            "etcd_bytes_per_change": self.etcd_bytes_per_change,
            "examined_per_change": self.examined_per_change,
            "full_passes_during_changes": self.full_passes_during_changes,
            "rss_mb": round(self.rss_mb, 1),
            "etcd_db_mb": round(self.etcd_db_mb, 1),
            "churn": self.churn,
            "api_ms": spread(self.api_ms),
            "api_requests": len(self.api_ms),
        }


class Scale:
    def __init__(self, tmp: str, hosts: int, **settings: str):
        self.hosts = [sim_host(i) for i in range(hosts)]
        self.sa = Standalone(tmp, "scale")
        self.settings = settings
        self.ns: NetNS | None = None
        try:
            self.etcd = self.sa.start_etcd(also_on=NS_SIDE)
            self.url = f"http://{NS_SIDE}:{self.etcd.rsplit(':', 1)[1]}"
            self.kv = EtcdKV(Config(etcd_endpoints=self.url, etcd_timeout=60))
            self.session = requests.Session()
            self.session.trust_env = False
            self.start_driver()
        except BaseException:
            self.close()
            raise
        self.used: dict[str, int] = {}  # address -> simulated host index, as written
        self._next = 0  # the index of the next new address

    # -- the driver ---------------------------------------------------------
    def start_driver(self) -> None:
        self.sa.start(None, etcd_endpoints=self.etcd, **self.settings)
        body = {
            "NetworkID": NETWORK_ID,
            "Options": {"com.docker.network.generic": {"xmasq.network": KEY}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": str(SUBNET), "Gateway": address(-1) + "/14"}],
            "IPv6Data": [],
        }
        status, answer = self.sa.call("/NetworkDriver.CreateNetwork", body)
        assert status == 200 and "Err" not in answer, answer
        self.vni = next(n["vni"] for n in self.status()["networks"] if n["name"] == KEY)
        self.ns = self.ns or NetNS(self.sa.ns)
        self.vx = self.ns.link_lookup(ifname=vxlan_name(self.vni))[0]

    def status(self) -> dict[str, Any]:
        status, answer = self.sa.call("/Xmasq.Status")
        assert status == 200, answer
        return answer  # type: ignore[no-any-return]

    def records(self) -> dict[str, Any]:
        return self.status()["cluster"]["records"]  # type: ignore[no-any-return]

    def programmed(self) -> int:
        return int(self.records()["peers"].get(str(self.vni), 0))

    def cpu_s(self) -> float:
        assert self.sa.driver is not None
        with open(f"/proc/{self.sa.driver.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        assert self.sa.driver is not None
        with open(f"/proc/{self.sa.driver.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024  # type: ignore[union-attr]

    # -- etcd -------------------------------------------------------------
    def write(self, puts: dict[str, str], deletes: list[str] | None = None) -> None:
        """In transactions of etcd's maximum size (as many hosts writing at once would)."""
        ops: list[tuple[str, str | None]] = [*puts.items(), *((k, None) for k in deletes or [])]
        for i in range(0, len(ops), MAX_TXN_OPS):
            chunk = ops[i : i + MAX_TXN_OPS]
            self.kv.txn({k: v for k, v in chunk if v is not None}, [k for k, v in chunk if v is None])

    def etcd_metric(self, name: str) -> float:
        """A metric of etcd's, summed over its labels."""
        text = self.session.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def etcd_sent_bytes(self) -> float:
        return self.etcd_metric(ETCD_BYTES)

    def add_hosts(self) -> None:
        self.write({HOSTS.key(h): HOSTS.encode(HostRecord(ip)) for h, ip in self.hosts})
        self.write({MEMBERS.key(KEY, h): MEMBER for h, _ in self.hosts})

    def new_endpoints(self, count: int, rng: random.Random) -> dict[str, str]:
        """The records of `count` new endpoints, each on a random simulated host."""
        puts = {}
        for _ in range(count):
            host, ip = rng.randrange(len(self.hosts)), address(self._next)
            record = RemoteEndpoint(self.hosts[host][0], mac_for_ip(ipaddress.IPv4Address(ip)), f"{self._next:012x}")
            puts[ENDPOINTS.key(KEY, ip)] = record.encode()
            self.used[ip] = host
            self._next += 1
        return puts

    def removals(self, count: int, rng: random.Random, keep: dict[str, str]) -> list[str]:
        """The keys of `count` random endpoints written before (not those in `keep`)."""
        fresh = {ENDPOINTS.parts_of(k)[1] for k in keep}
        doomed = rng.sample(sorted(self.used.keys() - fresh), count)
        for ip in doomed:
            del self.used[ip]
        return [ENDPOINTS.key(KEY, ip) for ip in doomed]

    # -- the kernel -------------------------------------------------------
    def has_neighbour(self, ip: str) -> bool:
        assert self.ns is not None
        return has_neighbour(self.ns, self.vx, ip)

    def kernel(self) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(FDB mac -> host, neighbour ip -> mac, eBPF remote ip -> host) of the scale network."""
        entries = peer_entries(self.ns, self.vni)
        assert entries is not None
        fdb, neigh = entries
        cache = self.sa.call("/Xmasq.Cache")[1]
        ebpf = {e["ip"]: e["host"] for e in cache.get("remote", []) if e["vni"] == self.vni}
        return fdb, neigh, ebpf

    def mismatches(self) -> list[str]:
        """Every entry that differs from what etcd says (read back from etcd, not from memory)."""
        hosts = dict(self.hosts)
        want: dict[str, tuple[str, str]] = {}
        for key, value in self.kv.get_prefix(ENDPOINTS.prefix(KEY)).items():
            rec = RemoteEndpoint.decode(value)
            assert isinstance(rec, RemoteEndpoint)
            want[ENDPOINTS.parts_of(key)[1]] = (rec.mac, hosts[rec.host])
        fdb, neigh, ebpf = self.kernel()
        wrong = [f"fdb {m}: {fdb.get(m)} != {h}" for m, h in want.values() if fdb.get(m) != h]
        wrong += [f"neighbour {ip}: {neigh.get(ip)} != {m}" for ip, (m, _) in want.items() if neigh.get(ip) != m]
        wrong += [f"ebpf {ip}: {ebpf.get(ip)} != {h}" for ip, (_, h) in want.items() if ebpf.get(ip) != h]
        macs = {m for m, _ in want.values()}
        wrong += [f"fdb {m} extra" for m in fdb if m not in macs and m != "00:00:00:00:00:00"]
        wrong += [f"neighbour {ip} extra" for ip in neigh if ip not in want]
        wrong += [f"ebpf {ip} extra" for ip in ebpf if ip not in want]
        return wrong

    # -- the measurements ---------------------------------------------------
    def until(self, what: str, ok: Callable[[], bool], timeout: float, step: float = 0.0005) -> float:
        start = time.monotonic()
        while not ok():
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what}: not within {timeout} s")
            time.sleep(step)
        return time.monotonic() - start

    def fill(self, figures: Figures, rng: random.Random, timeout: float = 600) -> None:
        """Write endpoints up to `figures.endpoints` and wait until all are programmed; meanwhile
        time Docker's requests for a local endpoint, as `docker run` and `docker rm` send them."""
        busy = threading.Event()
        refused: list[object] = []
        timer = threading.Thread(target=self._time_requests, args=(figures.api_ms, busy, refused), daemon=True)
        timer.start()
        start = time.monotonic()
        try:
            while len(self.used) < figures.endpoints:
                self.write(self.new_endpoints(min(5000, figures.endpoints - len(self.used)), rng))
            figures.write_s = time.monotonic() - start
            figures.program_s = self.until(
                "every endpoint programmed", lambda: self.programmed() == figures.endpoints, timeout, 0.2
            )
        finally:
            busy.set()
            timer.join()
        if refused:  # an answer that was not a success is a failure of the run, not a slow sample
            raise RuntimeError(f"a request refused while programming: {refused[0]}")
        figures.rss_mb = self.rss_mb()
        figures.etcd_db_mb = self.etcd_metric("etcd_mvcc_db_total_size_in_use_in_bytes") / 2**20

    def _time_requests(self, took_ms: list[float], stop: threading.Event, refused: list[object]) -> None:
        """CreateEndpoint then DeleteEndpoint of one local endpoint (a real veth and eBPF entry),
        again and again until `stop`; each request's time in ms (what was not answered with success
        goes to `refused`, and ends it). Its address is the subnet's last."""
        iface = {"Address": f"{SUBNET.broadcast_address - 1}/{SUBNET.prefixlen}", "AddressIPv6": "", "MacAddress": ""}
        ids = {"NetworkID": NETWORK_ID, "EndpointID": "a91" * 21 + "0"}
        while not stop.is_set():
            for path, body in (("CreateEndpoint", {**ids, "Interface": iface}), ("DeleteEndpoint", ids)):
                start = time.monotonic()
                status, answer = self.sa.call(f"/NetworkDriver.{path}", body)
                took_ms.append((time.monotonic() - start) * 1000)
                if status != 200 or "Err" in answer:
                    refused.append((path, status, answer))
                    return
            stop.wait(0.05)

    def changes(self, figures: Figures, count: int, rng: random.Random) -> None:
        """`count` new endpoints, then their removals, one at a time: each until it is (or is no
        longer) in the kernel; the driver's CPU, etcd's bytes and the records examined per change."""
        before, cpu, sent = self.records(), self.cpu_s(), self.etcd_sent_bytes()
        new = []
        for _ in range(count):
            puts = self.new_endpoints(1, rng)
            ip = ENDPOINTS.parts_of(next(iter(puts)))[1]
            start = time.monotonic()
            self.write(puts)
            self.until(f"{ip} programmed", lambda ip=ip: self.has_neighbour(ip), 10)  # type: ignore[misc]
            figures.change_ms.append((time.monotonic() - start) * 1000)
            new.append(ip)
        for ip in new:
            del self.used[ip]
            start = time.monotonic()
            self.write({}, [ENDPOINTS.key(KEY, ip)])
            self.until(f"{ip} removed", lambda ip=ip: not self.has_neighbour(ip), 10)  # type: ignore[misc]
            figures.removal_ms.append((time.monotonic() - start) * 1000)
        after = self.records()
        figures.cpu_ms_per_change = (self.cpu_s() - cpu) * 1000 / (2 * count)
        figures.etcd_bytes_per_change[str(len(self.used))] = (self.etcd_sent_bytes() - sent) / (2 * count)
        figures.examined_per_change = (after["examined"] - before["examined"]) / (2 * count)
        figures.full_passes_during_changes = after["full_passes"] - before["full_passes"]

    def churn(self, figures: Figures, bursts: int, size: int, rng: random.Random) -> None:
        """Bursts of `size` creates and size/2 deletes written as fast as etcd takes them, the
        driver stopped part way and one burst written while it is down; then every entry is
        checked against etcd."""
        start = time.monotonic()
        for b in range(bursts):
            self._burst(size, rng)
            if b == bursts // 2:
                self.sa.stop()
                self._burst(size, rng)
                self.start_driver()
        settled = self.until("the churn programmed", lambda: self.programmed() == len(self.used), 300, 0.2)
        wrong = self.mismatches()
        figures.churn = {
            "bursts": bursts + 1,
            "creates_per_burst": size,
            "deletes_per_burst": size // 2,
            "settled_s": round(settled, 2),
            "seconds": round(time.monotonic() - start, 2),
            "endpoints_after": len(self.used),
            "mismatches": wrong[:20],
            "mismatch_count": len(wrong),
        }

    def _burst(self, size: int, rng: random.Random) -> None:
        """`size` creates and size/2 deletes of earlier endpoints, written at once."""
        creates = self.new_endpoints(size, rng)
        self.write(creates, self.removals(size // 2, rng, creates))

    def close(self) -> None:
        if self.ns is not None:
            self.ns.close()
        self.sa.cleanup()


def run(tmp: str, hosts: int, endpoints: int, changes: int, bursts: int, burst: int, seed: int = 1) -> Figures:
    """The whole measurement; everything it made is removed afterwards."""
    rng = random.Random(seed)
    figures = Figures(hosts, endpoints)
    scale = Scale(tmp, hosts, remote_max=str(max(131072, 2 * endpoints)), host_grace="30")
    try:
        scale.add_hosts()
        small = Figures(hosts, min(100, endpoints))
        scale.fill(small, rng)
        scale.changes(small, min(changes, 20), rng)
        figures.etcd_bytes_per_change.update(small.etcd_bytes_per_change)
        scale.fill(figures, rng)
        scale.changes(figures, changes, rng)
        scale.churn(figures, bursts, burst, rng)
    finally:
        scale.close()
    return figures
