"""Local storage that fails (issue 35): the state directory full or read-only under a running
driver, and state.json unreadable at start. Requests fail naming the cause and leave nothing;
existing containers' traffic goes on; the driver works again once the disk does; a lost state file
is rebuilt from etcd, dockerd and the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
import pytest

from tests.conftest import report
from tests.e2e.cluster import links, until
from xmasq_driver.control.layout import ADDRESSES, ENDPOINTS, MEMBERS, PREFIX, pool_key
from xmasq_driver.dataplane.overlay import HOST_VETH_PREFIX

SERVE = "udpecho serve 5001"


class Disk:
    """A small tmpfs over a host's state directory, in its driver's mount namespace (the testbed's
    drivers have their own), holding what the directory held; taken away with what it holds then."""

    def __init__(self, tb: Any, host: str):
        self.dir = os.path.join(tb.data_dir, host, "state")
        with open(tb.pidfile(host)) as f:
            self.enter = ["nsenter", "-t", f.read().strip(), "-m"]

    def sh(self, script: str, check: bool = True) -> None:
        subprocess.run([*self.enter, "sh", "-c", script], check=check, capture_output=True, timeout=20)

    def fill(self) -> None:
        self.sh(f"dd if=/dev/zero of={self.dir}/filler bs=4k 2>/dev/null", check=False)  # until ENOSPC

    def empty(self) -> None:
        self.sh(f"rm -f {self.dir}/filler")

    def read_only(self, on: bool) -> None:
        self.sh(f"mount -o remount,{'ro' if on else 'rw'} {self.dir}")


@contextmanager
def small_disk(tb: Any, host: str) -> Iterator[Disk]:
    disk = Disk(tb, host)
    keep = f"/tmp/xmasq-disk-{host}"
    disk.sh(f"rm -rf {keep} && cp -a {disk.dir} {keep} && mount -t tmpfs -o size=512k tmpfs {disk.dir}")
    disk.sh(f"cp -a {keep}/. {disk.dir}/")
    try:
        yield disk
    finally:  # what the driver wrote meanwhile goes back to the real directory
        disk.read_only(False)
        disk.empty()
        disk.sh(f"rm -rf {keep} && cp -a {disk.dir} {keep} && umount {disk.dir} && cp -a {keep}/. {disk.dir}/")
        disk.sh(f"rm -rf {keep}")


def _footprint(cl: Any, tb: Any, host: str) -> tuple[list[str], list[str], str]:
    """What a refused request must leave as it was: the host's links, its records in etcd, its state file."""
    records = sorted(k for k in cl.kv.get_prefix(PREFIX) if k.endswith(f"/{host}") or "/endpoints/" in k)
    with open(os.path.join(tb.data_dir, host, "state", "state.json")) as f:
        state = f.read()
    return sorted(links(tb, host)), records, state


def _refused(cl: Any, host: str, name: str, net: str) -> str:
    """`docker run` on host: it must fail; the container Docker made before asking the driver goes."""
    try:
        with pytest.raises(docker.errors.APIError) as refused:
            cl.run(host, name, net)
    finally:
        with suppress(docker.errors.NotFound):
            cl.dk[host].containers.get(name).remove(force=True)
    return str(refused.value)


def test_a_full_or_read_only_state_disk_refuses_requests_cleanly_and_traffic_goes_on(cl, tb):
    net = cl.network("disk", "10.237.0.0/24")
    a, b = cl.run("h1", "disk-a", net, SERVE), cl.run("h2", "disk-b", net)
    ip_a = cl.ip(a, net)
    cl.sh(b, f"udpecho wait {ip_a} 5001 10")
    with small_disk(tb, "h1") as disk:
        causes = {}
        for cause, spoil, mend in (
            ("No space left on device", disk.fill, disk.empty),
            ("Read-only file system", lambda: disk.read_only(True), lambda: disk.read_only(False)),
        ):
            before = _footprint(cl, tb, "h1")
            spoil()
            error = _refused(cl, "h1", "disk-refused", net)
            assert cause in error and "state.json" in error, error
            with pytest.raises(docker.errors.APIError) as refused:  # nor a new network on this host
                try:
                    cl.network("disk-new", "10.238.0.0/24", hosts=["h1"])
                finally:
                    for n in cl.dk["h1"].networks.list(names=["disk-new"]):
                        n.remove()
            assert cause in str(refused.value), refused.value
            mend()
            after = _footprint(cl, tb, "h1")
            assert after == before, "a refused request left something behind"
            # Traffic of the container that was there all along was never touched.
            assert cl.sh(b, f"udpecho wait {ip_a} 5001 2", check=False)[0] == 0
            causes[cause] = error.split("state.json: ")[-1][:60]
        # Room again: the same requests work.
        c = cl.run("h1", "disk-c", net, SERVE)
        cl.sh(b, f"udpecho wait {cl.ip(c, net)} 5001 10")
    with open(os.path.join(tb.data_dir, "h1", "state", "state.json")) as f:
        assert any(ep.get("address", "").startswith(cl.ip(c, net) + "/") for ep in json.load(f)["endpoints"].values())
    report(
        "state directory full, then read-only: docker run and docker network create refused with the cause"
        f" ({'; '.join(causes)}), nothing left (links, etcd records, state.json as before), the running"
        " container answered throughout; once writable, docker run works and is kept"
    )


