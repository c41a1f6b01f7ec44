"""The `xmasq` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import __version__, config, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xmasq", description="XMasq Docker overlay network driver")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the driver in the foreground on the plugin socket")
    config.add_arguments(serve)

    daemon = sub.add_parser("daemon", help="start, stop or check the driver in the background")
    daemon.add_argument("action", choices=["start", "stop", "status"])
    daemon.add_argument("--kill", action="store_true", help="stop with SIGKILL (no clean shutdown)")
    config.add_arguments(daemon)

    for name, text in (
        ("status", "hosts, networks, endpoints, and whether the fast path is loaded"),
        ("stats", "fast-path counters: packets and bytes by direction, misses by reason, drops"),
        ("cache", "the fast path's caches, readable; `cache flush` makes every flow re-learn"),
        ("rotate-key", "replace this host's WireGuard key (encrypted networks); peers follow through etcd"),
    ):
        view = sub.add_parser(name, help=text)
        if name == "cache":
            view.add_argument("flush", nargs="?", choices=["flush"])
        config.add_arguments(view)

    forget = sub.add_parser("forget-host", help="remove the etcd records of a host that is gone for good")
    forget.add_argument("host")
    config.add_arguments(forget)

    show = sub.add_parser("config", help="print the effective configuration")
    config.add_arguments(show)

    args = parser.parse_args(argv)
    cfg = config.load(args)
    log.setup(cfg.log_level)
    if args.command == "serve":
        from .server import serve as run

        run(cfg)
    elif args.command == "daemon":
        return _daemon(args, cfg)
    elif args.command in ("status", "stats", "cache", "rotate-key"):
        return _view(args, cfg)
    elif args.command == "forget-host":
        return _forget(args.host, cfg)
    elif args.command == "config":
        fields = {k: ("<set>" if log.is_secret(k) and v else v) for k, v in vars(cfg).items()}
        json.dump(fields, sys.stdout, indent=1)
        print()
    return 0


def _daemon(args: argparse.Namespace, cfg: config.Config) -> int:
    from . import daemon

    if args.action == "start":
        pid = daemon.start(cfg, cfg.pidfile, cfg.logfile)
        print(f"xmasq driver running: pid {pid}, socket {cfg.socket}, log {cfg.logfile}")
    elif args.action == "stop":
        stopped = daemon.stop(cfg.pidfile, signal.SIGKILL if args.kill else signal.SIGTERM)
        print("xmasq driver stopped" if stopped else "xmasq driver was not running")
    else:
        up = daemon.answering(cfg)
        print(f"xmasq driver {'answering' if up else 'not answering'} on {cfg.socket}")
        return 0 if up else 1
    return 0


def _view(args: argparse.Namespace, cfg: config.Config) -> int:
    from . import client

    path = {
        "status": "/Xmasq.Status",
        "stats": "/Xmasq.Stats",
        "cache": "/Xmasq.Cache",
        "rotate-key": "/Xmasq.RotateKey",
    }[args.command]
    if getattr(args, "flush", None):
        path = "/Xmasq.FlushCache"
    try:
        status, body = client.call(cfg.socket, path)
    except OSError as e:
        print(f"xmasq: driver not answering on {cfg.socket}: {e}", file=sys.stderr)
        return 1
    json.dump(body, sys.stdout, indent=1)
    print()
    return 0 if status == 200 else 1


def _forget(host: str, cfg: config.Config) -> int:
    from ..control.kv import EtcdKV
    from ..control.store import ClusterStore
    from ..errors import BackendError

    try:
        removed = ClusterStore(EtcdKV(cfg), host).forget_host()
    except BackendError as e:
        print(f"xmasq: {e}", file=sys.stderr)
        return 1
    print(f"host {host}: {removed} etcd records removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
