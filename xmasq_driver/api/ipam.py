"""IpamDriver: cluster-wide unique addresses from etcd, keyed by subnet (IPv4 or IPv6).

Pools are named by their subnet (and sub-pool), so the same `--subnet` on every host
is one pool; `--ipam-opt xmasq.space=NAME` names a separate pool for the same subnet (two
networks with the same subnet and the same addresses). Each host holds a pool once per
network using it; addresses are freed when the last holder in the cluster releases it.
The gateway (first address unless given) is shared by every host and is not released
with an endpoint.

Each host's holds and claims are kept with its local state by control/records.py, which also
re-asserts them in etcd after etcd lost data. One lock (the state's pools_lock) orders every change
of them.
"""

from __future__ import annotations

import ipaddress

from .. import log
from .. import protocol as p
from ..control.layout import GATEWAY_OWNER
from ..control.model import Address, Subnet, check_name, check_subnet, is_host_address
from ..control.records import HostRecords
from ..control.store import ClusterStore
from ..errors import DriverError, NotFound

_log = log.get("ipam")
ADDRESS_SPACE = "xmasq"


SPACE_OPTION = "xmasq.space"


def _parse_pool_id(pool_id: str) -> tuple[Subnet, Subnet]:
    """PoolID is "<subnet>[|<range>][@<space>]"; returns (subnet, range)."""
    subnet_s, _, range_s = pool_id.partition("@")[0].partition("|")
    try:
        subnet = ipaddress.ip_network(subnet_s)
        rng = ipaddress.ip_network(range_s) if range_s else subnet
    except ValueError:
        raise NotFound(f"pool {pool_id!r} is not an xmasq pool")
    return subnet, rng


class IpamDriver:
    def __init__(self, store: ClusterStore, records: HostRecords):
        self.store = store
        self.records = records
        self._lock = records.state.pools_lock

    def capabilities(self) -> p.IpamCapabilitiesResponse:
        return p.IpamCapabilitiesResponse()

    def default_address_spaces(self) -> p.AddressSpacesResponse:
        return p.AddressSpacesResponse(ADDRESS_SPACE, ADDRESS_SPACE)

    def request_pool(self, req: p.RequestPoolRequest) -> p.RequestPoolResponse:
        if not req.pool:
            raise DriverError("the xmasq IPAM driver needs a subnet (--subnet)")
        try:
            subnet = ipaddress.ip_network(req.pool)
            rng = ipaddress.ip_network(req.sub_pool) if req.sub_pool else subnet
        except ValueError as e:
            raise DriverError(f"bad pool: {e}")
        want = 6 if req.v6 else 4  # Docker asks for each of a network's subnets with its version
        if subnet.version != want or rng.version != want:
            raise DriverError(f"pool {req.pool} is not an IPv{want} subnet, which Docker asked for (V6={req.v6})")
        check_subnet(subnet)
        if not rng.subnet_of(subnet):  # type: ignore[arg-type]  # one version: checked above
            raise DriverError(f"sub-pool {rng} is not inside {subnet}")
        for k in req.options:
            if k != SPACE_OPTION:
                raise DriverError(f"unknown IPAM option {k}: xmasq supports {SPACE_OPTION}")
        space = check_name(SPACE_OPTION, str(req.options[SPACE_OPTION])) if req.options.get(SPACE_OPTION) else ""
        pool_id = str(subnet) + (f"|{rng}" if req.sub_pool else "") + (f"@{space}" if space else "")
        with self._lock:
            self.records.hold(pool_id)
        _log.info("pool held", pool=pool_id)
        return p.RequestPoolResponse(pool_id, str(subnet))

    def release_pool(self, req: p.ReleasePoolRequest) -> p.Empty:
        _parse_pool_id(req.pool_id)
        with self._lock:
            freed = self.records.release(req.pool_id)
        _log.info("pool released", pool=req.pool_id, freed=freed)
        return p.Empty()

    def request_address(self, req: p.RequestAddressRequest) -> p.RequestAddressResponse:
        subnet, rng = _parse_pool_id(req.pool_id)
        if not self.store.pool_held(req.pool_id):
            raise NotFound(f"pool {req.pool_id} is not held by any host (RequestPool first)")
        gateway = req.options.get(p.REQUEST_ADDRESS_TYPE) == p.GATEWAY_ADDRESS_TYPE
        with self._lock:
            if req.address:
                ip = self._claim_given(req.pool_id, self._parse_address(req.address, subnet), gateway)
            elif gateway:
                ip = self._claim_given(req.pool_id, subnet.network_address + 1, gateway=True)
            else:
                ip = self._claim_next(req.pool_id, subnet, rng)
        _log.info("address assigned", pool=req.pool_id, address=ip, gateway=gateway)
        return p.RequestAddressResponse(f"{ip}/{subnet.prefixlen}")

    @staticmethod
    def _parse_address(address: str, subnet: Subnet) -> Address:
        try:
            ip = ipaddress.ip_interface(address).ip
        except ValueError:
            raise DriverError(f"address {address!r} is not an IP address")
        if not is_host_address(ip, subnet):
            raise DriverError(f"address {ip} is not a host address of {subnet}")
        return ip

    def _claim_given(self, pool_id: str, ip: Address, gateway: bool) -> Address:
        if self.records.claim(pool_id, ip, gateway):
            return ip
        raise DriverError(f"address {ip} is already in use")

    def _claim_next(self, pool_id: str, subnet: Subnet, rng: Subnet) -> Address:
        # Lowest free address; a create that loses a race just moves on to the next. The range's
        # addresses are counted, not listed (an IPv6 /64 has 2^64), and only up to the first free one.
        taken = self.store.claimed_addresses(pool_id)
        for ip in rng.hosts():
            if ip in taken or not is_host_address(ip, subnet):
                continue
            if self.records.claim(pool_id, ip, gateway=False):
                return ip
        raise DriverError(f"no free address left in {rng}")

    def release_address(self, req: p.ReleaseAddressRequest) -> p.Empty:
        subnet, _ = _parse_pool_id(req.pool_id)
        ip = self._parse_address(req.address, subnet)
        with self._lock:
            owner = self.store.address_owner(req.pool_id, ip)
            if owner == GATEWAY_OWNER:
                return p.Empty()  # shared by every host; freed with the pool
            if owner not in (None, self.store.host):  # it would come back: its holder re-asserts it
                raise DriverError(f"address {ip} is held by host {owner}: only that host releases it")
            self.records.unclaim(req.pool_id, ip)
        _log.info("address released", pool=req.pool_id, address=ip)
        return p.Empty()
