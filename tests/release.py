"""The README's commands on another Debian release (`make test-release`, RELEASE=trixie|bookworm):

    python -m tests.release [--release trixie] [--keep]

In a container made from that release's root (scripts/engine.sh), holding a copy of this tree:
`make run` (scripts/setup.sh installs that release's packages, links its kernel headers, builds
the venv with its Python, starts its etcd and its dockerd, then the driver), `make run` again
(which must do nothing), `make lint`, the unit and eBPF tests, and the smoke set of one host's
end-to-end tests against that release's Docker engine, as on a machine of that release. The
container's network is Docker's bridge: it reaches the package registries as this machine does,
and nothing of the machine's own. The container and its volume are removed at the end (--keep
leaves them, to look inside).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys

from lab.engine import Engine, other
from tests.engines import SMOKE_SINGLE, files

TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSIDE = "/root/xmasq"  # where the copy of the tree is, in the container
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"  # pip's CA bundle here, for a registry behind a proxy
# What --privileged gives, but for CAP_SYS_RESOURCE, which a machine's root may lack itself (then
# --privileged fails): every other capability and device, no seccomp or AppArmor filter, /proc
# unmasked, dockerd's data on a volume (overlayfs does not stack on overlayfs). The container then
# makes its /sys (its network namespace's) and its cgroups (v1 or v2) writable and mounts bpffs, as a
# machine has them.
PRIVILEGES = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--device-cgroup-rule", "a *:* rwm",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "-v", "/var/lib/docker",
    "--device", "/dev/net/tun",  # a machine has it (wireguard-go needs it); a cgroup rule makes no node
]  # fmt: skip
# The machine before the README's first command: its mounts, and make (a minimal root has none).
MACHINE = (
    "mount -o remount,bind,rw /sys && mount -t bpf bpf /sys/fs/bpf && for m in"
    " $(awk '$2 ~ \"^/sys/fs/cgroup\" {print $2}' /proc/mounts); do mount -o remount,bind,rw $m; done"
    " && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null"
)
STEPS = [
    "make run",
    # idempotent: a second run installs, links and starts nothing (setup.sh says nothing)
    "make run >/tmp/again.log 2>&1; cat /tmp/again.log; ! grep '^setup:' /tmp/again.log",
    "make lint",
    f".venv/bin/pytest -q tests/unit tests/bpf {' '.join(files(SMOKE_SINGLE))}",
]


def docker(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(["docker", *args], text=True, **kw)


def image(engine: Engine) -> str:
    """The release's root as an image of the system's dockerd (imported once per build of the root)."""
    built = os.stat(os.path.join(engine.root, ".xmasq-engine")).st_mtime
    name = f"xmasq-release/{engine.name}:{hashlib.sha256(str(built).encode()).hexdigest()[:12]}"
    if docker("image", "inspect", name, capture_output=True).returncode != 0:
        print(f"release: importing {engine.root} as {name}", flush=True)
        tar = subprocess.Popen(["tar", "-C", engine.root, "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", name, stdin=tar.stdout, check=True, capture_output=True)
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {engine.root} failed")
        tags = docker("images", "-q", "--format", "{{.Repository}}:{{.Tag}}", name.split(":")[0], capture_output=True)
        for old in set(tags.stdout.split()) - {name}:  # of a root since rebuilt
            docker("rmi", old, capture_output=True)
    return name


def copy_tree(container: str) -> None:
    """This tree as git sees it (tracked and new files; not .venv, not build output)."""
    listed = subprocess.run(
        ["git", "-C", TREE, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    present = b"\0".join(f for f in listed if f and os.path.exists(os.path.join(TREE, f.decode())))
    tar = subprocess.Popen(
        ["tar", "-C", TREE, "--null", "-T", "-", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    unpack = subprocess.Popen(
        ["docker", "exec", "-i", container, "sh", "-c", f"mkdir -p {INSIDE} && tar -C {INSIDE} -x"], stdin=tar.stdout
    )
    assert tar.stdin is not None and tar.stdout is not None
    tar.stdout.close()  # the pipe is unpack's now
    tar.stdin.write(present)
    tar.stdin.close()
    if unpack.wait() != 0 or tar.wait() != 0:
        raise RuntimeError(f"copying the tree into {container} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", default=None, help="a Debian suite of lab/engine.py (default: the other one)")
    parser.add_argument("--keep", action="store_true", help="leave the container (and its volume) for a look")
    args = parser.parse_args(argv)
    engine = Engine(args.release or other())
    engine.ensure()
    container = f"xmasq-release-{engine.name}"
    docker("rm", "-f", "-v", container, capture_output=True)
    env = ["-e", "PIP_DISABLE_PIP_VERSION_CHECK=1"]
    if os.path.exists(HOST_CA):
        env += ["-v", f"{HOST_CA}:/etc/xmasq-host-ca.crt:ro", "-e", "PIP_CERT=/etc/xmasq-host-ca.crt"]
    run = ["run", "-d", "--name", container, "--hostname", container, *PRIVILEGES, *env, image(engine)]
    docker(*run, "sleep", "infinity", check=True, capture_output=True)
    try:
        copy_tree(container)
        docker("exec", container, "sh", "-c", MACHINE, check=True)
        for step in STEPS:
            print(f"release: {engine.name}: {step}", flush=True)
            rc = docker("exec", "-w", INSIDE, container, "sh", "-c", step).returncode
            if rc != 0:
                print(f"release: {engine.name}: `{step}` exited {rc}", flush=True)
                return rc
        print(f"release: {engine.name}: the README's commands work", flush=True)
        return 0
    finally:
        if not args.keep:
            docker("rm", "-f", "-v", container, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
