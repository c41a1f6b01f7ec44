"""The `xmasq` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from . import __version__, config, log

PIDFILE = "/run/xmasq/xmasq.pid"
LOGFILE = "/var/log/xmasq/xmasq.log"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xmasq", description="XMasq Docker overlay network driver")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the driver in the foreground on the plugin socket")
    config.add_arguments(serve)

    daemon = sub.add_parser("daemon", help="start, stop or check the driver in the background")
    daemon.add_argument("action", choices=["start", "stop", "status"])
    daemon.add_argument("--pidfile", default=PIDFILE)
    daemon.add_argument("--logfile", default=LOGFILE)
    daemon.add_argument("--kill", action="store_true", help="stop with SIGKILL (no clean shutdown)")
    config.add_arguments(daemon)

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
    elif args.command == "config":
        fields = {k: ("<set>" if k.endswith("key") and v else v) for k, v in vars(cfg).items()}
        json.dump(fields, sys.stdout, indent=1)
        print()
    return 0


def _daemon(args: argparse.Namespace, cfg: config.Config) -> int:
    from . import daemon

    if args.action == "start":
        pid = daemon.start(cfg, args.pidfile, args.logfile)
        print(f"xmasq driver running: pid {pid}, socket {cfg.socket}, log {args.logfile}")
    elif args.action == "stop":
        stopped = daemon.stop(args.pidfile, signal.SIGKILL if args.kill else signal.SIGTERM)
        print("xmasq driver stopped" if stopped else "xmasq driver was not running")
    else:
        up = daemon.answering(cfg)
        print(f"xmasq driver {'answering' if up else 'not answering'} on {cfg.socket}")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
