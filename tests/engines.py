"""The end-to-end tests on another Docker engine than the system's (`make test` runs the multi-host
smoke set, `make test-engines` all of them):

    python -m tests.engines [--engine trixie] [--smoke] [pytest args...]

The single-host tests run in a one-host testbed whose dockerd is that engine, as if that host
were the machine: pytest itself runs in the host's namespace with its driver's configuration.
The multi-host tests (the fast path, swarm and the managed plugin among them) run on a 3-host
testbed of that engine. Tests that use no dockerd ran with the system's and are not repeated.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from lab.engine import Engine, other
from lab.testbed import Testbed, with_own_sys

E2E = "tests/e2e"
# The smoke set: every request the driver serves, the same-host redirect, the cross-host fast path,
# swarm's global scope and the managed plugin. `make test` runs the single-host part in tests.release
# (on a machine of the other release, so on its engine) and the multi-host part here (~5 min).
SMOKE_SINGLE = [
    "test_single_host.py",
    "test_options.py",
    "test_same_host_fastpath.py::test_tcp_udp_icmp_take_the_redirect",
]
SMOKE_MULTI = [
    "test_multi_host.py::test_full_mesh_and_isolation",
    "test_fastpath.py::test_tcp_udp_and_icmp_take_the_fast_path",
    # swarm's default (VIP) mode by the API and by a stack file, and the managed plugin's lifecycle;
    # the rest of test_swarm.py (task-address services, encryption) is the engine's plumbing again
    "test_swarm.py::test_vip_service_in_the_default_endpoint_mode",
    "test_swarm.py::test_stack_file_services_reach_each_other_by_name",
    "test_swarm.py::test_plugin_disable_enable_and_dockerd_restart_keep_containers_connected",
]
ALL_MULTI_BUT = ["test_bench.py"]  # the benchmark's own smoke: the data path, not the engine


def files(names: list[str]) -> list[str]:
    return [os.path.join(E2E, n) for n in names]


def pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def single_host(engine: str, selection: list[str], extra: list[str]) -> int:
    tb = Testbed.up(1, engine=engine)
    try:
        host = tb.hosts[0]
        argv = with_own_sys(pytest("--only", "single-host", *selection, *extra), tb.path(host, "pytest-bpffs"))
        return tb.in_host(host, argv, env=tb.driver_env(host)).returncode
    finally:
        tb.down()


def multi_host(engine: str, selection: list[str], extra: list[str]) -> int:
    env = dict(os.environ, XMASQ_TEST_ENGINE=engine)
    return subprocess.run(pytest("--only", "multi-host", *selection, *extra), env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default=None, help="a Debian suite of lab/engine.py (default: the other one)")
    parser.add_argument(
        "--smoke", action="store_true", help="only the multi-host smoke set (`make test`: tests.release runs the rest)"
    )
    args, extra = parser.parse_known_args(argv)
    engine = args.engine or other()
    Engine(engine).ensure()
    if args.smoke:
        multi, single, rc_single = files(SMOKE_MULTI), "in tests.release", 0
    else:
        print(f"engines: {engine}: single-host part ({E2E})", flush=True)
        rc_single = single_host(engine, [E2E], extra)
        multi, single = [E2E, *(f"--deselect={f}" for f in files(ALL_MULTI_BUT))], f"rc={rc_single}"
    print(f"engines: {engine}: multi-host part ({' '.join(multi)})", flush=True)
    rc_multi = multi_host(engine, multi, extra)
    print(f"engines: {engine}: single-host {single}, multi-host rc={rc_multi}", flush=True)
    return rc_single or rc_multi


if __name__ == "__main__":
    sys.exit(main())
