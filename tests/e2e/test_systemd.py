"""The systemd units: they verify, and the driver starts exactly as the unit's ExecStart says."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from xmasq_driver import client as plugin

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


def test_driver_starts_exactly_as_the_unit_says(tmp_path):
    with open(os.path.join(_render(), "xmasq.service")) as f:
        exec_start = next(line.split("=", 1)[1] for line in f if line.startswith("ExecStart="))
    ns, host_id = "xmt-systemd", f"systemd-test-{os.getpid()}"
    sock = str(tmp_path / "xmasq.sock")
    env = dict(
        os.environ,
        XMASQ_SOCKET=sock,
        XMASQ_STATE_DIR=str(tmp_path / "state"),
        XMASQ_HOST_ID=host_id,
        XMASQ_ETCD_ENDPOINTS="http://127.0.0.1:1",  # no etcd: the socket must answer anyway
        XMASQ_ETCD_TIMEOUT="0.5",
    )
    # Its own network namespace, so its NIC hooks and iptables chains touch nothing of this host.
    for cmd in (["ip", "netns", "add", ns],
                ["ip", "link", "add", "tstsd0", "type", "veth", "peer", "name", "eth0", "netns", ns],
                ["ip", "addr", "add", "198.51.100.13/30", "dev", "tstsd0"], ["ip", "link", "set", "tstsd0", "up"],
                ["ip", "-n", ns, "addr", "add", "198.51.100.14/30", "dev", "eth0"],
                ["ip", "-n", ns, "link", "set", "eth0", "up"],
                ["ip", "-n", ns, "route", "add", "default", "via", "198.51.100.13"]):  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *shlex.split(exec_start)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            if time.monotonic() > deadline:
                pytest.fail("the driver did not create its socket")
            time.sleep(0.1)
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        for _ in range(100):
            try:
                status, body = plugin.call(sock, "/Plugin.Activate")
                break
            except OSError:
                time.sleep(0.1)
        assert (status, body) == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
        assert plugin.call(sock, "/Xmasq.Status")[1]["host"] == host_id
        proc.send_signal(signal.SIGTERM)  # what systemd sends on stop
        assert proc.wait(15) == 0
        assert not os.path.exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", "tstsd0"], capture_output=True)
        shutil.rmtree(f"/sys/fs/bpf/xmasq/{host_id}", ignore_errors=True)
