"""Property-based fuzz of every route: malformed, wrong-typed, truncated, oversized and
out-of-order requests. Every answer is JSON (success, or {"Err": ...} with a 4xx/5xx status,
never a traceback), and a rejected request changes nothing: etcd, local state, links,
rules and fast-path maps are as before."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import report
from tests.fuzz import bodies, paths, raw_bodies
from tests.unit.conftest import Harness

_h = Harness()
PATHS = paths(_h.network, _h.ipam, _h.admin)
CASES = {"requests": 0, "rejected": 0}


def world(h: Harness) -> object:
    return copy.deepcopy(
        (
            h.kv.data,
            h.state.snapshot(),
            h.overlay.networks,
            h.overlay.veths,
            h.overlay.peers,
            h.firewall.networks,
            h.firewall.ports,
            h.datapath.local,
            h.datapath.remote,
        )
    )


def populated() -> Harness:
    """A host with a network, an endpoint that has joined, and a pool with an address."""
    h = Harness()
    h.create_network()
    h.create_endpoint()
    h.ok("/NetworkDriver.Join", {"NetworkID": "n1", "EndpointID": "e1" * 10, "SandboxKey": "/x", "Options": {}})
    pool = h.ok("/IpamDriver.RequestPool", {"Pool": "10.1.0.0/24"})["PoolID"]
    h.ok("/IpamDriver.RequestAddress", {"PoolID": pool, "Address": "10.1.0.2"})
    return h


def check(h: Harness, path: str, data: bytes) -> None:
    before = world(h)
    resp = h.client.post(path, data=data)
    answer = json.loads(resp.data)
    CASES["requests"] += 1
    if resp.status_code == 200:
        assert "Err" not in answer
        return
    CASES["rejected"] += 1
    assert 400 <= resp.status_code < 600 and isinstance(answer.get("Err"), str) and answer["Err"]
    assert "internal error" not in answer["Err"], answer
    assert world(h) == before, f"{path} was refused ({answer['Err']}) but changed the driver's state"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), data=raw_bodies)
def test_any_request_on_a_fresh_host(path, data):
    check(Harness(), path, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(st.sampled_from(PATHS), bodies), min_size=2, max_size=8))
def test_any_sequence_on_a_host_with_state(calls):
    """Out of order: Join before CreateEndpoint, Leave twice, DeleteNetwork with endpoints..."""
    h = populated()
    for path, body in calls:
        check(h, path, json.dumps(body).encode())


def test_report_fuzz_cases():
    report(
        f"fuzz (fake backends): {CASES['requests']} requests, {CASES['rejected']} rejected, "
        "each rejection left the state unchanged"
    )
