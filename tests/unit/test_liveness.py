"""Which hosts are live: a host gone from etcd is kept while it answers on the underlay."""

from __future__ import annotations

import time

from xmasq_driver.control.liveness import Liveness
from xmasq_driver.control.model import HostRecord
from xmasq_driver.dataplane.probe import answering


def test_a_host_gone_from_etcd_is_kept_while_it_answers_and_evicted_once_it_does_not():
    answering = {"192.0.2.3": True}
    probed: list[str] = []

    def probe(ips: set[str]) -> set[str]:
        probed.extend(ips)
        return {ip for ip in ips if answering.get(ip, False)}

    live = Liveness(None, HostRecord("192.0.2.1"), grace=0.05, probe=probe)  # type: ignore[arg-type]
    both = {"h2": "192.0.2.2", "h3": "192.0.2.3"}
    assert live.live(both) == both
    assert live.live({}) == both  # within the grace period: nobody probed
    assert probed == []
    time.sleep(0.06)
    assert live.live({}) == {"h3": "192.0.2.3"}  # h2 did not answer; h3 did: kept
    assert sorted(probed) == ["192.0.2.2", "192.0.2.3"]
    assert live.live({}) == {"h3": "192.0.2.3"} and len(probed) == 2  # probed again only after a grace period
    answering["192.0.2.3"] = False
    time.sleep(0.06)
    assert live.live({}) == {}
    assert live.live({"h3": "192.0.2.3"}) == {"h3": "192.0.2.3"}  # back in etcd


def test_the_probe_is_an_icmp_echo_to_all_at_once():
    """Loopback answers; 127.0.0.1's neighbours on lo do too, so every address asked here does (one
    that does not: the e2e partition test). All are asked before any answer is awaited."""
    start = time.monotonic()
    assert answering({"127.0.0.1", "127.0.0.2", "127.0.0.3"}) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    assert time.monotonic() - start < 0.5
