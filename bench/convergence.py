"""Convergence on a real testbed: `make converge` (5 hosts, 50 containers).

    .venv/bin/python -m bench.convergence [--hosts 5] [--rounds 50] [--out results/]

Each round starts a container on one host (in turn) and times, from `docker run`, until every
other host's container gets a UDP reply from it (udpecho probes every 10 ms, from inside each
prober's network namespace); then removes it and times until its neighbour entry is gone from
every other host's vxlan device. A watch on etcd timestamps the endpoint record's write and
delete, so the control plane's own share (record to all hosts) is reported too. Record:
results/convergence.json and results/convergence.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from docker.types import IPAMConfig, IPAMPool
from pyroute2 import NetNS

from lab import results
from lab.image import ensure_image
from lab.scale import has_neighbour
from lab.testbed import Testbed
from xmasq_driver.config import Config
from xmasq_driver.control.kv import EtcdKV
from xmasq_driver.control.layout import ENDPOINTS, NETWORKS, PREFIX
from xmasq_driver.dataplane.overlay import vxlan_name

NET, SUBNET = "converge", "10.235.0.0/24"
TARGETS = "reachable from all others p99 < 1 s (docker run included); removal gone from all p99 < 200 ms"


class Recorder(threading.Thread):
    """Watches etcd: when each endpoint record of the network was written and deleted."""

    def __init__(self, kv: EtcdKV):
        super().__init__(daemon=True)
        self.kv, self.stop = kv, threading.Event()
        self.seen: dict[tuple[str, str], float] = {}  # (ip, "put" | "delete") -> when
        self.revision = kv.list_prefix(PREFIX)[1] + 1

    def run(self) -> None:
        while not self.stop.is_set():
            changes = self.kv.watch(ENDPOINTS.prefix(NET), self.revision, 1.0)
            now = time.monotonic()
            for key, value in changes.events:
                self.seen[(ENDPOINTS.parts_of(key)[1], "put" if value is not None else "delete")] = now
            self.revision = max(self.revision, changes.revision + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    args = parser.parse_args(argv)
    tb = Testbed.up(args.hosts)
    rounds: list[dict[str, float]] = []
    namespaces = {h: NetNS(tb.netns(h)) for h in tb.hosts}
    try:
        dk = {h: tb.docker(h) for h in tb.hosts}
        image = {h: ensure_image(dk[h]) for h in tb.hosts}
        for h in tb.hosts:
            dk[h].networks.create(
                NET,
                driver="xmasq",
                ipam=IPAMConfig(driver="xmasq", pool_configs=[IPAMPool(subnet=SUBNET)]),
                options={"xmasq.network": NET},
            )
        probers = {h: dk[h].containers.run(image[h], ["sleep", "3600"], network=NET, detach=True) for h in tb.hosts}
        pids = {h: c.attrs["State"]["Pid"] or _pid(c) for h, c in probers.items()}
        kv = EtcdKV(Config(etcd_endpoints=tb.etcd_endpoint))
        vni = json.loads(kv.get(NETWORKS.key(NET)) or "{}")["vni"]
        recorder = Recorder(kv)
        recorder.start()
        with concurrent.futures.ThreadPoolExecutor(len(tb.hosts)) as pool:
            for r in range(args.rounds):
                host = tb.hosts[r % len(tb.hosts)]
                others = [h for h in tb.hosts if h != host]
                start = time.monotonic()
                c = dk[host].containers.run(image[host], ["udpecho", "serve", "5001"], network=NET, detach=True)
                c.reload()
                ip = c.attrs["NetworkSettings"]["Networks"][NET]["IPAddress"]
                reached = max(pool.map(_probe, [pids[h] for h in others], [ip] * len(others)))
                gone_start = time.monotonic()
                c.remove(force=True)
                removed = time.monotonic()
                gone = max(pool.map(_gone, [namespaces[h] for h in others], [vni] * len(others), [ip] * len(others)))
                time.sleep(0.3)  # the recorder's watch has seen the delete
                rounds.append(
                    {
                        "run_to_reached_s": reached - start,
                        "record_to_reached_s": reached - recorder.seen.get((ip, "put"), start),
                        "rm_to_gone_s": gone - gone_start,
                        "rm_returned_to_gone_s": max(0.0, gone - removed),
                        "record_deleted_to_gone_s": gone - recorder.seen.get((ip, "delete"), gone_start),
                    }
                )
                print(f"[converge] round {r + 1}/{args.rounds}: {rounds[-1]}", file=sys.stderr, flush=True)
        recorder.stop.set()
    finally:
        for ns in namespaces.values():
            ns.close()
        tb.down()
    print(results.save(args.out, "convergence", results.record(hosts=args.hosts, rounds=rounds), report))
    return 0


def report(record: dict[str, Any]) -> str:
    rows = [
        ("docker run until every other host gets a reply", "run_to_reached_s"),
        ("endpoint record written until every other host gets a reply", "record_to_reached_s"),
        ("docker rm -f until gone from every other host", "rm_to_gone_s"),
        ("docker rm -f returned until gone from every other host", "rm_returned_to_gone_s"),
        ("endpoint record deleted until gone from every other host", "record_deleted_to_gone_s"),
    ]
    lines = [
        f"{len(record['rounds'])} containers on a {record['hosts']}-host testbed, {record['when']},"
        f" kernel {record['machine']['kernel']}, {record['machine']['cpus']} CPUs",
        "",
        f"Targets: {TARGETS}.",
        "",
        "| ms | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        ms = [r[key] * 1000 for r in record["rounds"]]
        lines.append(f"| {label} | {statistics.median(ms):.0f} | {results.percentile(ms, 0.99):.0f} | {max(ms):.0f} |")
    return "\n".join(lines) + "\n"


def _pid(container: Any) -> int:
    container.reload()
    return int(container.attrs["State"]["Pid"])


def _probe(pid: int, ip: str) -> float:
    """When a UDP reply came back from ip:5001 to the container with this pid."""
    subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "-m", "/bin/udpecho", "wait", ip, "5001", "10"],
        check=True,
        capture_output=True,
    )
    return time.monotonic()


def _gone(ns: NetNS, vni: int, ip: str) -> float:
    """When ip's neighbour entry left this host's vxlan device."""
    index = ns.link_lookup(ifname=vxlan_name(vni))[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not has_neighbour(ns, index, ip):
            return time.monotonic()
        time.sleep(0.001)
    raise TimeoutError(f"{ip} still on a host 10 s after its removal")


if __name__ == "__main__":
    sys.exit(main())
