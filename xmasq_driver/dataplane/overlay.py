"""The slow path in the host network namespace, through netlink (pyroute2).

Per network: bridge `xmbr<vni>` holding the gateway address with a MAC derived from
it (the same on every host, so containers never ARP across hosts for it), and vxlan
`xmvx<vni>` on it (UDP 4789, nolearning, proxy ARP, DF set, no UDP checksum, bound
to the underlay; an encrypted network's on UDP 4790, through WireGuard). Per endpoint: veth
`xmh<id12>` (host end, on the bridge) and `xmc<id12>` (handed to Docker, which moves it into
the container). Flow steering sets how the host end's receive queue spreads what the
container sends over the CPUs (see `steer`). Every operation runs with a deadline and fails
with a BackendError naming it.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import ipaddress
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import log
from ..control.model import Interface, VethState
from ..errors import BackendError

T = TypeVar("T")
VXLAN_PORT = 4789
# Encrypted networks' VXLAN: policy routing sends this port through WireGuard (tunnel.py), so
# their vxlan devices are not bound to the NIC. 4790 is VXLAN-GPE's: xmasq speaks it to no one.
ENCRYPTED_VXLAN_PORT = 4790
NTF_SELF = 0x02  # an FDB entry of the vxlan device itself (with a remote dst), not of the bridge
NTF_MASTER = 0x04  # an FDB entry of the bridge the port belongs to
NUD_PERMANENT = 0x80
NUD_NOARP = 0x40  # "static" in bridge(8) terms
IFA_F_NODAD = 0x02  # the gateway's IPv6 address is usable at once, without duplicate address detection
RFS_SOCK_FLOWS = 32768  # net.core.rps_sock_flow_entries the host is raised to for rfs (never lowered)
RFS_VETH_FLOWS = 1024  # rps_flow_cnt of each container veth for rfs
SOCK_FLOWS_SYSCTL = "/proc/sys/net/core/rps_sock_flow_entries"
OPS_PER_CALL = 2000  # FDB/neighbour operations per netlink call (each call has the deadline)
_log = log.get("overlay")


def mac_for_ip(ip: ipaddress.IPv4Address) -> str:
    """A stable, locally administered MAC for an address (02:58 = 'X')."""
    return "02:58:" + ":".join(f"{b:02x}" for b in ip.packed)


# Every link the driver makes starts with one of these (the firewall and the tests match on them).
BRIDGE_PREFIX, VXLAN_PREFIX, HOST_VETH_PREFIX, CONTAINER_VETH_PREFIX = "xmbr", "xmvx", "xmh", "xmc"


BRIDGE_PORTS = 1023  # the kernel's BR_MAX_PORTS (1024) less port 0, which it never gives out


def bridge_name(vni: int) -> str:
    return f"{BRIDGE_PREFIX}{vni}"


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


def veth_names(endpoint_id: str) -> tuple[str, str]:
    """(host end, container end), both <= 15 characters."""
    return f"{HOST_VETH_PREFIX}{endpoint_id[:12]}", f"{CONTAINER_VETH_PREFIX}{endpoint_id[:12]}"


@dataclass(frozen=True)
class Underlay:
    ifname: str
    index: int
    ip: str
    mtu: int


def rps_mask(cpulist: str) -> str:
    """The rps_cpus bitmap ("ffffffff,ffffffff" groups of 32) of a cpulist such as "0-3,6"."""
    bits = 0
    for part in cpulist.strip().split(","):
        low, _, high = part.partition("-")
        for cpu in range(int(low), int(high or low) + 1):
            bits |= 1 << cpu
    words = [f"{(bits >> shift) & 0xFFFFFFFF:08x}" for shift in range(0, max(bits.bit_length(), 1), 32)]
    return ",".join(reversed(words))


class Overlay:
    def __init__(self, underlay_interface: str = "", timeout: float = 5.0, steer_flows: str = "rfs"):
        self._underlay_ifname = underlay_interface
        self._steer_flows = steer_flows
        self._sock_flows_checked = False
        self._underlay: Underlay | None = None
        self._timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="netlink")

    def _run(self, what: str, fn: Callable[[IPRoute], T], timeout: float = 0.0) -> T:
        """Run fn with a fresh IPRoute (not thread-safe to share; and one kept per thread grew the
        process by ~2 KiB per use with pyroute2 0.9.7, measured) under the deadline (`timeout`,
        else the configured one)."""
        timeout = timeout or self._timeout

        def call() -> T:
            with IPRoute() as ipr:
                return fn(ipr)

        try:
            future = self._pool.submit(call)
        except RuntimeError:  # the interpreter is exiting (the driver stops) under a running pass
            raise BackendError(f"netlink: {what}: the driver is stopping")
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise BackendError(f"netlink: {what} timed out after {timeout}s")
        except NetlinkError as e:
            raise BackendError(f"netlink: {what} failed: {e.args[-1] if e.args else e}")

    # -- underlay ---------------------------------------------------------
    def underlay(self) -> Underlay:
        if self._underlay is None:
            self._underlay = self._run("find underlay interface", self._find_underlay)
            _log.info("underlay", interface=self._underlay.ifname, ip=self._underlay.ip, mtu=self._underlay.mtu)
        return self._underlay

    def renumbered_underlay(self) -> str | None:
        """The underlay read again: its new IPv4 address if it changed (then every vxlan device
        sends from it), else None. An interface without an address for the moment (a lease being
        renewed) keeps the old one until it has one."""
        old = self.underlay()
        try:
            new = self._run("find underlay interface", self._find_underlay)
        except BackendError:
            return None
        if new.ip == old.ip:
            self._underlay = new
            return None

        def repoint(ipr: IPRoute) -> None:
            for link in ipr.get_links():
                name = link.get("IFLA_IFNAME") or ""
                if name.startswith(VXLAN_PREFIX):
                    vni = int(name[len(VXLAN_PREFIX) :])
                    ipr.link("set", index=link["index"], kind="vxlan", vxlan_id=vni, vxlan_local=new.ip)

        self._run("re-point the vxlan devices at the new underlay address", repoint)
        self._underlay = new  # only now: a failure above is tried again at the next read
        _log.warning("underlay address changed", interface=new.ifname, old=old.ip, new=new.ip)
        return new.ip

    def _find_underlay(self, ipr: IPRoute) -> Underlay:
        if self._underlay_ifname:
            found = ipr.link_lookup(ifname=self._underlay_ifname)
            if not found:
                raise BackendError(f"underlay interface {self._underlay_ifname} does not exist")
            index = found[0]
        else:
            routes = [r for r in ipr.get_routes(family=2, table=254) if r.get("dst_len") == 0]
            if not routes:
                raise BackendError("no default route: set XMASQ_UNDERLAY_INTERFACE")
            index = routes[0].get("oif")
        link = ipr.get_links(index)[0]
        addrs = [a.get("IFA_ADDRESS") for a in ipr.get_addr(family=2, index=index)]
        if not addrs:
            raise BackendError(f"underlay interface {link.get('IFLA_IFNAME')} has no IPv4 address")
        return Underlay(link.get("IFLA_IFNAME"), index, addrs[0], link.get("IFLA_MTU"))

    # -- networks ---------------------------------------------------------
    def ensure_network(self, vni: int, gateways: list[Interface], mtu: int, encrypted: bool = False) -> None:
        """The network's bridge (a gateway address on it per IP version, IPv4's first) and vxlan
        device (an encrypted network's on ENCRYPTED_VXLAN_PORT, routed by the tunnel's rules)."""
        ul = self.underlay()
        path = {"vxlan_port": ENCRYPTED_VXLAN_PORT} if encrypted else {"vxlan_port": VXLAN_PORT, "vxlan_link": ul.index}
        br, vx = bridge_name(vni), vxlan_name(vni)
        gw_mac = mac_for_ip(ipaddress.IPv4Address(gateways[0].ip))
        ipv6 = any(gw.version == 6 for gw in gateways)

        def ensure(ipr: IPRoute) -> None:
            if not ipr.link_lookup(ifname=br):
                # No multicast snooping: a Neighbour Solicitation for a remote container must reach
                # the vxlan port, whose proxy answers it, whatever groups local containers joined.
                ipr.link("add", ifname=br, kind="bridge", address=gw_mac, mtu=mtu, br_mcast_snooping=0)
            br_index = ipr.link_lookup(ifname=br)[0]
            if ipv6:
                _write_kernel_setting(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6", "0")
            have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=br_index)}
            for gw in gateways:
                if (str(gw.ip), gw.network.prefixlen) not in have:
                    flags = {"flags": IFA_F_NODAD} if gw.version == 6 else {}
                    ipr.addr("add", index=br_index, address=str(gw.ip), prefixlen=gw.network.prefixlen, **flags)
            if not ipr.link_lookup(ifname=vx):
                ipr.link(
                    "add",
                    ifname=vx,
                    kind="vxlan",
                    vxlan_id=vni,
                    vxlan_learning=0,
                    vxlan_proxy=1,
                    vxlan_df=1,
                    vxlan_udp_csum=0,
                    vxlan_local=ul.ip,
                    **path,
                    mtu=mtu,
                )
            ipr.link("set", index=ipr.link_lookup(ifname=vx)[0], master=br_index, state="up")
            ipr.link("set", index=br_index, state="up")

        self._run(f"create network devices for vni {vni}", ensure)
        if ipv6:
            self._enable_ipv6_forwarding()
        # Published ports are reachable from 127.0.0.1: DNAT'd loopback-sourced
        # packets may leave through this bridge (then masqueraded).
        _write_kernel_setting(f"/proc/sys/net/ipv4/conf/{br}/route_localnet", "1")

    def _enable_ipv6_forwarding(self) -> None:
        """Routing IPv6 off the network needs it host-wide, as Docker's bridge driver sets it; a host
        that learns its own IPv6 route from Router Advertisements then ignores them unless accept_ra=2."""
        path = "/proc/sys/net/ipv6/conf/all/forwarding"
        with open(path) as f:
            if f.read().strip() == "1":
                return
        _write_kernel_setting(path, "1")
        with open(f"/proc/sys/net/ipv6/conf/{self.underlay().ifname}/accept_ra") as f:
            accept_ra = f.read().strip()
        log_at = _log.warning if accept_ra == "1" else _log.info
        log_at("IPv6 forwarding enabled for an IPv6 network", sysctl=path, underlay_accept_ra=accept_ra)

    def delete_network(self, vni: int) -> None:
        self._run(
            f"delete network devices for vni {vni}", lambda ipr: _delete_links(ipr, vxlan_name(vni), bridge_name(vni))
        )

    def set_peers(self, vni: int, peers: dict[str, tuple[str, str]]) -> int:
        """Make the vxlan device's remote entries exactly `peers` {ip: (mac, host ip)}.

        FDB (mac -> remote host, `self`, permanent) tells vxlan where to tunnel; the
        neighbour entry (ip -> mac) lets it answer ARP locally (proxy). Returns the
        number of entries changed; a missing device (network going away) changes none.
        """
        # A dump reads every entry of the device: its deadline grows with them, as the ops' chunks do.
        budget = max(60.0, self._timeout * (1 + len(peers) / OPS_PER_CALL))
        dump = self._run(f"read peers of vni {vni}", lambda ipr: peer_entries(ipr, vni), budget)
        if dump is None:
            return 0
        fdb, neigh = dump
        want_fdb = {mac: host for mac, host in peers.values()}
        ops: list[_Op] = [("fdb", "del", {"lladdr": m, "dst": h}) for m, h in fdb.items() if m not in want_fdb]
        ops += [("fdb", "replace", {"lladdr": m, "dst": h}) for m, h in want_fdb.items() if fdb.get(m) != h]
        ops += [("neigh", "del", {"dst": ip, "lladdr": m}) for ip, m in neigh.items() if ip not in peers]
        ops += [("neigh", "replace", {"dst": ip, "lladdr": m}) for ip, (m, _) in peers.items() if neigh.get(ip) != m]
        return self._program(vni, ops)

    def update_peers(
        self,
        vni: int,
        gone: dict[str, tuple[str, str]],
        new: dict[str, tuple[str, str]],
        kept: frozenset[tuple[str, str]] = frozenset(),
    ) -> int:
        """Remove the entries `gone` {ip: (mac, host ip)} as programmed, then add or replace `new`:
        a change without a dump of the device's entries. The FDB entry of a peer in `kept` stays:
        another of the endpoint's addresses (IPv4 and IPv6 share its MAC) still needs it. Returns
        the number of entries changed."""
        ops: list[_Op] = []
        for what, entries in (("del", gone), ("replace", new)):
            for ip, (mac, host) in entries.items():
                if what == "replace" or (mac, host) not in kept:
                    ops.append(("fdb", what, {"lladdr": mac, "dst": host}))
                ops.append(("neigh", what, {"dst": ip, "lladdr": mac}))
        return self._program(vni, ops)

    def _program(self, vni: int, ops: list[_Op]) -> int:
        """Apply entry operations in chunks, each under the deadline (100,000 do not fit in one)."""
        changed = 0
        for i in range(0, len(ops), OPS_PER_CALL):
            changed += self._run(
                f"program peers of vni {vni}", functools.partial(_entries, vni=vni, ops=ops[i : i + OPS_PER_CALL])
            )
        return changed

    # -- endpoints --------------------------------------------------------
    def create_veth(self, endpoint_id: str, vni: int, mac: str, mtu: int) -> str:
        """Create the endpoint's veth pair on the network's bridge; returns the container end."""
        host, cont = veth_names(endpoint_id)

        def create(ipr: IPRoute) -> None:
            _delete_links(ipr, host, cont)  # a leftover from a crash is replaced, not reused
            ipr.link("add", ifname=host, kind="veth", mtu=mtu, peer={"ifname": cont, "address": mac, "mtu": mtu})
            br_index = ipr.link_lookup(ifname=bridge_name(vni))
            if not br_index:
                _delete_links(ipr, host)
                raise BackendError(f"bridge {bridge_name(vni)} for vni {vni} is missing")
            host_index = ipr.link_lookup(ifname=host)[0]
            try:
                ipr.link("set", index=host_index, master=br_index[0], state="up")
            except NetlinkError as e:
                if e.code != errno.EXFULL:
                    raise
                _delete_links(ipr, host)
                raise BackendError(
                    f"network of vni {vni} is full on this host: a Linux bridge has at most {BRIDGE_PORTS} ports,"
                    " one of them the vxlan device's (put more containers on another network)"
                ) from None
            # Pin the container's MAC to its port: the bridge must not keep delivering it to
            # the vxlan port after an address moved here from another host (a learned entry
            # would last until it ages out, 300 s).
            ipr.fdb("replace", ifindex=host_index, lladdr=mac, master=br_index[0], state=NUD_NOARP, flags=NTF_MASTER)

        self._run(f"create veth {host}", create)
        return cont

    def steer(self, host: str, mode: str | None = None) -> None:
        """Set how the host end of a container's veth spreads what the container sends over the
        CPUs: `mode`, else the driver's setting. Also run for every endpoint at start, so a
        changed setting reaches the veths made before it.

        A veth queues what the container sends on the backlog of the CPU that sent it; a TCP
        sender that transmits from two CPUs (its process, and softirq on the CPU that took an
        ACK) has its segments processed out of order, and the receiver's SACKs make the sender
        retransmit. rps hashes each flow to one CPU's backlog (in order, but a hand-off when the
        hash picks the other CPU); rfs (Receive Flow Steering) puts it on the CPU recorded for
        the flow, which the eBPF programs make the sending socket's own, and moves it only once
        the old CPU has drained it; off leaves it where it was sent (docs/design-notes.md).
        """
        mode = mode or self._steer_flows
        try:
            if mode == "rfs":
                self._ensure_sock_flows()
            cpus = "0"
            if mode == "rps":
                with open("/sys/devices/system/cpu/online") as f:
                    cpus = rps_mask(f.read())
            queue = f"/sys/class/net/{host}/queues/rx-0"
            _write_kernel_setting(f"{queue}/rps_cpus", cpus)
            _write_kernel_setting(f"{queue}/rps_flow_cnt", str(RFS_VETH_FLOWS if mode == "rfs" else 0))
        except (OSError, BackendError) as e:  # a slower path, not a broken one: the endpoint works
            _log.warning("flow steering not set", link=host, mode=mode, error=e)

    def _ensure_sock_flows(self) -> None:
        if self._sock_flows_checked:
            return
        self._sock_flows_checked = True
        try:
            ensure_sock_flow_table()
        except FileNotFoundError:
            _log.warning(
                "flow steering: rps_sock_flow_entries is not visible in this network namespace;"
                " rfs steers only where the host sets it",
                sysctl=SOCK_FLOWS_SYSCTL,
            )
        except (OSError, BackendError) as e:  # without it RFS leaves each packet where it was sent
            _log.warning("flow steering: cannot raise the socket flow table", sysctl=SOCK_FLOWS_SYSCTL, error=e)

    def veth_state(self, endpoint_id: str) -> VethState:
        """Where the endpoint's veth is ("orphan": Docker moves the container end back when a
        container stops, and asks the driver to delete the endpoint: a driver that was down then
        never heard it)."""
        host, cont = veth_names(endpoint_id)

        def look(ipr: IPRoute) -> VethState:
            if not ipr.link_lookup(ifname=host):
                return "gone"
            return "orphan" if ipr.link_lookup(ifname=cont) else "container"

        return self._run(f"look up veth {host}", look)

    def delete_veth(self, endpoint_id: str) -> None:
        host, cont = veth_names(endpoint_id)
        self._run(f"delete veth {host}", lambda ipr: _delete_links(ipr, host, cont))


def _delete_links(ipr: IPRoute, *names: str) -> None:
    for name in names:
        for index in ipr.link_lookup(ifname=name):
            try:
                ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code != 19:  # ENODEV: gone with its peer already
                    raise


# An FDB or neighbour entry operation on a vxlan device: (table, "del" | "replace", attributes).
_Op = tuple[str, str, dict[str, str]]


def peer_entries(ipr: IPRoute, vni: int) -> tuple[dict[str, str], dict[str, str]] | None:
    """The vxlan device's remote FDB entries {mac: host ip} and neighbours {ip: mac} (None: no
    device); `ipr` may be another namespace's (the scale harness reads the kernel with it)."""
    found = ipr.link_lookup(ifname=vxlan_name(vni))
    if not found:
        return None
    fdb = {
        n.get("NDA_LLADDR"): n.get("NDA_DST")
        for n in ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=found[0])
        if n.get("NDA_DST")
    }
    # Only the permanent entries are the driver's: a deleted entry that a reader (`ip neigh get`,
    # a dump) held at that moment stays behind as FAILED until the kernel's garbage collection.
    neigh = {
        n.get("NDA_DST"): n.get("NDA_LLADDR")
        for family in (socket.AF_INET, socket.AF_INET6)
        for n in ipr.get_neighbours(family=family, ifindex=found[0])
        if n["state"] & NUD_PERMANENT
    }
    return fdb, neigh


