"""The benchmark's tables: what a reader compares (the measurements themselves run in test_bench)."""

from __future__ import annotations

from bench import profile, report
from bench import run as bench


def test_ratios_show_the_medians_and_the_range_within_rounds() -> None:
    # The machine drifts: round 2 is slow for both; within each round xmasq-on leads by 1.1-1.3x.
    samples = {
        "host": [{"rr": 100.0, "retr": 10.0}, {"rr": 50.0, "retr": 0.0}, {"rr": 90.0, "retr": 30.0}],
        "xmasq-on": [{"rr": 120.0, "retr": 0.0}, {"rr": 65.0, "retr": 0.0}, {"rr": 99.0, "retr": 0.0}],
    }
    lines = report.table(samples, ("host", "xmasq-on")).splitlines()
    assert lines[0] == "| metric | host | xmasq-on | on / host |"
    assert lines[2] == "| rr | 90 (50-100) | 99 (65-120) | 1.10 (1.10-1.30) |"
    assert lines[3] == "| retr | 10 (0-30) | 0 (0-0) | 0.00 (0.00-0.00) |"  # rounds with no baseline left out


def test_a_baseline_of_zero_gives_no_ratio() -> None:
    samples = {"xmasq-off": [{"retr": 0.0}] * 2, "xmasq-on": [{"retr": 3.0}] * 2}
    assert report.table(samples, ("xmasq-off", "xmasq-on")).splitlines()[2] == "| retr | 0 (0-0) | 3 (3-3) | - |"


def test_xmasq_is_compared_with_every_alternative_measured() -> None:
    one = [{"rr": 1.0}]
    samples = {"host": one, "overlay": one, "xmasq-on": one, "xmasq-nosteer": one}
    head = report.table(samples, report.CROSS).splitlines()[0]
    ratios = "on / host | on / overlay | on / xmasq-nosteer"
    assert head == f"| metric | host | overlay | xmasq-on | xmasq-nosteer | {ratios} |"
    same = {"bridge": one, "xmasq-on-local": one}
    assert report.table(same, report.SAME).splitlines()[0] == "| metric | bridge | xmasq-on-local | on / bridge |"


def test_the_chart_shows_how_many_times_better_xmasq_is_whatever_the_metric() -> None:
    samples = {
        "overlay": [{"rr_per_s": 100.0, "rr_p99_us": 40.0}, {"rr_per_s": 80.0, "rr_p99_us": 50.0}],
        "xmasq-on": [{"rr_per_s": 150.0, "rr_p99_us": 20.0}, {"rr_per_s": 160.0, "rr_p99_us": 20.0}],
    }
    assert report.advantage(samples, "xmasq-on", "overlay", "rr_per_s") == (155 / 90, 1.5, 2.0)
    assert report.advantage(samples, "xmasq-on", "overlay", "rr_p99_us") == (45 / 20, 2.0, 2.5)  # lower is better


def test_applications_report_their_own_rates() -> None:
    assert bench.parse_redis("GET: 23809.52 requests per second, p50=0.039 msec\n") == 23809.52
    memaslap = "Run time: 1.0s Ops: 21510 TPS: 21468 Net_rate: 1.8M/s\n"
    assert bench.parse_memaslap("Get Statistics\nRun time: 1.0s Ops: 9 TPS: 9\nTotal Statistics\n" + memaslap) == 21468


PERF_REPORT = """
# Overhead       Samples  Command          Symbol
    40.00%          4000  swapper          [k] pv_native_safe_halt
    10.00%          1000  sockperf         [k] finish_task_switch.isra.0
     5.00%           500  sockperf         [k] bpf_prog_9867017c2da7ae62_from_container
     4.00%           400  swapper          [k] nf_conntrack_in
     3.00%           300  sockperf         [.] __libc_sendto
     2.00%           200  dockerd          [k] nf_hook_slow
     1.00%           100  ksoftirqd/1      [k] veth_xmit
     0.50%            50  sockperf         [k] memcpy_orig
"""


def test_the_profile_counts_only_the_measurement_and_never_idle() -> None:
    assert profile.parse_perf(PERF_REPORT) == {
        "scheduling": 1000,
        "eBPF and tc": 500,
        "netfilter": 400,
        "user space": 300,
        "devices and queues": 100,
        "other kernel": 50,
    }


def test_the_profile_gives_microseconds_per_round_trip_and_their_difference() -> None:
    # FREQ samples are 1 s of CPU: 2 s of CPU over 2 s at 1000 round trips/s is 1000 us each.
    assert profile.us_per_round_trip({"netfilter": 2 * profile.FREQ}, 2, 1000) == {"netfilter": 1000.0}
    host = [(100.0, {"netfilter": 4.0, "other kernel": 10.0}), (90.0, {"netfilter": 5.0, "other kernel": 10.0})]
    fast = [
        (80.0, {"netfilter": 4.0, "eBPF and tc": 2.0, "other kernel": 11.0}),
        (81.0, {"netfilter": 5.0, "eBPF and tc": 3.0, "other kernel": 12.0}),
    ]
    pairs = [{"host": h, "xmasq-on": x} for h, x in zip(host, fast, strict=True)]
    lines = profile.breakdown_table(pairs).splitlines()
    assert lines[:3] == [
        "| area | host | xmasq-on | difference |",
        "|---|---|---|---|",
        "| eBPF and tc | 0.00 | 2.50 | +2.50 |",
    ]
    assert "| other kernel | 10.00 | 11.50 | +1.50 |" in lines
    assert "| total | 14.5 | 18.5 | +4.0 |" in lines
    assert lines[-1] == "round trips/s, xmasq-on / host per pair: 0.80 0.90"


