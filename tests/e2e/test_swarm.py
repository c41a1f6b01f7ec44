"""Docker Swarm with the managed plugin (`make plugin`) on two testbed hosts: h1 manager, h2 worker.
The plugin takes the place of each host's driver process (same host id, state and pinned maps)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time

import docker
import pytest
from docker.types import EndpointSpec, IPAMConfig, IPAMPool, ServiceMode

from lab.image import ensure_image
from tests.conftest import report
from tests.e2e.cluster import XMASQ_LINKS, links, remove_all
from xmasq_driver import client as plugin
from xmasq_driver.config import Config
from xmasq_driver.kv import EtcdKV
from xmasq_driver.overlay import HOST_VETH_PREFIX, RFS_VETH_FLOWS
from xmasq_driver.store import PREFIX

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NAME = "xmasq/xmasq:latest"
HOSTS = ("h1", "h2")
DRIVER_LABEL = "org.xmasq.image=driver"  # the Dockerfile's


@pytest.fixture(scope="module")
def swarm(tb, dk, image):
    # An earlier build that a rebuild untagged: `make plugin` must not leave it behind.
    stale, _ = dk.images.build(fileobj=io.BytesIO(f"FROM {image}\nLABEL {DRIVER_LABEL}\n".encode()), rm=True)
    containers = {c.id for c in dk.containers.list(all=True)}
    start = time.monotonic()
    try:
        subprocess.run(["make", "-s", "-C", ROOT, "plugin"], check=True, capture_output=True, timeout=1200)
        assert stale.id not in {i.id for i in dk.images.list(all=True)}
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            dk.images.remove(stale.id, force=True)
    built = time.monotonic() - start
    assert dk.plugins.get(NAME).enabled is False  # `make plugin` created it, disabled, in this dockerd
    assert not dk.images.list(filters={"dangling": True, "label": DRIVER_LABEL})
    assert {c.id for c in dk.containers.list(all=True)} == containers  # none left by the build
    dk.plugins.get(NAME).remove(force=True)
    socks = {}
    try:
        socks = {h: tb.install_plugin(h, os.path.join(ROOT, "build", "plugin"), NAME) for h in HOSTS}
        tb.swarm("h1", ["h2"])  # after the plugins: each node joins announcing the network driver
        report(f"make plugin: {built:.0f} s; plugin enabled on h1 (manager) and h2 (worker)")
        yield socks
    finally:
        for h in reversed(HOSTS):
            client = tb.docker(h)
            if h == "h1":
                with contextlib.suppress(docker.errors.APIError):  # not a manager: the swarm never came up
                    for s in client.services.list():
                        s.remove()
            for c in client.containers.list(all=True):
                c.remove(force=True)
            with contextlib.suppress(docker.errors.APIError):
                client.swarm.leave(force=True)
        for h in HOSTS:
            tb.remove_plugin(h, NAME)


def _wait(what: str, ok, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout}s")


def _sh(container, command: str, check: bool = True) -> str:  # type: ignore[no-untyped-def]
    code, out = container.exec_run(["sh", "-c", command])
    assert not check or code == 0, f"{command!r} in {container.name}: {out.decode(errors='replace')}"
    return out.decode(errors="replace")


def _restarted(client, name: str, network: str):  # type: ignore[no-untyped-def]
    """The container if it is running with an address on `network`, else None."""
    c = client.containers.get(name)
    running = c.status == "running" and (c.attrs["NetworkSettings"]["Networks"].get(network) or {}).get("IPAddress")
    return c if running else None


def _task_containers(tb, service: str) -> dict[str, list]:  # type: ignore[type-arg, no-untyped-def]
    return {
        h: tb.docker(h).containers.list(filters={"label": f"com.docker.swarm.service.name={service}"}) for h in HOSTS
    }


def _no_state_left(tb, socks) -> None:  # type: ignore[no-untyped-def]
    for h in HOSTS:
        names = links(tb, h)
        assert not [n for n in names if n.startswith(XMASQ_LINKS)], (h, names)
        cache = plugin.call(socks[h], "/Xmasq.Cache")[1]
        assert cache["local"] == [] and cache["remote"] == [] and cache["flows"] == [], (h, cache)
        assert plugin.call(socks[h], "/Xmasq.Status")[1]["networks"] == []
    keys = EtcdKV(Config(etcd_endpoints=tb.etcd_endpoint)).get_prefix(PREFIX)
    assert sorted(k for k in keys if k.startswith(f"{PREFIX}hosts/")) == [f"{PREFIX}hosts/{h}" for h in tb.hosts]
    assert [k for k in keys if not k.startswith(f"{PREFIX}hosts/")] == [], keys


def test_service_across_the_swarm_with_the_fast_path(tb, swarm):
    mgr, worker = tb.docker("h1"), tb.docker("h2")
    image = {h: ensure_image(tb.docker(h)) for h in HOSTS}
    net = mgr.networks.create(
        "swnet",
        driver=NAME,
        scope="swarm",
        attachable=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.248.0.0/24")]),
    )
    svc = standalone = None
    try:
        svc = mgr.services.create(
            image["h1"],
            ["sh", "-c", "udpecho serve 5001"],
            name="web",
            networks=["swnet"],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            mode=ServiceMode("replicated", 4),
        )

        def spread_over_both() -> dict | None:  # type: ignore[type-arg]
            t = _task_containers(tb, "web")
            return t if sum(map(len, t.values())) == 4 and all(t.values()) else None

        tasks = _wait("4 tasks running on both nodes", spread_over_both, 120)
        spread = {h: len(c) for h, c in tasks.items()}
        here, there = tasks["h1"][0], tasks["h2"][0]
        lookup = "nslookup web 127.0.0.11 | awk '/^Address/ && !/127.0.0.11/ {print $NF}'"
        # Docker's DNS learns the other node's tasks by gossip, a few seconds after they start.
        ips = _wait("all 4 tasks in DNS", lambda: (lambda a: a if len(a) == 4 else None)(_sh(here, lookup).split()), 60)
        for name in ("web", there.name):
            _sh(here, f"ping -c 1 -W 2 {name}")
        there_ip = there.attrs["NetworkSettings"]["Networks"]["swnet"]["IPAddress"]
        before = plugin.call(swarm["h1"], "/Xmasq.Stats")[1]["counters"]
        assert (
            _sh(here, f"udpecho wait {there_ip} 5001 10 && udpecho send {there_ip} 5001 200")
            .strip()
            .endswith("replies=200/200")
        )
        after = plugin.call(swarm["h1"], "/Xmasq.Stats")[1]["counters"]
        encap = after["encap_pkts"] - before["encap_pkts"]
        assert encap >= 190, (before, after)
        # The plugin's /sys is read-only in its container: it still steers each endpoint's flows.
        for h in HOSTS:
            for name in (n for n in links(tb, h) if n.startswith(HOST_VETH_PREFIX)):
                argv = ["ip", "netns", "exec", tb.netns(h), "cat", f"/sys/class/net/{name}/queues/rx-0/rps_flow_cnt"]
                flows = subprocess.run(argv, capture_output=True, text=True, check=True).stdout  # its own /sys
                assert int(flows) == RFS_VETH_FLOWS, (h, name, flows)
        # A standalone container on the worker joins the same network.
        standalone = worker.containers.run(
            image["h2"], ["sh", "-c", "sleep 3600"], name="sw-standalone", network="swnet", detach=True
        )
        for ip in ips:
            _sh(standalone, f"ping -c 1 -W 2 {ip}")
        report(
            f"swarm: 4 dnsrr tasks spread {spread}, reached by name and across nodes, 200 UDP requests with "
            f"{encap} encapsulated by the fast path on h1; a standalone container on the worker reached "
            "all 4"
        )
    finally:
        if svc is not None:
            svc.remove()
        remove_all([standalone] if standalone else [], [])
        _wait("tasks gone", lambda: not any(_task_containers(tb, "web").values()), 60)
        time.sleep(2)
        _wait("network removable", lambda: _try(net.remove), 30)
    _wait("no state left on either node", lambda: _try(lambda: _no_state_left(tb, swarm)), 30)


def _try(fn) -> bool:  # type: ignore[no-untyped-def]
    try:
        fn()
        return True
    except (AssertionError, docker.errors.APIError):
        return False


def test_plugin_disable_enable_and_dockerd_restart_keep_containers_connected(tb, swarm):
    mgr = tb.docker("h1")
    image = {h: ensure_image(tb.docker(h)) for h in HOSTS}
    net = mgr.networks.create(
        "swkeep",
        driver=NAME,
        scope="swarm",
        attachable=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.249.0.0/24")]),
    )
    containers = []
    try:
        a, b = (
            tb.docker(h).containers.run(
                image[h],
                ["sh", "-c", "udpecho serve 5001"],
                name=f"keep-{h}",
                network="swkeep",
                detach=True,
                restart_policy={"Name": "always"},
            )
            for h in HOSTS
        )
        containers += [a, b]
        b.reload()
        ip_b = b.attrs["NetworkSettings"]["Networks"]["swkeep"]["IPAddress"]
        _sh(a, f"udpecho wait {ip_b} 5001 10")

        plug = mgr.plugins.get(NAME)
        plug.disable(force=True)  # the plugin process stops; the kernel data path stays
        assert _sh(a, f"udpecho send {ip_b} 5001 20").strip() == "replies=20/20"
        plug.enable(timeout=60)
        _wait("plugin answering", lambda: _try(lambda: plugin.call(swarm["h1"], "/Plugin.Activate")), 30)
        assert _sh(a, f"udpecho send {ip_b} 5001 20").strip() == "replies=20/20"
        extra = mgr.containers.run(image["h1"], ["sleep", "3600"], name="keep-new", network="swkeep", detach=True)
        containers.append(extra)
        _sh(extra, f"ping -c 1 -W 2 {ip_b}")

        start = time.monotonic()
        tb.restart_dockerd("h2")  # the plugin is restored with the daemon, the container restarted
        assert tb.docker("h2").plugins.get(NAME).enabled
        # dockerd starts containers on swarm-scoped networks only once its cluster part is up, after
        # its API answers: wait for the container to be running with its address again
        b = _wait("keep-h2 restarted with its address", lambda: _restarted(tb.docker("h2"), "keep-h2", "swkeep"), 60)
        containers[1] = b
        ip_b = b.attrs["NetworkSettings"]["Networks"]["swkeep"]["IPAddress"]
        _sh(a, f"udpecho wait {ip_b} 5001 30")
        back = time.monotonic() - start
        report(
            f"managed plugin: disable -f with containers running: 20/20 replies; enable: 20/20 and a new "
            f"container works; dockerd restart on h2: plugin restored, its container reachable after "
            f"{back:.1f} s"
        )
    finally:
        remove_all(containers, [])
        _wait("network removable", lambda: _try(net.remove), 30)
    _wait("no state left on either node", lambda: _try(lambda: _no_state_left(tb, swarm)), 30)
