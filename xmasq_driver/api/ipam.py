"""IpamDriver: cluster-wide unique addresses from etcd, keyed by subnet (IPv4 or IPv6).

Pools are named by their subnet (and sub-pool), so the same `--subnet` on every host
is one pool; `--ipam-opt xmasq.space=NAME` names a separate pool for the same subnet (two
networks with the same subnet and the same addresses). Each host holds a pool once per
network using it; addresses are freed when the last holder in the cluster releases it.
The gateway (first address unless given) is shared by every host and is not released
with an endpoint.

Each host also records its holds and claims in its local state: they are what it
re-asserts in etcd after etcd lost data (`reassert`). One lock orders every change of them.
"""

from __future__ import annotations

import ipaddress
import threading

from .. import log
from .. import protocol as p
from ..control.layout import ADDRESSES, GATEWAY_OWNER, HOLDERS, pool_id_of, pool_key
from ..control.model import Address, Pool, Subnet, check_name, check_subnet, is_host_address
from ..control.state import LocalState
from ..control.store import ClusterStore, ClusterView, Conflict, Reassertion
from ..errors import DriverError, NotFound

_log = log.get("ipam")
ADDRESS_SPACE = "xmasq"


SPACE_OPTION = "xmasq.space"
ADDRESS, GATEWAY = "address", "gateway"  # the kinds of claim in the local record


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
    def __init__(self, store: ClusterStore, state: LocalState):
        self.store = store
        self.state = state
        self._lock = threading.Lock()

    def _pools(self, view: ClusterView | None = None) -> dict[str, Pool]:
        """This host's pools (call with the lock held). A state file from before pools were
        recorded gets this host's records from etcd, once, rather than having them removed."""
        if self.state.pools is None:
            view = view or self.store.view()
            adopted: dict[str, Pool] = {}
            for pool, holders in view.holders.items():
                if self.store.host in holders:
                    claims = view.addresses.get(pool, {}).items()
                    mine = {ip: owner for ip, owner in claims if owner in (GATEWAY_OWNER, self.store.host)}
                    kinds = {ip: GATEWAY if owner == GATEWAY_OWNER else ADDRESS for ip, owner in mine.items()}
                    adopted[pool_id_of(pool)] = Pool(int(holders[self.store.host]), kinds)
            self.state.adopt_pools(adopted)
            _log.info("IPAM records adopted from etcd", pools=len(adopted))
        assert self.state.pools is not None
        return self.state.pools

    def _record(self, pool_id: str, holds: int = 0, address: str = "", kind: str = "") -> None:
        """Change this host's record of a pool: holds by `holds`, an address added (kind) or
        removed (no kind). A pool with no holds left is forgotten."""
        old = self._pools().get(pool_id, Pool())
        addresses = dict(old.addresses)
        if address and kind:
            addresses[address] = kind
        elif address:
            addresses.pop(address, None)
        record = Pool(old.holds + holds, addresses)
        self.state.set_pool(pool_id, record if record.holds > 0 or record.addresses else None)

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
            self._pools()
            self.store.hold_pool(pool_id)
            self._record(pool_id, holds=1)
        _log.info("pool held", pool=pool_id)
        return p.RequestPoolResponse(pool_id, str(subnet))

    def release_pool(self, req: p.ReleasePoolRequest) -> p.Empty:
        _parse_pool_id(req.pool_id)
        with self._lock:
            record = self._pools().get(req.pool_id)
            if record and record.holds > 1:
                self._record(req.pool_id, holds=-1)
            elif record:
                self.state.set_pool(req.pool_id, None)  # this host's last hold: its claims go with it
            freed = self.store.release_pool(req.pool_id)
        _log.info("pool released", pool=req.pool_id, freed=freed)
        return p.Empty()

    def request_address(self, req: p.RequestAddressRequest) -> p.RequestAddressResponse:
        subnet, rng = _parse_pool_id(req.pool_id)
        if not self.store.pool_held(req.pool_id):
            raise NotFound(f"pool {req.pool_id} is not held by any host (RequestPool first)")
        gateway = req.options.get(p.REQUEST_ADDRESS_TYPE) == p.GATEWAY_ADDRESS_TYPE
        with self._lock:
            self._pools()
            if req.address:
                ip = self._claim_given(req.pool_id, self._parse_address(req.address, subnet), gateway)
            elif gateway:
                ip = self._claim_given(req.pool_id, subnet.network_address + 1, gateway=True)
            else:
                ip = self._claim_next(req.pool_id, subnet, rng)
            self._record(req.pool_id, address=str(ip), kind=GATEWAY if gateway else ADDRESS)
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
        owner = GATEWAY_OWNER if gateway else self.store.host
        if self.store.claim_address(pool_id, ip, owner):
            return ip
        if gateway and self.store.address_owner(pool_id, ip) == GATEWAY_OWNER:
            return ip  # every host of the network shares the gateway
        raise DriverError(f"address {ip} is already in use")

    def _claim_next(self, pool_id: str, subnet: Subnet, rng: Subnet) -> Address:
        # Lowest free address; a create that loses a race just moves on to the next. The range's
        # addresses are counted, not listed (an IPv6 /64 has 2^64), and only up to the first free one.
        taken = self.store.claimed_addresses(pool_id)
        for ip in rng.hosts():
            if ip in taken or not is_host_address(ip, subnet):
                continue
            if self.store.claim_address(pool_id, ip, self.store.host):
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
            if req.pool_id in self._pools():
                self._record(req.pool_id, address=str(ip))
            self.store.release_address(req.pool_id, ip)
        _log.info("address released", pool=req.pool_id, address=ip)
        return p.Empty()

    def reassert(self, view: ClusterView) -> Reassertion:
        """Write back this host's holds and claims that `view` lacks or shows stale; remove the
        ones of this host that it no longer has. A claim someone else now holds is a conflict."""
        done, host = Reassertion(), self.store.host
        with self._lock:
            pools = self._pools(view)
            for pool_id, record in pools.items():
                pool = pool_key(pool_id)
                if record.holds and view.holders.get(pool, {}).get(host) != str(record.holds):
                    self.store.set_holds(pool, record.holds)
                    done.repaired += 1
                for ip, kind in record.addresses.items():
                    owner = GATEWAY_OWNER if kind == GATEWAY else host
                    if view.addresses.get(pool, {}).get(ip) == owner:
                        continue
                    written, theirs = self.store.assert_key(ADDRESSES.key(pool, ip), owner)
                    done.repaired += written
                    if theirs is not None:
                        done.conflicts.append(Conflict("address", f"{pool_id} {ip}", owner, theirs))
            for pool, _ in view.owned_by(host, HOLDERS):
                if pool_id_of(pool) not in pools:
                    done.removed += self.store.delete_if(HOLDERS.key(pool, host), lambda _: True)
                    self.store.free_if_unheld(pool)
            for pool, ip in view.owned_by(host, ADDRESSES):
                if ip not in pools.get(pool_id_of(pool), Pool()).addresses:
                    done.removed += self.store.delete_if(ADDRESSES.key(pool, ip), lambda v: v == host)
        return done
