"""A soak (issue 35): containers made and removed at a steady rate on three hosts, under traffic
between them, for XMASQ_TEST_SOAK seconds (the suite: 90; `make soak DURATION=` any, the issue
asks two hours), with h2's driver restarted a third of the way in and the etcd leader moved to
another member two thirds in. Checked: no churn request fails outside those planned gaps, no
ping of the traffic is lost, each driver's RSS and open file descriptors are flat (the second
half of its process's samples within 5% of the first), etcd's keys are what they were, and its
size in use bounded once compaction has had its say (runs of 30 minutes or more: the testbed's
etcd compacts what is older than 5 minutes)."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from typing import Any

import docker

from tests.conftest import report
from tests.e2e.cluster import Cluster, driver_usage
from xmasq_driver.control.layout import PREFIX

DURATION = float(os.environ.get("XMASQ_TEST_SOAK", "90"))
CHURN_PERIOD = 2.0  # seconds between one container's start and the next's
PING_INTERVAL = 0.2
GAP = 5.0  # seconds after a planned event's end in which a churn request may fail
WARM_UP = 0.1  # the share of a process's samples before it counts (imports, caches, pools filling)
COMPACTED_AFTER = 1800  # a run this long has seen compaction's steady state


def _etcd_size(cl: Cluster, tb: Any) -> tuple[int, int]:
    """The keys under PREFIX, and etcd's database size in use (bytes)."""
    status = tb.etcd_status()
    return len(cl.kv.get_prefix(PREFIX)), int(status.get("dbSizeInUse") or status["dbSize"])


def _logs_around(tb: Any, hosts: list[str], when: float) -> str:
    """Each host driver's log lines from 2 s before `when` (a wall-clock time) to 5 s after."""
    # stamped as log.py stamps them: local time, to the second
    stamps = {time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when + d)) for d in range(-2, 6)}
    found = []
    for h in hosts:
        with open(tb.path(h, "xmasq.log")) as f:
            found += [f"{h} {line.rstrip()}" for line in f if line[:19] in stamps]
    return "\n".join(found[-80:])


def _flat(series: list[float]) -> tuple[float, float]:
    """The medians of the first and second half of a process's samples after its warm-up."""
    kept = series[int(len(series) * WARM_UP) :]
    half = len(kept) // 2
    return statistics.median(kept[:half]), statistics.median(kept[half:])


