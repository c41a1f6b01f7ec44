"""The benchmark suite itself, so it cannot rot: quick mode's smallest scenario, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_quick_mode_smallest_scenario(tb, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--scenarios",
            "xmasq-on,xmasq-on6,host-container",
            "--use-testbed",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "bench-quick.json").read_text())
    assert record["machine"]["cpus"] == os.cpu_count()
    for mode in ("unpinned", "pinned"):  # both in one run
        rounds = record["samples"][mode]["xmasq-on"]
        assert len(rounds) == 2
        for r in rounds:
            assert r["tcp_gbps"] > 0 and r["tcp4_gbps"] > 0 and r["udp1400_gbps"] > 0 and r["cpu_s_per_gb"] > 0
            assert r["tcp_rr_per_s"] > 0 and r["udp_rr_per_s"] > 0 and r["http_rps"] > 0
            assert r["redis_c1_per_s"] > 0 and r["redis_c50_per_s"] > 0
            assert r["memcached_c1_per_s"] > 0 and r["memcached_c50_per_s"] > 0
        for r in record["samples"][mode]["host-container"]:  # the host network from --network host containers
            assert r["tcp_gbps"] > 0 and r["udp_rr_per_s"] > 0 and r["http_rps"] > 0
        for r in record["samples"][mode]["xmasq-on6"]:  # over IPv6, what its tools measure
            assert r["tcp_gbps"] > 0 and r["udp1400_gbps"] > 0 and r["redis_c1_per_s"] > 0
        assert (tmp_path / f"bench-quick-{mode}-cross-host.png").stat().st_size > 1000
        costs = record["programs"][mode]["xmasq-on"]  # each fast-path program's ns per packet
        assert all(costs["TCP"][p] > 0 for p in ("from_container", "to_nic", "from_nic")), costs
        assert costs["UDP rr"]["from_container"] > 0, costs
    assert len(record["control"]["run_to_ping_s[xmasq-on]"]) == 3
    report = (tmp_path / "bench-quick.md").read_text()
    assert "| tcp_gbps |" in report and "| redis_c1_per_s |" in report and "pinned to CPU 1" in report
    assert "on / host-container" in report  # xmasq-on set against it
    assert "### Cross-host over IPv6" in report and "### eBPF programs, ns per packet" in report
    # The report is made again from the record alone, by the reporting module.
    (tmp_path / "bench-quick.md").unlink()
    again = [sys.executable, "-m", "bench.report", "--render", str(tmp_path / "bench-quick.json")]
    assert subprocess.run(again, capture_output=True, text=True, cwd=ROOT, timeout=120).returncode == 0
    assert (tmp_path / "bench-quick.md").read_text() == report
    # Nothing of the benchmark is left on the testbed.
    for h in ("h1", "h2"):
        assert tb.docker(h).containers.list(all=True, filters={"name": "bench-"}) == []
        assert [n.name for n in tb.docker(h).networks.list() if n.name.startswith("bench-")] == []
