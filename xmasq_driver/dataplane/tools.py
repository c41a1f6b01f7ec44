"""The command-line tools the data plane runs (iptables, ipset, ip, wg, wireguard-go): one way to
bound them in time and to turn their failure into a BackendError that names the command."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from ..errors import BackendError


def run(
    argv: Sequence[str],
    timeout: float,
    *,
    check: bool = True,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    new_session: bool = False,
    missing: str = "",
) -> subprocess.CompletedProcess[str]:
    """`argv`'s result; `missing`: what to install, for the error when the tool is not there."""
    command = " ".join(argv)
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            start_new_session=new_session,
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"{command} timed out after {timeout:g}s") from None
    except FileNotFoundError:
        raise BackendError(f"{argv[0]} is not installed" + (f"; {missing}" if missing else "")) from None
    if check and proc.returncode != 0:
        raise BackendError(f"{command}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc
