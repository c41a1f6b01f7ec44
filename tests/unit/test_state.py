"""state.json keeps its shape: a file the previous release wrote loads into the typed records
and is written back the same."""

from __future__ import annotations

import json

from xmasq_driver.control.model import LocalEndpoint, LocalNetwork, Pool, PortMapping
from xmasq_driver.control.state import LocalState

# As the release before the typed model wrote it (copied from a host running it).
WRITTEN_BY_0_1 = {
    "networks": {
        "9f2c": {
            "key": "web",
            "vni": 256,
            "subnet": "10.42.0.0/24",
            "gateway": "10.42.0.1/24",
            "mtu": 1450,
            "internal": False,
            "fastpath": True,
            "options": {"xmasq.network": "web", "xmasq.steer": "rps"},
        }
    },
    "endpoints": {
        "e7a1": {
            "network_id": "9f2c",
            "address": "10.42.0.2/24",
            "mac": "02:58:0a:2a:00:02",
            "ifname": "xmce7a1",
            "ports": [{"proto": "tcp", "container_ip": "10.42.0.2", "port": 80, "host_ip": "", "host_port": 8080}],
        }
    },
    "pools": {"10.42.0.0/24": {"holds": 1, "addresses": {"10.42.0.1": "gateway", "10.42.0.2": "address"}}},
}


def test_a_state_file_of_the_previous_release_loads_typed_and_is_written_back_the_same(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(WRITTEN_BY_0_1))
    state = LocalState(str(path))
    net, ep = state.networks["9f2c"], state.endpoints["e7a1"]
    assert (
        isinstance(net, LocalNetwork)
        and net.key == "web"
        and net.steer == "rps"
        and net.blocks[0].gateway_ip == "10.42.0.1"
    )
    assert isinstance(ep, LocalEndpoint) and ep.ip == "10.42.0.2"
    assert ep.ports == (PortMapping("tcp", "10.42.0.2", 80, "", 8080),)
    assert state.pools == {"10.42.0.0/24": Pool(1, {"10.42.0.1": "gateway", "10.42.0.2": "address"})}
    state.set_endpoint("e7a1", ep)  # any change writes the whole file
    assert json.loads(path.read_text()) == WRITTEN_BY_0_1


def test_a_state_file_from_before_pools_has_none(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({k: v for k, v in WRITTEN_BY_0_1.items() if k != "pools"}))
    assert LocalState(str(path)).pools is None
