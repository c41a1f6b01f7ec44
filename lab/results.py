"""Where the measurement tools put what they measured: results/<name>.json and .md."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Callable
from typing import Any


def record(**fields: Any) -> dict[str, Any]:
    """A record of a run: its fields, when, and on what."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return {"when": when, **fields, "machine": {"kernel": platform.release(), "cpus": os.cpu_count()}}


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of values by nearest rank (p99 of 100 values: the 99th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def save(out: str, name: str, run: dict[str, Any], report: Callable[[dict[str, Any]], str]) -> str:
    """Write out/name.json and the report as out/name.md; returns the report."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(run, f, indent=1)
    text = report(run)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    return text
