"""The benchmark's report: tables, ratios against each alternative, the targets, charts, and the
README's Performance tables, all from a run's record (bench-NAME.json, which run.py writes).

    python -m bench.report --render results/bench-full.json   # the markdown and charts again
    python -m bench.report --readme results/bench-full.json   # the README's tables
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

from lab import require

# What the benchmark measures, by name: run.py measures these scenarios in these modes.
CROSS = ("host", "host-container", "overlay", "xmasq-off", "xmasq-on", "xmasq-nosteer")
SAME = ("host-local", "host-container-local", "bridge", "xmasq-off-local", "xmasq-on-local", "xmasq-nosteer-local")
# Across hosts over IPv6: the host network on IPv6 underlay addresses, and a dual-stack xmasq network
IPV6 = ("host6", "xmasq-on6")
# Across hosts, encrypted: the bare tunnel (wireguard-go between the host namespaces, no overlay),
# the same with a container's namespace on a veth behind each end (routed), Docker's encrypted
# overlay (where the kernel has ESP), plain xmasq, and an encrypted xmasq network with its fast path
# and without (the slow path only)
ENCRYPTED = ("wg-bare", "wg-veth", "overlay-enc", "xmasq-on", "xmasq-enc", "xmasq-enc-off")
SUBJECTS = ("xmasq-enc", "xmasq-on")  # what a group measures against the others: its first of these
MODES = ("unpinned", "pinned")
LOWER_IS_BETTER = ("_us", "_ms", "cpu_s_per_gb", "retransmits")
Samples = dict[str, list[dict[str, float]]]  # scenario -> one dict of metrics per round


def summary(samples: list[dict[str, float]], metric: str) -> tuple[float, float, float]:
    values = [s[metric] for s in samples]
    return statistics.median(values), min(values), max(values)


def ratios(on: list[dict[str, float]], ref: list[dict[str, float]], metric: str) -> tuple[float, float, float] | None:
    """Ratio of the medians, and the min and max of the ratios within each round (a round measures
    every scenario back to back, so its ratio is the least touched by the machine's drift); None
    where the baseline is 0."""
    base = summary(ref, metric)[0]
    if not base:
        return None
    rounds = [a[metric] / b[metric] for a, b in zip(on, ref, strict=False) if b[metric]]
    return summary(on, metric)[0] / base, min(rounds), max(rounds)


def ratio(on: list[dict[str, float]], ref: list[dict[str, float]], metric: str) -> str:
    r = ratios(on, ref, metric)
    return "-" if r is None else f"{r[0]:.2f} ({r[1]:.2f}-{r[2]:.2f})"


def compared(samples: Samples, group: tuple[str, ...]) -> tuple[tuple[str, ...], str | None, list[str]]:
    """The group's measured scenarios, its subject (xmasq-enc, else xmasq-on) and what that is
    compared with."""
    group = tuple(s for s in group if samples.get(s))
    on = next((s for prefix in SUBJECTS for s in group if s.startswith(prefix)), None)
    return group, on, [s for s in group if s != on] if on else []


def table(samples: Samples, group: tuple[str, ...]) -> str:
    """Medians (min-max) of each scenario, and xmasq-on's ratio to each of the others."""
    group, on, refs = compared(samples, group)
    if not group:
        return "(no scenario measured)"
    head = [*group, *(f"on / {r.replace('-local', '')}" for r in refs)]
    lines = ["| metric | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for metric in samples[group[0]][0]:
        med = {s: summary(samples[s], metric) for s in group}
        cells = [f"{m:.3g} ({lo:.3g}-{hi:.3g})" for m, lo, hi in med.values()]
        cells += [ratio(samples[on], samples[r], metric) for r in refs]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def advantage(samples: Samples, on: str, ref: str, metric: str) -> tuple[float, float, float] | None:
    """How many times better xmasq-on is than ref (> 1: better), with the per-round range: the ratio
    for rates, its inverse where lower is better (latency, CPU per GB). None without a ratio."""
    r = ratios(samples[on], samples[ref], metric)
    if r is None or not all(r):
        return None
    if metric.endswith(LOWER_IS_BETTER):
        return 1 / r[0], 1 / r[2], 1 / r[1]
    return r


def _pyplot() -> Any:
    require("the benchmark's charts", modules=("matplotlib",))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ratio_chart(by_mode: dict[str, Samples], groups: dict[str, tuple[str, ...]], path: str) -> str | None:
    """One panel per mode and group: for every metric, xmasq-on's advantage over each alternative
    (a bar, with the per-round range as whiskers, on a log scale around 1)."""
    panels = []
    for mode, samples in by_mode.items():
        panels += [(mode, title, *compared(samples, group)) for title, group in groups.items()]
    panels = [p for p in panels if p[3]]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 9), squeeze=False)
    for ax, (mode, title, _, on, refs) in zip(axes[0], panels, strict=True):
        samples = by_mode[mode]
        metrics = [m for m in samples[on][0] if not m.endswith("retransmits")]
        height = 0.8 / max(1, len(refs))
        for i, ref in enumerate(refs):
            label: str | None = ref  # on its first bar only
            for j, metric in enumerate(metrics):
                adv = advantage(samples, on, ref, metric)
                if adv is None:
                    continue
                # The ratio of the medians can lie outside the per-round range (rounds pair up differently)
                whiskers = [[max(0.0, adv[0] - adv[1])], [max(0.0, adv[2] - adv[0])]]
                bar = {"height": height, "color": f"C{i}", "label": label, "xerr": whiskers, "error_kw": {"lw": 0.8}}
                ax.barh(j + i * height, adv[0] - 1, left=1, **bar)
                label = None
        ax.axvline(1, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(metrics))], metrics, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{title}, {mode}: {on} vs", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel("times better (> 1: xmasq wins; whiskers: per-round range)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def value_chart(samples: Samples, group: tuple[str, ...], title: str, path: str) -> str | None:
    """A panel per metric, a bar per scenario (median) with min-max whiskers."""
    group, on, _ = compared(samples, group)
    if not group:
        return None
    plt = _pyplot()
    metrics = list(samples[group[0]][0])
    cols = 4
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        med = [summary(samples[s], metric) for s in group]
        err = [[m - lo for m, lo, _ in med], [hi - m for m, _, hi in med]]
        colors = ["#2a7ab0" if s == on else "#999999" for s in group]
        ax.bar(range(len(group)), [m for m, _, _ in med], yerr=err, capsize=4, color=colors)
        ax.set_xticks(range(len(group)), [s.replace("-local", "") for s in group], rotation=20, fontsize=8)
        ax.set_title(metric, fontsize=9)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


