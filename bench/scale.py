"""Control plane at scale: `make scale` (HOSTS=, ENDPOINTS=): one real driver, simulated hosts in etcd.

    .venv/bin/python -m bench.scale [--hosts 1000] [--endpoints 100000] [--changes 100] [--out results/]

What lab/scale.py measures, against the targets of the scale issue; the record goes to
results/scale.json and results/scale.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from lab import results, scale

TARGETS = (
    "all programmed <= 60 s after the last write; one change <= 100 ms p99, <= 10 ms driver CPU; RSS <= 300 MB;"
    " Docker's requests meanwhile <= 100 ms p99"
)


def report(record: dict) -> str:  # type: ignore[type-arg]
    f = record["figures"]
    change, removal, churn, api = f["change_ms"], f["removal_ms"], f["churn"], f.get("api_ms")
    bytes_by_size = ", ".join(f"{int(v)} B at {k} endpoints" for k, v in f["etcd_bytes_per_change"].items())
    rows = [
        ("endpoints written (s)", f"{f['write_s']:.1f}"),
        ("all programmed after the last write (s)", f"{f['program_s']:.1f}"),
        (
            "new endpoint in the kernel (ms): p50 / p99 / max",
            f"{change['p50']:.1f} / {change['p99']:.1f} / {change['max']:.1f}",
        ),
        (
            "removal gone from the kernel (ms): p50 / p99 / max",
            f"{removal['p50']:.1f} / {removal['p99']:.1f} / {removal['max']:.1f}",
        ),
        (
            "Docker's requests while programming (ms): p50 / p99 / max (requests)",
            f"{api['p50']:.1f} / {api['p99']:.1f} / {api['max']:.1f} ({f['api_requests']})" if api else "-",
        ),
        ("driver CPU per change (ms)", f"{f['cpu_ms_per_change']:.2f}"),
        ("endpoint records examined per change", f"{f['examined_per_change']:.1f}"),
        ("full passes during the changes", str(f["full_passes_during_changes"])),
        ("etcd bytes sent per change", bytes_by_size),
        ("driver RSS after programming (MB)", f"{f['rss_mb']:.0f}"),
        ("etcd database in use (MB)", f"{f['etcd_db_mb']:.0f}"),
        (
            "churn: bursts x (creates + deletes), restart in one",
            f"{churn['bursts']} x ({churn['creates_per_burst']} + {churn['deletes_per_burst']}),"
            f" settled {churn['settled_s']:.1f} s after the last",
        ),
        ("entries differing from etcd after the churn", str(churn["mismatch_count"])),
    ]
    lines = [
        f"{f['endpoints']:,} endpoints on {f['hosts']:,} simulated hosts, {record['when']},"
        f" kernel {record['machine']['kernel']}, {record['machine']['cpus']} CPUs",
        "",
        f"Targets: {TARGETS}.",
        "",
        "| figure | measured |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=100000)
    parser.add_argument("--changes", type=int, default=100, help="single creates (and as many removals) timed")
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--burst", type=int, default=2000, help="creates per burst (and half as many deletes)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xmasq-scale-") as tmp:
        figures = scale.run(tmp, args.hosts, args.endpoints, args.changes, args.bursts, args.burst)
    run = results.record(
        figures=figures.summary(), samples={"change_ms": figures.change_ms, "removal_ms": figures.removal_ms}
    )
    print(results.save(args.out, "scale", run, report))
    return 0 if figures.churn["mismatch_count"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