def test_the_targets_say_what_was_met_and_where_the_default_lost_to_no_steering() -> None:
    rounds = [{"http_rps": 120.0, "tcp_gbps": 9.0}, {"http_rps": 130.0, "tcp_gbps": 9.5}]
    samples = {
        "host": [{"http_rps": 100.0, "tcp_gbps": 10.0}] * 2,
        "overlay": [{"http_rps": 100.0, "tcp_gbps": 5.0}] * 2,
        "xmasq-on": rounds,
        "xmasq-nosteer": [{"http_rps": 140.0, "tcp_gbps": 9.0}] * 2,  # http: faster without steering, every round
    }
    lines = report.targets({"pinned": samples}).splitlines()
    assert "| pinned | cross | overlay | http_rps | >= 1.1 | 1.25 (1.20-1.30) | met |" in lines
    assert "| pinned | cross | host | tcp_gbps | >= 0.95 | 0.93 (0.90-0.95) | missed |" in lines
    assert lines[-1] == "Default steering slower than none in every round: pinned xmasq-on: http_rps 0.89 (0.86-0.93)"


def test_the_encrypted_group_sets_xmasq_enc_against_the_bare_tunnel_and_plain_xmasq() -> None:
    samples = {
        "wg-bare": [{"tcp_gbps": 0.9}, {"tcp_gbps": 1.0}],
        "xmasq-on": [{"tcp_gbps": 10.0}] * 2,
        "xmasq-enc": [{"tcp_gbps": 0.81}, {"tcp_gbps": 0.95}],
        "xmasq-enc-off": [{"tcp_gbps": 0.9}] * 2,
    }
    head = report.table(samples, report.ENCRYPTED).splitlines()[0]
    columns = "wg-bare | xmasq-on | xmasq-enc | xmasq-enc-off | on / wg-bare | on / xmasq-on | on / xmasq-enc-off"
    assert head == f"| metric | {columns} |"
    lines = report.targets({"unpinned": samples}).splitlines()
    assert "| unpinned | encrypted | wg-bare | tcp_gbps | >= 0.9 | 0.93 (0.90-0.95) | met |" in lines
    assert "| unpinned | encrypted | xmasq-enc-off | tcp_gbps | >= 1.0 | 0.98 (0.90-1.06) | missed |" in lines


def test_dockers_encrypted_overlay_is_measured_only_where_the_kernel_has_esp(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without ESP the scenario is left out, and the report says why (never a silent gap)."""
    monkeypatch.setattr(bench, "esp_missing", lambda: "no ESP in this kernel")
    assert bench.runnable(("overlay-enc", "xmasq-enc")) == (("xmasq-enc",), {"overlay-enc": "no ESP in this kernel"})
    monkeypatch.setattr(bench, "esp_missing", lambda: "")
    assert bench.runnable(("overlay-enc", "xmasq-enc")) == (("overlay-enc", "xmasq-enc"), {})
    record = {
        "when": "now",
        "rounds": 1,
        "seconds": 1.0,
        "pin": 1,
        "samples": {"unpinned": {"xmasq-enc": [{"tcp_gbps": 0.4}]}},
        "control": {},
        "skipped": {"overlay-enc": "no ESP in this kernel"},
        "machine": {"kernel": "k", "cpus": 2},
    }
    report.write_report(record, str(tmp_path), "t")
    assert "Not measured: overlay-enc: no ESP in this kernel" in (tmp_path / "bench-t.md").read_text()


def test_the_programs_cost_per_packet_is_a_row_per_program_and_workload() -> None:
    programs = {
        "unpinned": {"xmasq-on": {"TCP": {"from_container": 412.4, "to_nic": 70.0}, "UDP rr": {"from_nic": 390.6}}},
        "pinned": {"xmasq-on": {"TCP": {"from_container": 401.0}}},
    }
    assert report.programs_table(programs).splitlines() == [
        "| program | workload | xmasq-on, unpinned | xmasq-on, pinned |",
        "|---|---|---|---|",
        "| from_container | TCP | 412 | 401 |",
        "| from_nic | UDP rr | 391 | - |",
        "| to_nic | TCP | 70 | - |",
    ]


PERF_SCRIPT = """
\tffffffff81a0 __htab_map_lookup_elem+0x40
\tffffffffc0de bpf_prog_6deef7357e7b4530_from_container+0x1a2
\tffffffff81b0 tcf_classify+0x55

\tffffffffc0de bpf_prog_6deef7357e7b4530_from_container+0x80
\tffffffff81b0 tcf_classify+0x55

\tffffffff81c0 pskb_expand_head+0x10
\tffffffff81c4 bpf_skb_adjust_room+0x99
\tffffffffc0df bpf_prog_1122334455667788_from_nic+0x3
\tffffffff81b0 tcf_classify+0x55

\tffffffff81d0 tcp_sendmsg+0x10
\tffffffff81d4 inet_sendmsg+0x99
"""


def test_the_profile_splits_each_programs_samples_by_what_it_called() -> None:
    assert profile.callees(PERF_SCRIPT) == {
        "from_container": {"__htab_map_lookup_elem": 1, "own code": 1},
        "from_nic": {"bpf_skb_adjust_room": 1},  # with all it called in turn
    }  # a sample outside any program counts nowhere
