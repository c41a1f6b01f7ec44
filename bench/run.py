"""Benchmark on the testbed: xmasq against host networking, Docker's overlay and bridge drivers.

    sudo .venv/bin/python bench/run.py [--quick] [--rounds N] [--seconds S] [--pin CPU] [--out results/]

Two testbed hosts (network namespaces on a veth underlay on this machine, so absolute numbers
are not NIC numbers), which also form a swarm for Docker's overlay driver. Cross-host (client on
h1, server on h2): the host network between the two host namespaces (the ceiling), Docker's
overlay (an attachable swarm network), xmasq with the fast path off (its standard overlay), and
on. Same host (client and server on h2): Docker's bridge driver, xmasq off, on. Every scenario is
measured in the same run with rounds interleaved (A B C ..., A B C ..., ...); each figure is the
median over rounds with min and max.
Metrics: TCP throughput with 1 and 4 streams and retransmits (iperf3), CPU seconds per GB moved
(the whole machine's busy time from /proc/stat during the 1-stream run), UDP throughput with
1400-byte datagrams, TCP and UDP request-response rate and latency p50/p99 (sockperf ping-pong),
and nginx serving a small file to wrk (requests/s, p99). Control plane: docker run -> first ping
from the other host, and 50 containers starting at once on one host (xmasq vs bridge).
Writes a markdown table (ratios to host network, Docker's overlay, bridge), a JSON file with every
raw sample and the machine, and PNG charts (bars with min-max whiskers). With --pin CPU every
client and server runs on that CPU; without it they are unpinned: report both.
--quick (make bench QUICK=1) measures host, xmasq-off and xmasq-on, 3 rounds of 1 s: a check of a
change in under 3 minutes. The full run (make bench) takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.e2e.image import NGINX_CONF, ensure_image  # noqa: E402
from xmasq_driver.testbed import Testbed  # noqa: E402

CROSS = ("host", "overlay", "xmasq-off", "xmasq-on")
SAME = ("bridge", "xmasq-off-local", "xmasq-on-local")
QUICK = ("host", "xmasq-off", "xmasq-on")  # a change check in under 3 minutes
SERVERS = (
    "iperf3 -s -D; sockperf server -p 11111 >/dev/null & sockperf server --tcp -p 11112 >/dev/null &"
    " /usr/sbin/nginx -e /tmp/nginx-error.log -c /etc/nginx.conf & sleep 100000"
)
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


def busy_seconds() -> float:
    """CPU time this machine spent busy (all CPUs, every mode but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, tb: Testbed, seconds: float, scenarios: tuple[str, ...], pin: int | None = None):
        self.tb, self.seconds, self.scenarios = tb, seconds, scenarios
        self.pin = ["taskset", "-c", str(pin)] if pin is not None else []
        self.servers = f"{' '.join(self.pin)} sh -c '{SERVERS}'" if pin is not None else SERVERS
        self.targets: dict[str, tuple[Runner, str]] = {}  # scenario -> (run a command at the client, server)
        self.containers: dict[str, Any] = {}  # (name) -> container, on every host
        self.networks: list[Any] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.swarm = False
        self.tmp = tempfile.mkdtemp(prefix="xmasq-bench-")

    # -- setup ------------------------------------------------------------
    def setup(self) -> None:
        if "host" in self.scenarios:
            # nginx in the host namespace: the image's configuration, with a root and pid file here.
            with open(NGINX_CONF) as f:
                conf = f.read().replace("/www", f"{self.tmp}/www").replace("/tmp/nginx", f"{self.tmp}/nginx")
            os.makedirs(f"{self.tmp}/www")
            with open(f"{self.tmp}/www/index.html", "w") as f:
                f.write("hello from xmasq\n")
            with open(f"{self.tmp}/nginx.conf", "w") as f:
                f.write(conf)
            servers = self.servers.replace("/etc/nginx.conf", f"{self.tmp}/nginx.conf")
            argv = ["ip", "netns", "exec", self.tb.netns("h2"), "sh", "-c", servers]
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            self.processes.append(subprocess.Popen(argv, **quiet, start_new_session=True))  # type: ignore[call-overload]
            self.targets["host"] = (self._in_netns("h1"), self.tb.host_ip("h2"))
        for fastpath in ("off", "on"):
            if f"xmasq-{fastpath}" in self.scenarios or f"xmasq-{fastpath}-local" in self.scenarios:
                net = f"{PREFIX}{fastpath}"
                subnet = {"off": "10.250.0.0/24", "on": "10.251.0.0/24"}[fastpath]
                for host in ("h1", "h2"):
                    self._network(host, net, driver="xmasq", options={"xmasq.network": net, "xmasq.fastpath": fastpath},
                                  ipam={"Driver": "xmasq", "Config": [{"Subnet": subnet}]})  # fmt: skip
                self._pair(f"xmasq-{fastpath}", net)
        if "overlay" in self.scenarios:
            self.tb.swarm("h1", ["h2"])
            self.swarm = True
            self._network("h1", f"{PREFIX}overlay", driver="overlay", attachable=True,
                          ipam={"Config": [{"Subnet": "10.252.0.0/24"}]})  # fmt: skip
            self._pair("overlay", f"{PREFIX}overlay")
        if "bridge" in self.scenarios:
            self._network("h2", f"{PREFIX}bridge", driver="bridge")
            self._pair("bridge", f"{PREFIX}bridge", same_host_only=True)
        time.sleep(1)
        for scenario in self.scenarios:  # warm up: ARP, the slow path's first packets, fast-path learning
            runner, ip = self.targets[scenario]
            runner(["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", "1"])

    def _network(self, host: str, name: str, **kw: Any) -> None:
        self.networks.append(self.tb.docker(host).networks.create(name, **kw))

    def _pair(self, scenario: str, net: str, same_host_only: bool = False) -> None:
        """A server on h2, a client on h1 (scenario) and one on h2 (scenario-local)."""
        server = self._run("h2", f"{PREFIX}{scenario}-server", net, self.servers)
        ip = _address(server, net)
        if not same_host_only:
            client = self._run("h1", f"{PREFIX}{scenario}-client", net, "sleep 100000")
            self.targets[scenario] = (lambda argv, c=client: _exec(c, argv), ip)
        local = self._run("h2", f"{PREFIX}{scenario}-local", net, "sleep 100000")
        self.targets[scenario if same_host_only else f"{scenario}-local"] = (lambda argv, c=local: _exec(c, argv), ip)

    def _run(self, host: str, name: str, net: str, command: str) -> Any:
        dk = self.tb.docker(host)
        c = dk.containers.run(ensure_image(dk), ["sh", "-c", command], name=name, network=net, detach=True)
        self.containers[name] = c
        return c

    def _in_netns(self, host: str) -> Runner:
        def run(argv: list[str]) -> str:
            return subprocess.run(["ip", "netns", "exec", self.tb.netns(host), *argv], capture_output=True,
                                  text=True, timeout=self.seconds + 60).stdout  # fmt: skip

        return run

    # -- one round of one scenario -----------------------------------------
    def client(self, scenario: str) -> tuple[Runner, str]:
        """Run a command at the scenario's client (on the pinned CPU, if any); the server's address."""
        target, ip = self.targets[scenario]

        def run(argv: list[str]) -> str:
            return target([*self.pin, *argv])

        return run, ip

    def measure(self, scenario: str) -> dict[str, float]:
        run, ip = self.client(scenario)
        t = str(self.seconds)
        busy = busy_seconds()
        tcp = parse_iperf(run(["iperf3", "-c", ip, "-t", t, "-J"]))
        busy = busy_seconds() - busy
        tcp4 = parse_iperf(run(["iperf3", "-c", ip, "-t", t, "-P", "4", "-J"]))
        udp = parse_iperf(run(["iperf3", "-c", ip, "-t", t, "-u", "-b", "0", "-l", "1400", "-J"]))
        tcp_rr = parse_sockperf(run(["sockperf", "ping-pong", "--tcp", "-i", ip, "-p", "11112", "-t", t]))
        udp_rr = parse_sockperf(run(["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", t]))
        http = parse_wrk(run(["wrk", "-t", "1", "-c", "8", "-d", f"{max(1, int(self.seconds))}s", "--latency",
                              f"http://{ip}:8080/index.html"]))  # fmt: skip
        moved_gb = tcp["end"]["sum_received"]["bytes"] / 1e9
        return {
            "tcp_gbps": tcp["end"]["sum_received"]["bits_per_second"] / 1e9,
            "tcp4_gbps": tcp4["end"]["sum_received"]["bits_per_second"] / 1e9,
            "tcp_retransmits": tcp["end"]["sum_sent"].get("retransmits", 0),
            "cpu_s_per_gb": busy / moved_gb if moved_gb else 0.0,
            "udp1400_gbps": udp["end"]["sum"]["bits_per_second"] * (1 - udp["end"]["sum"]["lost_percent"] / 100) / 1e9,
            "tcp_rr_per_s": tcp_rr["rate"],
            "tcp_rr_p50_us": tcp_rr["p50_us"],
            "tcp_rr_p99_us": tcp_rr["p99_us"],
            "udp_rr_per_s": udp_rr["rate"],
            "udp_rr_p50_us": udp_rr["p50_us"],
            "udp_rr_p99_us": udp_rr["p99_us"],
            "http_rps": http["rps"],
            "http_p99_ms": http["p99_ms"],
        }

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

    def close(self) -> None:
        for c in self.containers.values():
            c.remove(force=True)
        for n in self.networks:
            n.remove()
        for p in self.processes:
            p.kill()
        if self.processes:  # the host scenario's servers (iperf3 daemonizes itself)
            pids = subprocess.run(["ip", "netns", "pids", self.tb.netns("h2")], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() in ("iperf3", "sockperf", "nginx"):
                        os.kill(int(pid), signal.SIGKILL)
        if self.swarm:
            for h in ("h2", "h1"):
                self.tb.docker(h).swarm.leave(force=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _address(container: Any, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _exec(container: Any, argv: list[str]) -> str:
    return container.exec_run(argv)[1].decode(errors="replace")


# -- reporting ------------------------------------------------------------
def summary(samples: list[dict[str, float]], metric: str) -> tuple[float, float, float]:
    values = [s[metric] for s in samples]
    return statistics.median(values), min(values), max(values)


def ratio(on: list[dict[str, float]], ref: list[dict[str, float]], metric: str) -> str:
    """Ratio of the medians, and (min-max) of the ratios within each round: a round measures every
    scenario back to back, so its ratio is the least touched by the machine's drift."""
    base = summary(ref, metric)[0]
    if not base:
        return "-"
    rounds = [a[metric] / b[metric] for a, b in zip(on, ref, strict=False) if b[metric]]
    return f"{summary(on, metric)[0] / base:.2f} ({min(rounds):.2f}-{max(rounds):.2f})"


def table(samples: dict[str, list[dict[str, float]]], group: tuple[str, ...], baselines: tuple[str, ...]) -> str:
    """Medians (min-max) of each scenario, and xmasq-on's ratio to each baseline and to xmasq-off."""
    group = tuple(s for s in group if samples.get(s))
    on = next((s for s in group if s.startswith("xmasq-on")), None)
    refs = [s for s in (*baselines, next((s for s in group if s.startswith("xmasq-off")), None)) if s in group]
    if not group:
        return "(no scenario measured)"
    head = [*group, *(f"on / {r.replace('-local', '')}" for r in refs if on)]
    lines = ["| metric | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for metric in samples[group[0]][0]:
        med = {s: summary(samples[s], metric) for s in group}
        cells = [f"{m:.3g} ({lo:.3g}-{hi:.3g})" for m, lo, hi in med.values()]
        ratios = [ratio(samples[on], samples[r], metric) for r in refs if on]
        lines.append(f"| {metric} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def charts(
    samples: dict[str, list[dict[str, float]]], groups: dict[str, tuple[str, ...]], out: str, name: str
) -> list[str]:
    """One PNG per group: a panel per metric, a bar per scenario (median) with min-max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for title, group in groups.items():
        group = tuple(s for s in group if samples.get(s))
        if not group:
            continue
        metrics = list(samples[group[0]][0])
        cols = 4
        fig, axes = plt.subplots((len(metrics) + cols - 1) // cols, cols, figsize=(16, 3.2 * ((len(metrics) + 3) // 4)))
        for ax, metric in zip(axes.flat, metrics, strict=False):
            med = [summary(samples[s], metric) for s in group]
            err = [[m - lo for m, lo, _ in med], [hi - m for m, _, hi in med]]
            ax.bar(range(len(group)), [m for m, _, _ in med], yerr=err, capsize=4,
                   color=["#999999" if not s.startswith("xmasq-on") else "#2a7ab0" for s in group])  # fmt: skip
            ax.set_xticks(range(len(group)), [s.replace("-local", "") for s in group], rotation=20, fontsize=8)
            ax.set_title(metric, fontsize=9)
        for ax in list(axes.flat)[len(metrics) :]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout()
        path = os.path.join(out, f"bench-{name}-{title.split()[0].lower()}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"3 rounds of 1 s of {','.join(QUICK)}, 3 containers for the control plane")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--pin", type=int, default=None, metavar="CPU", help="run clients and servers on this CPU")
    parser.add_argument("--scenarios", default="", help="comma-separated subset (default: all; --quick: fewer)")
    parser.add_argument("--containers", type=int, default=50, help="containers for the control-plane figures")
    parser.add_argument("--use-testbed", action="store_true", help="use the testbed that is up (else make one)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    args = parser.parse_args(argv)
    rounds, seconds, containers = (3, 1.0, 3) if args.quick else (args.rounds, args.seconds, args.containers)
    wanted = args.scenarios.split(",") if args.scenarios else QUICK if args.quick else CROSS + SAME
    scenarios = tuple(s for s in CROSS + SAME if s in wanted)
    tb = Testbed.load() if args.use_testbed else None
    own = tb is None
    tb = tb or Testbed.up(2)
    bench = Bench(tb, seconds, scenarios, args.pin)
    samples: dict[str, list[dict[str, float]]] = {s: [] for s in scenarios}
    control: dict[str, Any] = {}
    started = time.monotonic()
    try:
        bench.setup()
        total = rounds * len(scenarios)
        for r in range(rounds):
            for i, scenario in enumerate(scenarios):
                done = r * len(scenarios) + i
                eta = (time.monotonic() - started) / done * (total - done) if done else 0
                print(f"[bench] round {r + 1}/{rounds} {scenario} (ETA {eta:.0f} s)", file=sys.stderr, flush=True)
                samples[scenario].append(bench.measure(scenario))
        print(f"[bench] control plane ({containers} containers)", file=sys.stderr, flush=True)
        for net, key in ((f"{PREFIX}on", "xmasq-on"), (f"{PREFIX}overlay", "overlay")):
            if key in scenarios:
                control[f"run_to_ping_s[{key}]"] = bench.run_to_ping(net, containers)
        for net, key in ((f"{PREFIX}on", "xmasq-on-local"), (f"{PREFIX}bridge", "bridge")):
            if key in scenarios:
                control[f"start_{containers}_s[{key.replace('-local', '')}]"] = bench.start_many(net, containers)
    finally:
        bench.close()
        if own:
            tb.down()
    md = (
        "Cross-host (client on h1, server on h2)\n\n" + table(samples, CROSS, ("host", "overlay"))
        + "\n\nSame host (client and server on h2)\n\n" + table(samples, SAME, ("bridge",))
        + "\n\nControl plane\n\n" + control_table(control)
    )  # fmt: skip
    print(md)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = ("quick" if args.quick else "full") + (f"-pinned{args.pin}" if args.pin is not None else "")
    record = {
        "when": stamp, "rounds": rounds, "seconds": seconds, "pin": args.pin, "samples": samples, "control": control,
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "testbed": "2 hosts, veth underlay"},
    }  # fmt: skip
    with open(os.path.join(args.out, f"bench-{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    pngs = charts(samples, {"Cross-host": CROSS, "Same host": SAME}, args.out, name)
    pinning = f"pinned to CPU {args.pin}" if args.pin is not None else "unpinned"
    with open(os.path.join(args.out, f"bench-{name}.md"), "w") as f:
        images = "".join(f"![]({os.path.basename(p)})\n" for p in pngs)
        f.write(f"{rounds} rounds x {seconds:g} s, {pinning}, {stamp}, kernel {platform.release()}, "
                f"{os.cpu_count()} CPUs; ratios: of the medians (min-max of the per-round ratios)\n\n{md}\n\n"
                f"{images}")  # fmt: skip
    return 0


def control_table(control: dict[str, Any]) -> str:
    lines = ["| figure | median | p99 | min | max |", "|---|---|---|---|---|"]
    for key, value in control.items():
        values = sorted(value) if isinstance(value, list) else [value]
        p99 = values[max(0, int(0.99 * len(values)) - 1)] if len(values) > 1 else values[0]
        lines.append(f"| {key} | {statistics.median(values):.2f} | {p99:.2f} | {values[0]:.2f} | {values[-1]:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
