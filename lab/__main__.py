"""`python -m lab`: the testbed's command (tooling, not the driver's CLI).

python -m lab testbed up [--hosts N] [--subnet CIDR] [--engine system|trixie|bookworm]
python -m lab testbed status | down | exec HOST -- CMD...
python -m lab demo
"""

from __future__ import annotations

import argparse
import sys

from lab import require


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="XMasq's testbed and demo")
    sub = parser.add_subparsers(dest="command", required=True)
    tb = sub.add_parser("testbed", help="a multi-host testbed of network namespaces on this machine")
    tb_sub = tb.add_subparsers(dest="action", required=True)
    tb_up = tb_sub.add_parser("up", help="create N hosts, each with its own dockerd and driver")
    tb_up.add_argument("--hosts", type=int, default=2)
    tb_up.add_argument("--subnet", default="172.31.255.0/24", help="underlay subnet (.254 is the bridge)")
    tb_up.add_argument(
        "--engine",
        default="system",
        help="the hosts' Docker engine: system, or a Debian suite whose docker.io runs from a root"
        " that scripts/engine.sh builds (trixie: 26.1, bookworm: 20.10)",
    )
    tb_sub.add_parser("down", help="remove everything the testbed made")
    tb_sub.add_parser("status", help="list the hosts")
    tb_exec = tb_sub.add_parser("exec", help="run a command on a host (DOCKER_HOST set to its dockerd)")
    tb_exec.add_argument("host")
    tb_exec.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("demo", help="two testbed hosts, one xmasq network across them, a ping (removes it all after)")
    args = parser.parse_args(argv)
    require("the testbed", modules=("docker",), commands=("dockerd", "etcd", "etcdctl", "nsenter", "ip"))
    if args.command == "demo":
        from lab.demo import main as demo

        return demo()
    return _testbed(args)


def _testbed(args: argparse.Namespace) -> int:
    from lab.testbed import Testbed

    if args.action == "up":
        try:
            tb = Testbed.up(args.hosts, args.subnet, engine=args.engine)
        except ValueError as e:  # an unknown engine, before anything was made
            print(f"testbed: {e}", file=sys.stderr)
            return 2
        for host in tb.hosts:
            print(f"{host}: {tb.host_ip(host)}  DOCKER_HOST={tb.docker_host(host)}")
        print(f"etcd: {tb.etcd_endpoint}; try: python -m lab testbed exec h1 -- docker network ls")
        return 0
    tb_or_none = Testbed.load()
    if args.action == "down":
        (tb_or_none or Testbed([])).down()
        return 0
    if tb_or_none is None:
        print("testbed: not up", file=sys.stderr)
        return 1
    if args.action == "status":
        for host in tb_or_none.hosts:
            print(f"{host}: {tb_or_none.host_ip(host)}  DOCKER_HOST={tb_or_none.docker_host(host)}")
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.host not in tb_or_none.hosts or not argv:
        print(f"testbed: usage: python -m lab testbed exec {{{','.join(tb_or_none.hosts)}}} -- CMD...", file=sys.stderr)
        return 2
    return tb_or_none.in_host(args.host, argv).returncode


if __name__ == "__main__":
    sys.exit(main())
