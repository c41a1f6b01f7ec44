"""Where the fast path spends its time, against the host network, on a 2-host testbed.

    .venv/bin/python -m bench.profile [--seconds S] [--pairs N] [--cpu CPU]

1. Per packet, each eBPF program (the kernel's BPF run-time statistics, kernel.bpf_stats_enabled)
   during an iperf3 TCP flow and a sockperf UDP ping-pong between containers on the fast path.
2. Per UDP round trip, the CPU by kernel area (perf, cpu-clock, all CPUs, idle left out) for the
   host network and for the fast path, in N interleaved pairs. Clients and servers run on one CPU,
   so a round trip is CPU work, not waiting for another CPU to wake up; only the measurement's own
   processes count (sockperf, softirqs on idle CPUs, ksoftirqd). Needs perf (Debian: linux-perf).
   With the default flow steering (XMASQ_STEER_FLOWS=rfs; the testbed's drivers take this
   environment) a pinned flow stays on its CPU, so the figures are the data path's work alone;
   with rps each flow's packets go to the CPU its hash picks, and a round trip also pays the
   hand-off both ways when that is not the pinned CPU.
3. Inside each program, under the same two flows: perf call chains (-g), each program's samples by
   what it called (a map lookup, bpf_skb_adjust_room, ...) or its own code, as shares: with part
   1's ns per run, where a packet's time goes under traffic (BPF_PROG_TEST_RUN's hot caches,
   `make programs`, hide the map lookups' cache misses).
Removes everything afterwards.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import ebpf
from bench import run as bench
from lab import require
from lab.testbed import Testbed

SCENARIOS = ("host", "xmasq-on")
FREQ = 4999  # perf samples per second and CPU
COMMS = re.compile(r"^(sockperf|swapper|ksoftirqd/\d+)$")
IDLE = re.compile(r"halt|idle")
# (area, kernel symbol pattern): the first match wins. A reading aid, not an exact accounting.
AREAS = (
    ("eBPF and tc", r"^bpf_|htab|lookup_nulls|_redirect|^tc_run|cls_bpf|tcf_classify|dev_get_by_index|veth_peer_dev"),
    ("netfilter", r"^nf_|^nft_|conntrack|^ipt_|br_nf"),
    (
        "devices and queues",
        r"veth|dev_queue_xmit|^netif_|napi|backlog|net_rx_action|validate_xmit|skb_features|"
        r"dev_hard_start|eth_type_trans|softirq|^br_",
    ),
    ("scheduling", r"sched|switch|wake|enqueue|dequeue|update_curr|pick_|psi_|select_task|cgroup|ttwu|call_function"),
    ("syscalls and seccomp", r"seccomp|syscall|entry_SYSCALL|rseq|x64_sys"),
    ("IP, UDP, sockets", r"^_*ip_|udp|sock|skb|fib_|route|dst_|csum|inet"),
)


def flows(ip: str, seconds: int) -> tuple[tuple[str, list[str]], ...]:
    """The two flows the profile runs, `seconds` long each: (name, client command)."""
    t = str(seconds)
    return (
        ("iperf3 TCP", ["iperf3", "-c", ip, "-t", t]),
        ("sockperf UDP ping-pong", ["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", t]),
    )


def perf_during(runner: bench.Runner, argv: list[str], seconds: int, data: str, *options: str) -> str:
    """perf record on all CPUs (with `options`) for `seconds`, from 1 s after the client `argv`
    started (past its start; it must run 2 s longer); the client's output."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        client = pool.submit(runner, argv)
        time.sleep(1)
        record = ["perf", "record", "-q", "-a", *options, "-F", str(FREQ), "-o", data, "--", "sleep", str(seconds)]
        subprocess.run(record, check=True, capture_output=True)
        return client.result()


def per_program(runner: bench.Runner, ip: str, seconds: int) -> None:
    for what, argv in flows(ip, seconds):
        with ebpf.stats_enabled():
            costs = ebpf.cost(lambda argv=argv: runner(argv))
        print(f"{what}, {seconds} s")
        for name, (runs, ns) in sorted(costs.items()):
            print(f"  {name:15s} {runs:9d} runs {ns:7.0f} ns/run")


PROG = re.compile(r"bpf_prog_[0-9a-f]+_(\w+)")


def callees(script: str) -> dict[str, dict[str, int]]:
    """Samples inside each eBPF program from `perf script` call chains, by what the program called
    (the frame just above the program's, with all it called in turn) or "own code"."""
    by: dict[str, dict[str, int]] = {}
    for sample in script.split("\n\n"):
        frames = [parts[1].split("+")[0] for line in sample.splitlines() if len(parts := line.split()) > 1]
        for i, sym in enumerate(frames):
            m = PROG.fullmatch(sym)
            if m:
                what = frames[i - 1] if i else "own code"
                by.setdefault(m.group(1), {}).setdefault(what, 0)
                by[m.group(1)][what] += 1
                break
    return by