def _entries(ipr: IPRoute, vni: int, ops: list[_Op]) -> int:
    """Apply ops to the vni's vxlan device; a delete of what is gone already is what was asked."""
    found = ipr.link_lookup(ifname=vxlan_name(vni))
    if not found:
        return 0
    changed = 0
    for table, op, attrs in ops:
        extra: dict[str, int] = {"state": NUD_PERMANENT} if op == "replace" else {}
        try:
            if table == "fdb":
                ipr.fdb(op, ifindex=found[0], flags=NTF_SELF, **attrs, **extra)
            else:
                family = socket.AF_INET6 if ":" in attrs["dst"] else socket.AF_INET
                ipr.neigh(op, ifindex=found[0], family=family, **attrs, **extra)
        except NetlinkError as e:
            if op != "del" or e.code != errno.ENOENT:
                raise
            continue
        changed += 1
    return changed


def ensure_sock_flow_table() -> None:
    """RFS needs the host's socket flow table: one per host, seen only in the initial network
    namespace (FileNotFoundError elsewhere). Raised to RFS_SOCK_FLOWS if smaller, never lowered."""
    with open(SOCK_FLOWS_SYSCTL) as f:
        entries = int(f.read())
    if entries < RFS_SOCK_FLOWS:
        _write_kernel_setting(SOCK_FLOWS_SYSCTL, str(RFS_SOCK_FLOWS))
        _log.info(
            "flow steering: raised the socket flow table", sysctl=SOCK_FLOWS_SYSCTL, old=entries, new=RFS_SOCK_FLOWS
        )


# A managed plugin's /proc/sys and /sys are read-only; with CAP_SYS_ADMIN they can be made
# writable in the plugin's own mount namespace (the host's mounts keep their flags). /proc/sys is
# a read-only bind mount (its own flag changes); /sys a sysfs mounted read-only (the file system's).
_REMOUNT = {"/proc/sys": "remount,bind,rw", "/sys": "remount,rw"}


def _write_kernel_setting(path: str, value: str, retry: bool = True) -> None:
    """Write a /proc/sys or /sys file."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        mount = "/proc/sys" if path.startswith("/proc/sys/") else "/sys"
        if e.errno == errno.EROFS and retry and _remount_rw(mount):
            return _write_kernel_setting(path, value, retry=False)
        raise BackendError(f"cannot set {path}: {e.strerror}")


def _remount_rw(mount: str) -> bool:
    proc = subprocess.run(["mount", "-o", _REMOUNT[mount], mount], capture_output=True, text=True, timeout=10)
    if proc.returncode == 0:
        _log.info("remounted read-write (it was read-only: running as a managed plugin?)", mount=mount)
    return proc.returncode == 0
