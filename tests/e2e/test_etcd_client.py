"""The etcd client against real etcd servers: TLS with client certificates, and failover."""

from __future__ import annotations

import subprocess
import time

import pytest

from lab.standalone import openssl_pki
from xmasq_driver.config import Config
from xmasq_driver.control import kv as kv_module
from xmasq_driver.control.kv import Compacted, EtcdKV
from xmasq_driver.errors import BackendError

PORT, PEER = 23890, 23891


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    d = tmp_path_factory.mktemp("etcd-tls")
    p = openssl_pki(str(d))
    url = f"https://127.0.0.1:{PORT}"
    peer = f"http://127.0.0.1:{PEER}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--name",
            "tls",
            "--data-dir",
            str(d / "data"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"tls={peer}",
            "--cert-file",
            p["server.pem"],
            "--key-file",
            p["server.key"],
            "--trusted-ca-file",
            p["ca.pem"],
            "--client-cert-auth",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cfg = Config(etcd_endpoints=url, etcd_ca=p["ca.pem"], etcd_cert=p["client.pem"], etcd_key=p["client.key"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                EtcdKV(cfg).get("/probe")
                break
            except BackendError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield cfg
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_with_client_certificate(tls_etcd):
    kv = EtcdKV(tls_etcd)
    kv.put("/xmasq-tls/a", "1")
    assert kv.get("/xmasq-tls/a") == "1"
    assert kv.create("/xmasq-tls/a", "2") is False
    items, revision = kv.list_prefix("/xmasq-tls/")
    assert items == {"/xmasq-tls/a": "1"} and revision > 0
    lease = kv.grant(5)
    assert kv.keepalive(lease)
    kv.delete("/xmasq-tls/a")
    seen = kv.watch("/xmasq-tls/", revision + 1, 2.0)  # a watch from that revision replays what came after
    assert seen.events == [("/xmasq-tls/a", None)] and seen.current >= seen.revision > revision, seen
    assert kv.watch("/xmasq-tls/", seen.revision + 1, 0.5).events == []  # then nothing: a quiet timeout


def test_a_large_prefix_is_listed_in_pages_at_one_revision(tls_etcd, monkeypatch):
    kv = EtcdKV(tls_etcd)
    for i in range(7):
        kv.put(f"/xmasq-pages/{i}", str(i))
    monkeypatch.setattr(kv_module, "LIST_PAGE", 2)
    call, pages = kv._call, []

    def writing_between_pages(what, fn):  # type: ignore[no-untyped-def]
        if what == "list":
            pages.append(what)
            if len(pages) == 2:
                kv.put("/xmasq-pages/9", "late")  # written after the first page was read
        return call(what, fn)

    monkeypatch.setattr(kv, "_call", writing_between_pages)
    items, revision = kv.list_prefix("/xmasq-pages/")
    assert len(pages) == 4  # 7 keys in pages of 2
    assert items == {f"/xmasq-pages/{i}": str(i) for i in range(7)}  # all at the first page's revision
    assert revision < kv.list_prefix("/xmasq-pages/")[1]
    for i in (*range(7), 9):
        kv.delete(f"/xmasq-pages/{i}")


def test_tls_without_client_certificate_is_refused_clearly(tls_etcd):
    kv = EtcdKV(Config(etcd_endpoints=tls_etcd.etcd_endpoints, etcd_ca=tls_etcd.etcd_ca, etcd_timeout=2))
    with pytest.raises(BackendError, match=r"etcd get failed .*https://127.0.0.1:23890"):
        kv.get("/xmasq-tls/a")


def test_failover_to_the_next_endpoint(tls_etcd):
    both = f"https://127.0.0.1:1,{tls_etcd.etcd_endpoints}"  # nothing listens on port 1
    kv = EtcdKV(
        Config(etcd_endpoints=both, etcd_ca=tls_etcd.etcd_ca, etcd_cert=tls_etcd.etcd_cert, etcd_key=tls_etcd.etcd_key)
    )
    kv.put("/xmasq-tls/b", "x")
    assert kv.get("/xmasq-tls/b") == "x"
    kv.delete("/xmasq-tls/b")


def test_a_watch_from_a_compacted_revision_says_list_again(tls_etcd):
    """After a compaction past its revision a watch cannot replay what changed: it must not wait
    out its timeout as if nothing had (the reconciler then lists again at once)."""
    kv = EtcdKV(tls_etcd)
    kv.put("/xmasq-compact/a", "1")
    _, before = kv.list_prefix("/xmasq-compact/")
    kv.put("/xmasq-compact/a", "2")
    kv.put("/xmasq-compact/a", "3")
    _, now = kv.list_prefix("/xmasq-compact/")
    assert kv.list_prefix("/xmasq-compact/", before) == ({"/xmasq-compact/a": "1"}, before)  # a past revision
    client = kv._clients[0]
    client.post(client.get_url("/kv/compaction"), json={"revision": now, "physical": True})
    start = time.monotonic()
    assert kv.watch("/xmasq-compact/", before + 1, 5.0).compacted
    assert time.monotonic() - start < 2.0
    with pytest.raises(Compacted, match=f"revision {before}: compacted"):  # named, not an endpoint failure
        kv.list_prefix("/xmasq-compact/", before)
    assert kv.list_prefix("/xmasq-compact/", now)[0] == {"/xmasq-compact/a": "3"}
    kv.delete("/xmasq-compact/a")


def test_reconnect_replaces_the_watch_connection_too(tls_etcd):
    """After the host's address changed (the reconciler calls reconnect) the watch kept open from
    the old address would hear nothing: it is closed, and the next watch call opens one anew."""
    kv = EtcdKV(tls_etcd)
    _, revision = kv.list_prefix("/xmasq-reconnect/")
    assert kv.watch("/xmasq-reconnect/", revision + 1, 0.2).events == []
    old = kv._stream
    kv.reconnect()
    assert old is not None and old.closed
    kv.put("/xmasq-reconnect/a", "1")
    assert kv.watch("/xmasq-reconnect/", revision + 1, 2.0).events == [("/xmasq-reconnect/a", "1")]
    assert kv._stream is not old
    kv.delete("/xmasq-reconnect/a")
