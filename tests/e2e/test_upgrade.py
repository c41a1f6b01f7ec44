"""Upgrade in place (issue 35): the previous release's driver replaced by this one under traffic,
and back (a downgrade). The previous release is the tree before the last change of a stored
format: 8a14e96, before issue 33 changed the pinned maps' layout and the host record
(tests/data/xmasq-8a14e96.tar.gz, made with `git archive --prefix=previous/ 8a14e96 xmasq_driver
bpf | gzip -9n`, so that the test needs no git history)."""

from __future__ import annotations

import json
import os
import tarfile
from typing import Any

from tests.conftest import report
from tests.e2e.cluster import iperf_silence, links, until
from xmasq_driver.control.layout import HOSTS

PREVIOUS = os.path.join(os.path.dirname(__file__), "..", "data", "xmasq-8a14e96.tar.gz")
SERVE = "udpecho serve 5001 & iperf3 -s"
INTERVAL = 0.1  # iperf3's reporting interval: the resolution of a gap


def _previous(tmp_path: Any) -> str:
    with tarfile.open(PREVIOUS) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    return os.path.join(tmp_path, "previous")


def _replace(tb: Any, tree: str | None) -> None:
    """h1's driver stopped as an upgrade stops it (SIGTERM) and the other release's started."""
    tb.stop_driver("h1")
    tb.start_driver("h1", tree)


def test_an_upgrade_in_place_under_traffic_and_a_downgrade(cl, tb, tmp_path):
    previous = _previous(tmp_path)
    _replace(tb, previous)
    try:
        net = cl.network("upgrade", "10.246.0.0/24")
        a, b = cl.run("h1", "upgrade-a", net, SERVE), cl.run("h2", "upgrade-b", net)
        ip_a = cl.ip(a, net)
        cl.sh(b, f"udpecho wait {ip_a} 5001 10")
        veths = [n for n in links(tb, "h1") if n.startswith("xmh")]
        started = a.attrs["State"]["StartedAt"]
        # The previous release's host record (no WireGuard key), once its heartbeat wrote it.
        until(lambda: "key" not in json.loads(cl.kv.get(HOSTS.key("h1")) or '{"key": 0}'), 10)
        up = iperf_silence(b, ip_a, lambda: _replace(tb, None), interval=INTERVAL)[0]
        status = cl.stats("h1")  # this release answers
        assert isinstance(status, dict)
        a.reload()
        assert a.attrs["State"]["StartedAt"] == started and a.status == "running", "the container was restarted"
        assert [n for n in links(tb, "h1") if n.startswith("xmh")] == veths
        # This release's fast path carries the flow again (its maps are of the new layout).
        before = cl.stats("h1")
        assert cl.sh(b, f"udpecho send {ip_a} 5001 100")[1].strip() == "replies=100/100"
        assert cl.stats("h1")["decap_pkts"] > before["decap_pkts"]
        down = iperf_silence(b, ip_a, lambda: _replace(tb, previous), interval=INTERVAL)[0]
        cl.sh(b, f"udpecho wait {ip_a} 5001 10")
    finally:
        _replace(tb, None)
    cl.sh(b, f"udpecho wait {ip_a} 5001 10")  # and up again: nothing the downgrade wrote broke it
    a.reload()
    assert a.attrs["State"]["StartedAt"] == started
    report(
        f"upgrade in place from 8a14e96 (older pinned maps and host record) under iperf3: longest gap {up:.1f} s"
        f" ({INTERVAL} s intervals), no container restarted, the fast path back on the new maps; downgrade to it"
        f" and upgrade again: gap {down:.1f} s, traffic answered after each"
    )
    assert up <= 1.0 and down <= 1.0, (up, down)
