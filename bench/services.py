"""Benchmark: a Swarm service through its VIP on xmasq, against its task's own address and Docker's overlay.

    .venv/bin/python -m bench.services [--rounds N] [--seconds S] [--pin CPU] [--out results/services]

Two testbed hosts with the managed plugin (the build of `scripts/plugin.sh build`) in a swarm; a
service of redis and nginx (one task, on h2) on an xmasq network and on Docker's overlay; one
client container on h1 on both. Scenarios, interleaved in every round, unpinned and pinned:
  xmasq-vip     the service's VIP on the xmasq network (socket load balancing in eBPF)
  xmasq-task    the task's own address on the xmasq network (what the VIP should cost nothing over)
  overlay-vip   the service's VIP on Docker's overlay (IPVS), where the kernel has IPVS
  overlay-task  the task's own address on Docker's overlay: what IPVS adds its cost to, so an upper
                bound for Docker's VIP (this machine's kernel has no IPVS: then the only overlay figure)
Metrics: redis-benchmark GET with 1 and 50 connections, nginx to wrk (1 thread, 8 connections).
Medians of the rounds with min and max; ratios of medians with the per-round spread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.report import ratios, summary
from bench.run import SERVERS, _container_pids, http_load, pin_processes, redis_gets
from lab.image import ensure_image
from lab.testbed import Testbed
from xmasq_driver.ops import client as plugin_api

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PLUGIN = "xmasq/xmasq:latest"
IPVS = os.path.exists("/proc/net/ip_vs")
SCENARIOS = ("xmasq-vip", "xmasq-task", *(("overlay-vip",) if IPVS else ()), "overlay-task")
METRICS = ("redis_c1_per_s", "redis_c50_per_s", "http_rps", "http_p99_ms")
MODES = ("unpinned", "pinned")


class ServiceBench:
    def __init__(self, tb: Testbed, seconds: float, pin: int):
        self.tb, self.seconds, self.pin = tb, seconds, pin
        self.targets: dict[str, str] = {}
        self.server: Any = None
        self.socks: dict[str, str] = {}
        self.client: Any = None
        self.services: list[Any] = []
        self.networks: list[Any] = []

    def setup(self) -> None:
        build = os.path.join(ROOT, "build", "plugin")
        socks = self.socks = {h: self.tb.install_plugin(h, build, PLUGIN) for h in ("h1", "h2")}
        self.tb.swarm("h1", ["h2"])
        mgr, worker = self.tb.docker("h1"), self.tb.docker("h2")
        image = ensure_image(mgr)
        ensure_image(worker)
        xnet = mgr.networks.create(
            "bench-svc", driver=PLUGIN, scope="swarm", attachable=True, ipam={"Config": [{"Subnet": "10.247.0.0/24"}]}
        )
        onet = mgr.networks.create(
            "bench-svcovl", driver="overlay", attachable=True, ipam={"Config": [{"Subnet": "10.246.0.0/24"}]}
        )
        self.networks += [xnet, onet]
        node = worker.info()["Swarm"]["NodeID"]
        svc = mgr.services.create(
            image,
            ["sh", "-c", SERVERS],
            name="bench-srv",
            networks=["bench-svc", "bench-svcovl"],
            constraints=[f"node.id=={node}"],
        )
        self.services.append(svc)
        self.server = _until(
            "the service's task running on h2",
            lambda: next(
                iter(worker.containers.list(filters={"label": "com.docker.swarm.service.name=bench-srv"})), None
            ),
        )
        self.client = mgr.containers.run(
            image, ["sleep", "100000"], name="bench-svc-client", network="bench-svc", detach=True
        )
        mgr.networks.get(onet.id).connect(self.client)
        vips = {
            v["NetworkID"]: v["Addr"].split("/")[0] for v in mgr.services.get(svc.id).attrs["Endpoint"]["VirtualIPs"]
        }
        self.server.reload()
        nets = self.server.attrs["NetworkSettings"]["Networks"]
        self.targets = {
            "xmasq-vip": vips[xnet.id],
            "xmasq-task": nets["bench-svc"]["IPAddress"],
            "overlay-vip": vips[onet.id],
            "overlay-task": nets["bench-svcovl"]["IPAddress"],
        }
        vip = self.targets["xmasq-vip"]
        _until(
            "h1 balances the VIP",
            lambda: any(
                s["vip"] == vip and s["backends"] for s in plugin_api.call(socks["h1"], "/Xmasq.Cache")[1]["services"]
            ),
        )
        for scenario in SCENARIOS:  # warm up: the slow path's first packets, the fast path's learning
            _until(f"redis through {scenario}", lambda ip=self.targets[scenario]: self._answers(ip))

    def _answers(self, ip: str) -> bool:
        return "GET" in self._client(["redis-benchmark", "-h", ip, "-t", "get", "-n", "2000", "-q"], False)

    def _client(self, argv: list[str], pinned: bool) -> str:
        prefix = ["taskset", "-c", str(self.pin)] if pinned else []
        return self.client.exec_run([*prefix, *argv])[1].decode(errors="replace")

    def measure(self, scenario: str, pinned: bool) -> dict[str, float]:
        pin_processes(_container_pids(self.server), self.pin if pinned else None)
        ip = self.targets[scenario]

        def run(argv: list[str]) -> str:
            return self._client(argv, pinned)

        http = http_load(run, f"http://{ip}:8080/index.html", self.seconds)
        return {
            "redis_c1_per_s": redis_gets(run, ip, 1, self.seconds),
            "redis_c50_per_s": redis_gets(run, ip, 50, self.seconds),
            "http_rps": http["rps"],
            "http_p99_ms": http["p99_ms"],
        }

    def _balanced(self, vip: str) -> list[list[str] | None]:
        """Each node's tasks for the VIP, from its `xmasq cache`."""
        found = []
        for sock in self.socks.values():
            services = {s["vip"]: s["backends"] for s in plugin_api.call(sock, "/Xmasq.Cache")[1]["services"]}
            found.append(services.get(vip))
        return found

    def failover(self, kills: int) -> dict[str, list[float]]:
        """Kill the service's task `kills` times: seconds from the kill until no node balances to it,
        and from its replacement running until every node balances to that."""
        vip, worker = self.targets["xmasq-vip"], self.tb.docker("h2")
        gone, joined = [], []
        label = {"label": "com.docker.swarm.service.name=bench-srv"}
        for _ in range(kills):
            old = self.server.attrs["NetworkSettings"]["Networks"]["bench-svc"]["IPAddress"]
            start = time.monotonic()
            self.server.kill()
            while any(old in (t or []) for t in self._balanced(vip)):
                time.sleep(0.01)
            gone.append(time.monotonic() - start)
            killed = self.server.id
            self.server = _until(
                "a replacement task",
                lambda k=killed: next((c for c in worker.containers.list(filters=label) if c.id != k), None),
            )
            running = time.monotonic()  # within the 0.5 s of _until's polling after it started
            new = self.server.attrs["NetworkSettings"]["Networks"]["bench-svc"]["IPAddress"]
            while not all(t == [new] for t in self._balanced(vip)):
                time.sleep(0.01)
            joined.append(time.monotonic() - running)
        self.targets["xmasq-task"] = self.server.attrs["NetworkSettings"]["Networks"]["bench-svc"]["IPAddress"]
        return {"gone_s": gone, "joined_s": joined}

    def node_crash(self) -> dict[str, float]:
        """A third node with two tasks of a service crashes (every process of it killed, its namespace
        gone): seconds until the manager marks it down, and until no node balances to its tasks."""
        mgr = self.tb.docker("h1")
        self.tb.install_plugin("h3", os.path.join(ROOT, "build", "plugin"), PLUGIN)
        self.tb.join_swarm("h1", "h3")
        node = self.tb.docker("h3").info()["Swarm"]["NodeID"]
        image = ensure_image(self.tb.docker("h3"))
        svc = mgr.services.create(
            image,
            ["sh", "-c", SERVERS],
            name="bench-crash",
            networks=["bench-svc"],
            constraints=[f"node.id=={node}"],
            mode={"Replicated": {"Replicas": 2}},
        )
        self.services.append(svc)
        label = {"label": "com.docker.swarm.service.name=bench-crash"}
        tasks = _until(
            "2 tasks on h3",
            lambda: (lambda c: c if len(c) == 2 else None)(self.tb.docker("h3").containers.list(filters=label)),
        )
        ips = {c.attrs["NetworkSettings"]["Networks"]["bench-svc"]["IPAddress"] for c in tasks}
        vip = next(v["Addr"].split("/")[0] for v in mgr.services.get(svc.id).attrs["Endpoint"]["VirtualIPs"])
        _until("both nodes balance h3's tasks", lambda: all(set(t or []) == ips for t in self._balanced(vip)))
        start = time.monotonic()
        self.tb.crash_host("h3")
        found: dict[str, float] = {}
        while len(found) < 2 and time.monotonic() - start < 120:
            now = time.monotonic() - start
            if "gone_s" not in found and not any(ips & set(t or []) for t in self._balanced(vip)):
                found["gone_s"] = now
            if "down_s" not in found and mgr.nodes.get(node).attrs["Status"]["State"] == "down":
                found["down_s"] = now
            time.sleep(0.05)
        with contextlib.suppress(Exception):
            mgr.nodes.get(node).remove(force=True)
        return found

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            for svc in self.services:
                svc.remove()
            if self.client is not None:
                self.client.remove(force=True)
        for net in self.networks:  # once the task has gone
            with contextlib.suppress(SystemExit):
                _until(f"network {net.name} removed", lambda n=net: n.remove() or True, 60)
        for h in ("h1", "h2"):
            self.tb.remove_plugin(h, PLUGIN)


