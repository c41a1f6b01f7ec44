"""All driver settings in one place: each has an env var and a CLI flag.

Precedence: flag > environment > default. `xmasq serve --help` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STEER_MODES = ("rfs", "rps", "off")


def env_name(name: str) -> str:
    return "XMASQ_" + name.upper()


def environment(**settings: object) -> dict[str, str]:
    """Settings (by field name) as the environment variables that set them."""
    return {env_name(k): str(v) for k, v in settings.items()}


@dataclass(frozen=True)
class Config:
    etcd_endpoints: str = field(
        default="http://127.0.0.1:2379",
        metadata={"help": "comma-separated etcd client URLs (http:// or https://)"},
    )
    etcd_ca: str = field(default="", metadata={"help": "CA bundle for etcd TLS"})
    etcd_cert: str = field(default="", metadata={"help": "client certificate for etcd TLS"})
    etcd_key: str = field(default="", metadata={"help": "client key for etcd TLS"})
    etcd_timeout: float = field(default=3.0, metadata={"help": "seconds per etcd request"})
    netlink_timeout: float = field(default=5.0, metadata={"help": "seconds per netlink operation"})
    underlay_interface: str = field(
        default="", metadata={"help": "underlay NIC (default: the default route's interface)"}
    )
    socket: str = field(default="/run/docker/plugins/xmasq.sock", metadata={"help": "plugin unix socket path"})
    state_dir: str = field(default="/var/lib/xmasq", metadata={"help": "local state directory"})
    pidfile: str = field(default="/run/xmasq/xmasq.pid", metadata={"help": "where `xmasq daemon` keeps the pid"})
    logfile: str = field(default="/var/log/xmasq/xmasq.log", metadata={"help": "the log `xmasq daemon start` writes"})
    bpf_pin_dir: str = field(
        default="/sys/fs/bpf/xmasq", metadata={"help": "bpffs directory; maps are pinned in <dir>/<host id>"}
    )
    fastpath: str = field(
        default="on", metadata={"help": "eBPF fast path: on or off (global switch)", "choices": ("on", "off")}
    )
    steer_flows: str = field(
        default="rfs",
        metadata={
            "help": "how a container's packets are spread over CPUs (default for networks without"
            " xmasq.steer): rfs: on the CPU its socket runs on, moving only once the old CPU has"
            " drained the flow (in order, no hand-off); rps: each flow on one CPU by its hash (in"
            " order, a hand-off when that is not the sender's); off: where sent (TCP can be reordered);"
            " 'on' is the former name of rps",
            "choices": STEER_MODES,
            "aliases": {"on": "rps"},
        },
    )
    scope: str = field(
        default="local",
        metadata={
            "help": "scope told to Docker: local (standalone dockerds) or global (swarm, as a managed plugin)",
            "choices": ("local", "global"),
        },
    )
    docker_host: str = field(
        default="unix:///run/docker.sock",
        metadata={
            "help": "this host's dockerd, read (in the background) for swarm services' VIPs and tasks, and"
            " at a start whose state.json is unreadable, for the networks to rebuild it with"
        },
    )
    service_poll: float = field(
        default=0.25,
        metadata={
            "help": "seconds between reads of swarm services (scope global only): a task that stops gets no new"
            " connection after about this long"
        },
    )
    wireguard: str = field(
        default="auto",
        metadata={
            "help": "encryption between hosts for --opt encrypted networks: auto (the kernel's WireGuard where"
            " it has one, else wireguard-go), kernel, userspace or off (encrypted networks are refused)",
            "choices": ("auto", "kernel", "userspace", "off"),
        },
    )
    wireguard_device: str = field(default="xmwg0", metadata={"help": "this host's WireGuard device (<= 15 chars)"})
    wireguard_port: int = field(
        default=51820, metadata={"help": "this host's WireGuard UDP port (other hosts must reach it)"}
    )
    key_rotation: float = field(
        default=0.0,
        metadata={"help": "seconds between automatic WireGuard key rotations (0: only `xmasq rotate-key`)"},
    )
    flow_max: int = field(default=262144, metadata={"help": "flow cache entries (LRU)"})
    remote_max: int = field(
        default=131072,
        metadata={"help": "remote endpoint cache entries (endpoints of this host's networks on other hosts)"},
    )
    local_max: int = field(
        default=4096,
        metadata={
            "help": "endpoints of this host the eBPF maps hold (a dual-stack one counts twice); beyond it"
            " an endpoint is refused, naming this setting"
        },
    )
    tunnel_max: int = field(
        default=16384,
        metadata={
            "help": "(host, network) pairs whose learned outer headers the fast path keeps (16 networks on"
            " each of 1,000 hosts); the flows of pairs beyond it stay on the slow path"
        },
    )
    bpf_src: str = field(default="", metadata={"help": "directory of the eBPF sources (default: bpf/ of this tree)"})
    host_id: str = field(default="", metadata={"help": "this host's cluster id (default: hostname)"})
    host_ttl: int = field(default=10, metadata={"help": "seconds this host's etcd lease lives without renewal"})
    host_grace: float = field(
        default=5.0,
        metadata={
            "help": "seconds a vanished host's endpoints are kept before removal (longer while it answers ICMP"
            " echo on the underlay, probed every such period)"
        },
    )
    restore_hold: float = field(
        default=30.0,
        metadata={
            "help": "seconds no peer entry is removed after etcd is seen to have lost data (its revision went"
            " back: restored empty or from a snapshot), while every host re-asserts its records"
        },
    )
    resync: float = field(
        default=300.0,
        metadata={
            "help": "seconds (+-10 %, so hosts do not list at once) between safety passes that list the whole"
            " cluster from etcd and correct (and count) any drift; between them only the changes etcd reports"
            " are applied"
        },
    )
    threads: int = field(default=8, metadata={"help": "HTTP worker threads"})
    listen: str = field(
        default="",
        metadata={"help": "also serve the plugin API on this TCP host:port; TLS with client certificates only"},
    )
    metrics: str = field(
        default="",
        metadata={"help": "Prometheus metrics on this host:port (off when empty); TLS unless on a loopback address"},
    )
    tls_cert: str = field(default="", metadata={"help": "server certificate for the TCP listeners"})
    tls_key: str = field(default="", metadata={"help": "server key for the TCP listeners"})
    tls_client_ca: str = field(
        default="", metadata={"help": "CA that signs the clients allowed on the plugin API's TCP listener"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG (also every request body), INFO, WARNING or ERROR"})

    @property
    def host(self) -> str:
        """This host's cluster id: host_id, or the hostname."""
        return self.host_id or socket.gethostname()

    @property
    def etcd_endpoint_list(self) -> list[str]:
        return [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]


def _coerce(f: dataclasses.Field, raw: str) -> Any:  # type: ignore[type-arg]
    kind: Any = type(f.default)
    raw = f.metadata.get("aliases", {}).get(raw, raw)
    try:
        value = kind(raw)
    except ValueError:
        raise SystemExit(f"xmasq: {env_name(f.name)}={raw!r} is not a valid {kind.__name__}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise SystemExit(f"xmasq: {env_name(f.name)}={raw!r} must be {', '.join(choices[:-1])} or {choices[-1]}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Config):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=f"{f.metadata['help']} [env {env_name(f.name)}, default {f.default!r}]",
        )


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    values = {}
    for f in dataclasses.fields(Config):
        raw = getattr(args, f.name, None) if args is not None else None
        if raw is None:
            raw = env.get(env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _coerce(f, raw)
    return Config(**values)
