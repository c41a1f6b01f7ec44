"""Prometheus metrics (off unless `metrics` is set): the operator's view in exposition format.

Served on its own TCP listener (server.py), never on the plugin socket. Everything comes
from Admin, so `xmasq status|stats` and a scrape always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from ..control.liveness import LivenessCounters
from ..control.reconciler import SyncCounters
from ..control.records import RecordCounters
from ..dataplane.tunnel import TunnelCounters
from .admin import Admin

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, Any], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        tags = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{tags}}} {value:g}" if tags else f"{name} {value:g}")
    return lines


def render(admin: Admin) -> str:
    status, stats = admin.status(), admin.stats()
    hosts = status["cluster"].get("hosts")
    records = status["cluster"]["records"]
    fastpath, encryption = status["fastpath"], status["encryption"]
    lines = [
        *_family("xmasq_etcd_up", "gauge", "1 if etcd answered this scrape's read", [({}, hosts is not None)]),
        *_family("xmasq_cluster_hosts", "gauge", "hosts registered in etcd", [({}, len(hosts or {}))]),
        *_family("xmasq_fastpath_loaded", "gauge", "1 if the eBPF programs are loaded", [({}, fastpath["loaded"])]),
        *_family("xmasq_fastpath_enabled", "gauge", "1 if the fast path is switched on", [({}, fastpath["enabled"])]),
        *_family(
            "xmasq_etcd_conflicts",
            "gauge",
            "records of this host that etcd shows as someone else's (kept, not overwritten; see xmasq status)",
            [({}, len(records["conflicts"]))],
        ),
        *_family(
            "xmasq_etcd_records_total",
            "counter",
            "this host's records written back to etcd (reasserted) or removed from it (stale_removed)",
            [({"event": f.name}, records[f.name]) for f in fields(RecordCounters)],
        ),
        *_family(
            "xmasq_etcd_data_loss_total",
            "counter",
            "times etcd's revision went back (restored)",
            [({}, records[f.name]) for f in fields(LivenessCounters)],
        ),
        *_family(
            "xmasq_reconcile_total",
            "counter",
            "control plane work: full passes (whole cluster listed), batches and events applied from the watch,"
            " endpoint records examined, entries a safety pass found wrong (drift)",
            [({"event": f.name}, records[f.name]) for f in fields(SyncCounters)],
        ),
        *_family("xmasq_networks", "gauge", "xmasq networks on this host", [({}, len(status["networks"]))]),
        *_family(
            "xmasq_endpoints",
            "gauge",
            "endpoints on this host, by network",
            [({"network": n["name"], "vni": n["vni"]}, n["endpoints"]) for n in status["networks"]],
        ),
        *_family(
            "xmasq_service_tasks",
            "gauge",
            "running tasks behind each swarm service VIP on this host's networks (socket load balancing)",
            [
                ({"network": n["name"], "service": s["name"], "vip": s["vip"]}, len(s["tasks"]))
                for n in status["networks"]
                for s in n["services"]
            ],
        ),
        *_family(
            "xmasq_datapath_total",
            "counter",
            "eBPF counters: fast-path packets and bytes by direction, misses by reason, learn events, drops,"
            " service VIP connects and datagrams balanced (lb_*)",
            [({"counter": name}, value) for name, value in sorted(stats["counters"].items())],
        ),
        *_family(
            "xmasq_encryption_up",
            "gauge",
            "1 if this host's WireGuard device is up (it is while an encrypted network is here)",
            [({"kind": encryption["kind"]}, encryption["up"])],
        ),
        *_family(
            "xmasq_encryption_total",
            "counter",
            "WireGuard device restarts and key rotations (restarts, rotations)",
            [({"event": f.name}, encryption[f.name]) for f in fields(TunnelCounters)],
        ),
        *_family(
            "xmasq_encryption_dropped_total",
            "counter",
            "encrypted networks' packets dropped rather than sent or taken in plaintext, by reason",
            [({"reason": name}, value) for name, value in sorted(stats["encryption"].items())],
        ),
    ]
    return "\n".join(lines) + "\n"


def wsgi_app(admin: Admin) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics is served here\n"]
        body = render(admin).encode()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [body]

    return app