APPS = ("http_rps", "redis_c1_per_s", "redis_c50_per_s", "memcached_c1_per_s", "memcached_c50_per_s")
APPS_RR = ("tcp_rr_per_s", "udp_rr_per_s", *APPS)
# (group, alternative, metrics (None: every one but retransmits), xmasq-on's least advantage over it)
TARGETS = (
    ("cross", "overlay", APPS_RR, 1.1),
    ("cross", "host", APPS_RR, 0.9),
    ("cross", "host", ("tcp_gbps",), 0.95),
    ("cross", "overlay", ("cpu_s_per_gb",), 1.0),
    ("same", "bridge", None, 1.0),
    # issue 33: encrypted xmasq against the bare tunnel, throughput and request-response; its fast
    # path never slower than its slow path
    ("encrypted", "wg-bare", ("tcp_gbps", "tcp_rr_per_s", "udp_rr_per_s"), 0.9),
    ("encrypted", "xmasq-enc-off", None, 1.0),
)
SUBJECT_OF = {"cross": "xmasq-on", "same": "xmasq-on-local", "encrypted": "xmasq-enc"}


def targets(by_mode: dict[str, Samples]) -> str:
    """Issue 15's targets, each against what this run measured: xmasq-on's advantage (> 1: better)
    over the alternative, median and per-round range. Also every figure where the default steering
    lost to no steering in every round (slower by more than the spread)."""
    lines = ["| mode | group | vs | metric | needed | measured | |", "|---|---|---|---|---|---|---|"]
    losses = []
    for mode, samples in by_mode.items():
        for group, ref, metrics, least in TARGETS:
            on = SUBJECT_OF[group]
            if not (samples.get(on) and samples.get(ref)):
                continue
            measured = samples[on][0]
            for metric in [m for m in metrics or measured if m in measured and not m.endswith("retransmits")]:
                adv = advantage(samples, on, ref, metric)
                if adv is not None:
                    met = "met" if adv[0] >= least else "missed"
                    value = f"{adv[0]:.2f} ({adv[1]:.2f}-{adv[2]:.2f})"
                    lines.append(f"| {mode} | {group} | {ref} | {metric} | >= {least} | {value} | {met} |")
            if group == "same" and "tcp_retransmits" in samples[on][0]:
                mine, theirs = (summary(samples[s], "tcp_retransmits")[0] for s in (on, ref))
                met = "met" if mine <= theirs else "missed"
                lines.append(f"| {mode} | same | {ref} | tcp_retransmits | <= {theirs:g} | {mine:g} | {met} |")
        for on, off in (("xmasq-on", "xmasq-nosteer"), ("xmasq-on-local", "xmasq-nosteer-local")):
            if samples.get(on) and samples.get(off):
                for metric in samples[on][0]:
                    adv = advantage(samples, on, off, metric)
                    if adv is not None and adv[2] < 1 and not metric.endswith("retransmits"):
                        losses.append(f"{mode} {on}: {metric} {adv[0]:.2f} ({adv[1]:.2f}-{adv[2]:.2f})")
    steering = "; ".join(losses) if losses else "none"
    return "\n".join([*lines, "", f"Default steering slower than none in every round: {steering}"])


