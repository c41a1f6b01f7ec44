"""The programs benchmark (bench/programs.py), so that it cannot rot: this tree against a copy of
its bpf/ (a directory: CI's checkout may have no git history for a revision)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from bench.programs import CASES

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_programs_benchmark_measures_this_tree_against_another(tmp_path):
    base = shutil.copytree(os.path.join(ROOT, "bpf"), tmp_path / "base-bpf")
    cmd = [sys.executable, "-m", "bench.programs", "--base", str(base), "--rounds", "2", "--runs", "50"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "programs.json").read_text())
    floor = min(run["floor"])
    assert floor > 0
    for name in CASES:  # each case took its fast path in both trees (else it failed), above the floor
        for tree in ("base", "tree"):
            assert len(run["samples"][name][tree]) == 2 and min(run["samples"][name][tree]) > floor, (name, tree)
    report = (tmp_path / "programs.md").read_text()
    assert "| encap | from_container |" in report and "tree - base ns" in report
    assert not [
        line
        for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
        if "xmpg" in line
    ]
