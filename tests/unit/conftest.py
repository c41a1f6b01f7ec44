from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import FakeDatapath, FakeFirewall, FakeOverlay, FakeTunnel, MemoryKV
from xmasq_driver.api.http import create_app
from xmasq_driver.api.ipam import IpamDriver
from xmasq_driver.api.network import NetworkDriver
from xmasq_driver.control.liveness import Liveness
from xmasq_driver.control.model import HostRecord
from xmasq_driver.control.reconciler import Reconciler
from xmasq_driver.control.records import HostRecords
from xmasq_driver.control.state import LocalState
from xmasq_driver.control.store import ClusterStore
from xmasq_driver.ops.admin import Admin


class Harness:
    """The Flask app over fake backends, and a way to call it as Docker does."""

    def __init__(self, state_path: str | None = None, kv: MemoryKV | None = None, host: str = "host1"):
        self.kv = kv or MemoryKV()
        self.overlay = FakeOverlay()
        self.firewall = FakeFirewall()
        self.datapath = FakeDatapath()
        self.tunnel = FakeTunnel()
        self.state = LocalState(state_path)
        self.store = ClusterStore(self.kv, host)
        self.records = HostRecords(self.store, self.state)
        self.network = NetworkDriver(
            self.store, self.records, self.state, self.overlay, self.firewall, self.datapath, self.tunnel
        )
        self.ipam = IpamDriver(self.store, self.records)
        self.reconciler = self.reconciler_with()
        self.admin = Admin(
            self.store,
            self.state,
            self.datapath,
            self.reconciler,
            self.network.discovered,
            self.tunnel,
            self.tunnel.rotate,
        )
        self.client = create_app(self.network, self.ipam, self.admin).test_client()

    def reconciler_with(self, grace: float = 5.0, hold: float = 30.0, resync: float = 300.0) -> Reconciler:
        """A reconciler for this host (it re-asserts the host's network and IPAM records)."""
        liveness = Liveness(self.store, HostRecord("192.0.2.1"), ttl=10, grace=grace, hold=hold)
        return Reconciler(
            self.store,
            self.state,
            self.overlay,
            self.datapath,
            self.firewall,
            liveness,
            self.records,
            self.tunnel,
            resync,
        )

    def call(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        # Docker sends no Content-Type header.
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        resp = self.client.post(path, data=data)
        return resp.status_code, json.loads(resp.data)

    def ok(self, path: str, body: Any = None) -> Any:
        status, answer = self.call(path, body)
        assert status == 200, answer
        assert "Err" not in answer, answer
        return answer

    def err(self, path: str, body: Any = None, raw: bytes | None = None) -> str:
        status, answer = self.call(path, body, raw)
        assert status >= 400, answer
        assert set(answer) == {"Err"}, answer
        return answer["Err"]

    def create_network(
        self,
        nid: str = "n1",
        subnet: str = "10.1.0.0/24",
        gateway: str = "10.1.0.1/24",
        generic: dict[str, Any] | None = None,
        subnet6: str = "",  # with it, an IPv6 network (--ipv6), its gateway Docker's choice
        **options: Any,
    ) -> Any:
        v6 = {"com.docker.network.enable_ipv6": True} if subnet6 else {}
        body = {
            "NetworkID": nid,
            "Options": {"com.docker.network.generic": generic or {}, **v6, **options},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gateway}],
            "IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": subnet6}] if subnet6 else [],
        }
        return self.ok("/NetworkDriver.CreateNetwork", body)

    def create_endpoint(
        self, nid: str = "n1", eid: str = "e1" * 10, address: str = "10.1.0.2/24", mac: str = "", address6: str = ""
    ) -> Any:
        body = {
            "NetworkID": nid,
            "EndpointID": eid,
            "Interface": {"Address": address, "AddressIPv6": address6, "MacAddress": mac},
            "Options": {},
        }
        return self.ok("/NetworkDriver.CreateEndpoint", body)


@pytest.fixture
def h(tmp_path) -> Harness:
    return Harness(str(tmp_path / "state.json"))
