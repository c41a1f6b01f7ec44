"""The etcd layout: every kind's keys parse back to their parts, nothing else is taken for one,
and no other file spells a key."""

from __future__ import annotations

import os
import re

import pytest

from xmasq_driver.control import layout
from xmasq_driver.control.layout import ADDRESSES, ENDPOINTS, HOLDERS, HOSTS, KINDS, NETWORKS, VNIS
from xmasq_driver.control.model import HostRecord, RemoteEndpoint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_each_kind_parses_its_own_keys_back():
    for kind in KINDS:
        parts = tuple(f"p{i}" for i in range(len(kind.parts)))
        assert layout.parse(kind.key(*parts)) == (kind, parts)
        assert kind.parts_of(kind.key(*parts)) == parts
        assert kind.key(*parts).startswith(kind.prefix())


def test_keys_of_no_kind_are_not_xmasqs():
    for key in ("/xmasq/v1/endpoints/n1", "/xmasq/v1/endpoints/n1/10.0.0.1/x", "/xmasq/v1/ipam/n1", "/other/hosts/h1",
                "/xmasq/v1/members/n1/", "/xmasq/v1/services/n1/10.0.0.9"):  # fmt: skip
        assert layout.parse(key) is None, key
    with pytest.raises(ValueError, match="is not a key of endpoints"):
        ENDPOINTS.parts_of(HOSTS.key("h1"))


def test_values_round_trip_and_foreign_ones_stay_raw():
    record = RemoteEndpoint("h1", "02:00:00:00:00:01", "e" * 64)
    assert ENDPOINTS.decode(ENDPOINTS.encode(record)) == record
    assert HOSTS.decode(HOSTS.encode(HostRecord("192.0.2.1"))) == HostRecord("192.0.2.1")
    assert HOLDERS.decode(HOLDERS.encode(3)) == 3
    assert HOSTS.decode('{"ip": 7}') == '{"ip": 7}' and NETWORKS.decode("x") == "x" and HOLDERS.decode("x") == "x"
    assert VNIS.key(4242) == "/xmasq/v1/vnis/4242"


def test_pool_ids_survive_being_a_key_segment():
    for pool in ("10.1.0.0/24", "10.1.0.0/16|10.1.2.0/24", "fd00:1::/64@blue_team"):
        segment = layout.pool_key(pool)
        assert "/" not in segment and layout.pool_id_of(segment) == pool
        assert ADDRESSES.parts_of(ADDRESSES.key(segment, "10.1.0.2")) == (segment, "10.1.0.2")


def test_no_other_file_spells_a_key():
    """The prefix, or a key built from it by hand, anywhere but layout.py (and this file)."""
    paths = "|".join(re.escape(kind.path) for kind in KINDS)
    spelled = re.compile(rf"/xmasq/v1|\{{(?:layout\.)?PREFIX\}}(?:{paths})?/|[\"'](?:{paths})/")
    mine = (os.path.join("control", "layout.py"), os.path.join("unit", "test_layout.py"))
    found = []
    for top in ("xmasq_driver", "lab", "bench", "tests"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(d, name)
                if not name.endswith(".py") or path.endswith(mine):
                    continue
                with open(path) as f:
                    found += [f"{path}:{i}" for i, line in enumerate(f, 1) if spelled.search(line)]
    assert found == []
