"""What each fast-path program costs on one packet, in the kernel, without traffic or a testbed.

    .venv/bin/python -m bench.programs [--base REV|DIR] [--rounds N] [--runs N] [--out results/]

This tree's bpf/ (and with --base, a git revision's bpf/ or a directory of eBPF sources beside
it) is compiled and loaded by the driver's own Datapath, with maps pinned in a throwaway
directory and filters on veth pairs made for it; the slow path's first packets are replayed so
that a flow is learned both ways, then each case runs --runs times per round by
BPF_PROG_TEST_RUN (lab/testrun.py), the trees' rounds interleaved:

    encap        from_container, a 1400-byte UDP datagram to a remote container on that flow
    redirect     from_container, the same to a container on this host (bpf_redirect_peer)
    decap        from_nic, the remote container's VXLAN answer
    learn        to_nic, what the kernel's vxlan device sends (the slow path's packets)
    deliver      to_container, what the bridge delivers (the slow path's packets)

Reported: the median over rounds of each round's median ns per run (min-max over rounds), and a
program that returns at once, the floor every figure includes (the kernel's timing of one run).
Hot caches and one CPU: smaller than `make profile`'s figures under real traffic, and for the
difference a change makes (before and after in the same run), not for the absolute cost.
`make programs BASE=REV` runs it (BASE= a directory also works).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lab import results, testrun
from lab.packets import frame, outer
from xmasq_driver.dataplane.datapath import default_bpf_src
from xmasq_driver.dataplane.overlay import mac_for_ip

VNI, ME, PEER, NEIGHBOUR = 4242, "10.9.0.2", "10.9.0.3", "10.9.0.4"
LOCAL_HOST, REMOTE_HOST = "192.0.2.1", "192.0.2.77"  # never sent to: the packets exist only in test runs
PAYLOAD = b"x" * 1400
TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
FLOOR = "int xmasq_floor(struct __sk_buff *skb) { return 0; }"


def _mac(ip: str) -> str:
    return mac_for_ip(ipaddress.IPv4Address(ip))


@dataclass(frozen=True)
class Case:
    program: str
    packet: bytes
    device: str  # "nic", "me" or "neighbour": whose ifindex the packet arrives with
    verdict: int  # what the program must answer (a miss would measure another path)


CASES = {
    "encap": Case("from_container", frame(ME, PEER, payload=PAYLOAD), "me", TC_ACT_REDIRECT),
    "redirect": Case("from_container", frame(ME, NEIGHBOUR, payload=PAYLOAD), "me", TC_ACT_REDIRECT),
    "decap": Case(
        "from_nic", outer(REMOTE_HOST, LOCAL_HOST, VNI, frame(PEER, ME, 5001, 40000, PAYLOAD)), "nic", TC_ACT_REDIRECT
    ),
    "learn": Case("to_nic", outer(LOCAL_HOST, REMOTE_HOST, VNI, frame(ME, PEER, payload=PAYLOAD)), "nic", TC_ACT_OK),
    "deliver": Case("to_container", frame(PEER, ME, 5001, 40000, PAYLOAD), "me", TC_ACT_OK),
}


class Tree:
    """One bpf/ tree's programs loaded, with an endpoint on this host, a neighbour and a remote
    peer programmed and the flows to both learned."""

    def __init__(self, tag: str, bpf_src: str):
        self.tag = tag
        devices = {d: f"xmpg{tag[:4]}{s}" for d, s in (("nic", "n"), ("me", "m"), ("neighbour", "b"))}
        self.sandbox = testrun.Sandbox(f"/sys/fs/bpf/xmasq/programs-{tag}-{os.getpid()}", devices, bpf_src)
        sb = self.sandbox
        if not sb.load():
            raise RuntimeError(f"{tag}: eBPF programs not loaded: {sb.reason}")
        sb.add_local(devices["me"], VNI, [ME], _mac(ME))
        sb.add_local(devices["neighbour"], VNI, [NEIGHBOUR], _mac(NEIGHBOUR))
        sb.update_remote(VNI, {}, {PEER: (_mac(PEER), REMOTE_HOST)})
        # The slow path's first packets, both ways: out through the NIC and in through the bridge.
        sb.run("to_nic", outer(LOCAL_HOST, REMOTE_HOST, VNI, frame(ME, PEER)), "nic")
        sb.run("to_container", frame(PEER, ME, 5001, 40000), "me")
        sb.run("to_container", frame(ME, NEIGHBOUR), "neighbour")
        sb.run("to_container", frame(NEIGHBOUR, ME, 5001, 40000), "me")

    def runner(self, case: Case) -> testrun.Runner:
        runner = self.sandbox.runner(case.program, case.packet, case.device)
        verdict = runner().verdict
        if verdict != case.verdict:
            raise RuntimeError(f"{self.tag}: {case.program} answered {verdict}, not {case.verdict}: another path")
        return runner


def _floor() -> testrun.Runner:
    from bcc import BPF

    obj = BPF(text=FLOOR)
    return testrun.Runner(obj.load_func("xmasq_floor", BPF.SCHED_CLS).fd, CASES["encap"].packet, owner=obj)


@contextlib.contextmanager
def _base_tree(rev: str) -> Iterator[str]:
    """A directory as it is, or REV's bpf/ extracted into a temporary one."""
    if os.path.isdir(rev):
        yield os.path.realpath(rev)
        return
    with tempfile.TemporaryDirectory(prefix="xmasq-bpf-") as tmp:
        root = os.path.dirname(default_bpf_src())
        archive = subprocess.run(["git", "-C", root, "archive", rev, "bpf"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield os.path.join(tmp, "bpf")


def _median_ns(run: Callable[[], testrun.Result], runs: int) -> float:
    return statistics.median(run().ns for _ in range(runs))


def measure(trees: dict[str, str], rounds: int, runs: int) -> dict[str, Any]:
    """{case: {tree: [round medians]}}, rounds interleaved between trees, and the floor's."""
    loaded: list[Tree] = []
    try:
        for tag, src in trees.items():
            loaded.append(Tree(tag, src))
        runners = {(t.tag, name): t.runner(case) for t in loaded for name, case in CASES.items()}
        floor = _floor()
        samples: dict[str, dict[str, list[float]]] = {name: {t.tag: [] for t in loaded} for name in CASES}
        floors: list[float] = []
        for r in range(rounds):
            floors.append(_median_ns(floor, runs))
            for name in CASES:
                for t in loaded if r % 2 else reversed(loaded):  # neither tree always second (warmer)
                    samples[name][t.tag].append(_median_ns(runners[(t.tag, name)], runs))
        return {"samples": samples, "floor": floors}
    finally:
        for t in loaded:
            t.sandbox.close()


def _fig(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def report(run: dict[str, Any]) -> str:
    trees = list(run["trees"])
    head = "| case | program | " + " | ".join(f"{t} ns" for t in trees)
    lines = [
        f"## eBPF programs on one packet (BPF_PROG_TEST_RUN), {run['rounds']} rounds x {run['runs']} runs",
        "",
        f"Trees: {', '.join(f'{t} = {src}' for t, src in run['trees'].items())}. Median of the rounds' medians"
        f" (min-max over rounds); every figure includes the floor, a program that returns at once:"
        f" {_fig(run['floor'])} ns.",
        "",
        head + (f" | {trees[1]} - {trees[0]} ns |" if len(trees) == 2 else " |"),
        "|" + "---|" * (len(trees) + 2 + (len(trees) == 2)),
    ]
    for name, case in CASES.items():
        per = run["samples"][name]
        row = f"| {name} | {case.program} | " + " | ".join(_fig(per[t]) for t in trees)
        if len(trees) == 2:  # per round, so that the machine's drift between rounds cancels
            diffs = [b - a for a, b in zip(per[trees[0]], per[trees[1]], strict=True)]
            row += f" | {_fig(diffs)}"
        lines.append(row + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        default="",
        help="a git revision whose bpf/, or a directory of eBPF sources, is measured beside this tree's",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2000, help="runs per case and round")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = {"base": stack.enter_context(_base_tree(args.base))} if args.base else {}
        trees["tree"] = os.path.realpath(default_bpf_src())
        run = results.record(
            tool="programs",
            base=args.base,
            rounds=args.rounds,
            runs=args.runs,
            trees=trees,
            **measure(trees, args.rounds, args.runs),
        )
    if args.base and not os.path.isdir(args.base):
        run["trees"]["base"] = f"{args.base}'s bpf/"
    print(results.save(args.out, "programs", run, report))


if __name__ == "__main__":
    sys.exit(main())
