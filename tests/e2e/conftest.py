"""End-to-end fixtures: the real dockerd, etcd and driver that `make run` started.

Every test runs inside `env`, which records the host's xmasq state (links, iptables
rules, etcd keys, the driver's state file) before the test, removes what the test
created afterwards, and fails if anything of xmasq is left behind.

On another Docker engine (tests/engines.py) the suite runs in two parts: `--only single-host`
in a testbed host whose dockerd is that engine, `--only multi-host` with XMASQ_TEST_ENGINE
naming the engine of the testbed's hosts.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from typing import Any

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from lab.engine import SYSTEM
from lab.image import ensure_image
from lab.standalone import Standalone
from lab.testbed import Testbed
from tests.e2e.cluster import GRACE, TTL, XMASQ_LINKS, Cluster, links, remove_all
from xmasq_driver import config
from xmasq_driver.control.kv import EtcdKV
from xmasq_driver.control.layout import HOSTS, PREFIX
from xmasq_driver.control.state import LocalState
from xmasq_driver.dataplane.firewall import Firewall
from xmasq_driver.dataplane.tunnel import ROUTE_TABLE
from xmasq_driver.ops import client as plugin
from xmasq_driver.ops import daemon

XMASQ = os.path.join(os.path.dirname(__file__), "..", "..", ".venv", "bin", "xmasq")


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    parser.addoption(
        "--only",
        choices=["single-host", "multi-host"],
        help="only the tests of one dockerd (dk, not tb) or only those of the testbed (tb)",
    )


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    only = config.getoption("--only")
    if not only:
        return
    keep = (lambda f: "dk" in f and "tb" not in f) if only == "single-host" else (lambda f: "tb" in f)
    chosen = [i for i in items if keep(getattr(i, "fixturenames", ()))]
    config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
    items[:] = chosen


@pytest.fixture(scope="session")
def cfg() -> config.Config:
    return config.load()


@pytest.fixture(scope="session")
def dk(cfg) -> docker.DockerClient:
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root: run `make test` as root")
    client = docker.from_env(timeout=120)
    try:
        client.ping()
    except Exception as e:
        pytest.fail(f"dockerd is not answering ({e}): run `make run` first")
    if not daemon.answering(cfg):
        pytest.fail(f"the xmasq driver is not answering on {cfg.socket}: run `make run` first")
    _remove_leftovers(client)
    return client


def _remove_leftovers(client: docker.DockerClient) -> None:
    """Objects of an earlier run that was killed before its cleanup (all named xmt-*)."""
    for c in client.containers.list(all=True, filters={"name": "xmt-"}):
        c.remove(force=True)
    for n in client.networks.list(names=["xmt-"]):
        if n.name.startswith("xmt-"):
            n.remove()
    for ns in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if ns.startswith("xmt-"):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture(scope="session")
def image(dk) -> str:
    return ensure_image(dk)


def host_state(cfg: config.Config) -> dict[str, Any]:
    """Everything of xmasq on this host that a test could leak."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    state = LocalState(os.path.join(cfg.state_dir, "state.json")).snapshot()
    rules = subprocess.run(["ip", "rule", "show"], capture_output=True, text=True, check=True).stdout
    return {
        "links": [n for n in names if n.startswith("xm")],
        "routing": [r for r in rules.splitlines() if f"lookup {ROUTE_TABLE}" in r],
        "rules": sorted(Firewall().owned_rules()),
        "etcd": sorted(EtcdKV(cfg).get_prefix(PREFIX)),
        "state": state,
        "fastpath_cache": plugin.call(cfg.socket, "/Xmasq.Cache")[1],
    }


