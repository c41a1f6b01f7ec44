"""iptables rules of the slow path, in the driver's own chains.

  filter FORWARD -> XMASQ-FORWARD   (right after DOCKER-USER, so users' rules still apply)
  nat POSTROUTING -> XMASQ-POSTROUTING   (masquerade outbound traffic of non-internal networks)
  nat PREROUTING/OUTPUT (dst-type LOCAL) -> XMASQ-DNAT   (published ports)
  XMASQ-FORWARD -> XMASQ-ISOLATE   (traffic leaving a network's bridge for another xmasq bridge is dropped:
                                    networks are isolated from each other, as Docker's bridge networks are)
The VXLAN port (the kernel's vxlan device accepts any source, so frames could be injected
into a network):
  filter INPUT -> XMASQ-VXLAN-IN    VXLAN with one of our VNIs is accepted only from cluster hosts
  XMASQ-FORWARD -> XMASQ-VXLAN-FWD  nothing forwarded (a container's packet, which would leave
                                    masqueraded as this host) may reach a cluster host's VXLAN port
The cluster hosts are the ipset `xmasq-hosts` (hash:ip), which both chains match: one rule each
whatever the cluster's size, and the whole set replaced at once (`ipset restore`, swap).
While an encrypted network is on the host (tunnel.py), owner `xmasq:wg`:
  filter INPUT -> XMASQ-ENC-IN      encrypted VXLAN only from the WireGuard device (plaintext
                                    arriving on the NIC is dropped); WireGuard only from cluster hosts
  filter OUTPUT -> XMASQ-ENC-OUT    encrypted VXLAN leaves only through the WireGuard device
Their DROP rules' packet counters are what `xmasq stats` reports.
An IPv6 network (--ipv6) has the same FORWARD, isolation and masquerade rules for its IPv6
subnet in ip6tables, in chains of the same names, made when the first one is created (a host
without IPv6 networks needs no ip6tables); the VXLAN chains stay IPv4 only, as the underlay is.
Each rule carries a comment naming its owner (`xmasq:net:<vni>` or `xmasq:ep:<id12>`),
so an owner's rules are removed exactly, and a restart re-adds only what is missing.
"""

from __future__ import annotations

import shlex
import subprocess

from .. import log
from ..control.model import PortMapping, version_of
from ..errors import BackendError
from . import tools
from .overlay import BRIDGE_PREFIX, ENCRYPTED_VXLAN_PORT, VXLAN_PORT

FORWARD, ISOLATE, POSTROUTING, DNAT = "XMASQ-FORWARD", "XMASQ-ISOLATE", "XMASQ-POSTROUTING", "XMASQ-DNAT"
VXLAN_IN, VXLAN_FWD = "XMASQ-VXLAN-IN", "XMASQ-VXLAN-FWD"
ENC_IN, ENC_OUT = "XMASQ-ENC-IN", "XMASQ-ENC-OUT"
HOST_OWNER, ENC_OWNER = "xmasq:host", "xmasq:wg"
HOSTS_SET = "xmasq-hosts"  # the live cluster hosts' underlay addresses
Chains = dict[int, tuple[tuple[str, str], ...]]  # (table, chain) per IP version
# Chains that hold owned rules, per IP version
_CHAINS: Chains = {
    4: (("filter", FORWARD), ("filter", VXLAN_IN), ("filter", VXLAN_FWD), ("nat", POSTROUTING), ("nat", DNAT)),
    6: (("filter", FORWARD), ("nat", POSTROUTING)),
}
# Made with encryption, gone with it; their jumps are in INPUT and OUTPUT
_ENC_CHAINS = (("filter", ENC_IN), ("filter", ENC_OUT))
_OWNED_CHAINS: Chains = {4: (*_CHAINS[4], *_ENC_CHAINS, ("filter", "INPUT"), ("filter", "OUTPUT")), 6: _CHAINS[6]}
# Where an endpoint's published ports are (IPv4 only): what its removal lists, 2 iptables calls
# instead of 9 (a DeleteEndpoint took 46 ms, most of it listing chains)
_PORT_CHAINS: Chains = {4: (("nat", DNAT), ("filter", FORWARD))}
_BINARY = {4: "iptables", 6: "ip6tables"}
_log = log.get("firewall")


