"""The one plumbing path: create undoes what it began, restore skips what outlives the driver,
delete forgets the local record only once everything is gone."""

from __future__ import annotations

import pytest

from xmasq_driver.api import plumbing
from xmasq_driver.api.plumbing import Step
from xmasq_driver.errors import BackendError


def _steps(log: list[str], fail: str = "") -> list[Step]:
    def do(name: str) -> None:
        log.append(f"do {name}")
        if name == fail:
            raise BackendError(f"{name} failed")

    return [
        Step(name, lambda n=name: do(n), lambda n=name: log.append(f"undo {n}"), restore=name != "veth")
        for name in ("veth", "maps", "records")
    ]


def test_a_failed_step_undoes_every_step_begun_in_reverse_and_nothing_is_committed():
    log: list[str] = []
    with pytest.raises(BackendError, match="maps failed"):
        plumbing.create(_steps(log, fail="maps"), "endpoint e1", lambda: log.append("commit"))
    assert log == ["do veth", "do maps", "undo maps", "undo veth"]


def test_create_commits_last_and_restore_skips_what_outlives_the_driver():
    log: list[str] = []
    plumbing.create(_steps(log), "endpoint e1", lambda: log.append("commit"))
    assert log == ["do veth", "do maps", "do records", "commit"]
    log.clear()
    plumbing.restore(_steps(log), "endpoint e1")
    assert log == ["do maps", "do records"]


def test_delete_undoes_in_reverse_and_forgets_only_when_all_is_gone():
    log: list[str] = []
    plumbing.delete(_steps(log), lambda: log.append("commit"))
    assert log == ["undo records", "undo maps", "undo veth", "commit"]
    steps = _steps(log)
    steps[0] = Step("veth", lambda: None, lambda: (_ for _ in ()).throw(BackendError("netlink timed out")))
    log.clear()
    with pytest.raises(BackendError):
        plumbing.delete(steps, lambda: log.append("commit"))
    assert "commit" not in log  # the local record stays: Docker's retry has something to delete


def test_an_endpoint_delete_that_fails_keeps_it_and_a_retry_finishes(h):
    h.create_network()
    h.create_endpoint()
    eid = "e1" * 10
    real = h.overlay.delete_veth
    h.overlay.delete_veth = lambda endpoint_id: (_ for _ in ()).throw(BackendError("netlink timed out"))
    body = {"NetworkID": "n1", "EndpointID": eid}
    assert "netlink timed out" in h.err("/NetworkDriver.DeleteEndpoint", body)
    assert eid in h.state.endpoints  # not forgotten half deleted
    h.overlay.delete_veth = real
    h.ok("/NetworkDriver.DeleteEndpoint", body)
    assert eid not in h.state.endpoints and eid not in h.overlay.veths and not h.datapath.local