class Env:
    """What one test creates, by name, so it can be removed whatever happens."""

    def __init__(self, dk: docker.DockerClient, image: str, cfg: config.Config):
        self.dk, self.image, self.cfg = dk, image, cfg
        self.containers: list[Any] = []
        self.networks: list[Any] = []
        self.netns: list[str] = []

    def network(
        self,
        name: str,
        subnet: str,
        options: dict[str, str] | None = None,
        space: str = "",
        pool: dict[str, Any] | None = None,
        subnet6: str = "",
        **kw: Any,
    ) -> Any:
        """An xmasq network; with `space`, addresses come from the xmasq IPAM driver's pool of that name;
        `pool` adds to the subnet's IPAMPool (iprange, gateway, aux_addresses); `subnet6` makes it
        dual stack (--ipv6)."""
        pools = [IPAMPool(subnet=subnet, **(pool or {}))]
        if subnet6:
            pools.append(IPAMPool(subnet=subnet6))
            kw["enable_ipv6"] = True
        ipam = (
            IPAMConfig(driver="xmasq", pool_configs=pools, options={"xmasq.space": space})
            if space
            else IPAMConfig(pool_configs=pools)
        )
        net = self.dk.networks.create(f"xmt-{name}", driver="xmasq", ipam=ipam, options=options or {}, **kw)
        self.networks.append(net)
        return net

    def run(self, name: str, network: str | None, command: str = "sleep 3600", **kw: Any) -> Any:
        c = self.dk.containers.run(
            self.image, ["sh", "-c", command], name=f"xmt-{name}", network=network, detach=True, **kw
        )
        self.containers.append(c)
        return c

    def sh(self, container: Any, command: str, check: bool = True) -> tuple[int, str]:
        code, out = container.exec_run(["sh", "-c", command])
        text = out.decode(errors="replace")
        if check:
            assert code == 0, f"{command!r} in {container.name} exited {code}: {text}"
        return code, text

    def ip(self, container: Any, network: Any) -> str:
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

    def ip6(self, container: Any, network: Any) -> str:
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][network.name]["GlobalIPv6Address"]

    def host_ns(self, name: str, host_cidr: str) -> str:
        """A namespace host on this machine joined by a veth; returns its address."""
        iface = ipaddress.IPv4Interface(host_cidr)
        peer = str(iface.ip + 1)
        ns = f"xmt-{name}"
        _ip("netns", "add", ns)
        self.netns.append(ns)
        _ip("link", "add", f"tst{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", host_cidr, "dev", f"tst{name}")
        _ip("link", "set", f"tst{name}", "up")
        _ip("-n", ns, "addr", "add", f"{peer}/{iface.network.prefixlen}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", str(iface.ip))
        return peer

    def in_ns(self, ns: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", f"xmt-{ns}", *cmd], capture_output=True, text=True, timeout=timeout
        )

    def cleanup(self) -> None:
        remove_all(self.containers, self.networks)
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def published_page(url: str) -> str:
    """What curl on this host gets from `url`, once the container's server listens (up to 5 s)."""
    body = ""
    for _ in range(50):
        body = subprocess.run(["curl", "-s", "-m", "2", url], capture_output=True, text=True).stdout
        if body:
            break
        time.sleep(0.1)
    return body


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def env(dk, image, cfg):
    before = host_state(cfg)
    e = Env(dk, image, cfg)
    try:
        yield e
    finally:
        e.cleanup()
    deadline = time.monotonic() + 10  # Docker finishes DeleteEndpoint calls asynchronously
    while True:
        after = host_state(cfg)
        if after == before or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after == before, "xmasq state leaked by the test"


@pytest.fixture(scope="session")
def tb(dk):  # dk: the root dockerd is up (its iptables policy is what the testbed must live with)
    """One 3-host testbed for every multi-host test, with short host leases."""
    short = config.environment(host_ttl=TTL, host_grace=GRACE)
    saved = {k: os.environ.get(k) for k in short}
    os.environ.update(short)
    try:
        bed = Testbed.up(3, engine=os.environ.get("XMASQ_TEST_ENGINE", SYSTEM))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield bed
    finally:
        bed.down()
    assert not [n for n in os.listdir("/run/netns") if n.startswith("xmtb-")], "testbed namespaces left"


@pytest.fixture
def cl(tb):
    c = Cluster(tb)
    try:
        yield c
    finally:
        c.cleanup()
    for h in tb.hosts:  # nothing of the test's networks is left on any host, in its caches or in etcd
        names = links(tb, h)
        assert not [n for n in names if any(p in n for p in XMASQ_LINKS)], (h, names)
        # Remote entries go as the removals reach the host through etcd: a request in flight when a
        # test changed the host's own network (renumbering it) costs it up to the etcd timeout.
        deadline = time.monotonic() + 10
        while (cache := c.cache(h))["remote"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cache["local"] == [] and cache["remote"] == [] and cache["flows"] == [], (h, cache)
    leftover = [k for k in c.kv.get_prefix(PREFIX) if not k.startswith(HOSTS.prefix())]
    assert leftover == [], leftover


@pytest.fixture
def standalone(tmp_path):
    """A driver in a namespace of its own (see standalone.py); removed with all it made."""
    s = Standalone(str(tmp_path), "solo")
    try:
        yield s
    finally:
        s.cleanup()
