"""Pure helpers of the slow-path module, and its bound on a netlink call."""

from __future__ import annotations

import threading
import time

import pytest

from xmasq_driver.dataplane import overlay
from xmasq_driver.dataplane.overlay import rps_mask
from xmasq_driver.errors import BackendError


@pytest.mark.parametrize(
    ("cpulist", "mask"),
    [
        ("0\n", "00000001"),
        ("0-1\n", "00000003"),
        ("0-3,6", "0000004f"),
        ("0-39", "000000ff,ffffffff"),
        ("32", "00000001,00000000"),
    ],
)
def test_rps_mask_is_the_kernels_bitmap_of_the_online_cpus(cpulist: str, mask: str) -> None:
    assert rps_mask(cpulist) == mask


def test_a_netlink_call_that_never_returns_fails_its_request_and_the_next_one_runs(monkeypatch) -> None:
    """A stuck netlink request (rtnl held elsewhere: one cannot be had on demand from a real kernel,
    hence a socket that blocks) fails after the timeout, naming what it was; the call after it
    gets a worker of its own and succeeds, while the stuck one is still stuck."""
    release = threading.Event()

    class StuckOnce:
        calls = 0

        def __enter__(self) -> StuckOnce:
            StuckOnce.calls += 1
            if StuckOnce.calls == 1:
                release.wait(10)
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(overlay, "IPRoute", StuckOnce)
    ovl = overlay.Overlay("eth0", timeout=0.2)
    start = time.monotonic()
    with pytest.raises(BackendError, match="netlink: add veth xmh1 timed out after 0.2s"):
        ovl._run("add veth xmh1", lambda ipr: "made")
    assert time.monotonic() - start < 1.0
    assert ovl._run("add veth xmh2", lambda ipr: "made") == "made"
    release.set()