def report(by_mode: dict[str, Samples], control: dict[str, Any], pin: int) -> str:
    parts = []
    for mode, samples in by_mode.items():
        heading = "unpinned" if mode == "unpinned" else f"client and server pinned to CPU {pin}"
        where = "client on h1, server on h2; host-container: on h3"
        parts.append(f"### Cross-host, {heading} ({where})\n\n{table(samples, CROSS)}")
        where = "client and server on h2; host-container-local: on h3"
        parts.append(f"### Same host, {heading} ({where})\n\n{table(samples, SAME)}")
        parts.append(f"### Cross-host over IPv6, {heading} (a dual-stack network)\n\n{table(samples, IPV6)}")
        if samples.get("xmasq-enc"):
            enc = table(samples, ENCRYPTED)
            parts.append(f"### Cross-host, encrypted, {heading} (against the bare tunnel and plain xmasq)\n\n{enc}")
    return "\n\n".join(
        [*parts, f"### Control plane\n\n{control_table(control)}", f"### Targets (issues 15, 33)\n\n{targets(by_mode)}"]
    )


Programs = dict[str, dict[str, dict[str, dict[str, float]]]]  # mode -> scenario -> workload -> program -> ns


def programs_table(programs: Programs) -> str:
    """ns per packet of each eBPF program: a row per program and workload, a column per scenario
    and mode (-: the program did not run there)."""
    columns = [(mode, scenario) for mode, by in programs.items() for scenario in by]
    runs = [(w, name) for by in programs.values() for ws in by.values() for w, names in ws.items() for name in names]
    header = ["| program | workload | " + " | ".join(f"{s}, {m}" for m, s in columns) + " |"]
    header.append("|---|---|" + "---|" * len(columns))
    rows = []
    for w, name in sorted(set(runs), key=lambda r: (r[1], r[0])):
        cells = [programs[m][s].get(w, {}).get(name) for m, s in columns]
        rows.append(f"| {name} | {w} | " + " | ".join("-" if c is None else f"{c:.0f}" for c in cells) + " |")
    return "\n".join([*header, *rows])