def test_a_removal_on_a_full_disk_is_done_and_kept_once_there_is_room(cl, tb):
    net = cl.network("diskrm", "10.239.0.0/24")
    a = cl.run("h1", "diskrm-a", net)
    ip_a = cl.ip(a, net)
    state_file = os.path.join(tb.data_dir, "h1", "state", "state.json")
    with small_disk(tb, "h1") as disk:
        disk.fill()
        cl.remove(a)  # the user frees what they can: never refused
        assert not [n for n in links(tb, "h1") if n.startswith(HOST_VETH_PREFIX)]
        assert not cl.kv.get(ENDPOINTS.key(net, ip_a))
        assert not cl.kv.get(ADDRESSES.key(pool_key("10.239.0.0/24"), ip_a)), "the address stayed claimed"
        disk.empty()
        time.sleep(0.1)
        # The reconciler writes the removal once the disk has room again.
        until(lambda: _endpoints_in(state_file, disk) == 0, 10)
    assert _endpoints_in(state_file) == 0


def _endpoints_in(path: str, disk: Disk | None = None) -> int:
    if disk is not None:  # read where the driver writes it (its mount namespace)
        out = subprocess.run([*disk.enter, "cat", path], capture_output=True, text=True, timeout=10).stdout
    else:
        with open(path) as f:
            out = f.read()
    return len(json.loads(out)["endpoints"])


def test_an_unreadable_state_file_at_start_is_rebuilt_from_etcd_dockerd_and_the_kernel(cl, tb):
    """state.json truncated while the driver is down, and a container stopped meanwhile (Docker
    waits 60 s for the driver, moves the veth's container end back and gives up on DeleteEndpoint).
    Other kinds of damage: tests/unit/test_state.py."""
    net = cl.network("lost", "10.240.0.0/24")
    a, gone, b = cl.run("h1", "lost-a", net, SERVE), cl.run("h1", "lost-gone", net), cl.run("h2", "lost-b", net)
    ip_a, ip_gone = cl.ip(a, net), cl.ip(gone, net)
    gone_endpoint = gone.attrs["NetworkSettings"]["Networks"][net]["EndpointID"]
    cl.sh(b, f"udpecho wait {ip_a} 5001 10")
    state_file = os.path.join(tb.data_dir, "h1", "state", "state.json")
    with open(state_file) as f:
        good = json.load(f)
    logged = os.path.getsize(tb.path("h1", "xmasq.log"))
    tb.stop_driver("h1", kill=True)
    try:
        with open(state_file, "w") as f:
            f.write(json.dumps(good)[:100])
        gone.kill()  # a container that stops while the driver is down (Docker tells the driver once it is back)
    finally:
        tb.start_driver("h1")
    with open(tb.path("h1", "xmasq.log")) as f:
        f.seek(logged)
        log = f.read()
    assert "local state unreadable" in log and "local state rebuilt from etcd, dockerd and the kernel" in log
    aside = [n for n in os.listdir(os.path.dirname(state_file)) if n.startswith("state.json.corrupt-")]
    assert aside, "the unreadable file was not kept"
    with open(state_file) as f:
        rebuilt = json.load(f)
    # What the good file had, but for the stopped container's endpoint.
    fields = {eid: (ep["network_id"], ep["address"], ep["mac"]) for eid, ep in good["endpoints"].items()}
    got = {eid: (ep["network_id"], ep["address"], ep["mac"]) for eid, ep in rebuilt["endpoints"].items()}
    assert got == {k: v for k, v in fields.items() if k != gone_endpoint}, (got, fields)
    assert {k: v["vni"] for k, v in rebuilt["networks"].items()} == {k: v["vni"] for k, v in good["networks"].items()}
    # The stopped container leaves nothing: its orphaned veth was deleted, its record goes.
    assert not [n for n in links(tb, "h1") if gone_endpoint[:12] in n]
    until(lambda: not cl.kv.get(ENDPOINTS.key(net, ip_gone)), 10)
    # The running container is reachable, the gone one's record leaves etcd, new containers work,
    # and the rebuilt endpoint is removed cleanly when its container goes.
    cl.sh(b, f"udpecho wait {ip_a} 5001 10")
    c = cl.run("h1", "lost-c", net, SERVE)
    cl.sh(b, f"udpecho wait {cl.ip(c, net)} 5001 10")
    assert cl.kv.get(MEMBERS.key(net, "h1"))
    cl.remove(a)
    until(lambda: not cl.kv.get(ENDPOINTS.key(net, ip_a)), 10)
    for name in aside:
        os.unlink(os.path.join(os.path.dirname(state_file), name))
    report(
        f"state.json truncated at start: set aside, rebuilt ({len(got)} of {len(fields)} endpoints: the one whose"
        " container stopped while the driver was down left out, its veth and record removed); traffic, new"
        " containers and removal work"
    )
