"""Who can reach the driver: the root-only socket, TCP only with TLS and client certificates,
etcd over TLS end to end, no secrets in logs, and the Prometheus endpoint (off by default)."""

from __future__ import annotations

import re

from lab.standalone import openssl_pki

NET, EP = "n" * 64, "e" * 64


def create_network_and_endpoint(s, subnet: str = "10.77.0.0/24") -> None:  # type: ignore[no-untyped-def]
    prefix = subnet.rsplit(".", 1)[0]
    body = {
        "NetworkID": NET,
        "Options": {"com.docker.network.generic": {}},
        "IPv6Data": [],
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": f"{prefix}.1/24"}],
    }
    assert s.call("/NetworkDriver.CreateNetwork", body) == (200, {})
    iface = {"Address": f"{prefix}.2/24", "AddressIPv6": "", "MacAddress": ""}
    status, answer = s.call("/NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP, "Interface": iface})
    assert status == 200, answer


def delete_network_and_endpoint(s) -> None:  # type: ignore[no-untyped-def]
    assert s.call("/NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP}) == (200, {})
    assert s.call("/NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == (200, {})


def listening(s, pid: int) -> list[str]:  # type: ignore[no-untyped-def]
    out = s.run("ss", "-Hltnp", check=True).stdout
    return [line for line in out.splitlines() if f"pid={pid}," in line]


def test_no_tcp_listener_unless_configured(standalone):
    proc = standalone.start(etcd_endpoints=standalone.start_etcd())
    assert listening(standalone, proc.pid) == []


def test_plugin_api_over_tcp_only_with_tls_and_a_client_certificate_and_etcd_over_tls(standalone, tmp_path):
    pki = openssl_pki(str(tmp_path))
    etcd = standalone.start_etcd(tls=pki)
    tls = {"tls_cert": pki["server.pem"], "tls_key": pki["server.key"], "tls_client_ca": pki["ca.pem"]}
    etcd_tls = {"etcd_ca": pki["ca.pem"], "etcd_cert": pki["client.pem"], "etcd_key": pki["client.key"]}
    proc = standalone.start(etcd_endpoints=etcd, listen="127.0.0.1:9443", **tls, **etcd_tls)
    assert len(listening(standalone, proc.pid)) == 1
    url = "https://127.0.0.1:9443/Plugin.Activate"
    curl = ["curl", "-s", "-m", "5", "-X", "POST", "-d", "{}", "--cacert", pki["ca.pem"]]
    ok = standalone.run(*curl, "--cert", pki["client.pem"], "--key", pki["client.key"], url)
    assert ok.returncode == 0 and '"Implements"' in ok.stdout, ok
    assert standalone.run(*curl, url).returncode != 0  # no client certificate: refused in the handshake
    assert (
        '"Implements"' not in standalone.run("curl", "-s", "-m", "5", "-d", "{}", url.replace("https", "http")).stdout
    )

    # etcd over TLS with the driver's client certificate, end to end: a network and an endpoint.
    create_network_and_endpoint(standalone)
    status = standalone.call("/Xmasq.Status")[1]
    assert standalone.host_id in status["cluster"]["hosts"] and status["networks"][0]["endpoints"] == 1
    delete_network_and_endpoint(standalone)
    standalone.kill_etcd(0)  # errors get logged too: still nothing secret in them
    assert standalone.call("/IpamDriver.RequestPool", {"Pool": "10.78.0.0/24"})[0] == 500
    assert standalone.stop() == 0
    log = standalone.log()
    assert "etcd" in log and "error" in log
    for key in (pki["client.key"], pki["server.key"], pki["ca.key"]):
        with open(key) as f:
            body = [line for line in f.read().splitlines() if line and not line.startswith("-----")]
        assert not any(line in log for line in body), f"{key} leaked into the log"
    assert "PRIVATE KEY" not in log


def scrape(s) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out = s.run("curl", "-sf", "-m", "5", "http://127.0.0.1:9484/metrics", check=True).stdout
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", out, re.M)}


def test_prometheus_metrics_are_scraped(standalone):
    standalone.start(etcd_endpoints=standalone.start_etcd(), metrics="127.0.0.1:9484")
    create_network_and_endpoint(standalone)
    m = scrape(standalone)
    assert m["xmasq_etcd_up"] == 1 and m["xmasq_cluster_hosts"] == 1
    assert m["xmasq_fastpath_loaded"] == 1 and m["xmasq_networks"] == 1
    assert [v for k, v in m.items() if k.startswith(f'xmasq_endpoints{{network="{NET}"')] == [1]
    assert {'xmasq_datapath_total{counter="drop_spoofed"}', 'xmasq_datapath_total{counter="encap_pkts"}'} <= set(m)
    delete_network_and_endpoint(standalone)
    assert scrape(standalone)["xmasq_networks"] == 0
    standalone.kill_etcd(0)
    assert scrape(standalone)["xmasq_etcd_up"] == 0
