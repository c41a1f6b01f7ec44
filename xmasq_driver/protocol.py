"""Wire structs of Docker's remote NetworkDriver and IpamDriver APIs.

Like docker/go-plugins-helpers' network/api.go and ipam/api.go: one dataclass per
request, decoded from JSON with the field names Docker uses, and one per response,
encoded by `encode`. Decoding checks types
and required fields and raises DriverError naming the bad field. JSON null is
treated as "absent" (Docker sends null Interface and Options).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import DriverError

T = TypeVar("T")

# Option keys Docker puts in NetworkDriver requests (moby libnetwork/netlabel).
GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"  # Engine 28: false for IPv6-only networks
DOCKER_PREFIX = "com.docker.network."  # keys Docker itself sets or interprets
MTU = "com.docker.network.driver.mtu"
IFACE_PREFIX = "com.docker.network.container_iface_prefix"
PORTMAP = "com.docker.network.portmap"
ADDRESS_FIELDS = {4: "Address", 6: "AddressIPv6"}  # an endpoint's address per IP version, in Interface
REQUEST_ADDRESS_TYPE = "RequestAddressType"
GATEWAY_ADDRESS_TYPE = "com.docker.network.gateway"


def wire(name: str, required: bool = False, default: Any = None, kind: type | None = None) -> Any:
    """A dataclass field read from JSON key `name`."""
    meta = {"wire": name, "required": required, "kind": kind}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_KIND_NAMES = {str: "a string", dict: "an object", list: "a list", bool: "a boolean", int: "an integer"}


def decode(cls: type[T], body: Any) -> T:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise DriverError(f"request body must be a JSON object, got {type(body).__name__}")
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name, kind = f.metadata["wire"], f.metadata["kind"]
        value = body.get(name)
        if value is None:
            if f.metadata["required"]:
                raise DriverError(f"missing required field {name}")
            continue
        if kind is IPData:
            value = _decode_ipdata(name, value)
        elif (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise DriverError(f"field {name} must be {_KIND_NAMES[kind]}")  # type: ignore[index]
        if kind is str and f.metadata["required"] and not value:
            raise DriverError(f"field {name} must not be empty")
        values[f.name] = value
    return cls(**values)


def _decode_ipdata(name: str, value: Any) -> list[IPData]:
    if not isinstance(value, list):
        raise DriverError(f"field {name} must be a list")
    return [decode(IPData, item) for item in value]


@dataclass
class IPData:
    address_space: str = wire("AddressSpace", kind=str, default="")
    pool: str = wire("Pool", required=True, kind=str)
    gateway: str = wire("Gateway", kind=str, default="")
    aux_addresses: dict = wire("AuxAddresses", kind=dict, default={})


@dataclass
class NetworkRequest:
    """CreateNetwork and AllocateNetwork."""

    network_id: str = wire("NetworkID", required=True, kind=str)
    options: dict = wire("Options", kind=dict, default={})
    ipv4: list = wire("IPv4Data", kind=IPData, default=[])
    ipv6: list = wire("IPv6Data", kind=IPData, default=[])


@dataclass
class NetworkIdRequest:
    """DeleteNetwork and FreeNetwork."""

    network_id: str = wire("NetworkID", required=True, kind=str)


@dataclass
class EndpointRequest:
    """EndpointOperInfo, DeleteEndpoint, Leave, RevokeExternalConnectivity."""

    network_id: str = wire("NetworkID", required=True, kind=str)
    endpoint_id: str = wire("EndpointID", required=True, kind=str)


@dataclass
class ExternalConnectivityRequest(EndpointRequest):
    options: dict = wire("Options", kind=dict, default={})


@dataclass
class CreateEndpointRequest(ExternalConnectivityRequest):
    interface: dict = wire("Interface", kind=dict, default={})


@dataclass
class JoinRequest(ExternalConnectivityRequest):
    sandbox_key: str = wire("SandboxKey", kind=str, default="")


@dataclass
class DiscoveryRequest:
    discovery_type: int = wire("DiscoveryType", kind=int, default=0)
    discovery_data: dict = wire("DiscoveryData", kind=dict, default={})


@dataclass
class RequestPoolRequest:
    address_space: str = wire("AddressSpace", kind=str, default="")
    pool: str = wire("Pool", kind=str, default="")
    sub_pool: str = wire("SubPool", kind=str, default="")
    options: dict = wire("Options", kind=dict, default={})
    v6: bool = wire("V6", kind=bool, default=False)


@dataclass
class ReleasePoolRequest:
    pool_id: str = wire("PoolID", required=True, kind=str)


@dataclass
class RequestAddressRequest:
    pool_id: str = wire("PoolID", required=True, kind=str)
    address: str = wire("Address", kind=str, default="")
    options: dict = wire("Options", kind=dict, default={})


@dataclass
class ReleaseAddressRequest:
    pool_id: str = wire("PoolID", required=True, kind=str)
    address: str = wire("Address", required=True, kind=str)


# -- responses: what the driver answers, encoded in one place (`encode`) ------------------
def encode(reply: Any) -> Any:
    """A response as Docker's JSON: each field under its wire name, fields that are None left out."""
    if dataclasses.is_dataclass(reply) and not isinstance(reply, type):
        return {
            f.metadata["wire"]: encode(getattr(reply, f.name))
            for f in dataclasses.fields(reply)
            if getattr(reply, f.name) is not None
        }
    if isinstance(reply, list):
        return [encode(v) for v in reply]
    if isinstance(reply, dict):
        return {k: encode(v) for k, v in reply.items()}
    return reply


@dataclass
class Empty:
    """Every call whose answer carries nothing but success."""


@dataclass
class ActivateResponse:
    implements: list = wire("Implements", default=[])


@dataclass
class CapabilitiesResponse:
    scope: str = wire("Scope")
    connectivity_scope: str = wire("ConnectivityScope")


@dataclass
class AllocateNetworkResponse:
    options: dict = wire("Options", default={})


@dataclass
class EndpointInterface:
    mac_address: str = wire("MacAddress")


@dataclass
class CreateEndpointResponse:
    interface: EndpointInterface | None = wire("Interface")  # None: Docker gave every field itself


@dataclass
class EndpointOperInfoResponse:
    value: dict = wire("Value", default={})


@dataclass
class InterfaceName:
    src_name: str = wire("SrcName")
    dst_prefix: str = wire("DstPrefix")


@dataclass
class JoinResponse:
    interface_name: InterfaceName = wire("InterfaceName")
    gateway: str | None = wire("Gateway")  # None: no default route (internal networks)
    gateway_ipv6: str | None = wire("GatewayIPv6")  # None: none over IPv6 (internal, or no IPv6)
    static_routes: list = wire("StaticRoutes", default=[])
    disable_gateway_service: bool = wire("DisableGatewayService", default=False)


@dataclass
class IpamCapabilitiesResponse:
    requires_mac_address: bool = wire("RequiresMACAddress", default=False)
    requires_request_replay: bool = wire("RequiresRequestReplay", default=False)


@dataclass
class AddressSpacesResponse:
    local_default: str = wire("LocalDefaultAddressSpace")
    global_default: str = wire("GlobalDefaultAddressSpace")


@dataclass
class RequestPoolResponse:
    pool_id: str = wire("PoolID")
    pool: str = wire("Pool")
    data: dict = wire("Data", default={})


@dataclass
class RequestAddressResponse:
    address: str = wire("Address")
    data: dict = wire("Data", default={})
