"""WireGuard between hosts: what carries an encrypted network's VXLAN.

One device per host (`wireguard_device`), made with this host's first encrypted network and
removed with its last: the kernel's where `ip link add type wireguard` works, else userspace
wireguard-go on a TUN device (its own process, detached, so that like the pinned maps it outlives
a driver restart). `wg` configures either. The driver checks every second that the device is
there and makes it again, configured, if it went (the userspace process died).

Keys: the host's key pair is made on first start; the private key stays in the state directory
(mode 0600, read only by `wg`), the public key and the port go into the host record. The peers
are the live hosts that published a key: AllowedIPs their underlay address, Endpoint that
address and their port.

Routing, fail closed: an encrypted network's vxlan device sends to ENCRYPTED_VXLAN_PORT; two
rules look UDP to and from that port up in ROUTE_TABLE, which holds a route per peer through the
device and an unreachable default. Before the device is up, after it went, or to a host whose key
is not known, a VXLAN packet finds no route and is dropped (the vxlan device's tx errors), never
sent in plaintext; the firewall drops that port on any other interface too, both ways (counted).
Decrypted packets arrive on the device from the peer's underlay address, which the reverse
lookup (sport rule) finds through the device, so strict reverse-path filtering passes them.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

from .. import log
from ..control.model import WIREGUARD_OVERHEAD, TunnelPeer
from ..errors import BackendError, DriverError
from . import tools
from .overlay import ENCRYPTED_VXLAN_PORT, Underlay, vxlan_name

ROUTE_TABLE = 5182  # the policy routing table of encrypted VXLAN (and the rules' priority)
# Seconds between keepalives to an idle peer. Setting it makes WireGuard send one at once, so a
# host that learns a peer's new key (a rotation, a restart) shakes hands with it at once instead
# of waiting for the peer's own retry (5 s): measured under iperf3, a rotation's gap fell from 4 s
# to no 0.25 s interval without data.
KEEPALIVE = 25
KERNEL, USERSPACE = "kernel", "userspace"
INSTALL = (
    "install wireguard-tools and either load the kernel's wireguard module or install wireguard-go"
    " (Debian: apt-get install wireguard-tools wireguard-go)"
)
_log = log.get("tunnel")


class EncryptionRules(Protocol):
    def add_encryption(self, device: str, port: int) -> None: ...
    def remove_encryption(self) -> None: ...
    def encryption_drops(self) -> dict[str, int]: ...


@dataclass
class TunnelCounters:
    restarts: int = 0  # times the device was found gone and made again
    rotations: int = 0  # key replacements


class Tunnel:
    def __init__(
        self,
        device: str,
        port: int,
        key_file: str,
        mode: str,
        underlay: Callable[[], Underlay],
        firewall: EncryptionRules,
        on_up: Callable[[str], None] = lambda device: None,
        on_down: Callable[[], None] = lambda: None,
        timeout: float = 10.0,
    ):
        """`on_up(device)`: the device is up (made, made again, or taken over): the fast path learns on it.
        `on_down()`: it went: the fast path stops sending into it (its flows take the slow path, whose
        unreachable route drops and counts them until the device is back)."""
        self.device, self.port, self.key_file = device, port, key_file
        self.underlay, self.firewall, self.timeout = underlay, firewall, timeout
        self.on_up, self.on_down = on_up, on_down
        self.counters = TunnelCounters()
        self.users: set[int] = set()  # VNIs of this host's encrypted networks
        self._peers: dict[str, TunnelPeer] | None = None  # host -> peer, as last asked (None: not yet)
        self._lock = threading.RLock()
        self.kind, self.reason = self._detect(mode)
        self.public_key = self._load_key() if self.kind else ""

    # -- what this host can run ---------------------------------------------
    def _detect(self, mode: str) -> tuple[str, str]:
        if mode == "off":
            return "", "encryption is switched off (XMASQ_WIREGUARD=off)"
        if not shutil.which("wg"):
            return "", f"no WireGuard: the wg command is missing; {INSTALL}"
        if mode in ("auto", KERNEL):
            found = self._existing_kind()
            if found:
                return found, ""
            if self._cmd("ip", "link", "add", self.device, "type", "wireguard", check=False).returncode == 0:
                self._cmd("ip", "link", "del", self.device, check=False)
                return KERNEL, ""
            if mode == KERNEL:
                return "", f"no WireGuard in this kernel (XMASQ_WIREGUARD=kernel); {INSTALL}"
        if not shutil.which("wireguard-go"):
            return "", f"no WireGuard: the kernel has no wireguard module and wireguard-go is missing; {INSTALL}"
        if not os.path.exists("/dev/net/tun"):
            return "", "no WireGuard: wireguard-go needs /dev/net/tun (a managed plugin gets it from its config)"
        return USERSPACE, ""

    def _existing_kind(self) -> str:
        """The kind of a device of ours made before this process started ("" if none)."""
        proc = self._cmd("ip", "-d", "-j", "link", "show", "dev", self.device, check=False)
        if proc.returncode != 0:
            return ""
        kind = (json.loads(proc.stdout)[0].get("linkinfo") or {}).get("info_kind", "")
        return {"wireguard": KERNEL, "tun": USERSPACE}.get(kind, "")

    def require(self, what: str = "create an encrypted network") -> None:
        """DriverError naming what to install, if this host cannot encrypt."""
        if not self.kind:
            raise DriverError(f"cannot {what}: {self.reason}")

    # -- keys ---------------------------------------------------------------
    def _load_key(self) -> str:
        """This host's public key; the private one is made on first start."""
        if not os.path.exists(self.key_file):
            self._write_key(self._cmd("wg", "genkey").stdout.strip())
            _log.info("WireGuard key pair made", key_file=self.key_file)
        return self._public_of(self.key_file)

    def _public_of(self, path: str) -> str:
        with open(path) as f:
            return self._cmd("wg", "pubkey", stdin=f.read()).stdout.strip()

    def _write_key(self, private: str) -> None:
        """Replace the key file at once (a crash leaves the old key or the new one, never half)."""
        folder = os.path.dirname(self.key_file) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".wireguard-")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        os.replace(tmp, self.key_file)

    def rotate(self) -> str:
        """A new key pair; the device (if up) takes it at once. Returns the new public key, which the
        caller publishes: peers follow from etcd."""
        self.require("rotate the WireGuard key")
        with self._lock:
            self._write_key(self._cmd("wg", "genkey").stdout.strip())
            self.public_key = self._public_of(self.key_file)
            if self.users and self._exists():
                self._cmd("wg", "set", self.device, "private-key", self.key_file)
            self.counters.rotations += 1
        _log.info("WireGuard key rotated", device=self.device, public_key=self.public_key)
        return self.public_key

    # -- the device, while an encrypted network uses it -----------------------
    def attach(self, vni: int) -> None:
        """An encrypted network of this host: the device and its routing are up before its vxlan
        device exists."""
        self.require()
        with self._lock:
            self._fence()
            if not self._exists() or not self.users:
                self._up()
            self.users.add(vni)

    def detach(self, vni: int) -> None:
        """The network's vxlan device is gone; the last one takes the device and its routing."""
        with self._lock:
            self.users.discard(vni)
            if self.users:
                return
            self.firewall.remove_encryption()
            if self._exists():
                self._cmd("ip", "link", "del", self.device)  # wireguard-go exits with its device
            for rule in self._rules().values():
                self._cmd("ip", "rule", "del", *rule, check=False)
            self._cmd("ip", "route", "flush", "table", str(ROUTE_TABLE), check=False)
            _log.info("WireGuard device removed (no encrypted network left)", device=self.device)

    def _fence(self) -> None:
        """The rules and the unreachable default that keep encrypted VXLAN off every other path."""
        ours = [r for r in self._json("ip", "-j", "rule", "show") if r.get("priority") == ROUTE_TABLE]
        present = {d for r in ours for d in ("sport", "dport") if r.get(d) == ENCRYPTED_VXLAN_PORT}
        for direction, rule in self._rules().items():
            if direction not in present:
                self._cmd("ip", "rule", "add", *rule)
        self._cmd("ip", "route", "replace", "unreachable", "default", "table", str(ROUTE_TABLE))
        self.firewall.add_encryption(self.device, self.port)

    @staticmethod
    def _rules() -> dict[str, list[str]]:
        """UDP to the port (what this host sends) and from it (the reverse lookup of what it receives)."""
        table = str(ROUTE_TABLE)
        return {
            d: ["pref", table, "ipproto", "udp", d, str(ENCRYPTED_VXLAN_PORT), "lookup", table]
            for d in ("dport", "sport")
        }

    def _up(self) -> None:
        """Make (or take over) the device, give it the key, the port and every peer asked for."""
        if not self._exists():
            if self.kind == KERNEL:
                self._cmd("ip", "link", "add", self.device, "type", "wireguard")
            else:
                env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}  # its output: /dev/null
                self._cmd("wireguard-go", self.device, env=env, new_session=True)
            self._wait_answering()
        self._cmd("wg", "set", self.device, "private-key", self.key_file, "listen-port", str(self.port))
        mtu = self.underlay().mtu - WIREGUARD_OVERHEAD
        self._cmd("ip", "link", "set", "dev", self.device, "mtu", str(mtu), "up")
        self.on_up(self.device)
        if self._peers is not None:  # else a device taken over at start keeps its peers until asked
            self._program(self._peers, None)
        _log.info("WireGuard device up", device=self.device, kind=self.kind, port=self.port, mtu=mtu)

    def _wait_answering(self) -> None:
        """wireguard-go answers on its control socket a moment after it starts."""
        deadline = time.monotonic() + self.timeout
        while self._cmd("wg", "show", self.device, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise BackendError(f"WireGuard device {self.device} did not come up in {self.timeout}s")
            time.sleep(0.05)

    def _exists(self) -> bool:
        try:
            socket.if_nametoindex(self.device)
            return True
        except OSError:
            return False

    def check(self) -> bool:
        """Make the device again if it went while encrypted networks need it; True if it did."""
        with self._lock:
            if not self.users or self._exists():
                return False
            _log.warning("WireGuard device gone (its process died?): making it again", device=self.device)
            self.on_down()
            self.counters.restarts += 1
            self._fence()
            self._up()
            return True

    def watch(self, stop: threading.Event, interval: float = 1.0) -> None:
        """`check` as soon as a link goes (netlink: a wireguard-go that died took its device with it;
        until the check, the fast path's redirects to the gone device are dropped uncounted) and
        every `interval` seconds anyway (a missed event), until `stop` is set."""
        try:
            events = IPRoute()
            events.bind(groups=RTMGRP_LINK)
        except OSError as e:
            events = None
            _log.warning("no netlink link events: the WireGuard device is checked every interval", error=e)
        try:
            while not stop.is_set():
                if events is None:
                    stop.wait(interval)
                elif select.select([events], [], [], interval)[0]:
                    events.get()  # which link changed does not matter: the check looks
                try:
                    self.check()
                except (BackendError, OSError) as e:
                    _log.error("WireGuard device not repaired; encrypted traffic stays dropped", error=e)
        finally:
            if events is not None:
                events.close()

    # -- peers --------------------------------------------------------------
    def set_peers(self, peers: dict[str, TunnelPeer]) -> int:
        """Make the peers exactly `peers` {host: peer}; returns how many changed. Kept for when the
        device comes (it is programmed only while up)."""
        with self._lock:
            old, self._peers = self._peers, dict(peers)
            if not self.users or not self._exists():
                return 0
            return self._program(peers, old)

    def _program(self, peers: dict[str, TunnelPeer], old: dict[str, TunnelPeer] | None) -> int:
        """One `wg set` for every change from `old` (None: what the device has), removals first: a
        new key takes over its host's address."""
        have = {peer.key: peer for peer in old.values()} if old is not None else self._device_peers()
        want = {peer.key: peer for peer in peers.values()}
        args: list[str] = []
        for key in have.keys() - want.keys():
            args += ["peer", key, "remove"]
        for key, peer in want.items():
            if have.get(key) != peer:
                args += ["peer", key, "endpoint", f"{peer.ip}:{peer.port}", "allowed-ips", f"{peer.ip}/32"]
                args += ["persistent-keepalive", str(KEEPALIVE)]
        if args:
            self._cmd("wg", "set", self.device, *args)
        table = str(ROUTE_TABLE)
        routed = {
            r["dst"] for r in self._json("ip", "-j", "route", "show", "table", table) if r.get("dev") == self.device
        }
        for ip in routed - {p.ip for p in want.values()}:
            self._cmd("ip", "route", "del", f"{ip}/32", "table", table, check=False)
        for ip in {p.ip for p in want.values()} - routed:
            self._cmd("ip", "route", "replace", f"{ip}/32", "dev", self.device, "table", table)
        changed = args.count("peer")
        if changed:
            _log.info("WireGuard peers programmed", device=self.device, peers=len(want), changed=changed)
        return changed

    def _device_peers(self) -> dict[str, TunnelPeer]:
        """The device's peers as it has them ({} if it has none yet)."""
        found = {}
        for line in self._cmd("wg", "show", self.device, "dump").stdout.splitlines()[1:]:
            key, _, endpoint, allowed, *_ = line.split("\t")
            ip, _, port = endpoint.rpartition(":")
            if ip and allowed.endswith("/32"):
                found[key] = TunnelPeer(ip, key, int(port))
        return found

    # -- operator view --------------------------------------------------------
    def view(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "device": self.device,
            "port": self.port,
            "public_key": self.public_key,
            "up": bool(self.users) and self._exists(),
            "networks": len(self.users),
            "peers": len(self._peers or {}),
            **asdict(self.counters),
        }

    def drops(self) -> dict[str, int]:
        """Encrypted networks' packets dropped rather than sent or taken in plaintext."""
        unroutable = 0
        for vni in list(self.users):
            try:
                with open(f"/sys/class/net/{vxlan_name(vni)}/statistics/tx_errors") as f:
                    unroutable += int(f.read())
            except OSError:
                pass
        drops = self.firewall.encryption_drops() if self.users else {}
        return {"encrypted_unroutable": unroutable, **drops}

    # -- commands -------------------------------------------------------------
    def _cmd(
        self,
        *argv: str,
        check: bool = True,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        return tools.run(
            argv, self.timeout, check=check, stdin=stdin, env=env, new_session=new_session, missing=INSTALL
        )

    def _json(self, *argv: str) -> list[dict[str, Any]]:
        out = self._cmd(*argv).stdout.strip()
        return json.loads(out) if out else []
