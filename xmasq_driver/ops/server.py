"""`xmasq serve`: bind the plugin socket, restore local state, serve requests.

The socket is bound before anything contacts etcd: Docker gives a plugin only a few
seconds to answer Plugin.Activate, and etcd may be slow or down.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import ssl
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import waitress
from werkzeug.serving import BaseWSGIServer, make_server

from .. import log
from ..api.http import create_app
from ..api.ipam import IpamDriver
from ..api.network import NetworkDriver
from ..config import Config, env_name
from ..control.kv import EtcdKV
from ..control.liveness import Liveness
from ..control.model import HostRecord
from ..control.reconciler import Reconciler
from ..control.records import HostRecords
from ..control.recovery import recover
from ..control.state import LocalState
from ..control.store import ClusterStore
from ..dataplane import probe
from ..dataplane.datapath import Datapath
from ..dataplane.firewall import Firewall
from ..dataplane.overlay import Overlay, veth_names
from ..dataplane.services import DOCKER_TIMEOUT, DockerServices, ServiceWatcher
from ..dataplane.tunnel import Tunnel
from ..errors import BackendError
from .admin import Admin
from .metrics import wsgi_app

_log = log.get("server")


Job = Callable[[threading.Event], None]  # a background loop that runs until the event is set


def build(config: Config) -> tuple[NetworkDriver, IpamDriver, Admin, Reconciler, ServiceWatcher | None, list[Job]]:
    host = config.host
    store = ClusterStore(EtcdKV(config), host)
    state = LocalState(os.path.join(config.state_dir, "state.json"))
    overlay = Overlay(config.underlay_interface, config.netlink_timeout, config.steer_flows)
    underlay = overlay.underlay()
    orphans = {}
    if state.lost:  # state.json was unreadable: what this host has, from etcd, dockerd and the kernel
        dockerd = DockerServices(config.docker_host, DOCKER_TIMEOUT)
        kernel = (overlay.veth_state, underlay.mtu, veth_names)
        orphans = recover(state, host, store.view, dockerd.network_options, *kernel).orphans
    datapath = Datapath(
        os.path.join(config.bpf_pin_dir, host),
        underlay.ifname,
        config.bpf_src,
        config.fastpath == "on",
        {
            "FLOW_MAX": config.flow_max,
            "REMOTE_MAX": config.remote_max,
            "LOCAL_MAX": config.local_max,
            "TUNNEL_MAX": config.tunnel_max,
        },
    )
    datapath.load()
    firewall = Firewall()
    key_file = os.path.join(config.state_dir, "wireguard.key")
    tunnel = Tunnel(
        config.wireguard_device,
        config.wireguard_port,
        key_file,
        config.wireguard,
        overlay.underlay,
        firewall,
        on_up=datapath.attach_tunnel,
        on_down=datapath.detach_tunnel,
    )
    _log.info("encryption", kind=tunnel.kind or "none", reason=tunnel.reason, device=tunnel.device)
    records = HostRecords(store, state)
    network = NetworkDriver(store, records, state, overlay, firewall, datapath, tunnel, config.scope)
    network.remove_orphans(orphans)
    ipam = IpamDriver(store, records)
    port = config.wireguard_port if tunnel.public_key else 0
    record = HostRecord(underlay.ip, tunnel.public_key, port)
    liveness = Liveness(store, record, config.host_ttl, config.host_grace, config.restore_hold, probe.answering)
    reconciler = Reconciler(store, state, overlay, datapath, firewall, liveness, records, tunnel, config.resync)

    def rotate_key() -> str:
        """A new WireGuard key for this host, published at once: its peers follow from etcd."""
        key = tunnel.rotate()
        liveness.announce(dataclasses.replace(liveness.record, key=key))
        return key

    # Swarm services exist only where Docker runs the driver at global scope (the managed plugin).
    services = None
    if config.scope == "global":
        source = DockerServices(config.docker_host, DOCKER_TIMEOUT)

        def in_use(network_id: str, ip: str) -> bool:
            snap = state.snapshot()
            net = snap.networks.get(network_id)
            mine = any(e.network_id == network_id and ip in e.ips for e in snap.endpoints.values())
            return net is not None and (mine or reconciler.has_endpoint(net.key, ip))

        services = ServiceWatcher(source, state, datapath, config.service_poll, in_use)
    admin = Admin(store, state, datapath, reconciler, network.discovered, tunnel, rotate_key, services)
    jobs: list[Job] = [tunnel.watch]
    if config.key_rotation > 0 and tunnel.kind:

        def rotate_on_schedule(stop: threading.Event) -> None:
            while not stop.wait(config.key_rotation):
                try:
                    rotate_key()
                except (BackendError, OSError) as e:  # the old key stays in use: tried again next time
                    _log.error("scheduled key rotation failed", error=e)

        jobs.append(rotate_on_schedule)
    return network, ipam, admin, reconciler, services, jobs


def _host_port(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise SystemExit(f"xmasq: {what}={address!r} is not host:port")


def tcp_listeners(config: Config) -> list[tuple[str, str, int, ssl.SSLContext | None]]:
    """(name, host, port, TLS context) of each TCP listener the configuration asks for.
    Refuses, before anything starts, a listener that would be open without TLS."""
    found: list[tuple[str, str, int, ssl.SSLContext | None]] = []
    if config.listen:
        if not (config.tls_cert and config.tls_key and config.tls_client_ca):
            raise SystemExit(
                "xmasq: XMASQ_LISTEN needs XMASQ_TLS_CERT, XMASQ_TLS_KEY and XMASQ_TLS_CLIENT_CA:"
                " the plugin API is served over TCP only with TLS and client certificates"
            )
        found.append(("api", *_host_port(config.listen, env_name("listen")), _tls(config, client_auth=True)))
    if config.metrics:
        host, port = _host_port(config.metrics, env_name("metrics"))
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback and not (config.tls_cert and config.tls_key):
            raise SystemExit(
                f"xmasq: XMASQ_METRICS={config.metrics} is not a loopback address: it needs XMASQ_TLS_CERT and"
                " XMASQ_TLS_KEY"
            )
        found.append(("metrics", host, port, _tls(config, client_auth=False) if config.tls_cert else None))
    return found


def _tls(config: Config, client_auth: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
        if client_auth:
            ctx.load_verify_locations(config.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise SystemExit(f"xmasq: cannot load the TLS files ({type(e).__name__}: {e})")
    return ctx


def _start_tcp(name: str, host: str, port: int, tls: ssl.SSLContext | None, app: Callable[..., Any]) -> BaseWSGIServer:
    server = make_server(host, port, app, threaded=True, ssl_context=tls)
    threading.Thread(target=server.serve_forever, name=f"tcp-{name}", daemon=True).start()
    _log.info("listening", listener=name, address=f"{host}:{port}", tls=tls is not None)
    return server


def serve(config: Config) -> None:
    tcp = tcp_listeners(config)
    os.makedirs(os.path.dirname(config.socket), exist_ok=True)
    if os.path.exists(config.socket):
        os.unlink(config.socket)
    # Bind first with a placeholder app, so Docker's Activate never waits on etcd.
    holder: dict[str, object] = {}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        return holder["app"](environ, start_response)  # type: ignore[operator]

    server = waitress.create_server(
        app,
        unix_socket=config.socket,
        unix_socket_perms="600",
        threads=config.threads,
        ident="xmasq",
        clear_untrusted_proxy_headers=True,
    )
    network, ipam, admin, reconciler, services, jobs = build(config)
    network.restore()
    holder["app"] = create_app(network, ipam, admin)
    reconciler.start()
    stopping = threading.Event()
    for job in jobs:
        threading.Thread(target=job, args=(stopping,), name=job.__name__, daemon=True).start()
    if services is not None:
        services.start()
    apps: dict[str, Callable[..., Any]] = {"api": app, "metrics": wsgi_app(admin)}
    started = [_start_tcp(name, host, port, tls, apps[name]) for name, host, port, tls in tcp]

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    _log.info(
        "serving",
        socket=config.socket,
        host=network.store.host,
        etcd=config.etcd_endpoints,
        networks=len(network.state.networks),
        endpoints=len(network.state.endpoints),
        pid=os.getpid(),
    )
    try:
        server.run()
    finally:
        if services is not None:
            services.stop()
        stopping.set()
        reconciler.stop()
        for s in started:
            s.shutdown()
        server.close()
        if os.path.exists(config.socket):
            os.unlink(config.socket)
        _log.info("stopped", socket=config.socket)