def test_a_soak_of_churn_under_traffic_with_a_driver_restart_and_an_etcd_leader_change(cl, tb):
    hosts = ["h1", "h2", "h3"]
    tb.grow_etcd(3)
    try:
        net = cl.network("soak", "10.102.0.0/22")
        # These live through the whole run: Cluster.run's default of an hour is what ended the
        # first 60-minute run's server at 3,600 s (and with it the last cycle's echo).
        lifetime = f"sleep {int(DURATION) + 3600}"
        server = cl.run("h1", "soak-server", net, lifetime)
        server_ip = cl.ip(server, net)
        clients = [cl.run(h, f"soak-ping-{h}", net, lifetime) for h in ("h2", "h3")]
        keys0, _ = _etcd_size(cl, tb)
        count = int(DURATION / PING_INTERVAL)
        pings: dict[str, str] = {}

        def ping(client: Any) -> None:
            pings[client.name] = cl.sh(client, f"ping -q -c {count} -i {PING_INTERVAL} -W 1 {server_ip}", False)[1]

        traffic = [threading.Thread(target=ping, args=(c,)) for c in clients]
        for t in traffic:
            t.start()
        start = time.monotonic()
        gaps: list[tuple[str, float, float]] = []  # planned: (what, from, to) in seconds from start
        failures: list[tuple[float, str, str]] = []
        samples: dict[str, list[tuple[int, float, int]]] = {h: [] for h in hosts}
        sizes: list[tuple[float, int]] = []
        events = [(DURATION / 3, "h2's driver restarted"), (2 * DURATION / 3, "etcd leader moved")]
        cycles, n, next_sample = 0, 0, 0.0
        while (now := time.monotonic() - start) < DURATION:
            if events and now >= events[0][0]:
                what = events.pop(0)[1]
                begun = time.monotonic() - start
                if what.startswith("h2"):
                    tb.stop_driver("h2")
                    tb.start_driver("h2")
                else:
                    leader = tb.etcd_leader()
                    target = next(m["ID"] for m in tb.etcd_members() if m["ID"] != leader)
                    tb.move_etcd_leader(target)
                    assert tb.etcd_leader() == target
                gaps.append((what, begun, time.monotonic() - start))
            if now >= next_sample:
                for h in hosts:
                    u = driver_usage(tb, h)
                    samples[h].append((u.pid, u.rss_mib, u.fds))
                sizes.append((now, _etcd_size(cl, tb)[1]))
                next_sample = now + max(5.0, DURATION / 60)
            host, name, began = hosts[n % 3], f"soak-{n}", time.time()
            n += 1
            try:  # a new container reaches the server (across hosts, or on h1 itself), then goes
                c = cl.run(host, name, net)
                cl.sh(c, f"ping -c 1 -W 2 {server_ip}")
                cl.remove(c)
                cycles += 1
            except (docker.errors.APIError, AssertionError) as e:
                failures.append((time.monotonic() - start, name, str(e)[:300], began))
                with contextlib.suppress(docker.errors.NotFound):
                    cl.dk[host].containers.get(name).remove(force=True)
                cl.containers[:] = [x for x in cl.containers if x.name != name]
            time.sleep(max(0.0, CHURN_PERIOD - (time.monotonic() - start - now)))
        for t in traffic:
            t.join(DURATION + 60)
        keys1, _ = _etcd_size(cl, tb)
    finally:
        tb.shrink_etcd()
    # The figures first (reported also when a check below fails), then the checks.
    unplanned = [f for f in failures if not any(a <= f[0] <= b + GAP for _, a, b in gaps)]
    received = {name: out.split(" packets received")[0].rsplit(", ", 1)[-1] for name, out in pings.items()}
    flat = {}
    for h in hosts:
        last_pid = samples[h][-1][0]
        own = [s for s in samples[h] if s[0] == last_pid]  # h2's: since its restart
        flat[h] = (_flat([s[1] for s in own]), _flat([float(s[2]) for s in own]))
    half = [size for t, size in sizes if t < DURATION / 2], [size for t, size in sizes if t >= DURATION / 2]
    kib = 1 << 10
    planned = "; ".join(f"{w} at {a:.0f}-{b:.0f} s" for w, a, b in gaps)
    rss = ", ".join(f"{h} {v[0][0]:.0f}->{v[0][1]:.0f}" for h, v in flat.items())
    fds = ", ".join(f"{h} {v[1][0]:.0f}->{v[1][1]:.0f}" for h, v in flat.items())
    size = f"{sizes[0][1] / kib:.0f} -> {sizes[-1][1] / kib:.0f} KiB (max {max(s for _, s in sizes) / kib:.0f})"
    report(
        f"soak {DURATION / 60:.1f} min, 3 hosts: {cycles} containers made, reached and removed (one per"
        f" {CHURN_PERIOD:.0f} s), {len(failures)} failed, {len(unplanned)} outside the planned gaps ({planned});"
        f" pings h2/h3 -> h1: {count} each, received {', '.join(received.values())}; driver RSS MiB, first half"
        f" -> second: {rss}; fds {fds}; etcd keys {keys0} -> {keys1}, size in use {size}"
        + ("" if DURATION >= COMPACTED_AFTER else "; size bound checked only on runs of 30 min or more")
    )
    assert not unplanned, (unplanned, gaps, _logs_around(tb, hosts, unplanned[0][3]))
    assert all(f"{count} packets transmitted, {count} packets received" in out for out in pings.values()), pings
    assert keys1 == keys0, (keys0, keys1)
    for h, (rss_h, fds_h) in flat.items():
        assert rss_h[1] <= rss_h[0] * 1.05 and fds_h[1] <= fds_h[0] * 1.05, (h, rss_h, fds_h)
    if DURATION >= COMPACTED_AFTER:
        assert max(half[1]) <= max(half[0]) * 1.1, sizes
