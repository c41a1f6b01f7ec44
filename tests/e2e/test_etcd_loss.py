"""etcd losing its data under live traffic: every host re-asserts its own records (three testbed hosts)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from typing import Any

from tests.conftest import report
from tests.e2e.cluster import Cluster, until
from xmasq_driver.control.layout import ADDRESSES, PREFIX, pool_key
from xmasq_driver.control.model import RemoteEndpoint
from xmasq_driver.control.store import ClusterView
from xmasq_driver.errors import BackendError
from xmasq_driver.ops import client as plugin

SERVE = "udpecho serve 5001 & iperf3 -s -D >/dev/null; sleep 3600"
BACK_WITHIN = 30.0  # seconds for etcd to hold every record again


def _records(cl: Cluster) -> ClusterView | None:
    """Every xmasq record in etcd but the hosts' liveness keys (None while etcd does not answer)."""
    try:
        view = ClusterView.parse(*cl.kv.list_prefix(PREFIX))
    except BackendError:
        return None
    return dataclasses.replace(view, revision=0, hosts={})


def _running(cl: Cluster, net: str) -> dict[str, str]:
    """address -> host of every container running on `net`, as the dockerds see them."""
    found = {}
    for host, dk in cl.dk.items():
        for c in dk.containers.list(filters={"network": net}):
            found[cl.ip(c, net)] = host
    return found


def _pinging(cl: Cluster, client: Any, ip: str, seconds: float) -> tuple[threading.Thread, list[str]]:
    out: list[str] = []
    count = int(seconds * 10)
    thread = threading.Thread(target=lambda: out.append(cl.sh(client, f"ping -i 0.1 -c {count} {ip}", False)[1]))
    thread.start()
    return thread, out


def _lost_and_longest_gap(ping_output: str, sent: int) -> tuple[int, float]:
    """Pings lost, and the longest run of lost ones in seconds (at 10 per second)."""
    seqs = sorted({int(s) for s in re.findall(r"seq=(\d+)", ping_output)})
    gaps = [b - a - 1 for a, b in zip([-1, *seqs], [*seqs, sent], strict=True)]
    return sent - len(seqs), max(gaps, default=0) / 10


def _conflicts(cl: Cluster, host: str) -> list[dict[str, str]]:
    return plugin.call(cl.sock(host), "/Xmasq.Status")[1]["cluster"]["records"]["conflicts"]


def test_etcd_wiped_to_empty_under_traffic(cl, tb):
    net = cl.network("wipe", "10.237.0.0/24")
    a = cl.run("h1", "wipe-a", net)
    b = cl.run("h2", "wipe-b", net, SERVE)
    c = cl.run("h3", "wipe-c", net)
    ip_b = cl.ip(b, net)
    for client in (a, c):
        cl.sh(client, f"udpecho wait {ip_b} 5001 5")
    expected = _records(cl)
    seconds = 30.0
    pinger, pings = _pinging(cl, a, ip_b, seconds)
    flow: dict[str, str] = {}
    iperf = threading.Thread(target=lambda: flow.update(out=cl.sh(c, f"iperf3 -c {ip_b} -t 26 -i 1 -J")[1]))
    iperf.start()
    time.sleep(3)
    wiped = time.monotonic()
    tb.replace_etcd_data()
    restarted = time.monotonic() - wiped
    back = until(lambda: _records(cl) == expected, BACK_WITHIN, step=0.2) + restarted
    pinger.join()
    iperf.join()
    lost, gap = _lost_and_longest_gap(pings[0], int(seconds * 10))
    rates = [i["sum"]["bits_per_second"] / 1e9 for i in json.loads(flow["out"])["intervals"]]
    report(
        f"etcd wiped under traffic: etcd back in {restarted:.1f} s, every record back {back:.1f} s after the wipe;"
        f" {lost} of {int(seconds * 10)} pings lost (longest gap {gap:.1f} s); iperf3 per second min"
        f" {min(rates):.2f}, median {sorted(rates)[len(rates) // 2]:.2f} Gbit/s"
    )
    assert lost == 0 and min(rates) > 0, (lost, rates)
    # then new containers on every host get addresses nobody has, and reach the others
    new = [cl.run(h, f"wipe-new-{h}", net, SERVE) for h in tb.hosts]
    addresses = [cl.ip(x, net) for x in (a, b, c, *new)]
    assert len(set(addresses)) == len(addresses), addresses
    for x in new:
        cl.sh(a, f"udpecho wait {cl.ip(x, net)} 5001 10")


def test_etcd_restored_from_an_older_snapshot(cl, tb, tmp_path):
    net = cl.network("snap", "10.238.0.0/24")
    keep = cl.run("h1", "snap-keep", net, SERVE)
    gone = [cl.run("h2", "snap-gone", net), cl.run("h3", "snap-gone3", net)]
    snapshot = str(tmp_path / "etcd.db")
    tb.save_etcd_snapshot(snapshot)
    for x in gone:
        cl.remove(x)
    new = [cl.run("h2", "snap-new", net, SERVE), cl.run("h3", "snap-new3", net, SERVE)]
    expected = _records(cl)
    restored = time.monotonic()
    tb.replace_etcd_data(snapshot)
    took = until(lambda: _records(cl) == expected, BACK_WITHIN, step=0.2)
    after = time.monotonic() - restored
    report(
        "etcd restored from a snapshot older than 2 removals and 2 new containers: etcd matched what runs"
        f" {after:.1f} s after the restore began ({took:.1f} s after etcd answered)"
    )
    view = _records(cl)
    assert view is not None
    assert all(isinstance(r, RemoteEndpoint) for r in view.endpoints[net].values())
    assert {ip: r.host for ip, r in view.endpoints[net].items()} == _running(cl, net)
    for x in new:
        cl.sh(keep, f"udpecho wait {cl.ip(x, net)} 5001 10")


def test_a_conflicting_claim_is_reported_not_overwritten(cl, tb):
    subnet = "10.239.0.0/24"
    net = cl.network("clash", subnet)
    a = cl.run("h1", "clash-a", net, SERVE)
    b = cl.run("h2", "clash-b", net, SERVE)
    ip_a, ip_b = cl.ip(a, net), cl.ip(b, net)
    claim = ADDRESSES.key(pool_key(subnet), ip_a)
    cl.kv.put(claim, "h9")  # a host with no driver: nobody will remove it but the operator
    try:
        found = until(lambda: _conflicts(cl, "h1"), 15)
        assert _conflicts(cl, "h1") == [{"kind": "address", "key": f"{subnet} {ip_a}", "ours": "h1", "theirs": "h9"}]
        time.sleep(6)  # more passes: still not overwritten, both containers still fine
        assert cl.kv.get(claim) == "h9"
        cl.sh(b, f"udpecho wait {ip_a} 5001 5")
        cl.sh(a, f"udpecho wait {ip_b} 5001 5")
        c = cl.run("h3", "clash-c", net)
        assert cl.ip(c, net) not in (ip_a, ip_b)
        report(f"a claim of h1's {ip_a} planted for h9: reported by h1 after {found:.1f} s, kept, traffic unaffected")
    finally:
        cl.kv.delete(claim)
    until(lambda: cl.kv.get(claim) == "h1" and not _conflicts(cl, "h1"), 15)
