"""Any body on any route gets a JSON answer: success or {"Err": ...}, never a traceback."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import Harness
from xmasq_driver.api import routes

_h = Harness()
PATHS = sorted(routes(_h.network, _h.ipam, _h.admin))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
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
    ]
)
bodies = st.dictionaries(field_names, json_values, max_size=6) | json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), body=bodies)
def test_every_answer_is_json(path, body):
    h = Harness()
    resp = h.client.post(path, data=json.dumps(body))
    answer = json.loads(resp.data)
    if resp.status_code == 200:
        assert "Err" not in answer
    else:
        assert 400 <= resp.status_code < 600 and isinstance(answer.get("Err"), str) and answer["Err"]
        assert "internal error" not in answer["Err"], answer
