"""`xmasq serve`: bind the plugin socket, restore local state, serve requests.

The socket is bound before anything contacts etcd: Docker gives a plugin only a few
seconds to answer Plugin.Activate, and etcd may be slow or down.
"""

from __future__ import annotations

import os
import signal
import socket
from types import FrameType

import waitress

from . import log
from .admin import Admin
from .api import create_app
from .config import Config
from .datapath import Datapath
from .firewall import Firewall
from .ipam import IpamDriver
from .kv import EtcdKV
from .network import NetworkDriver
from .overlay import Overlay
from .reconciler import Reconciler
from .state import LocalState
from .store import ClusterStore

_log = log.get("server")


def build(config: Config) -> tuple[NetworkDriver, IpamDriver, Admin, Reconciler]:
    host = config.host_id or socket.gethostname()
    store = ClusterStore(EtcdKV(config), host)
    state = LocalState(os.path.join(config.state_dir, "state.json"))
    overlay = Overlay(config.underlay_interface, config.netlink_timeout)
    underlay = overlay.underlay()
    datapath = Datapath(
        os.path.join(config.bpf_pin_dir, host),
        underlay.ifname,
        config.bpf_src,
        config.fastpath == "on",
        {"FLOW_MAX": config.flow_max, "REMOTE_MAX": config.remote_max},
    )
    datapath.load()
    firewall = Firewall()
    network = NetworkDriver(store, state, overlay, firewall, datapath)
    reconciler = Reconciler(store, state, overlay, datapath, firewall, underlay.ip, config.host_ttl, config.host_grace)
    return network, IpamDriver(store), Admin(network, datapath), reconciler


def serve(config: Config) -> None:
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
    network, ipam, admin, reconciler = build(config)
    network.restore()
    holder["app"] = create_app(network, ipam, admin)
    reconciler.start()

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
        reconciler.stop()
        server.close()
        if os.path.exists(config.socket):
            os.unlink(config.socket)
        _log.info("stopped", socket=config.socket)
