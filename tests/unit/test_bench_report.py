"""The benchmark's tables: what a reader compares (the measurements themselves run in test_bench)."""

from __future__ import annotations

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "bench_run", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "run.py")
)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_ratios_show_the_medians_and_the_range_within_rounds() -> None:
    # The machine drifts: round 2 is slow for both; within each round xmasq-on leads by 1.1-1.3x.
    samples = {
        "host": [{"rr": 100.0, "retr": 10.0}, {"rr": 50.0, "retr": 0.0}, {"rr": 90.0, "retr": 30.0}],
        "xmasq-on": [{"rr": 120.0, "retr": 0.0}, {"rr": 65.0, "retr": 0.0}, {"rr": 99.0, "retr": 0.0}],
    }
    lines = bench.table(samples, ("host", "xmasq-on"), ("host",)).splitlines()
    assert lines[0] == "| metric | host | xmasq-on | on / host |"
    assert lines[2] == "| rr | 90 (50-100) | 99 (65-120) | 1.10 (1.10-1.30) |"
    assert lines[3] == "| retr | 10 (0-30) | 0 (0-0) | 0.00 (0.00-0.00) |"  # rounds with no baseline left out


def test_a_baseline_of_zero_gives_no_ratio() -> None:
    samples = {"xmasq-off": [{"retr": 0.0}] * 2, "xmasq-on": [{"retr": 3.0}] * 2}
    assert bench.table(samples, ("xmasq-off", "xmasq-on"), ()).splitlines()[2] == "| retr | 0 (0-0) | 3 (3-3) | - |"
