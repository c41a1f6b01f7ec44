"""The fast path: compile bpf/ with bcc, pin its maps, attach its tc programs, write its caches.

Programs (bpf/bpf_lxc.c, bpf/bpf_nic.c, bpf/bpf_tun.c) are compiled at driver start with this host's
constants. Maps are pinned under the per-host pin directory, in a subdirectory named for
their layout, so a restarted driver of the same version adopts them (and the programs still
attached keep forwarding while it is down). Filters are attached with pyroute2 to a clsact
qdisc under the project's own priority and handle, and replaced in place; nobody else's
qdisc or filter is touched.
Where bcc, kernel headers or the kernel cannot load the programs, `load()` logs one line
and returns False: the driver then runs the slow path only, still correct (but without the
veth programs' anti-spoofing). With the fast path switched off the programs still load and
guard the container veths; only the fast path itself stays off.
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import log, memory
from ..config import Config
from ..control.model import VXLAN_OVERHEAD, version_of
from ..errors import BackendError
from .cgroup import Links
from .overlay import ENCRYPTED_VXLAN_PORT, VXLAN_PORT

_log = log.get("datapath")
DEFAULTS = Config()  # the configurable map sizes have their defaults there
# (host, vni) pairs; service VIPs, and sockets translated to a task, on one host
FIXED_SIZES = {"LB_VIP_MAX": 4096, "LB_REVNAT_MAX": 65536}
LB_SLOTS = 1024  # tasks of one service a host balances over (bpf/lib/common.h: two halves of this)
LB_BACKEND_MAX = 65536  # backend slots of all services together
# The socket load balancer's programs (bpf/bpf_sock.c) and the cgroup hook of each (bcc's names).
SOCK_HOOKS = {
    "sock_connect4": "CGROUP_INET4_CONNECT",
    "sock_connect6": "CGROUP_INET6_CONNECT",
    "sock_sendmsg4": "CGROUP_UDP4_SENDMSG",
    "sock_sendmsg6": "CGROUP_UDP6_SENDMSG",
    "sock_recvmsg4": "CGROUP_UDP4_RECVMSG",
    "sock_recvmsg6": "CGROUP_UDP6_RECVMSG",
    "sock_getpeername4": "CGROUP_INET4_GETPEERNAME",
    "sock_getpeername6": "CGROUP_INET6_GETPEERNAME",
}
LAYOUT_HEADERS = ("common.h", "maps.h", "stats.h")  # what the pinned maps' layout is made of
FASTPATH_MARK = 0x584D0001  # "XM" 0001: what the fast path encapsulated
FILTER_PRIO, FILTER_HANDLE = 0x584D, 1
INGRESS, EGRESS = "ffff:fff2", "ffff:fff3"


def default_bpf_src() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bpf")


def source(path: str, seen: set[str] | None = None) -> str:
    """The file with its local `#include "..."` lines expanded.

    bcc rewrites map calls (`m.lookup(...)`) only in the main file it compiles, so the
    shared headers are pasted in rather than left to the preprocessor.
    """
    seen = set() if seen is None else seen
    root = os.path.dirname(path)

    def include(m: re.Match[str]) -> str:
        name = os.path.normpath(os.path.join(root, m.group(1)))
        if name in seen:
            return ""
        seen.add(name)
        return source(name, seen)

    with open(path) as f:
        return re.sub(r'^#include "([^"]+)"[ \t]*$', include, f.read(), flags=re.M)


def stat_names(bpf_src: str) -> list[str]:
    """Counter names, in index order, from the enum in bpf/lib/stats.h (one source of truth)."""
    with open(os.path.join(bpf_src, "lib", "stats.h")) as f:
        body = re.search(r"enum xmasq_stat \{(.*?)\};", f.read(), re.S)
    names = re.findall(r"STAT_(\w+),", body.group(1) if body else "")
    return [n.lower() for n in names if n != "MAX"]


def _be32(ip: str) -> int:
    """An IPv4 address as the u32 that holds its network-order bytes in memory."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def _ip(be32: int) -> str:
    return str(ipaddress.IPv4Address(be32.to_bytes(4, "little")))


