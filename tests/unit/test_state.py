"""state.json keeps its shape: a file the previous release wrote loads into the typed records
and is written back the same."""

from __future__ import annotations

import dataclasses
import json

import pytest

from xmasq_driver.control.model import LocalEndpoint, LocalNetwork, Pool, PortMapping
from xmasq_driver.control.state import LocalState
from xmasq_driver.errors import StorageError

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


def _full_disk(path) -> None:  # type: ignore[no-untyped-def]
    """Every write of the state fails until undone (its temporary file's name taken by a directory;
    the e2e test fills a real disk)."""
    (path.parent / (path.name + ".tmp")).mkdir()


def test_a_write_the_disk_refuses_changes_nothing_and_names_the_file_and_cause(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(WRITTEN_BY_0_1))
    state = LocalState(str(path))
    net = state.networks["9f2c"]
    _full_disk(path)
    with pytest.raises(StorageError, match=rf"cannot write the local state {path}: Is a directory"):
        state.set_network("n2", net)
    with pytest.raises(StorageError):
        state.set_endpoint("e7a1", dataclasses.replace(state.endpoints["e7a1"], ports=()))
    assert "n2" not in state.networks and state.endpoints["e7a1"].ports  # memory as before
    assert json.loads(path.read_text()) == WRITTEN_BY_0_1  # and the file
    assert not state.unsaved


def test_a_removal_on_a_full_disk_is_kept_and_written_once_there_is_room(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(WRITTEN_BY_0_1))
    state = LocalState(str(path))
    _full_disk(path)
    state.set_endpoint("e7a1", None)  # not refused: the endpoint's devices are gone already
    assert "e7a1" not in state.endpoints and state.unsaved
    state.flush()  # still full: no error, still unsaved
    assert state.unsaved and "e7a1" in json.loads(path.read_text())["endpoints"]
    (tmp_path / "state.json.tmp").rmdir()  # room again
    state.flush()
    assert not state.unsaved and json.loads(path.read_text())["endpoints"] == {}


@pytest.mark.parametrize("content", ['{"networks": {"9f2c": {"key": "web", "vn', "", '{"networks": []}', "\x00\x00"])
def test_an_unreadable_state_file_is_set_aside_and_the_state_starts_empty(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_text(content)
    state = LocalState(str(path))
    assert state.networks == {} and state.endpoints == {} and state.pools is None  # pools: adopted from etcd
    assert state.lost and state.lost != str(path) and not path.exists()
    with open(state.lost) as f:
        assert f.read() == content  # kept for whoever looks into it
    state.rebuilt({}, {})
    assert state.lost is None and json.loads(path.read_text()) == {"networks": {}, "endpoints": {}}
