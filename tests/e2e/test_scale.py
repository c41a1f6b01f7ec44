"""The control plane at a size that fits `make test`: a real driver and etcd, 5,000 endpoints of 50
simulated hosts (lab/scale.py; `make scale` runs it at 100,000 on 1,000). A change must cost what it
touches: asserted on the driver's own work counters and etcd's byte counter, not on wall time."""

from __future__ import annotations

from lab import scale
from tests.conftest import report


def test_a_change_costs_the_same_at_5000_endpoints_and_churn_ends_exact(tmp_path):
    f = scale.run(str(tmp_path), hosts=50, endpoints=5000, changes=30, bursts=4, burst=500).summary()
    report(
        f"scale, 5,000 endpoints on 50 simulated hosts: programmed {f['program_s']:.1f} s after the last write;"
        f" a change in the kernel p50 {f['change_ms']['p50']:.1f} ms, p99 {f['change_ms']['p99']:.1f} ms,"
        f" removal p99 {f['removal_ms']['p99']:.1f} ms; {f['cpu_ms_per_change']:.1f} ms driver CPU and"
        f" {f['examined_per_change']:.1f} records examined per change; etcd bytes per change"
        f" {f['etcd_bytes_per_change']}; RSS {f['rss_mb']:.0f} MB; churn settled {f['churn']['settled_s']:.1f} s;"
        f" Docker's requests (CreateEndpoint, DeleteEndpoint) while it programmed: p50 {f['api_ms']['p50']:.1f} ms,"
        f" p99 {f['api_ms']['p99']:.1f} ms, max {f['api_ms']['max']:.1f} ms ({f['api_requests']} requests)"
    )
    # O(1) per change: one record looked at (not 5,000), no whole-cluster listing in between
    assert f["examined_per_change"] <= 1.5 and f["full_passes_during_changes"] == 0, f
    small, large = (f["etcd_bytes_per_change"][k] for k in ("100", "5000"))
    assert large < 2 * small, f["etcd_bytes_per_change"]  # what a change reads does not grow with N
    assert f["churn"]["mismatch_count"] == 0, f["churn"]["mismatches"]
