"""The systemd units: they verify, and the driver starts exactly as the unit's ExecStart says."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _render() -> str:
    subprocess.run(["make", "-s", "-C", ROOT, "units"], check=True, capture_output=True)
    return os.path.join(ROOT, "build", "systemd")


def _verify(*units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)


def test_units_pass_systemd_analyze_verify(tmp_path):
    built = _render()
    units = [os.path.join(built, u) for u in ("xmasq.service", "xmasq-etcd.service")]
    result = _verify(*units)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "xmasq.service"  # the check can fail: a relative ExecStart is refused
    broken.write_text(Path(units[0]).read_text().replace("ExecStart=/", "ExecStart="))
    assert _verify(str(broken)).returncode != 0


def test_driver_starts_exactly_as_the_unit_says(standalone):
    with open(os.path.join(_render(), "xmasq.service")) as f:
        exec_start = next(line.split("=", 1)[1] for line in f if line.startswith("ExecStart="))
    # No etcd: the socket must answer anyway.
    proc = standalone.start(shlex.split(exec_start), etcd_endpoints="http://127.0.0.1:1")
    assert oct(os.stat(standalone.socket).st_mode & 0o777) == "0o600"
    assert standalone.call("/Plugin.Activate") == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    assert standalone.call("/Xmasq.Status")[1]["host"] == standalone.host_id
    proc.send_signal(signal.SIGTERM)  # what systemd sends on stop
    assert proc.wait(15) == 0
    assert not os.path.exists(standalone.socket)
