"""Prometheus rendering over fake backends, and the rules for TCP listeners."""

from __future__ import annotations

import pytest

from xmasq_driver.config import Config
from xmasq_driver.control.model import HostRecord
from xmasq_driver.ops.metrics import render
from xmasq_driver.ops.server import tcp_listeners


def test_metrics_show_networks_endpoints_counters_and_etcd(h):
    h.create_network()
    h.create_endpoint()
    h.store.register_host(HostRecord("192.0.2.1"), h.kv.grant(10))
    text = render(h.admin)
    assert "xmasq_etcd_up 1\n" in text
    assert "xmasq_cluster_hosts 1\n" in text
    assert (
        'xmasq_endpoints{network="n1",vni="' in text and text.split('xmasq_endpoints{network="n1"')[1].split()[1] == "1"
    )
    assert 'xmasq_datapath_total{counter="encap_pkts"} 7\n' in text
    h.kv.down = True
    assert "xmasq_etcd_up 0\n" in render(h.admin)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"listen": "0.0.0.0:9999"}, "XMASQ_LISTEN needs XMASQ_TLS_CERT, XMASQ_TLS_KEY and XMASQ_TLS_CLIENT_CA"),
        ({"listen": "0.0.0.0:9999", "tls_cert": "c", "tls_key": "k"}, "client certificates"),
        ({"metrics": "0.0.0.0:9484"}, "not a loopback address: it needs XMASQ_TLS_CERT"),
        ({"metrics": "localhost"}, "is not host:port"),
        ({"metrics": "127.0.0.1:9484", "tls_cert": "/nonexistent", "tls_key": "/nonexistent"}, "cannot load"),
    ],
)
def test_tcp_listeners_without_tls_are_refused(settings, message):
    with pytest.raises(SystemExit, match=message):
        tcp_listeners(Config(**settings))


def test_no_tcp_listener_by_default_and_plain_metrics_on_loopback():
    assert tcp_listeners(Config()) == []
    assert tcp_listeners(Config(metrics="127.0.0.1:9484")) == [("metrics", "127.0.0.1", 9484, None)]