def _addr(ip: str) -> Any:
    """A container's address, IPv4 or IPv6, as the maps' keys hold it (bpf/lib/common.h ADDR_LEN):
    IPv6, or IPv4 mapped (::ffff:a.b.c.d)."""
    parsed = ipaddress.ip_address(ip)
    packed = (ipaddress.IPv6Address(f"::ffff:{parsed}") if parsed.version == 4 else parsed).packed
    return (ctypes.c_ubyte * 16)(*packed)


def _addr_text(raw: Any) -> str:
    ip = ipaddress.IPv6Address(bytes(raw))
    return str(ip.ipv4_mapped or ip)


def _endpoint_text(raw: Any, be16: int) -> str:
    """address:port, [address]:port for IPv6."""
    text = _addr_text(raw)
    return f"[{text}]:{_port(be16)}" if ":" in text else f"{text}:{_port(be16)}"


def _mac(text: str) -> Any:
    return (ctypes.c_ubyte * 6)(*bytes.fromhex(text.replace(":", "")))


def _mac_text(raw: Any) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


class Datapath:
    def __init__(
        self,
        pin_dir: str,
        nic: str,
        bpf_src: str = "",
        enabled: bool = True,
        sizes: dict[str, int] | None = None,
    ):
        self.pin_dir = pin_dir
        self.nic = nic
        self.bpf_src = bpf_src or default_bpf_src()
        self.enabled = enabled
        self.sizes = {
            **FIXED_SIZES,
            "LB_SLOTS": LB_SLOTS,
            "LB_BACKEND_MAX": LB_BACKEND_MAX,
            "FLOW_MAX": DEFAULTS.flow_max,
            "REMOTE_MAX": DEFAULTS.remote_max,
            "LOCAL_MAX": DEFAULTS.local_max,
            "TUNNEL_MAX": DEFAULTS.tunnel_max,
            **(sizes or {}),
        }
        self.stat_names: list[str] = []
        self.loaded = False
        self.reason = "not loaded"
        self._lock = threading.Lock()
        self._fns: dict[str, Any] = {}
        self._maps: Any = None
        self.lb_reason = "not loaded"  # why service VIPs are not balanced, or "loaded"
        self._links = Links(os.path.join(pin_dir, "lb"))
        self._links_ours = False  # the pinned links run this process's programs
        self._sock_hooks: dict[str, tuple[int, int]] = {}  # program: (fd, attach type)

    # -- load -------------------------------------------------------------
    def load(self) -> bool:
        """Compile, load and pin; True if the programs run. With the fast path disabled they
        still load, for anti-spoofing on the container veths, but the NIC hooks stay off."""
        try:
            self._load()
        except Exception as e:  # bcc raises plain Exception; any failure means: slow path only
            self.reason = _reason(e)
            _log.warning("eBPF unavailable; slow path only, without anti-spoofing", reason=self.reason)
            return False
        self.loaded = True
        self.reason = "loaded" if self.enabled else "disabled by configuration (anti-spoofing only)"
        _log.info("eBPF loaded", pin_dir=self.pin_dir, nic=self.nic, fastpath=self.enabled)
        return True

    def _load(self) -> None:
        from bcc import BPF  # Debian's python3-bpfcc; absent -> ImportError -> slow path

        mount_bpffs()
        maps_dir = os.path.join(self.pin_dir, "v" + self._layout())
        os.makedirs(maps_dir, exist_ok=True)
        cflags = [
            f'-DPIN_DIR="{maps_dir}"',
            f"-DVXLAN_PORT={VXLAN_PORT}",
            f"-DENCRYPTED_VXLAN_PORT={ENCRYPTED_VXLAN_PORT}",
            f"-DOUTER_LEN={VXLAN_OVERHEAD}",
            f"-DFASTPATH_MARK={FASTPATH_MARK:#x}",
            *(f"-D{k}={v}" for k, v in self.sizes.items()),
        ]
        objects = {}
        programs = {
            "bpf_lxc.c": ("from_container", "to_container"),
            "bpf_nic.c": ("to_nic", "from_nic"),
            "bpf_tun.c": ("to_tun", "from_tun"),
        }
        for name, progs in programs.items():
            obj = BPF(text=source(os.path.join(self.bpf_src, name)), cflags=cflags)
            objects[name] = obj
            for prog in progs:
                self._fns[prog] = obj.load_func(prog, BPF.SCHED_CLS)
        self._load_sock(BPF, cflags, objects)
        self._objects = objects  # keep them: bcc closes the programs' fds when they go
        memory.give_back()  # what LLVM freed after compiling
        self._maps = objects["bpf_lxc.c"]
        self.stat_names = stat_names(self.bpf_src)
        if self.enabled:
            self._attach(self.nic, ("from_nic", INGRESS), ("to_nic", EGRESS))
        else:
            self._detach(self.nic)
        self._forget_other_layouts(maps_dir)

    def _load_sock(self, bpf: Any, cflags: list[str], objects: dict[str, Any]) -> None:
        """The socket load balancer: without it (a kernel too old for a hook) the fast path still
        runs, and service VIPs are not answered."""
        from bcc import BPFAttachType

        try:
            obj = bpf(text=source(os.path.join(self.bpf_src, "bpf_sock.c")), cflags=cflags)
            for prog, hook in SOCK_HOOKS.items():
                kind = getattr(BPFAttachType, hook)
                self._sock_hooks[prog] = (obj.load_func(prog, bpf.CGROUP_SOCK_ADDR, attach_type=kind).fd, kind)
        except Exception as e:
            self._lb_unavailable(_reason(e))
            return
        objects["bpf_sock.c"] = obj
        self.lb_reason = "loaded"

    @staticmethod
    def _detach(ifname: str) -> None:
        """Remove the project's filters from one interface (a fast path left attached by an
        earlier run would otherwise keep forwarding)."""
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=ifname):
                for parent in (INGRESS, EGRESS):
                    try:
                        ipr.tc("del-filter", "bpf", index, FILTER_HANDLE, parent=parent, prio=FILTER_PRIO)
                    except NetlinkError as e:
                        if e.code not in (2, 22):  # ENOENT / EINVAL: none of ours there
                            raise

    def _layout(self) -> str:
        """A name for the maps' layout. bcc opens a pinned map of another size or layout without
        complaint, so maps of another version are never reused: they live in another directory."""
        digest = hashlib.sha256(repr(sorted(self.sizes.items())).encode() + str(VXLAN_OVERHEAD).encode())
        for header in LAYOUT_HEADERS:
            with open(os.path.join(self.bpf_src, "lib", header), "rb") as f:
                digest.update(f.read())
        return digest.hexdigest()[:12]

    def _forget_other_layouts(self, keep: str) -> None:
        """Unpin an older version's maps (its programs were just replaced; the control plane
        refills the endpoints, tunnels and flows re-learn)."""
        for name in os.listdir(self.pin_dir):
            path = os.path.join(self.pin_dir, name)
            if path != keep and name.startswith("v") and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                _log.info("unpinned maps of another layout", path=path)

    def _attach(self, ifname: str, *hooks: tuple[str, str]) -> int:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise BackendError(f"cannot attach fast path: no interface {ifname}")
            index = found[0]
            try:
                ipr.tc("add", "clsact", index)
            except NetlinkError as e:
                if e.code != 17:  # EEXIST: someone's (or our earlier) clsact is reused, never replaced
                    raise
            for prog, parent in hooks:
                fn = self._fns[prog]
                ipr.tc(
                    "replace-filter",
                    "bpf",
                    index,
                    FILTER_HANDLE,
                    fd=fn.fd,
                    name=f"xmasq_{prog}",
                    parent=parent,
                    prio=FILTER_PRIO,
                    classid=1,
                    direct_action=True,
                )
        return index

    def attach_tunnel(self, ifname: str) -> None:
        """The WireGuard device is (again) up: learn on it; headers learned on an earlier device of
        the tunnel are forgotten (their flows take the slow path, through the new one, and re-learn)."""
        if not (self.loaded and self.enabled):
            return
        with self._lock:
            index = self._attach(ifname, ("from_tun", INGRESS), ("to_tun", EGRESS))
            self._forget_tunnels(lambda _, t: t.encrypted and t.ifindex != index)
        _log.info("eBPF on the WireGuard device", ifname=ifname, ifindex=index)

    def detach_tunnel(self) -> None:
        """The WireGuard device went: the headers learned on it are forgotten, so that its flows take
        the slow path (dropped and counted there) instead of redirects to a device that is gone
        (dropped by the kernel, uncounted)."""
        if not self.loaded:
            return
        with self._lock:
            self._forget_tunnels(lambda _, t: t.encrypted)

    def _forget_tunnels(self, which: Callable[[Any, Any], bool]) -> None:
        """Learned headers (key, entry) that `which` picks are dropped (under the lock)."""
        tunnels = self._maps["tunnels"]
        for k in [k for k, v in tunnels.items() if which(k, v)]:
            tunnels.pop(k, None)

    # -- local endpoints --------------------------------------------------
    def add_local(self, ifname: str, vni: int, ips: list[str], mac: str, fast: bool = True) -> None:
        """Guard the endpoint's veth against spoofing (`ips`: its IPv4 address, then its IPv6 one if it
        has one); with `fast` (its network's switch, and the global one) its flows may also take the
        fast path."""
        if not self.loaded:
            return
        fast = fast and self.enabled
        ip, ip6 = ips[0], next((a for a in ips[1:] if version_of(a) == 6), None)
        with self._lock:
            index = self._attach(ifname, ("from_container", INGRESS), ("to_container", EGRESS))
            local, by_if = self._maps["local_eps"], self._maps["lxc_by_ifindex"]
            leaf = by_if.Leaf(vni, _be32(ip), _mac(mac), int(fast))
            if ip6:
                leaf.ip6 = _addr(ip6)
            try:
                for addr in ips:
                    local[local.Key(vni, _addr(addr))] = local.Leaf(index, _mac(mac))
                by_if[by_if.Key(index)] = leaf
            except Exception:  # bcc: "Could not update table": full (the keys are this endpoint's own)
                for addr in ips:
                    local.pop(local.Key(vni, _addr(addr)), None)
                size = self.sizes["LOCAL_MAX"]
                raise BackendError(f"eBPF: the table of this host's endpoints is full ({size}): raise XMASQ_LOCAL_MAX")
        _log.info("eBPF endpoint", vni=vni, ip=ip, ip6=ip6, ifname=ifname, ifindex=index, fastpath=fast)

    def remove_local(self, vni: int, ip: str) -> None:
        """The endpoint of (IPv4) address `ip`, with its IPv6 address if it has one."""
        if not self.loaded:
            return
        with self._lock:
            local, by_if = self._maps["local_eps"], self._maps["lxc_by_ifindex"]
            ips = {ip}
            entry = local.get(local.Key(vni, _addr(ip)))
            if entry is not None:
                info = by_if.get(by_if.Key(entry.ifindex))
                if info is not None and any(info.ip6):
                    ips.add(_addr_text(info.ip6))
                by_if.pop(by_if.Key(entry.ifindex), None)
            for addr in ips:
                local.pop(local.Key(vni, _addr(addr)), None)
            # Both sides: a same-host peer's flows to these addresses must not reach a container
            # that reuses them.
            raw = {bytes(_addr(addr)) for addr in ips}
            self._drop_flows(lambda k: k.vni == vni and not raw.isdisjoint((bytes(k.local), bytes(k.remote))))

    # -- remote endpoints (from etcd) -------------------------------------
    def set_remote_all(
        self, by_vni: dict[int, dict[str, tuple[str, str]]], encrypted: frozenset[int] = frozenset()
    ) -> int:
        """Make the remote endpoints exactly `by_vni` {vni: {ip: (mac, host ip)}} (a VNI not in it
        keeps none; those of `encrypted` VNIs go only through the tunnel), in one scan of the map;
        returns the entries changed."""
        if not self.loaded:
            return 0
        with self._lock:
            remote = self._maps["remote_eps"]
            have: dict[int, dict[str, tuple[str, str]]] = {}
            for k, v in remote.items():
                have.setdefault(k.vni, {})[_addr_text(k.ip)] = ("", _ip(v.host))
        return sum(
            self.update_remote(vni, have.get(vni, {}), by_vni.get(vni, {}), vni in encrypted)
            for vni in have.keys() | by_vni.keys()
        )

    def update_remote(
        self, vni: int, gone: dict[str, tuple[str, str]], new: dict[str, tuple[str, str]], encrypted: bool = False
    ) -> int:
        """Remove the remote endpoints `gone`, then add `new` {ip: (mac, host ip)} (of an `encrypted`
        network: marked so, only the tunnel carries them); flows of removed or moved endpoints are
        dropped so they re-learn through the slow path. What is both gone and new with the same
        host is left as it is. Returns the entries changed."""
        if not self.loaded:
            return 0
        new = new if self.enabled else {}
        with self._lock:
            remote = self._maps["remote_eps"]
            moved = {ip for ip, (_, host) in gone.items() if new.get(ip, ("", ""))[1] != host}
            added = {ip: host for ip, (_, host) in new.items() if ip in moved or ip not in gone}
            for ip in moved - added.keys():
                remote.pop(remote.Key(vni, _addr(ip)), None)
            if moved:
                addrs = {bytes(_addr(ip)) for ip in moved}
                self._drop_flows(lambda k: k.vni == vni and bytes(k.remote) in addrs)
            refused = 0
            for ip, host in added.items():
                try:
                    remote[remote.Key(vni, _addr(ip))] = remote.Leaf(_be32(host), int(encrypted))
                except Exception:  # bcc: "Could not update table" (full): the slow path carries these
                    refused += 1
            if refused:
                _log.warning(
                    "remote endpoint cache full: endpoints left to the slow path (raise XMASQ_REMOTE_MAX)",
                    vni=vni,
                    refused=refused,
                    size=self.sizes["REMOTE_MAX"],
                )
            return len(moved | added.keys()) - refused

    def forget_learned(self) -> None:
        """Forget every learned header (this host's underlay address changed: they have the old
        one as source); flows re-learn through the slow path."""
        if not self.loaded:
            return
        with self._lock:
            self._forget_tunnels(lambda k, v: True)
        _log.info("eBPF: learned outer headers forgotten (underlay address changed)")

    def prune_tunnels(self, live_hosts: set[str]) -> None:
        """Forget the learned headers of hosts that left the cluster."""
        if not self.loaded:
            return
        with self._lock:
            self._forget_tunnels(lambda k, _: _ip(k.host) not in live_hosts)

    def _drop_flows(self, match: Any) -> int:
        flows = self._maps["flows"]
        doomed = [k for k in flows if match(k)]
        for k in doomed:
            flows.pop(k, None)
        return len(doomed)

    def flush_flows(self) -> int:
        """Forget every flow (after a firewall change): flows re-learn through the slow path."""
        if not self.loaded:
            return 0
        with self._lock:
            return self._drop_flows(lambda k: True)

    # -- service VIPs (socket load balancing) ----------------------------
    @property
    def lb_loaded(self) -> bool:
        return self.loaded and self.lb_reason == "loaded"

    def services(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """The VIPs programmed: {vip: (id, backends)}."""
        if not self.lb_loaded:
            return {}
        with self._lock:
            return {vip: (sid, backends) for vip, (sid, _, backends) in self._lb_view().items()}

    def _lb_view(self) -> dict[str, tuple[int, int, tuple[str, ...]]]:
        vips, slots = self._maps["lb_vips"], self._maps["lb_backends"]
        view = {}
        for k, v in vips.items():
            found = (slots.get(slots.Key(v.id, v.base + i)) for i in range(v.count))
            view[_addr_text(k.addr)] = (v.id, v.base, tuple(_addr_text(b.addr) for b in found if b is not None))
        return view

    def set_services(self, table: dict[str, tuple[str, ...]]) -> int:
        """Make the VIPs exactly `table` {vip: its tasks' addresses}; returns the VIPs changed. A
        changed list is written to the other half of the VIP's slots and then switched to in one
        update, so a connect sees the old list or the new one. The programs are attached while
        there is a VIP and detached when the last one goes."""
        if not self.lb_loaded:
            return 0
        with self._lock:
            vips, slots = self._maps["lb_vips"], self._maps["lb_backends"]
            have = self._lb_view()
            changed = 0
            for vip in have.keys() - table.keys():
                sid, base, old = have.pop(vip)
                vips.pop(vips.Key(_addr(vip)), None)
                self._free_slots(sid, base, len(old))
                changed += 1
            used = {sid for sid, _, _ in have.values()}
            for vip, backends in sorted(table.items()):
                if vip in have and have[vip][2] == backends:
                    continue
                if len(backends) > LB_SLOTS:
                    _log.warning("service has more tasks than a VIP balances over", vip=vip, tasks=len(backends))
                    backends = backends[:LB_SLOTS]
                if vip in have:
                    sid, old_base, old = have[vip]
                else:
                    sid, old_base, old = min(set(range(1, len(used) + 2)) - used), LB_SLOTS, ()
                    used.add(sid)
                base = LB_SLOTS - old_base
                for i, ip in enumerate(backends):
                    slots[slots.Key(sid, base + i)] = slots.Leaf(_addr(ip))
                vips[vips.Key(_addr(vip))] = vips.Leaf(sid, len(backends), base)
                self._free_slots(sid, old_base, len(old))
                changed += 1
            try:
                self._attach_sock(bool(table))
            except (OSError, subprocess.SubprocessError) as e:  # no cgroup2 to mount, a kernel without links
                self._lb_unavailable(f"cannot attach to the cgroup2 root: {e}")
        return changed

    def _lb_unavailable(self, reason: str) -> None:
        self.lb_reason = reason
        _log.warning("socket load balancer unavailable: service VIPs are not balanced", reason=reason)

    def _free_slots(self, sid: int, base: int, n: int) -> None:
        slots = self._maps["lb_backends"]
        for i in range(n):
            slots.pop(slots.Key(sid, base + i), None)

    def _attach_sock(self, wanted: bool) -> None:
        if wanted and not self._links_ours:
            self._links.attach(self._sock_hooks)
            self._links_ours = True
            _log.info("socket load balancer attached", hooks=len(SOCK_HOOKS), pin_dir=self._links.pin_dir)
        elif not wanted and self._links.attached():
            self._links.detach()
            self._links_ours = False
            _log.info("socket load balancer detached (no service VIP left)", pin_dir=self._links.pin_dir)

    # -- operator view ----------------------------------------------------
    def stats(self) -> dict[str, int]:
        if not self.loaded:
            return {}
        table = self._maps["stats"]
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(self.stat_names)}

    def cache(self) -> dict[str, Any]:
        if not self.loaded:
            return {}
        m = self._maps
        return {
            "local": [
                {"vni": k.vni, "ip": _addr_text(k.ip), "ifindex": v.ifindex, "mac": _mac_text(v.mac)}
                for k, v in m["local_eps"].items()
            ],
            "remote": [
                {"vni": k.vni, "ip": _addr_text(k.ip), "host": _ip(v.host), "encrypted": bool(v.encrypted)}
                for k, v in m["remote_eps"].items()
            ],
            "tunnels": [
                {
                    "host": _ip(k.host),
                    "vni": k.vni,
                    "ifindex": v.ifindex,
                    "encrypted": bool(v.encrypted),
                    "header": bytes(v.hdr).hex(),
                }
                for k, v in m["tunnels"].items()
            ],
            "flows": [
                {
                    "vni": k.vni,
                    "proto": k.proto,
                    "local": _endpoint_text(k.local, k.lport),
                    "remote": _endpoint_text(k.remote, k.rport),
                    "seen_out": bool(v.seen_out),
                    "seen_in": bool(v.seen_in),
                    "to": _ip(v.host) if v.host else v.ifindex,  # the remote end's host, or its veth here
                }
                for k, v in m["flows"].items()
            ],
            "services": [
                {"vip": vip, "id": sid, "backends": list(backends)} for vip, (sid, backends) in self.services().items()
            ],
        }


def _reason(e: Exception) -> str:
    """A load failure in one line (bcc's messages end with the line that says what failed)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1] if text else e}"


def _port(be16: int) -> int:
    return int.from_bytes(be16.to_bytes(2, "little"), "big")


def mount_bpffs() -> None:
    """Pinned maps need bpffs at /sys/fs/bpf; mount it where the host has not."""
    with open("/proc/mounts") as f:
        if any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f):
            return
    subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True, capture_output=True, timeout=10)
    _log.info("mounted bpffs", path="/sys/fs/bpf")
