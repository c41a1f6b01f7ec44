"""The tools stay out of the product: nothing in the driver imports lab/ or bench/, and a tool run
without the development dependencies says at once what is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from lab import require

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _imports(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return found | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}


def test_the_driver_imports_neither_lab_nor_bench():
    arrows = []
    for d, _, files in os.walk(os.path.join(ROOT, "xmasq_driver")):
        for name in (f for f in files if f.endswith(".py")):
            path = os.path.join(d, name)
            arrows += [f"{path}: {m}" for m in _imports(path) if m.split(".")[0] in ("lab", "bench", "tests")]
    assert arrows == []


def test_a_missing_dependency_is_named_with_the_fix():
    with pytest.raises(SystemExit, match=r"the demo needs Python module no_such_module, no-such-tool: `make dev`"):
        require("the demo", modules=("no_such_module",), commands=("no-such-tool",))
    require("the demo", modules=("json",), commands=(sys.executable,))  # present: nothing said


def test_the_testbed_command_is_labs():
    out = subprocess.run([sys.executable, "-m", "lab", "testbed", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "up" in out.stdout and "exec" in out.stdout
    driver = subprocess.run([sys.executable, "-m", "xmasq_driver", "testbed"], capture_output=True, text=True, cwd=ROOT)
    assert driver.returncode == 2 and "invalid choice: 'testbed'" in driver.stderr