def net_owner(vni: int) -> str:
    return f"xmasq:net:{vni}"


def ep_owner(endpoint_id: str) -> str:
    return f"xmasq:ep:{endpoint_id[:12]}"


class Firewall:
    def __init__(self, timeout: float = 10.0):
        self._timeout = timeout

    def _iptables(self, *args: str, check: bool = True, v: int = 4) -> subprocess.CompletedProcess[str]:
        """iptables, or with `v` 6 ip6tables (waiting up to the timeout for the xtables lock)."""
        return tools.run([_BINARY[v], "-w", str(int(self._timeout)), *args], self._timeout + 2, check=check)

    def _ipset(self, *args: str, script: str = "") -> None:
        tools.run(["ipset", *args], self._timeout, stdin=script)

    def _exists(self, table: str, chain: str, rule: list[str], v: int = 4) -> bool:
        return self._iptables("-t", table, "-C", chain, *rule, check=False, v=v).returncode == 0

    def _ensure(self, table: str, chain: str, rule: list[str], position: int | None = None, v: int = 4) -> None:
        if self._exists(table, chain, rule, v):
            return
        if position is None:
            self._iptables("-t", table, "-A", chain, *rule, v=v)
        else:
            self._iptables("-t", table, "-I", chain, str(position), *rule, v=v)

    def _ensure_chains(self, v: int) -> None:
        """The driver's chains of IP version `v`, isolation, and the jumps to FORWARD (after
        DOCKER-USER, so users' rules still apply) and POSTROUTING."""
        for table, chain in (*_CHAINS[v], ("filter", ISOLATE)):
            self._iptables("-t", table, "-N", chain, check=False, v=v)
        self._ensure("filter", ISOLATE, ["-o", BRIDGE_PREFIX + "+", "-j", "DROP"], v=v)
        if not self._exists("filter", "FORWARD", ["-j", FORWARD], v):
            rules = self._iptables("-t", "filter", "-S", "FORWARD", v=v).stdout.splitlines()
            appended = [r for r in rules if r.startswith("-A FORWARD")]
            after_user = next((i + 1 for i, r in enumerate(appended) if r == "-A FORWARD -j DOCKER-USER"), 0)
            self._ensure("filter", "FORWARD", ["-j", FORWARD], position=after_user + 1, v=v)
        self._ensure("nat", "POSTROUTING", ["-j", POSTROUTING], position=1, v=v)

    def ensure_base(self) -> None:
        """Create the driver's chains and the jumps to them; idempotent."""
        self._ensure_chains(4)
        self._ipset("create", HOSTS_SET, "hash:ip", "-exist")
        hosts = ["-m", "comment", "--comment", HOST_OWNER]
        for _, table, line in self.owned_rules(HOST_OWNER):  # an older version's rule per host
            if "--match-set" not in line:
                self._iptables("-t", table, "-D", *shlex.split(line)[1:], check=False)
        self._ensure("filter", VXLAN_IN, ["-m", "set", "--match-set", HOSTS_SET, "src", *hosts, "-j", "RETURN"], 1)
        self._ensure("filter", VXLAN_FWD, ["-m", "set", "--match-set", HOSTS_SET, "dst", *hosts, "-j", "DROP"])
        vxlan = ["-p", "udp", "--dport", str(VXLAN_PORT)]
        self._ensure("filter", "INPUT", [*vxlan, "-j", VXLAN_IN], position=1)
        # Not what is bridged to a container: only what leaves for another host is checked.
        self._ensure("filter", FORWARD, [*vxlan, "!", "-o", BRIDGE_PREFIX + "+", "-j", VXLAN_FWD], position=1)
        local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT]
        self._ensure("nat", "PREROUTING", local, position=1)
        self._ensure("nat", "OUTPUT", local, position=1)

    # -- per network ------------------------------------------------------
    def add_network(self, vni: int, bridge: str, subnets: list[str], internal: bool) -> None:
        """A network's rules for each of its subnets (IPv4's, and IPv6's if it has one)."""
        tag = ["-m", "comment", "--comment", net_owner(vni)]
        # VXLAN of this VNI (the 24 bits after the UDP header and 4 flag bytes) from anyone
        # set_cluster_hosts did not let through.
        vni_match = ["-m", "u32", "--u32", f"0x0>>0x16&0x3c@0xc>>0x8={vni:#x}"]
        self._ensure("filter", VXLAN_IN, [*vni_match, *tag, "-j", "DROP"])
        for subnet in subnets:
            v = version_of(subnet)
            if v == 6:
                self._ensure_chains(6)
            self._network_rules(v, bridge, subnet, internal, tag)
        # Published ports reached from 127.0.0.1 leave with the gateway address.
        if not internal:
            self._ensure("nat", POSTROUTING, ["-s", "127.0.0.0/8", "-o", bridge, *tag, "-j", "MASQUERADE"])

    def _network_rules(self, v: int, bridge: str, subnet: str, internal: bool, tag: list[str]) -> None:
        """What a network's traffic of IP version `v` may do: the same for IPv4 and IPv6."""
        if internal:
            # No path out of or into the network except between its own members.
            self._ensure("filter", FORWARD, ["-i", bridge, "!", "-o", bridge, *tag, "-j", "DROP"], v=v)
            self._ensure("filter", FORWARD, ["-o", bridge, "!", "-i", bridge, *tag, "-j", "DROP"], v=v)
        else:
            self._ensure("filter", FORWARD, ["-i", bridge, "!", "-o", bridge, *tag, "-j", ISOLATE], v=v)
            established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
            self._ensure("filter", FORWARD, ["-o", bridge, *established, *tag, "-j", "ACCEPT"], v=v)
            self._ensure("filter", FORWARD, ["-i", bridge, "!", "-o", bridge, *tag, "-j", "ACCEPT"], v=v)
            # Only what leaves for a non-xmasq interface: bridged traffic also passes POSTROUTING
            # (br_netfilter), and another network may use the same subnet.
            masquerade = ["-s", subnet, "!", "-o", BRIDGE_PREFIX + "+", *tag, "-j", "MASQUERADE"]
            self._ensure("nat", POSTROUTING, masquerade, v=v)
        self._ensure("filter", FORWARD, ["-i", bridge, "-o", bridge, *tag, "-j", "ACCEPT"], v=v)

    def remove_network(self, vni: int) -> None:
        self._remove_owned(net_owner(vni))

    # -- cluster hosts ----------------------------------------------------
    def set_cluster_hosts(self, hosts: set[str]) -> None:
        """VXLAN is let in from exactly these underlay addresses, and nothing forwarded reaches them."""
        new = f"{HOSTS_SET}-new"
        lines = [f"create {new} hash:ip -exist", f"flush {new}", *(f"add {new} {ip}" for ip in sorted(hosts))]
        self._ipset("restore", script="\n".join([*lines, f"swap {new} {HOSTS_SET}", f"destroy {new}"]) + "\n")
        _log.info("cluster hosts set for VXLAN", hosts=len(hosts))

    # -- encryption -------------------------------------------------------
    def add_encryption(self, device: str, port: int) -> None:
        """Encrypted VXLAN in and out only through `device`; WireGuard's `port` only from cluster hosts."""
        tag = ["-m", "comment", "--comment", ENC_OWNER]
        enc = ["-p", "udp", "--dport", str(ENCRYPTED_VXLAN_PORT)]
        wg = ["-p", "udp", "--dport", str(port)]
        for _, chain in _ENC_CHAINS:
            self._iptables("-t", "filter", "-N", chain, check=False)
        self._ensure("filter", ENC_IN, [*enc, "-i", device, *tag, "-j", "RETURN"])
        self._ensure("filter", ENC_IN, [*enc, *tag, "-j", "DROP"])
        self._ensure("filter", ENC_IN, [*wg, "-m", "set", "--match-set", HOSTS_SET, "src", *tag, "-j", "RETURN"])
        self._ensure("filter", ENC_IN, [*wg, *tag, "-j", "DROP"])
        self._ensure("filter", ENC_OUT, ["-o", device, *tag, "-j", "RETURN"])
        self._ensure("filter", ENC_OUT, [*tag, "-j", "DROP"])
        ports = ["-p", "udp", "-m", "multiport", "--dports", f"{ENCRYPTED_VXLAN_PORT},{port}"]
        self._ensure("filter", "INPUT", [*ports, *tag, "-j", ENC_IN], position=1)
        self._ensure("filter", "OUTPUT", [*enc, *tag, "-j", ENC_OUT], position=1)

    def remove_encryption(self) -> None:
        self._remove_owned(ENC_OWNER)
        for _, chain in _ENC_CHAINS:
            self._iptables("-t", "filter", "-X", chain, check=False)

    def encryption_drops(self) -> dict[str, int]:
        """Packets the encryption rules dropped: plaintext out or in, WireGuard from unknown hosts."""
        found = {"plaintext_out_dropped": 0, "plaintext_in_dropped": 0, "wireguard_unknown_source": 0}
        for chain in (ENC_IN, ENC_OUT):
            for line in self._iptables("-t", "filter", "-S", chain, "-v", check=False).stdout.splitlines():
                args = shlex.split(line)
                if "DROP" not in args or "-c" not in args:
                    continue
                packets = int(args[args.index("-c") + 1])
                if chain == ENC_OUT:
                    found["plaintext_out_dropped"] += packets
                elif str(ENCRYPTED_VXLAN_PORT) in args:
                    found["plaintext_in_dropped"] += packets
                else:
                    found["wireguard_unknown_source"] += packets
        return found

    # -- per endpoint -----------------------------------------------------
    def add_ports(self, endpoint_id: str, bridge: str, ports: list[PortMapping]) -> None:
        tag = ["-m", "comment", "--comment", ep_owner(endpoint_id)]
        for p in ports:
            match = ["-p", p.proto] + (["-d", p.host_ip] if p.host_ip else [])
            to = f"{p.container_ip}:{p.port}"
            self._ensure("nat", DNAT, [*match, "--dport", str(p.host_port), *tag, "-j", "DNAT", "--to-destination", to])
            self._ensure(
                "filter",
                FORWARD,
                ["-d", p.container_ip, "-o", bridge, "-p", p.proto, "--dport", str(p.port), *tag, "-j", "ACCEPT"],
                position=1,
            )

    def remove_ports(self, endpoint_id: str) -> None:
        self._remove_owned(ep_owner(endpoint_id), _PORT_CHAINS)

    # -- listing ----------------------------------------------------------
    def owned_rules(self, owner: str | None = None, where: Chains = _OWNED_CHAINS) -> list[tuple[int, str, str]]:
        """(IP version, table, rule) for every rule of `owner`, or of any xmasq owner when None, in
        the chains `where` lists (by default every chain that holds owned rules)."""
        found = []
        for v, chains in where.items():
            for table, chain in chains:
                proc = self._iptables("-t", table, "-S", chain, check=False, v=v)
                # 1: no such chain (not made on this host), so nothing in it. Anything else (4:
                # the xtables lock not had in time) must not pass for "no rules": a removal
                # would then leave them behind.
                if proc.returncode not in (0, 1):
                    raise BackendError(f"{_BINARY[v]} -t {table} -S {chain}: {proc.stderr.strip()}")
                for line in proc.stdout.splitlines():
                    args = shlex.split(line)
                    comment = args[args.index("--comment") + 1] if "--comment" in args else ""
                    if comment == owner or (owner is None and comment.startswith("xmasq:")):
                        found.append((v, table, line))
        return found

    def _remove_owned(self, owner: str, where: Chains = _OWNED_CHAINS) -> None:
        for v, table, line in self.owned_rules(owner, where):
            self._iptables("-t", table, "-D", *shlex.split(line)[1:], check=False, v=v)
        _log.debug("rules removed", owner=owner)
