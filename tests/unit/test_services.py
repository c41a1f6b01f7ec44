"""The service watcher's logic with fakes: which VIPs and tasks it programs, and when."""

from __future__ import annotations

from tests.fakes import FakeDatapath
from tests.unit.conftest import Harness
from xmasq_driver.control.model import Block, LocalNetwork, Service
from xmasq_driver.control.state import LocalState
from xmasq_driver.dataplane.services import ServiceWatcher
from xmasq_driver.errors import BackendError
from xmasq_driver.ops.admin import Admin
from xmasq_driver.ops.metrics import render

BLOCK = (Block("10.44.0.0/24", "10.44.0.1/24"),)

NET_A, NET_B = "a" * 64, "b" * 64


class FakeDocker:
    """Services by network as `network inspect --verbose` would list them; `down`: no answer."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, dict]] = {}  # type: ignore[type-arg]
        self.down = False
        self.reads = 0

    def network_services(self, network_id: str) -> list[Service]:
        self.reads += 1
        if self.down:
            raise BackendError("dockerd at unix:///run/docker.sock did not answer (ConnectionError: refused)")
        found = (Service.from_docker(network_id, n, s) for n, s in self.services.get(network_id, {}).items())
        return [s for s in found if s is not None]


def _svc(vip: str, *tasks: str) -> dict:  # type: ignore[type-arg]
    """A `Services` entry in Docker's shape."""
    return {
        "VIP": vip,
        "Ports": [],
        "LocalLBIndex": 257,
        "Tasks": [{"Name": f"t{i}", "EndpointID": f"e{i}", "EndpointIP": ip, "Info": {}} for i, ip in enumerate(tasks)],
    }


def _watcher(*networks: str) -> tuple[ServiceWatcher, FakeDocker, FakeDatapath, LocalState]:
    state = LocalState(None)
    for i, nid in enumerate(networks):
        state.set_network(nid, LocalNetwork(256 + i, BLOCK, 1450, False, key=f"net{i}"))
    docker, dp = FakeDocker(), FakeDatapath()
    return ServiceWatcher(docker, state, dp, 0.25), docker, dp, state


def test_vips_and_tasks_follow_docker():
    w, docker, dp, _ = _watcher(NET_A)
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.5", "10.44.0.3")}
    assert w.run_once() == 1
    assert dp.services == {"10.44.0.2": ("10.44.0.3", "10.44.0.5")}  # sorted: a stable table
    assert w.run_once() == 0  # unchanged: nothing written
    docker.services[NET_A]["web"] = _svc("10.44.0.2", "10.44.0.3", "10.44.0.9")  # a rolling update
    assert w.run_once() == 1 and dp.services == {"10.44.0.2": ("10.44.0.3", "10.44.0.9")}
    docker.services[NET_A]["web"] = _svc("10.44.0.2")  # no running task: the VIP stays, refusing
    assert w.run_once() == 1 and dp.services == {"10.44.0.2": ()}


def test_a_vip_docker_stops_listing_refuses_until_its_address_is_taken():
    taken: set[str] = set()
    w, docker, dp, _ = _watcher(NET_A)
    w.in_use = lambda nid, ip: nid == NET_A and ip in taken
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.3")}
    w.run_once()
    del docker.services[NET_A]["web"]  # scaled to 0: Docker lists services with tasks only
    assert w.run_once() == 1 and dp.services == {"10.44.0.2": ()}
    assert w.view()["networks"][NET_A] == [{"name": "web", "vip": "10.44.0.2", "tasks": []}]
    assert w.run_once() == 0 and dp.services == {"10.44.0.2": ()}  # kept, pass after pass
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.8")}  # scaled up again
    assert w.run_once() == 1 and dp.services == {"10.44.0.2": ("10.44.0.8",)}
    del docker.services[NET_A]["web"]
    w.run_once()
    taken.add("10.44.0.2")  # the service was removed and Swarm gave its address to a container
    assert w.run_once() == 1 and dp.services == {}


def test_dnsrr_services_and_foreign_entries_are_not_programmed():
    w, docker, dp, _ = _watcher(NET_A)
    docker.services[NET_A] = {
        "dns": _svc("", "10.44.0.7"),  # --endpoint-mode dnsrr: no VIP
        "odd": {"VIP": "not an address", "Tasks": [{"EndpointIP": "10.44.0.8"}]},
        "web": _svc("10.44.0.2/24", "10.44.0.3/24"),  # prefixes are dropped
    }
    w.run_once()
    assert dp.services == {"10.44.0.2": ("10.44.0.3",)}


def test_a_vip_on_two_networks_of_this_host_is_not_balanced():
    w, docker, dp, _ = _watcher(NET_A, NET_B)
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.3")}
    docker.services[NET_B] = {"api": _svc("10.44.0.2", "10.44.0.4"), "db": _svc("10.44.0.6", "10.44.0.7")}
    w.run_once()
    assert dp.services == {"10.44.0.6": ("10.44.0.7",)}
    assert w.view()["conflicts"] == ["10.44.0.2"]
    del docker.services[NET_B]["api"]
    w.run_once()
    assert dp.services == {"10.44.0.2": ("10.44.0.3",), "10.44.0.6": ("10.44.0.7",)}
    assert w.view()["conflicts"] == []


def test_dockerd_not_answering_keeps_what_is_programmed():
    w, docker, dp, _ = _watcher(NET_A)
    docker.down = True
    dp.services = {"10.44.0.2": ("10.44.0.3",)}  # a previous run's table, in the pinned maps
    assert w.run_once() == 0 and dp.services == {"10.44.0.2": ("10.44.0.3",)}  # never read: untouched
    assert "did not answer" in w.view()["error"]
    docker.down = False
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.4")}
    w.run_once()
    assert dp.services == {"10.44.0.2": ("10.44.0.4",)} and w.view()["error"] == ""
    docker.down = True
    assert w.run_once() == 0 and dp.services == {"10.44.0.2": ("10.44.0.4",)}  # the last read stands


def test_a_network_that_goes_takes_its_vips():
    w, docker, dp, state = _watcher(NET_A)
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.3")}
    w.run_once()
    del docker.services[NET_A]["web"]
    w.run_once()  # a VIP without tasks, kept while the network is here
    state.set_network(NET_A, None)
    w.run_once()
    assert dp.services == {} and w.view()["networks"] == {}


def test_status_and_metrics_show_services():
    h = Harness()
    h.state.set_network(NET_A, LocalNetwork(256, BLOCK, 1450, False, key="net0"))
    docker = FakeDocker()
    docker.services[NET_A] = {"web": _svc("10.44.0.2", "10.44.0.3", "10.44.0.4")}
    w = ServiceWatcher(docker, h.state, h.datapath, 0.25)
    w.run_once()
    admin = Admin(h.store, h.state, h.datapath, h.reconciler, {}, h.tunnel, h.tunnel.rotate, w)
    status = admin.status()
    assert status["services"]["watching"] and status["services"]["load_balancer"] == "loaded"
    tasks = ["10.44.0.3", "10.44.0.4"]
    assert status["networks"][0]["services"] == [{"name": "web", "vip": "10.44.0.2", "tasks": tasks}]
    assert 'xmasq_service_tasks{network="net0",service="web",vip="10.44.0.2"} 2' in render(admin)
    assert h.admin.status()["services"]["watching"] is False  # local scope: no swarm, no watcher
