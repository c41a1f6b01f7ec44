"""`xmasq daemon start|stop|status`: run `xmasq serve` in the background.

Used by `make run` / `make stop`, by the tests (driver restarts) and by the testbed.
The pid file and log live under the run and log directories given on the command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from .. import config as config_module
from ..config import Config
from . import client


def _read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def answering(config: Config) -> bool:
    try:
        status, body = client.call(config.socket, "/Plugin.Activate", timeout=2)
    except OSError:
        return False
    return status == 200 and "NetworkDriver" in body.get("Implements", [])


def start(config: Config, pidfile: str, logfile: str, wait: float = 20.0) -> int:
    pid = _read_pid(pidfile)
    if pid and answering(config):
        print(f"xmasq driver already running (pid {pid}) on {config.socket}")
        return pid
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xmasq_driver", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=_env(config),
        )
    with open(pidfile, "w") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"xmasq driver exited with status {proc.returncode}; see {logfile}")
        if answering(config):
            return proc.pid
        time.sleep(0.1)
    raise SystemExit(f"xmasq driver did not answer on {config.socket} within {wait}s; see {logfile}")


def stop(pidfile: str, sig: int = signal.SIGTERM, wait: float = 10.0) -> bool:
    """Signal the process of pidfile and wait until it is gone (SIGKILL after `wait` s);
    False if none was running. Also used by the testbed for its dockerds and etcd."""
    pid = _read_pid(pidfile)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while not _gone(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
    return True


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reaped (a zombie would look alive)
            return True
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False


def _env(config: Config) -> dict[str, str]:
    """The child's environment: the effective configuration as XMASQ_* variables."""
    return dict(os.environ, **config_module.environment(**vars(config)))
