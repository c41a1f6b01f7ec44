"""Per-packet cost of each eBPF program during a cross-host flow, from the kernel's BPF run-time
statistics (kernel.bpf_stats_enabled): where the fast path spends its time.

    sudo .venv/bin/python bench/profile.py [--seconds S]

Brings up a 2-host testbed, runs iperf3 (TCP) and sockperf (UDP ping-pong) between containers on
the fast path, and prints runs and ns/run per program and host. Removes everything afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.e2e.image import ensure_image  # noqa: E402
from xmasq_driver.testbed import Testbed  # noqa: E402

PROGRAMS = ("from_container", "to_container", "to_nic", "from_nic")


def stats() -> dict[int, dict[str, Any]]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p for p in json.loads(out) if p.get("name") in PROGRAMS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    tb = Testbed.up(2)
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        for h in tb.hosts:
            tb.docker(h).networks.create("profile", driver="xmasq", options={"xmasq.network": "profile"},
                                         ipam={"Driver": "xmasq", "Config": [{"Subnet": "10.253.0.0/24"}]})  # fmt: skip
        servers = "iperf3 -s -D; sockperf server -p 11111 >/dev/null & sleep 100000"
        server = tb.docker("h2").containers.run(ensure_image(tb.docker("h2")), ["sh", "-c", servers],
                                                name="profile-server", network="profile", detach=True)  # fmt: skip
        client = tb.docker("h1").containers.run(ensure_image(tb.docker("h1")), ["sleep", "100000"],
                                                name="profile-client", network="profile", detach=True)  # fmt: skip
        server.reload()
        ip = server.attrs["NetworkSettings"]["Networks"]["profile"]["IPAddress"]
        client.exec_run(["sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", "1"])  # learn the flows
        t = str(args.seconds)
        for what, argv in ((f"iperf3 TCP, {t} s", ["iperf3", "-c", ip, "-t", t]),
                           (f"sockperf UDP ping-pong, {t} s", ["sockperf", "ping-pong", "-i", ip, "-p", "11111",
                                                               "-t", t])):  # fmt: skip
            before = stats()
            client.exec_run(argv)
            print(what)
            for pid, prog in sorted(stats().items()):
                runs = prog.get("run_cnt", 0) - before.get(pid, {}).get("run_cnt", 0)
                ns = prog.get("run_time_ns", 0) - before.get(pid, {}).get("run_time_ns", 0)
                if runs:
                    print(f"  prog {pid:5d} {prog['name']:15s} {runs:9d} runs {ns / runs:7.0f} ns/run")
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=False)
        tb.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
