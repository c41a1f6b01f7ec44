"""Pure helpers of the slow-path module."""

from __future__ import annotations

import pytest

from xmasq_driver.dataplane.overlay import rps_mask


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
