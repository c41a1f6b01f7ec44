"""Request strategies for the property-based fuzz of the plugin API (unit and live)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from xmasq_driver.api.http import routes

FIELDS = [
    "NetworkID",
    "EndpointID",
    "Options",
    "IPv4Data",
    "IPv6Data",
    "Interface",
    "PoolID",
    "Pool",
    "SubPool",
    "Address",
    "V6",
    "SandboxKey",
    "DiscoveryType",
    "Gateway",
    "AddressSpace",
    "MacAddress",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# Plausible values in the right places, so requests get past the first check more often.
plausible = st.sampled_from(["n1", "e1" * 10, "10.1.0.0/24", "10.1.0.2/24", "10.1.0.1", "", "xmasq", "0" * 64])
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values | plausible, max_size=6) | json_values


def _raw(body: object) -> bytes:
    return json.dumps(body).encode()


raw_bodies = st.one_of(
    bodies.map(_raw),
    bodies.map(_raw).flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda n: b[:n])),  # truncated
    st.binary(max_size=64),  # not JSON, not UTF-8
    st.integers(1_100_000, 1_200_000).map(lambda n: b'{"NetworkID": "' + b"x" * n + b'"}'),  # oversized
)


def paths(network, ipam, admin) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(routes(network, ipam, admin))
