"""Benchmark on the testbed: xmasq's fast path against the host network and the slow path.

    sudo .venv/bin/python bench/run.py [--quick] [--rounds N] [--seconds S] [--out results/]

Two testbed hosts (network namespaces on a veth underlay on this machine, so absolute numbers
are not NIC numbers). Cross-host: the host network between the two host namespaces, xmasq with
the fast path off, and on. Same host (containers on h2): Docker's bridge driver, xmasq off, on.
All scenarios are measured in the same run with rounds interleaved (A B C D E F, A B C D E F, ...);
each figure is the median over rounds, with min and max. Metrics: TCP throughput and retransmits
(iperf3, 1 stream), TCP and UDP request-response rate and latency (sockperf ping-pong, 64-byte
messages). Prints markdown tables with ratios to the baselines, writes every raw sample to JSON.
With --pin CPU, every client and server runs on that one CPU (no cross-CPU wake-ups or reordering
on this 2-vCPU machine); without it they are unpinned. Report both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.e2e.image import ensure_image  # noqa: E402
from xmasq_driver.testbed import Testbed  # noqa: E402

CROSS = ("host", "xmasq-off", "xmasq-on")
SAME = ("bridge", "xmasq-off-local", "xmasq-on-local")
SCENARIOS = CROSS + SAME
SERVERS = "iperf3 -s -D; sockperf server -p 11111 >/dev/null & sockperf server --tcp -p 11112 >/dev/null & sleep 100000"


def parse_sockperf(out: str, seconds: float) -> dict[str, float]:
    m = re.search(r"RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", out)
    if not m:
        raise RuntimeError(f"sockperf output not understood:\n{out[-2000:]}")
    pct = {float(p): float(v) for p, v in re.findall(r"percentile\s+([\d.]+)\s+=\s+([\d.]+)", out)}
    return {"rate": int(m.group(3)) / float(m.group(1)), "p50_us": pct.get(50.0, 0.0), "p99_us": pct.get(99.0, 0.0)}


class Bench:
    def __init__(self, seconds: float, pin: int | None = None):
        self.seconds = seconds
        self.pin = ["taskset", "-c", str(pin)] if pin is not None else []
        self.servers = " ".join(self.pin) + " sh -c '" + SERVERS + "'" if pin is not None else SERVERS
        self.tb = Testbed.up(2)
        self.targets: dict[str, tuple[Any, str]] = {}  # scenario -> (runner, server address)
        self.cleanup: list[Any] = []

    def setup(self) -> None:
        # Host network: the tools run directly in the hosts' namespaces.
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.tb.netns("h2"), "sh", "-c", self.servers],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.cleanup.append(server)
        self.targets["host"] = (self._host_runner, self.tb.host_ip("h2"))
        for scenario, fastpath in (("xmasq-off", "off"), ("xmasq-on", "on")):
            name = f"bench-{fastpath}"
            clients = {}
            for host in self.tb.hosts:  # client on h1 (cross-host) and on h2 (same host), server on h2
                dk = self.tb.docker(host)
                image = ensure_image(dk)
                subnet = "10.251.0.0/24" if fastpath == "on" else "10.250.0.0/24"
                dk.networks.create(
                    name, driver="xmasq", options={"xmasq.network": name, "xmasq.fastpath": fastpath},
                    ipam={"Driver": "xmasq", "Config": [{"Subnet": subnet}]},
                )  # fmt: skip
                cmd = self.servers if host == "h2" else "sleep 100000"
                clients[host] = dk.containers.run(
                    image, ["sh", "-c", cmd], name=f"{name}-{host}", network=name, detach=True
                )
                if host == "h2":
                    clients["local"] = dk.containers.run(
                        image, ["sleep", "100000"], name=f"{name}-local", network=name, detach=True
                    )
            ip = _address(clients["h2"], name)
            self.targets[scenario] = (lambda argv, c=clients["h1"]: _exec(c, argv), ip)
            self.targets[scenario + "-local"] = (lambda argv, c=clients["local"]: _exec(c, argv), ip)
        dk = self.tb.docker("h2")
        dk.networks.create("bench-bridge", driver="bridge")
        image = ensure_image(dk)
        server = dk.containers.run(
            image, ["sh", "-c", SERVERS], name="bridge-server", network="bench-bridge", detach=True
        )
        client = dk.containers.run(
            image, ["sleep", "100000"], name="bridge-client", network="bench-bridge", detach=True
        )
        self.targets["bridge"] = (lambda argv, c=client: _exec(c, argv), _address(server, "bench-bridge"))
        time.sleep(1)
        for scenario in SCENARIOS:  # warm up: ARP, the slow path's first packets, fast-path learning
            runner, ip = self.targets[scenario]
            runner(["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", "1"])

    def _host_runner(self, argv: list[str]) -> str:
        return subprocess.run(["ip", "netns", "exec", self.tb.netns("h1"), *argv], capture_output=True, text=True,
                              timeout=self.seconds + 60).stdout  # fmt: skip

    def measure(self, scenario: str) -> dict[str, float]:
        target, ip = self.targets[scenario]

        def runner(argv: list[str]) -> str:
            return target([*self.pin, *argv])

        t = str(self.seconds)
        iperf = json.loads(runner(["iperf3", "-c", ip, "-t", t, "-J"]))
        tcp_rr = parse_sockperf(
            runner(["sockperf", "ping-pong", "--tcp", "-i", ip, "-p", "11112", "-t", t]), self.seconds
        )
        udp_rr = parse_sockperf(runner(["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", t]), self.seconds)
        return {
            "tcp_gbps": iperf["end"]["sum_received"]["bits_per_second"] / 1e9,
            "tcp_retransmits": iperf["end"]["sum_sent"].get("retransmits", 0),
            "tcp_rr_per_s": tcp_rr["rate"],
            "tcp_rr_p99_us": tcp_rr["p99_us"],
            "udp_rr_per_s": udp_rr["rate"],
            "udp_rr_p50_us": udp_rr["p50_us"],
            "udp_rr_p99_us": udp_rr["p99_us"],
        }

    def close(self) -> None:
        for p in self.cleanup:
            p.kill()
        self.tb.down()


def _address(container: Any, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _exec(container: Any, argv: list[str]) -> str:
    code, out = container.exec_run(argv)
    return out.decode(errors="replace")


def table(samples: dict[str, list[dict[str, float]]], group: tuple[str, ...]) -> str:
    """Medians (min-max) of one group (baseline, off, on), with on/baseline and on/off ratios."""
    base, off, on = group
    lines = [f"| metric | {base} | {off} | {on} | on / {base} | on / off |", "|---" * 6 + "|"]
    for m in samples[base][0]:
        med = {s: statistics.median(r[m] for r in samples[s]) for s in group}
        cells = [
            f"{med[s]:.3g} ({min(r[m] for r in samples[s]):.3g}-{max(r[m] for r in samples[s]):.3g})" for s in group
        ]
        ratio = lambda a, b: f"{a / b:.2f}" if b else "-"  # noqa: E731
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ratio(med[on], med[base])} | {ratio(med[on], med[off])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s (a change check, < 3 min)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pin", type=int, default=None, metavar="CPU", help="run clients and servers on this CPU")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    args = parser.parse_args()
    rounds, seconds = (3, 2.0) if args.quick else (args.rounds, args.seconds)
    bench = Bench(seconds, args.pin)
    samples: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
    started = time.monotonic()
    try:
        bench.setup()
        for r in range(rounds):
            for i, scenario in enumerate(SCENARIOS):
                done = r * len(SCENARIOS) + i
                eta = (time.monotonic() - started) / done * (rounds * len(SCENARIOS) - done) if done else 0
                print(f"[bench] round {r + 1}/{rounds} {scenario} (ETA {eta:.0f} s)", file=sys.stderr, flush=True)
                samples[scenario].append(bench.measure(scenario))
    finally:
        bench.close()
    md = (
        "Cross-host (client on h1, server on h2)\n\n" + table(samples, CROSS)
        + "\n\nSame host (client and server on h2)\n\n" + table(samples, SAME)
    )  # fmt: skip
    print(md)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "when": stamp, "rounds": rounds, "seconds": seconds, "pin": args.pin, "samples": samples,
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "testbed": "2 hosts, veth underlay"},
    }  # fmt: skip
    name = ("quick" if args.quick else "full") + (f"-pinned{args.pin}" if args.pin is not None else "")
    with open(os.path.join(args.out, f"bench-{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    pinning = f"pinned to CPU {args.pin}" if args.pin is not None else "unpinned"
    with open(os.path.join(args.out, f"bench-{name}.md"), "w") as f:
        f.write(
            f"{rounds} rounds x {seconds:g} s, {pinning}, {stamp}, kernel {platform.release()}, "
            f"{os.cpu_count()} CPUs\n\n{md}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