def _until(what: str, ok: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = ok()
            if value:
                return value
        time.sleep(0.5)
    raise SystemExit(f"bench: {what}: not within {timeout}s")


def table(samples: dict[str, list[dict[str, float]]]) -> str:
    head = ["metric", *SCENARIOS, "vip / task", "vip / overlay-vip" if IPVS else "vip / overlay-task"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = "overlay-vip" if IPVS else "overlay-task"
    for m in METRICS:
        cells = [m]
        for s in SCENARIOS:
            med, lo, hi = summary(samples[s], m)
            cells.append(f"{med:.3g} ({lo:.3g}-{hi:.3g})")
        for other in ("xmasq-task", ref):
            r = ratios(samples["xmasq-vip"], samples[other], m)
            invert = m.endswith("_ms")  # lower is better: shown as times better
            if r is not None and invert:
                r = (1 / r[0], 1 / r[2], 1 / r[1])
            cells.append("" if r is None else f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--pin", type=int, default=1)
    ap.add_argument("--kills", type=int, default=10, help="task kills for the failover times")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "services"))
    args = ap.parse_args(argv)
    subprocess.run([os.path.join(ROOT, "scripts", "plugin.sh"), "build"], check=True)
    tb = Testbed.up(3)  # h3 joins for the node crash only
    bench = ServiceBench(tb, args.seconds, args.pin)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {m: {s: [] for s in SCENARIOS} for m in MODES}
    try:
        bench.setup()
        for r in range(args.rounds):
            for mode in MODES:
                for scenario in SCENARIOS:
                    samples[mode][scenario].append(bench.measure(scenario, mode == "pinned"))
            print(f"bench: round {r + 1}/{args.rounds} done", flush=True)
        times = bench.failover(args.kills)
        crash = bench.node_crash()
    finally:
        bench.teardown()
        tb.down()
    os.makedirs(args.out, exist_ok=True)
    lines = [f"# Swarm service through its VIP ({args.rounds} rounds x {args.seconds:g} s, pin CPU {args.pin})", ""]
    if not IPVS:
        lines += [
            "This kernel has no IPVS (CONFIG_IP_VS): Docker's overlay VIP cannot answer here; its task address"
            " is the upper bound of what it would do.",
            "",
        ]
    for mode in MODES:
        lines += [f"## {mode}", "", table(samples[mode]), ""]
    lines += ["## Failover (the task killed; each node's balancer read every 10 ms)", ""]
    for what, label in (
        ("gone_s", "kill -> no node balances to it"),
        ("joined_s", "replacement running -> every node balances to it"),
    ):
        values = sorted(times[what])
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        lines.append(
            f"- {label}: median {statistics.median(values):.2f} s, p99 {p99:.2f} s, max {values[-1]:.2f} s"
            f" ({len(values)} kills)"
        )
    lines += [
        "",
        "## A node crashing (h3, with 2 tasks of another service: all its processes killed, its namespace gone)",
        "",
        f"- the manager marked it down {crash.get('down_s', float('nan')):.1f} s after the crash; no node balanced"
        f" to its tasks {crash.get('gone_s', float('nan')):.1f} s after it (one crash)",
        "",
    ]
    report = "\n".join(lines)
    with open(os.path.join(args.out, "services.md"), "w") as f:
        f.write(report)
    with open(os.path.join(args.out, "services.json"), "w") as f:
        json.dump({"samples": samples, "failover": times, "node_crash": crash}, f, indent=1)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
