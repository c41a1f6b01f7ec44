"""Encrypted networks over fake backends: what the driver asks of the tunnel, the overlay and the
fast path, and how hosts' keys become WireGuard peers (the kernel side: tests/e2e/test_encryption.py)."""

from __future__ import annotations

from tests.unit.conftest import Harness
from xmasq_driver.control.layout import HOSTS
from xmasq_driver.control.model import HostRecord, TunnelPeer

ENCRYPTED = {"encrypted": ""}
SHARED = {"xmasq.network": "shared", **ENCRYPTED}


def test_an_encrypted_network_goes_through_the_tunnel(h):
    h.create_network(generic=ENCRYPTED)
    net = h.state.networks["n1"]
    assert net.encrypted and h.tunnel.users == {net.vni}
    assert h.overlay.encrypted[net.vni] is True
    assert net.mtu == 1400 - 50 - 60  # the fake underlay's 1400, less VXLAN and WireGuard
    status = h.ok("/Xmasq.Status")
    assert status["networks"][0]["encrypted"] is True and status["encryption"]["networks"] == 1
    h.ok("/NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
    assert h.tunnel.users == set() and h.overlay.networks == {}


def test_the_namespaced_spelling_and_a_plain_network_beside_it(h):
    h.create_network("n1", generic={"xmasq.encrypted": "true"})
    h.create_network("n2", subnet="10.2.0.0/24", gateway="10.2.0.1/24", generic={"xmasq.encrypted": "false"})
    enc, plain = h.state.networks["n1"], h.state.networks["n2"]
    assert enc.encrypted and not plain.encrypted
    assert h.tunnel.users == {enc.vni} and h.overlay.encrypted == {enc.vni: True, plain.vni: False}
    assert plain.mtu == 1400 - 50


def test_a_host_that_cannot_encrypt_refuses_and_claims_nothing(h):
    h.tunnel.reason = "no WireGuard: install wireguard-tools"
    body = {
        "NetworkID": "n1",
        "Options": {"com.docker.network.generic": ENCRYPTED},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": [],
    }
    assert h.err("/NetworkDriver.CreateNetwork", body) == (
        "cannot create an encrypted network: no WireGuard: install wireguard-tools"
    )
    assert h.state.networks == {} and h.overlay.networks == {} and not h.kv.data


def test_a_tunnel_that_fails_to_start_leaves_nothing(h):
    h.tunnel.fail_attach = True
    body = {
        "NetworkID": "n1",
        "Options": {"com.docker.network.generic": ENCRYPTED},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": [],
    }
    assert "wireguard-go did not start" in h.err("/NetworkDriver.CreateNetwork", body)
    assert h.state.networks == {} and h.overlay.networks == {} and h.tunnel.users == set()
    assert not [k for k in h.kv.data if "/members/" in k]


def test_every_host_creates_a_shared_network_the_same_way():
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    h1.create_network("n1", generic=SHARED)
    body = {
        "NetworkID": "n2",
        "Options": {"com.docker.network.generic": {"xmasq.network": "shared"}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": [],
    }
    assert h2.err("/NetworkDriver.CreateNetwork", body) == (
        "network shared already exists encrypted: every host must create it the same way"
    )


def test_remote_entries_of_an_encrypted_network_are_marked_so():
    """The eBPF programs carry such an endpoint's flows only through the tunnel, and drop its VXLAN
    arriving on the NIC (tests/bpf)."""
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    for i, h in enumerate((h1, h2), start=1):
        h.create_network(f"n{i}", generic=SHARED)
        h.store.register_host(HostRecord(f"192.0.2.{i}", f"key{i}", 51820), h.kv.grant(10))
    h2.create_endpoint("n2", "a" * 20, "10.1.0.2/24")
    r = h1.reconciler_with()
    r.sync_once()
    vni = h1.state.networks["n1"].vni
    assert h1.overlay.peers[vni] == {"10.1.0.2": ("02:58:0a:01:00:02", "192.0.2.2")}  # the slow path has it
    assert h1.datapath.remote[vni] == {"10.1.0.2": ("02:58:0a:01:00:02", "192.0.2.2")} and h1.datapath.encrypted == {
        vni
    }
    h2.create_endpoint("n2", "b" * 20, "10.1.0.3/24")
    r.step(timeout=0.1)  # a batch: the entry it adds is marked too
    assert "10.1.0.3" in h1.datapath.remote[vni] and h1.datapath.encrypted == {vni}


def test_peers_are_the_live_hosts_with_a_key_and_follow_a_rotation():
    h1 = Harness(host="host1")
    h2 = Harness(kv=h1.kv, host="host2")
    h3 = Harness(kv=h1.kv, host="host3")
    lease2 = h1.kv.grant(10)
    h1.store.register_host(HostRecord("192.0.2.1", "key1", 51820), h1.kv.grant(10))
    h2.store.register_host(HostRecord("192.0.2.2", "key2", 51820), lease2)
    h3.store.register_host(HostRecord("192.0.2.3"), h1.kv.grant(10))  # no WireGuard there
    r = h1.reconciler_with(grace=60)
    r.sync_once()
    assert h1.tunnel.peers == {"host2": TunnelPeer("192.0.2.2", "key2", 51820)}  # not itself, not host3
    h2.store.register_host(HostRecord("192.0.2.2", "key2b", 51821), lease2)  # rotated
    r.step(timeout=0.1)
    assert h1.tunnel.peers == {"host2": TunnelPeer("192.0.2.2", "key2b", 51821)}
    h1.kv.expire(lease2)  # gone: within grace its key stays a peer, as its endpoints stay
    r.step(timeout=0.1)
    assert h1.tunnel.peers == {"host2": TunnelPeer("192.0.2.2", "key2b", 51821)}


def test_a_host_record_without_a_key_is_what_older_releases_wrote():
    assert HOSTS.encode(HostRecord("192.0.2.1")) == '{"ip": "192.0.2.1"}'
    record = HostRecord("192.0.2.1", "k=", 51820)
    assert HOSTS.decode(HOSTS.encode(record)) == record
    assert HOSTS.decode('{"ip": "192.0.2.1"}') == HostRecord("192.0.2.1")


def test_rotate_key_answers_the_new_key_or_why_not(h):
    assert h.ok("/Xmasq.RotateKey") == {"public_key": "pub-2"}
    h.tunnel.reason = "encryption is switched off (XMASQ_WIREGUARD=off)"
    assert (
        h.err("/Xmasq.RotateKey") == "cannot rotate the WireGuard key: encryption is switched off (XMASQ_WIREGUARD=off)"
    )


def test_metrics_show_the_tunnel_and_its_drops(h):
    from xmasq_driver.ops.metrics import render

    h.create_network(generic=ENCRYPTED)
    text = render(h.admin)
    assert 'xmasq_encryption_up{kind="userspace"} 1' in text
    assert 'xmasq_encryption_total{event="rotations"} 1' in text
    assert 'xmasq_encryption_dropped_total{reason="plaintext_out_dropped"} 0' in text
