"""IPv6 (#19), through a real dockerd. So far the xmasq IPAM's IPv6 pools; xmasq networks still
refuse --ipv6 (test_options.py), so Docker's bridge driver is the network driver here."""

from __future__ import annotations

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from xmasq_driver.kv import EtcdKV
from xmasq_driver.store import PREFIX


def test_the_xmasq_ipam_gives_a_dual_stack_network_unique_ipv6_addresses(env, dk, cfg):
    pools = [IPAMPool(subnet="10.244.16.0/24"), IPAMPool(subnet="fd00:244:16::/64")]
    net = dk.networks.create(
        "xmt-v6ipam", driver="bridge", enable_ipv6=True, ipam=IPAMConfig(driver="xmasq", pool_configs=pools)
    )
    env.networks.append(net)
    a, b = env.run("v6a", net.name), env.run("v6b", net.name)
    for c in (a, b):
        c.reload()
    settings = [c.attrs["NetworkSettings"]["Networks"][net.name] for c in (a, b)]
    assert [s["GlobalIPv6Address"] for s in settings] == ["fd00:244:16::2", "fd00:244:16::3"]
    assert {s["IPv6Gateway"] for s in settings} == {"fd00:244:16::1"}
    claims = EtcdKV(cfg).get_prefix(f"{PREFIX}ipam/addresses/fd00:244:16::_64/")
    assert {k.rsplit("/", 1)[1]: v for k, v in claims.items()} == {
        "fd00:244:16::1": "gateway",
        "fd00:244:16::2": cfg.host,
        "fd00:244:16::3": cfg.host,
    }
    env.sh(a, "ping -c 1 -W 2 fd00:244:16::3")


def test_an_xmasq_network_with_ipv6_is_refused_and_its_pools_released(env, dk, cfg):
    """Until #19 is done: the xmasq IPAM takes the IPv6 pool, the network driver refuses the network,
    and Docker's release of both pools leaves nothing in etcd (the env fixture checks)."""
    pools = [IPAMPool(subnet="10.244.17.0/24"), IPAMPool(subnet="fd00:244:17::/64")]
    ipam = IPAMConfig(driver="xmasq", pool_configs=pools)
    with pytest.raises(docker.errors.APIError, match="IPv6 is not supported by xmasq yet"):
        env.networks.append(dk.networks.create("xmt-v6refused", driver="xmasq", enable_ipv6=True, ipam=ipam))
    assert not EtcdKV(cfg).get_prefix(f"{PREFIX}ipam/holders/fd00:244:17::_64/")
