"""The HTTP adapter: Docker plugin API paths -> one driver call each.

Thin by design (like go-plugins-helpers' network/api.go): decode the JSON body into the
request struct (Docker sends no Content-Type), call the driver, encode its response struct
(protocol.py: the route table plus its structs are the plugin contract). One error
handler turns every failure into {"Err": "..."}; unknown paths are 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .. import log
from .. import protocol as p
from ..errors import DriverError
from .ipam import IpamDriver
from .network import NetworkDriver

_log = log.get("api")
MAX_BODY = 1 << 20  # Docker's requests are small; anything bigger is not from Docker


class Operator(Protocol):
    """The operator's view served next to Docker's API (ops/admin.py's Admin)."""

    def status(self, _: None) -> Any: ...
    def stats(self, _: None) -> Any: ...
    def cache(self, _: None) -> Any: ...
    def flush(self, _: None) -> Any: ...
    def rotate_key(self, _: None) -> Any: ...


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/vnd.docker.plugins.v1+json")


def routes(
    network: NetworkDriver, ipam: IpamDriver, admin: Operator
) -> dict[str, tuple[type | None, Callable[[Any], Any]]]:
    """Path -> (request struct or None, handler)."""
    return {
        "/Xmasq.Status": (None, admin.status),
        "/Xmasq.Stats": (None, admin.stats),
        "/Xmasq.Cache": (None, admin.cache),
        "/Xmasq.FlushCache": (None, admin.flush),
        "/Xmasq.RotateKey": (None, admin.rotate_key),
        "/Plugin.Activate": (None, lambda _: p.ActivateResponse(["NetworkDriver", "IpamDriver"])),
        "/NetworkDriver.GetCapabilities": (None, lambda _: network.capabilities()),
        "/NetworkDriver.CreateNetwork": (p.NetworkRequest, network.create_network),
        "/NetworkDriver.DeleteNetwork": (p.NetworkIdRequest, network.delete_network),
        "/NetworkDriver.AllocateNetwork": (p.NetworkRequest, network.allocate_network),
        "/NetworkDriver.FreeNetwork": (p.NetworkIdRequest, network.free_network),
        "/NetworkDriver.CreateEndpoint": (p.CreateEndpointRequest, network.create_endpoint),
        "/NetworkDriver.EndpointOperInfo": (p.EndpointRequest, network.endpoint_oper_info),
        "/NetworkDriver.DeleteEndpoint": (p.EndpointRequest, network.delete_endpoint),
        "/NetworkDriver.Join": (p.JoinRequest, network.join),
        "/NetworkDriver.Leave": (p.EndpointRequest, network.leave),
        "/NetworkDriver.DiscoverNew": (p.DiscoveryRequest, lambda r: network.discover(r, new=True)),
        "/NetworkDriver.DiscoverDelete": (p.DiscoveryRequest, lambda r: network.discover(r, new=False)),
        "/NetworkDriver.ProgramExternalConnectivity": (
            p.ExternalConnectivityRequest,
            network.program_external_connectivity,
        ),
        "/NetworkDriver.RevokeExternalConnectivity": (p.EndpointRequest, network.revoke_external_connectivity),
        "/IpamDriver.GetCapabilities": (None, lambda _: ipam.capabilities()),
        "/IpamDriver.GetDefaultAddressSpaces": (None, lambda _: ipam.default_address_spaces()),
        "/IpamDriver.RequestPool": (p.RequestPoolRequest, ipam.request_pool),
        "/IpamDriver.ReleasePool": (p.ReleasePoolRequest, ipam.release_pool),
        "/IpamDriver.RequestAddress": (p.RequestAddressRequest, ipam.request_address),
        "/IpamDriver.ReleaseAddress": (p.ReleaseAddressRequest, ipam.release_address),
    }


def create_app(network: NetworkDriver, ipam: IpamDriver, admin: Operator) -> Flask:
    app = Flask("xmasq")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    table = routes(network, ipam, admin)

    def handle() -> Response:
        struct, handler = table[request.path]
        raw = request.get_data(cache=False)
        body: Any = {}
        if struct is not None and raw.strip():
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DriverError(f"request body is not valid JSON: {e}")
        # What each engine sends, verbatim (XMASQ_LOG_LEVEL=DEBUG): how docs/design-notes.md's
        # list of request fields per Docker version was made. Encoded only when it is kept.
        if _log.debugging():
            _log.debug("request", path=request.path, body=json.dumps(body, sort_keys=True))
        return _json(p.encode(handler(p.decode(struct, body) if struct is not None else None)))

    for path in table:
        app.add_url_rule(path, endpoint=path, view_func=handle, methods=["POST"])

    @app.errorhandler(Exception)
    def error(e: Exception) -> Response:
        if isinstance(e, DriverError):
            _log.warning("request refused", path=request.path, error=e)
            return _json({"Err": str(e)}, e.status)
        if isinstance(e, HTTPException):
            return _json({"Err": f"{request.method} {request.path}: {e.description}"}, e.code or 500)
        _log.error("request failed", path=request.path, error=repr(e), exc_info=True)
        return _json({"Err": f"internal error in {request.path}: {type(e).__name__}: {e}"}, 500)

    return app
