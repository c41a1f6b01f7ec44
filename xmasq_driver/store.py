"""Cluster state in etcd: networks, their VNIs and members, endpoints, IPAM.

Layout (all under /xmasq/v1/, values are JSON or plain strings):
  hosts/<host>                 {ip}  on a lease: present while the host's driver is alive
  networks/<net>               {vni, subnet, gateway, mtu, internal, options}
  members/<net>/<host>         "1" while <host> has the network
  vnis/<vni>                   <net>            (unique: claimed with create)
  endpoints/<net>/<ip>         {host, mac, endpoint}
  ipam/holders/<pool>/<host>   how many times <host> holds the pool
  ipam/addresses/<pool>/<ip>   "gateway" or the host that holds the address
Writes that must be unique (VNI, address) use create (compare-and-swap on absence).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from .errors import BackendError, DriverError
from .kv import KV

PREFIX = "/xmasq/v1/"
VNI_FIRST, VNI_LAST = 256, (1 << 24) - 1
GATEWAY_OWNER = "gateway"


def pool_key(pool_id: str) -> str:
    return pool_id.replace("/", "_")


class ClusterStore:
    def __init__(self, kv: KV, host: str):
        self.kv = kv
        self.host = host

    # -- hosts ------------------------------------------------------------
    def register_host(self, ip: str, lease: int) -> None:
        self.kv.put(f"{PREFIX}hosts/{self.host}", json.dumps({"ip": ip}), lease=lease)

    def hosts(self) -> tuple[dict[str, str], int]:
        """(host -> underlay ip of every live host, revision read at)."""
        raw, revision = self.kv.list_prefix(f"{PREFIX}hosts/")
        return {k.rsplit("/", 1)[1]: json.loads(v)["ip"] for k, v in raw.items()}, revision

    def cluster_view(self, nets: list[str]) -> tuple[dict[str, str], dict[str, dict[str, dict[str, Any]]], int]:
        """(host -> underlay ip, net -> ip -> endpoint record, revision read at) for the given networks."""
        hosts, revision = self.hosts()
        endpoints: dict[str, dict[str, dict[str, Any]]] = {net: {} for net in nets}
        for key, value in self.kv.get_prefix(f"{PREFIX}endpoints/").items():
            net, ip = key[len(PREFIX) + len("endpoints/") :].rsplit("/", 1)
            if net in endpoints:
                endpoints[net][ip] = json.loads(value)
        return hosts, endpoints, revision

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        return self.kv.wait(PREFIX, revision, timeout)

    # -- networks ---------------------------------------------------------
    def get_network(self, net: str) -> dict[str, Any] | None:
        raw = self.kv.get(f"{PREFIX}networks/{net}")
        return json.loads(raw) if raw else None

    def put_network(self, net: str, record: dict[str, Any]) -> None:
        self.kv.put(f"{PREFIX}networks/{net}", json.dumps(record, sort_keys=True))

    def claim_vni(self, net: str, vni: int | None) -> int:
        """Claim `vni` (or the lowest free one) for network `net`; idempotent."""
        if vni is not None:
            if self.kv.create(f"{PREFIX}vnis/{vni}", net):
                return vni
            owner = self.kv.get(f"{PREFIX}vnis/{vni}")
            if owner == net:
                return vni
            raise DriverError(f"VNI {vni} is already used by network {owner}")
        used = self.kv.get_prefix(f"{PREFIX}vnis/")
        for key, owner in used.items():
            if owner == net:
                return int(key.rsplit("/", 1)[1])
        taken = {int(k.rsplit("/", 1)[1]) for k in used}
        for candidate in range(VNI_FIRST, VNI_LAST + 1):
            if candidate not in taken and self.kv.create(f"{PREFIX}vnis/{candidate}", net):
                return candidate
        raise DriverError("no free VNI left")

    def release_vni(self, net: str, vni: int) -> None:
        if self.kv.get(f"{PREFIX}vnis/{vni}") == net:
            self.kv.delete(f"{PREFIX}vnis/{vni}")

    def release_if_unused(self, net: str) -> bool:
        """Forget network `net` (its VNI, its record) unless some host still has it."""
        if self.kv.get_prefix(f"{PREFIX}members/{net}/"):
            return False
        for key, owner in self.kv.get_prefix(f"{PREFIX}vnis/").items():
            if owner == net:
                self.kv.delete(key)
        self.kv.delete(f"{PREFIX}networks/{net}")
        return True

    def join_network(self, net: str) -> None:
        self.kv.put(f"{PREFIX}members/{net}/{self.host}", "1")

    def leave_network(self, net: str, vni: int) -> bool:
        """Drop this host's membership; the last member removes the network. True if last."""
        self.kv.delete(f"{PREFIX}members/{net}/{self.host}")
        if self.kv.get_prefix(f"{PREFIX}members/{net}/"):
            return False
        for key in self.kv.get_prefix(f"{PREFIX}endpoints/{net}/"):
            self.kv.delete(key)
        self.kv.delete(f"{PREFIX}networks/{net}")
        self.release_vni(net, vni)
        return True

    def forget_host(self) -> int:
        """Remove every record of this store's host, which is gone for good (its driver will
        never clean up): memberships (the last member's network goes), endpoints, addresses,
        pool holds. Refused while the host is registered. Returns how many keys went."""
        items = self.kv.get_prefix(PREFIX)
        if f"{PREFIX}hosts/{self.host}" in items:
            raise BackendError(f"host {self.host} is registered (alive): stop its driver first")
        before = len(items)
        for key, value in items.items():
            kind, *rest = key[len(PREFIX) :].split("/")
            if kind == "members" and rest[-1] == self.host:
                net = rest[0]
                self.leave_network(net, json.loads(items.get(f"{PREFIX}networks/{net}", '{"vni": 0}'))["vni"])
            elif kind == "ipam" and rest[0] == "holders" and rest[-1] == self.host:
                self.kv.delete(key)
                self._free_if_unheld("/".join(rest[1:-1]))
            elif (kind == "endpoints" and json.loads(value).get("host") == self.host) or (
                kind == "ipam" and rest[0] == "addresses" and value == self.host
            ):
                self.kv.delete(key)
        return before - len(self.kv.get_prefix(PREFIX))

    # -- endpoints --------------------------------------------------------
    def put_endpoint(self, net: str, ip: str, record: dict[str, Any]) -> None:
        self.kv.put(f"{PREFIX}endpoints/{net}/{ip}", json.dumps(dict(record, host=self.host)))

    def delete_endpoint(self, net: str, ip: str) -> None:
        self.kv.delete(f"{PREFIX}endpoints/{net}/{ip}")

    def endpoints(self, net: str) -> dict[str, dict[str, Any]]:
        items = self.kv.get_prefix(f"{PREFIX}endpoints/{net}/")
        return {k.rsplit("/", 1)[1]: json.loads(v) for k, v in items.items()}

    # -- IPAM -------------------------------------------------------------
    def hold_pool(self, pool_id: str) -> None:
        key = f"{PREFIX}ipam/holders/{pool_key(pool_id)}/{self.host}"
        self.kv.put(key, str(int(self.kv.get(key) or 0) + 1))

    def release_pool(self, pool_id: str) -> bool:
        """Drop one hold of this host; the last hold in the cluster frees every address."""
        key = f"{PREFIX}ipam/holders/{pool_key(pool_id)}/{self.host}"
        count = int(self.kv.get(key) or 0) - 1
        if count > 0:
            self.kv.put(key, str(count))
            return False
        self.kv.delete(key)
        return self._free_if_unheld(pool_key(pool_id))

    def _free_if_unheld(self, pool: str) -> bool:
        """Free every address of the pool (by its key) once no host holds it."""
        if self.kv.get_prefix(f"{PREFIX}ipam/holders/{pool}/"):
            return False
        for addr_key in self.kv.get_prefix(f"{PREFIX}ipam/addresses/{pool}/"):
            self.kv.delete(addr_key)
        return True

    def pool_held(self, pool_id: str) -> bool:
        return bool(self.kv.get_prefix(f"{PREFIX}ipam/holders/{pool_key(pool_id)}/"))

    def claim_address(self, pool_id: str, ip: ipaddress.IPv4Address, owner: str) -> bool:
        return self.kv.create(f"{PREFIX}ipam/addresses/{pool_key(pool_id)}/{ip}", owner)

    def address_owner(self, pool_id: str, ip: ipaddress.IPv4Address) -> str | None:
        return self.kv.get(f"{PREFIX}ipam/addresses/{pool_key(pool_id)}/{ip}")

    def claimed_addresses(self, pool_id: str) -> set[ipaddress.IPv4Address]:
        items = self.kv.get_prefix(f"{PREFIX}ipam/addresses/{pool_key(pool_id)}/")
        return {ipaddress.IPv4Address(k.rsplit("/", 1)[1]) for k in items}

    def release_address(self, pool_id: str, ip: ipaddress.IPv4Address) -> None:
        self.kv.delete(f"{PREFIX}ipam/addresses/{pool_key(pool_id)}/{ip}")