def inside_programs(runner: bench.Runner, ip: str, seconds: int, tmp: str) -> None:
    """Where each program's time goes under traffic: perf call chains, shares of its samples."""
    data = os.path.join(tmp, "perf-g.data")
    for what, argv in flows(ip, seconds + 2):
        perf_during(runner, argv, seconds, data, "-g")
        script = subprocess.run(
            ["perf", "script", "-i", data, "-F", "ip,sym"], check=True, capture_output=True, text=True
        ).stdout
        print(f"Inside each program, {what} (perf call chains: what it called, share of its samples)")
        for prog, parts in sorted(callees(script).items()):
            total = sum(parts.values())
            top = sorted(parts.items(), key=lambda kv: -kv[1])[:8]
            print(f"  {prog} ({total} samples): " + ", ".join(f"{k} {100 * n / total:.0f}%" for k, n in top))


def parse_perf(report: str) -> dict[str, float]:
    """Samples by area from `perf report --sort comm,sym -n`, the measurement's processes only."""
    areas: dict[str, float] = {}
    for line in report.splitlines():
        m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
        if not m or not COMMS.match(m.group(2)) or IDLE.search(m.group(4)):
            continue
        sym = m.group(4)
        area = "user space" if m.group(3) == "." else next((a for a, p in AREAS if re.search(p, sym)), "other kernel")
        areas[area] = areas.get(area, 0) + int(m.group(1))
    return areas


def us_per_round_trip(samples: dict[str, float], seconds: float, rate: float) -> dict[str, float]:
    return {area: n / FREQ / (rate * seconds) * 1e6 for area, n in samples.items()}


def round_trip_cpu(runner: bench.Runner, ip: str, seconds: int, tmp: str) -> tuple[float, dict[str, float]]:
    """Round trips per second, and CPU microseconds per round trip by area, of one ping-pong."""
    data = os.path.join(tmp, "perf.data")
    _, ping_pong = flows(ip, seconds + 2)[1]
    rate = bench.parse_sockperf(perf_during(runner, ping_pong, seconds, data))["rate"]
    report = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "-n", "--sort", "comm,sym"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return rate, us_per_round_trip(parse_perf(report), seconds, rate)


def breakdown_table(pairs: list[dict[str, tuple[float, dict[str, float]]]]) -> str:
    """Medians over the pairs: CPU us per round trip by area, host network against the fast path."""
    areas = sorted({a for p in pairs for _, by in p.values() for a in by})

    def med(scenario: str, area: str | None = None) -> float:  # area None: the total
        by_pair = [p[scenario][1] for p in pairs]
        return statistics.median(sum(by.values()) if area is None else by.get(area, 0.0) for by in by_pair)

    diff = {a: med("xmasq-on", a) - med("host", a) for a in areas}
    rows = [
        f"| {a} | {med('host', a):.2f} | {med('xmasq-on', a):.2f} | {diff[a]:+.2f} |"
        for a in sorted(areas, key=lambda a: -diff[a])
    ]
    h, x = med("host"), med("xmasq-on")
    rates = " ".join(f"{p['xmasq-on'][0] / p['host'][0]:.2f}" for p in pairs)
    header = ["| area | host | xmasq-on | difference |", "|---|---|---|---|"]
    total = f"| total | {h:.1f} | {x:.1f} | {x - h:+.1f} |"
    return "\n".join([*header, *rows, total, f"round trips/s, xmasq-on / host per pair: {rates}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved host / fast-path pairs for part 2")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU that clients and servers run on")
    args = parser.parse_args()
    require("the profile", commands=("perf", "bpftool"))
    tb = Testbed.up(2)
    bed = bench.Bench(tb, args.seconds, SCENARIOS, args.cpu)
    tmp = tempfile.mkdtemp(prefix="xmasq-profile-")
    try:
        bed.setup()
        runner, ip = bed.targets["xmasq-on"]
        per_program(runner, ip, args.seconds)
        inside_programs(runner, ip, args.seconds, tmp)
        pairs = []
        for i in range(args.pairs):
            print(f"[profile] pair {i + 1}/{args.pairs}", file=sys.stderr, flush=True)
            pairs.append({s: round_trip_cpu(*bed.client(s, pinned=True), args.seconds, tmp) for s in SCENARIOS})
        print(f"CPU per UDP round trip (us), clients and servers on CPU {args.cpu}, medians of {args.pairs} pairs")
        print(breakdown_table(pairs))
    finally:
        bed.close()
        tb.down()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
