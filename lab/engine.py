"""Which Docker engine serves the testbed's hosts: the system's, or another Debian release's
docker.io run from a root of that release (scripts/engine.sh builds it) without replacing the
system's. Each dockerd runs in a private mount namespace whose root is that root, where the
testbed's own directories appear at their paths, so sockets, data and plugin sockets are where
the tests and drivers look for them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass

SYSTEM = "system"
ENGINES_DIR = os.environ.get("XMASQ_ENGINES_DIR", "/var/lib/xmasq-engines")  # one root per release
# The engine each Debian release ships (docker.io): what a root of that suite must report.
VERSIONS = {"bookworm": "20.10.", "trixie": "26.1."}
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "engine.sh")
PLUGIN_MANIFEST = os.path.join(os.path.dirname(__file__), "..", "plugin", "config.json")


def machine_paths() -> list[str]:
    """The machine's directories that dockerd hands to what it runs: the kernel's modules (it loads
    br_netfilter and overlay) and each mount source of the managed plugin (plugin/config.json),
    so a plugin of this engine sees this machine's bpffs, headers and TLS files as on a real host
    (the plugin's default sources are made where missing, as scripts/plugin.sh does). Not the Docker
    socket: a testbed host's plugin is given its own host's dockerd (`Testbed.install_plugin`),
    never the machine's."""
    with open(PLUGIN_MANIFEST) as f:
        sources = [m["source"] for m in json.load(f)["mounts"] if m["name"] != "docker"]
    wanted = ["/lib/modules", *sources]
    return [p for i, p in enumerate(wanted) if p not in wanted[:i] and not p.startswith("/sys/")]


def host_suite() -> str:
    with open("/etc/os-release") as f:
        fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    return fields.get("VERSION_CODENAME", "").strip('"')


def other() -> str:
    """The engine `make test` also checks: the supported release that this machine is not."""
    here = host_suite()
    return next(s for s in VERSIONS if s != here)


@dataclass(frozen=True)
class Engine:
    name: str = SYSTEM  # SYSTEM or a key of VERSIONS

    def __post_init__(self) -> None:
        if self.name != SYSTEM and self.name not in VERSIONS:
            raise ValueError(f"unknown engine {self.name!r}: {SYSTEM} or one of {', '.join(VERSIONS)}")

    @property
    def root(self) -> str:
        return "" if self.name == SYSTEM else os.path.join(ENGINES_DIR, self.name)

    def ensure(self) -> None:
        """Build the engine's root if it is not complete (idempotent, ~1 min the first time)."""
        if self.root:
            subprocess.run([SCRIPT, self.name, self.root], check=True)

    def check(self, version: str) -> None:
        """Refuse to go on with a dockerd that is not this engine (a test run would claim to have
        checked an engine it never ran)."""
        want = VERSIONS.get(self.name)
        if want and not version.startswith(want):
            raise RuntimeError(f"engine {self.name}: dockerd reports {version}, expected {want}x")

    def script(self, binds: dict[str, str], argv: list[str]) -> str:
        """Shell, for a private mount namespace, that mounts each host directory of `binds` at its
        path in the engine's root, then execs argv from that root."""
        r = self.root
        steps = []
        if r:
            steps += [f"mount --bind {r} {r}", f"mount -t proc proc {r}/proc"]
            steps += [f"mount --rbind /sys {r}/sys", f"mount --rbind /dev {r}/dev"]
            binds = {**{p: p for p in machine_paths()}, **binds}
        for src, dst in binds.items():
            steps += [f"mkdir -p {shlex.quote(src)} {r}{dst}", f"mount --bind {shlex.quote(src)} {r}{dst}"]
        if r:
            # The root becomes the namespace's own root (pivot_root, not chroot): `docker exec`
            # enters a container's mount namespace at that namespace's root, which a chroot would
            # leave at the machine's /.
            steps += [f"mkdir -p {r}/.oldroot", f"cd {r}", "pivot_root . .oldroot", "umount -l /.oldroot"]
        steps.append("exec " + shlex.join(argv))
        return " && ".join(steps)
