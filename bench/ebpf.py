"""What each of the driver's eBPF programs costs per packet, from the kernel's run-time statistics
(kernel.bpf_stats_enabled): the nanoseconds a program ran over the times it ran, during a workload,
summed over every loaded instance of it (one per testbed host). The statistics read the clock
twice per run, so they are on only while measured: the benchmark's other figures run without."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

PROGRAMS = ("from_container", "to_container", "to_nic", "from_nic", "to_tun", "from_tun")
_SYSCTL = "kernel.bpf_stats_enabled"


@contextlib.contextmanager
def stats_enabled() -> Iterator[None]:
    """The kernel's BPF run-time statistics on, and back to what they were after."""
    was = subprocess.run(["sysctl", "-n", _SYSCTL], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["sysctl", "-qw", f"{_SYSCTL}=1"], check=True)
    try:
        yield
    finally:
        subprocess.run(["sysctl", "-qw", f"{_SYSCTL}={was}"], check=False)


def _programs(names: tuple[str, ...]) -> dict[int, dict[str, Any]]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p for p in json.loads(out) if p.get("name") in names}


def cost(workload: Callable[[], Any], names: tuple[str, ...] = PROGRAMS) -> dict[str, tuple[int, float]]:
    """Per program of those names that ran during workload() (statistics on): (runs, ns per run)."""
    before = _programs(names)
    workload()
    runs: dict[str, int] = {}
    ns: dict[str, int] = {}
    for pid, prog in _programs(names).items():
        name, was = prog["name"], before.get(pid, {})
        runs[name] = runs.get(name, 0) + prog.get("run_cnt", 0) - was.get("run_cnt", 0)
        ns[name] = ns.get(name, 0) + prog.get("run_time_ns", 0) - was.get("run_time_ns", 0)
    return {name: (n, ns[name] / n) for name, n in runs.items() if n}
