"""The local state rebuilt from etcd's records, dockerd's networks and the kernel's veths."""

from __future__ import annotations

from xmasq_driver.control.layout import ENDPOINTS, MEMBERS, NETWORKS
from xmasq_driver.control.model import Block, ClusterNetwork, LocalEndpoint, RemoteEndpoint
from xmasq_driver.control.recovery import rebuild
from xmasq_driver.control.store import ClusterView
from xmasq_driver.dataplane.overlay import veth_names

WEB = ClusterNetwork(
    300, (Block("10.42.0.0/24", "10.42.0.1/24"), Block("fd00:42::/64", "fd00:42::1/64")), 1450, False,
    {"xmasq.network": "web", "xmasq.fastpath": "off"},
)  # fmt: skip
RUNNING, STOPPED, THEIRS, ORPHAN = "a" * 64, "b" * 64, "c" * 64, "d" * 64
VETHS = {RUNNING: "container", ORPHAN: "orphan"}


def _view() -> ClusterView:
    items = {
        NETWORKS.key("web"): NETWORKS.encode(WEB),
        MEMBERS.key("web", "h1"): "1",
        ENDPOINTS.key("web", "10.42.0.2"): ENDPOINTS.encode(RemoteEndpoint("h1", "02:00:00:00:00:02", RUNNING)),
        ENDPOINTS.key("web", "fd00:42::2"): ENDPOINTS.encode(RemoteEndpoint("h1", "02:00:00:00:00:02", RUNNING)),
        ENDPOINTS.key("web", "10.42.0.3"): ENDPOINTS.encode(RemoteEndpoint("h1", "02:00:00:00:00:03", STOPPED)),
        ENDPOINTS.key("web", "10.42.0.4"): ENDPOINTS.encode(RemoteEndpoint("h2", "02:00:00:00:00:04", THEIRS)),
        ENDPOINTS.key("web", "10.42.0.5"): ENDPOINTS.encode(RemoteEndpoint("h1", "02:00:00:00:00:05", ORPHAN)),
    }
    return ClusterView.parse(items, 10)


def test_networks_and_running_endpoints_are_rebuilt_others_are_named():
    docker = {
        "d0c1": {"xmasq.network": "web", "xmasq.fastpath": "off"},  # the xmasq network, by Docker's id
        "b41d": {"com.docker.network.bridge.name": "docker0"},  # another driver's
        "e7e7": {},  # a network etcd does not know
    }
    done = rebuild("h1", _view(), docker, lambda eid: VETHS.get(eid, "gone"), 1500, veth_names)
    assert list(done.networks) == ["d0c1"]
    net = done.networks["d0c1"]
    assert (net.key, net.vni, net.blocks, net.fastpath) == ("web", 300, WEB.blocks, False)
    assert net.mtu == 1450  # this host's underlay less VXLAN, as CreateNetwork made it
    assert done.endpoints == {
        RUNNING: LocalEndpoint("d0c1", ("10.42.0.2/24", "fd00:42::2/64"), "02:00:00:00:00:02", veth_names(RUNNING)[1])
    }
    assert done.skipped == [
        f"endpoint {eid[:12]}: its container stopped while the driver was down" for eid in (STOPPED, ORPHAN)
    ]
    # Its veth, back in the host's namespace: the caller's to remove, as DeleteEndpoint would.
    assert list(done.orphans) == [ORPHAN] and done.orphans[ORPHAN].addresses == ("10.42.0.5/24",)


def test_an_endpoint_whose_network_dockerd_does_not_have_is_named():
    done = rebuild("h1", _view(), {}, lambda eid: "container", 1500, veth_names)
    assert done.networks == {} and done.endpoints == {}
    assert all("its network web is not on this host's dockerd" in s for s in done.skipped) and len(done.skipped) == 3
