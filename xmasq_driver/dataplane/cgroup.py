"""Attaching programs to the root of the cgroup v2 hierarchy through pinned BPF links.

The socket load balancer's programs (bpf/bpf_sock.c) must see every container's sockets. On
a cgroup v1 machine (Debian 12 here) containers sit at the root of the cgroup2 hierarchy
(mounted at /sys/fs/cgroup/unified), on cgroup v2 (Debian 13) under it: the root covers both.
Each hook is a BPF link (kernel 5.7) pinned in bpffs: it outlives the driver, so VIPs keep
working while it restarts; a new driver swaps its program in place (BPF_LINK_UPDATE: no gap,
no second copy); removing the pin detaches it. Links are always multi-attach, so several
drivers on one kernel (the testbed) and systemd's own programs coexist.
bcc loads the programs; libbpf (which libbcc links) has the link calls bcc does not wrap.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess

from .. import log

_log = log.get("cgroup")
FALLBACK_MOUNT = "/run/xmasq/cgroup2"  # where the driver mounts cgroup2 if its namespace has none


def root() -> str:
    """A mount of the cgroup2 hierarchy's root, mounting one where this mount namespace has none
    (a plugin's or a testbed host's private /sys)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2" and fields[3] == "/":
                return fields[4]
    os.makedirs(FALLBACK_MOUNT, exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup2", "none", FALLBACK_MOUNT], check=True, capture_output=True, timeout=10)
    _log.info("mounted cgroup2", path=FALLBACK_MOUNT)
    return FALLBACK_MOUNT


class _Libbpf:
    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
        self.link_create = lib.bpf_link_create
        self.link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        self.link_update = lib.bpf_link_update
        self.link_update.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        self.obj_pin = lib.bpf_obj_pin
        self.obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
        self.obj_get = lib.bpf_obj_get
        self.obj_get.argtypes = [ctypes.c_char_p]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = -ret if ret != -1 else ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret


class Links:
    """This driver's pinned cgroup links, one per hook, in `pin_dir`."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self._lib: _Libbpf | None = None

    def attached(self) -> list[str]:
        return sorted(os.listdir(self.pin_dir)) if os.path.isdir(self.pin_dir) else []

    def attach(self, hooks: dict[str, tuple[int, int]]) -> None:
        """hooks: {name: (program fd, attach type)}. A pinned link of that name gets the program in
        place; otherwise a new link on the cgroup2 root is made and pinned."""
        lib = self._lib = self._lib or _Libbpf()
        os.makedirs(self.pin_dir, exist_ok=True)
        cgroup = os.open(root(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, (prog, attach_type) in hooks.items():
                path = os.path.join(self.pin_dir, name).encode()
                if os.path.exists(path):
                    link = _check(lib.obj_get(path), f"open link {name}")
                    try:
                        _check(lib.link_update(link, prog, None), f"update link {name}")
                    finally:
                        os.close(link)
                    continue
                link = _check(lib.link_create(prog, cgroup, attach_type, None), f"attach {name} to the cgroup root")
                try:
                    _check(lib.obj_pin(link, path), f"pin link {name}")
                finally:
                    os.close(link)
        finally:
            os.close(cgroup)

    def detach(self) -> int:
        """Unpin every link: with no pin and no open fd the kernel detaches it."""
        names = self.attached()
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.pin_dir, name))
        with contextlib.suppress(OSError):  # not empty: someone else's file
            os.rmdir(self.pin_dir)
        return len(names)