def write_report(record: dict[str, Any], out: str, name: str) -> str:
    """The markdown report and the charts of a run's record (bench-NAME.md, bench-NAME-*.png)."""
    by_mode = record["samples"]
    md = report(by_mode, record["control"], record["pin"])
    if record.get("programs"):
        costs = programs_table(record["programs"])
        md += f"\n\n### eBPF programs, ns per packet (the kernel's run-time statistics)\n\n{costs}"
    groups = {"Cross-host": CROSS, "Same host": SAME, "IPv6 cross-host": IPV6, "Encrypted cross-host": ENCRYPTED}
    pngs = [ratio_chart(by_mode, groups, os.path.join(out, f"bench-{name}-ratios.png"))]
    for mode, samples in by_mode.items():
        for title, group in groups.items():
            path = os.path.join(out, f"bench-{name}-{mode}-{title.split()[0].lower()}.png")
            pngs.append(value_chart(samples, group, f"{title}, {mode}", path))
    machine = record["machine"]
    head = (
        f"{record['rounds']} rounds x {record['seconds']:g} s, modes: {', '.join(by_mode)}, {record['when']}, "
        f"kernel {machine['kernel']}, {machine['cpus']} CPUs; ratios: of the medians (min-max of the per-round ratios)"
    )
    head += "".join(f"\n\nNot measured: {s}: {why}" for s, why in record.get("skipped", {}).items())
    with open(os.path.join(out, f"bench-{name}.md"), "w") as f:
        images = "".join(f"![]({os.path.basename(p)})\n" for p in pngs if p)
        f.write(f"{head}\n\n{md}\n\n{images}")
    return md


# The README's Performance tables: (row label, metric), and per group xmasq-on and what it is set against.
README_ROWS = (
    ("redis, 1 connection", "redis_c1_per_s"),
    ("redis, 50 connections", "redis_c50_per_s"),
    ("memcached, 1 connection", "memcached_c1_per_s"),
    ("memcached, 50 connections", "memcached_c50_per_s"),
    ("nginx requests/s", "http_rps"),
    ("TCP request-response/s", "tcp_rr_per_s"),
    ("UDP request-response/s", "udp_rr_per_s"),
    ("TCP Gbit/s", "tcp_gbps"),
    ("UDP 1400 B Gbit/s", "udp1400_gbps"),
    ("CPU per GB (inverse)", "cpu_s_per_gb"),
)
README_GROUPS = (
    ("across hosts", "xmasq-on", ("overlay", "host", "host-container", "xmasq-nosteer")),
    ("on one host", "xmasq-on-local", ("bridge", "host-local", "host-container-local", "xmasq-nosteer-local")),
    ("across hosts, IPv6", "xmasq-on6", ("host6",)),
    ("across hosts, encrypted", "xmasq-enc", ("wg-bare", "wg-veth", "xmasq-on", "xmasq-enc-off")),
)


def readme_tables(record: dict[str, Any]) -> str:
    """xmasq-on's advantage over each alternative, per mode, as the README shows it."""
    by_mode = record["samples"]
    out = []
    for title, on, refs in README_GROUPS:
        names = [r.replace("-local", "").replace("xmasq-", "") for r in refs]
        head = [f"{mode}: / {names[0]}" if i == 0 else f"/ {n}" for mode in by_mode for i, n in enumerate(names)]
        lines = [f"| {title} | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for label, metric in README_ROWS:
            cells = []
            for samples in by_mode.values():
                for ref in refs:
                    measured = samples.get(on) and samples.get(ref) and metric in samples[on][0]
                    a = advantage(samples, on, ref, metric) if measured else None
                    cells.append("-" if a is None else f"{a[0]:.2f} ({a[1]:.2f}-{a[2]:.2f})")
            if set(cells) != {"-"}:  # a metric the group does not measure (IPv6: no sockperf)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def control_table(control: dict[str, Any]) -> str:
    lines = ["| figure | median | p99 | min | max |", "|---|---|---|---|---|"]
    for key, value in control.items():
        values = sorted(value) if isinstance(value, list) else [value]
        p99 = values[max(0, int(0.99 * len(values)) - 1)] if len(values) > 1 else values[0]
        lines.append(f"| {key} | {statistics.median(values):.2f} | {p99:.2f} | {values[0]:.2f} | {values[-1]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--render", metavar="JSON", help="write the report and charts of a recorded run next to it")
    what.add_argument("--readme", metavar="JSON", help="print the README's Performance tables of a recorded run")
    args = parser.parse_args(argv)
    with open(args.readme or args.render) as f:
        record = json.load(f)
    if args.readme:
        print(readme_tables(record))
    else:
        name = os.path.basename(args.render).removeprefix("bench-").removesuffix(".json")
        print(write_report(record, os.path.dirname(args.render) or ".", name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
