"""Cross-CPU hand-offs behind the figures where the default steering lost to none (issue 15).

Same host, unpinned, 3 s each: UDP and TCP request-response (sockperf), nginx (wrk, 1 thread,
8 connections) and 4 TCP streams from one iperf3, on the default (`rfs`), no steering (`off`) and
Docker's bridge, interleaved per round. A hand-off is a packet queued to another CPU's backlog,
counted by that CPU's RPS wake-ups (/proc/net/softnet_stat, 10th column), per CPU.
Run from the project root as root:
  .venv/bin/python results/steer-experiments/handoffs/measure.py [ROUNDS [SCENARIO,...]]
"""

import sys

sys.path[:0] = ["bench", "."]
import run as bench_run  # noqa: E402

from lab.testbed import Testbed  # noqa: E402

SCENARIOS = ("xmasq-on-local", "xmasq-nosteer-local", "bridge")


def rps_wakeups() -> list[int]:
    """Per CPU, how often another CPU queued packets to it."""
    with open("/proc/net/softnet_stat") as f:
        return [int(line.split()[9], 16) for line in f]


def measured(run, argv, parse):
    before = rps_wakeups()
    result = parse(run(argv))
    return result, [b - a for a, b in zip(before, rps_wakeups(), strict=True)]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    scenarios = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else SCENARIOS
    tb = Testbed.up(2)
    bench = bench_run.Bench(tb, 3, scenarios, 1)
    try:
        bench.setup()
        for r in range(rounds):
            for s in scenarios:
                run, ip = bench.client(s, False)
                pingpong = ["sockperf", "ping-pong", "--pre-warmup-wait", "1", "-i", ip, "-t", "3"]
                for name, extra in (("udp_rr", ["-p", "11111"]), ("tcp_rr", ["--tcp", "-p", "11112"])):
                    res, w = measured(run, [*pingpong, *extra], bench_run.parse_sockperf)
                    print(f"{r} {s:20s} {name:7s} {res['rate']:9.0f}/s p99 {res['p99_us']:6.1f} us  hand-offs {w}")
                wrk = ["wrk", "-t", "1", "-c", "8", "-d", "3s", "--latency", f"http://{ip}:8080/index.html"]
                res, w = measured(run, wrk, bench_run.parse_wrk)
                print(f"{r} {s:20s} nginx   {res['rps']:9.0f}/s p99 {res['p99_ms'] * 1e3:6.0f} us  hand-offs {w}")
                iperf = ["iperf3", "-c", ip, "-t", "3", "-P", "4", "-J"]
                rep, w = measured(run, iperf, bench_run.parse_iperf)
                gbps = rep["end"]["sum_received"]["bits_per_second"] / 1e9
                retr = rep["end"]["sum_sent"].get("retransmits", 0)
                print(f"{r} {s:20s} tcp4    {gbps:9.2f} Gbit/s, {retr} retransmits  hand-offs {w}", flush=True)
    finally:
        bench.close()
        tb.down()


if __name__ == "__main__":
    main()
