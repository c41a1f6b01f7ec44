"""IpamDriver: cluster-wide unique addresses from etcd, keyed by subnet.

Pools are named by their subnet (and sub-pool), so the same `--subnet` on every host
is one pool; `--ipam-opt xmasq.space=NAME` names a separate pool for the same subnet (two
networks with the same subnet and the same addresses). Each host holds a pool once per
network using it; addresses are freed when the last holder in the cluster releases it.
The gateway (first address unless given) is shared by every host and is not released
with an endpoint.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from . import log
from . import protocol as p
from .errors import DriverError, NotFound
from .store import GATEWAY_OWNER, ClusterStore

_log = log.get("ipam")
ADDRESS_SPACE = "xmasq"


SPACE_OPTION = "xmasq.space"
_SPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _parse_pool_id(pool_id: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """PoolID is "<subnet>[|<range>][@<space>]"; returns (subnet, range)."""
    subnet_s, _, range_s = pool_id.partition("@")[0].partition("|")
    try:
        subnet = ipaddress.IPv4Network(subnet_s)
        rng = ipaddress.IPv4Network(range_s) if range_s else subnet
    except ValueError:
        raise NotFound(f"pool {pool_id!r} is not an xmasq pool")
    return subnet, rng


class IpamDriver:
    def __init__(self, store: ClusterStore):
        self.store = store

    def capabilities(self) -> dict[str, Any]:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def default_address_spaces(self) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    def request_pool(self, req: p.RequestPoolRequest) -> dict[str, Any]:
        if req.v6:
            raise DriverError("IPv6 pools are not supported by xmasq yet")
        if not req.pool:
            raise DriverError("the xmasq IPAM driver needs a subnet (--subnet)")
        try:
            subnet = ipaddress.IPv4Network(req.pool)
            rng = ipaddress.IPv4Network(req.sub_pool) if req.sub_pool else subnet
        except ValueError as e:
            raise DriverError(f"bad pool: {e}")
        if subnet.prefixlen > 30:
            raise DriverError(f"subnet {subnet} is too small (at most /30)")
        if not rng.subnet_of(subnet):
            raise DriverError(f"sub-pool {rng} is not inside {subnet}")
        space = str(req.options.get(SPACE_OPTION) or "")
        if space and not _SPACE.match(space):
            raise DriverError(f"option {SPACE_OPTION}={space!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        pool_id = str(subnet) + (f"|{rng}" if req.sub_pool else "") + (f"@{space}" if space else "")
        self.store.hold_pool(pool_id)
        _log.info("pool held", pool=pool_id)
        return {"PoolID": pool_id, "Pool": str(subnet), "Data": {}}

    def release_pool(self, req: p.ReleasePoolRequest) -> dict[str, Any]:
        _parse_pool_id(req.pool_id)
        freed = self.store.release_pool(req.pool_id)
        _log.info("pool released", pool=req.pool_id, freed=freed)
        return {}

    def request_address(self, req: p.RequestAddressRequest) -> dict[str, Any]:
        subnet, rng = _parse_pool_id(req.pool_id)
        if not self.store.pool_held(req.pool_id):
            raise NotFound(f"pool {req.pool_id} is not held by any host (RequestPool first)")
        gateway = req.options.get(p.REQUEST_ADDRESS_TYPE) == p.GATEWAY_ADDRESS_TYPE
        if req.address:
            ip = self._parse_address(req.address, subnet)
            ip = self._claim_given(req.pool_id, ip, gateway)
        elif gateway:
            ip = self._claim_given(req.pool_id, next(subnet.hosts()), gateway=True)
        else:
            ip = self._claim_next(req.pool_id, subnet, rng)
        _log.info("address assigned", pool=req.pool_id, address=ip, gateway=gateway)
        return {"Address": f"{ip}/{subnet.prefixlen}", "Data": {}}

    @staticmethod
    def _parse_address(address: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
        try:
            ip = ipaddress.IPv4Interface(address).ip
        except ValueError:
            raise DriverError(f"address {address!r} is not an IPv4 address")
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise DriverError(f"address {ip} is not a host address of {subnet}")
        return ip

    def _claim_given(self, pool_id: str, ip: ipaddress.IPv4Address, gateway: bool) -> ipaddress.IPv4Address:
        owner = GATEWAY_OWNER if gateway else self.store.host
        if self.store.claim_address(pool_id, ip, owner):
            return ip
        if gateway and self.store.address_owner(pool_id, ip) == GATEWAY_OWNER:
            return ip  # every host of the network shares the gateway
        raise DriverError(f"address {ip} is already in use")

    def _claim_next(
        self, pool_id: str, subnet: ipaddress.IPv4Network, rng: ipaddress.IPv4Network
    ) -> ipaddress.IPv4Address:
        # Lowest free address; a create that loses a race just moves on to the next.
        taken = self.store.claimed_addresses(pool_id)
        for ip in rng.hosts():
            if ip in taken or ip in (subnet.network_address, subnet.broadcast_address):
                continue
            if self.store.claim_address(pool_id, ip, self.store.host):
                return ip
        raise DriverError(f"no free address left in {rng}")

    def release_address(self, req: p.ReleaseAddressRequest) -> dict[str, Any]:
        subnet, _ = _parse_pool_id(req.pool_id)
        ip = self._parse_address(req.address, subnet)
        if self.store.address_owner(req.pool_id, ip) != GATEWAY_OWNER:
            self.store.release_address(req.pool_id, ip)
            _log.info("address released", pool=req.pool_id, address=ip)
        return {}
