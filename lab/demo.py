"""`make demo` (`python -m lab demo`): two hosts on a testbed, one xmasq network across them, a
ping between them."""

from __future__ import annotations

from lab.image import ensure_image
from lab.testbed import Testbed


def main() -> int:
    tb = Testbed.up(2)
    try:
        ips = {}
        for host in tb.hosts:
            dk = tb.docker(host)
            image = ensure_image(dk)
            dk.networks.create(
                "demo",
                driver="xmasq",
                options={"xmasq.network": "demo"},
                ipam={"Driver": "xmasq", "Config": [{"Subnet": "10.240.0.0/24"}]},
            )
            c = dk.containers.run(image, ["sleep", "600"], name=f"demo-{host}", network="demo", detach=True)
            c.reload()
            ips[host] = c.attrs["NetworkSettings"]["Networks"]["demo"]["IPAddress"]
            print(f"{host} ({tb.host_ip(host)}): container demo-{host} has {ips[host]}")
        print(f"\n$ python -m lab testbed exec h1 -- docker exec demo-h1 ping -c 3 {ips['h2']}")
        return tb.in_host("h1", ["docker", "exec", "demo-h1", "ping", "-c", "3", ips["h2"]]).returncode
    finally:
        tb.down()
