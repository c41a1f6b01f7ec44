"""Running a loaded tc program on a crafted packet in the kernel (BPF_PROG_TEST_RUN), as the eBPF
unit tests and the programs benchmark do: nothing is sent, the program's verdict, the packet as
it left it and the time the kernel measured come back."""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmasq_driver.dataplane.datapath import Datapath

SIZES = {"FLOW_MAX": 1024, "REMOTE_MAX": 1024}  # small maps: a test run holds a few entries


class _Opts(ctypes.Structure):  # struct bpf_test_run_opts (libbpf)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


_libbcc = ctypes.CDLL("libbcc.so.0", use_errno=True)


@dataclass(frozen=True)
class Result:
    verdict: int  # TC_ACT_*
    packet: bytes  # as the program left it
    ns: int  # the run's duration as the kernel measured it


class Runner:
    """One program and one packet, run as often as asked (each run on the packet as given: a
    program that rewrites it, as encapsulation does, cannot be repeated inside one call)."""

    def __init__(self, fd: int, packet: bytes, ifindex: int = 0, mark: int = 0, owner: Any = None):
        self._owner = owner  # what must live as long as the program (bcc closes it with its object)
        ctx = bytearray(192)  # struct __sk_buff: only mark (8) and ifindex (40) are set
        struct.pack_into("<I", ctx, 8, mark)
        struct.pack_into("<I", ctx, 40, ifindex)
        self._fd, self._ctx = fd, (ctypes.c_char * len(ctx)).from_buffer(ctx)
        self._in = ctypes.create_string_buffer(packet, len(packet))
        self._out = ctypes.create_string_buffer(len(packet) + 256)
        self._opts = _Opts(
            sz=ctypes.sizeof(_Opts),
            data_in=ctypes.addressof(self._in),
            data_out=ctypes.addressof(self._out),
            data_size_in=len(packet),
            ctx_in=ctypes.addressof(self._ctx),
            ctx_size_in=len(ctx),
            repeat=1,
        )

    def __call__(self) -> Result:
        self._opts.data_size_out = len(self._out)
        if _libbcc.bpf_prog_test_run_opts(self._fd, ctypes.byref(self._opts)):
            raise OSError(ctypes.get_errno(), f"BPF_PROG_TEST_RUN: {os.strerror(ctypes.get_errno())}")
        return Result(self._opts.retval, self._out.raw[: self._opts.data_size_out], self._opts.duration)


class Sandbox(Datapath):
    """The driver's Datapath for test runs: maps pinned in a throwaway directory, filters on veth
    pairs of its own (devices: role -> name; "nic" is the underlay), nothing sent. Close removes
    both."""

    def __init__(self, pin: str, devices: dict[str, str], bpf_src: str = "", enabled: bool = True):
        self._devices = list(devices.values())
        for name in self._devices:
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
        self.ifindex = {role: int(Path(f"/sys/class/net/{n}/ifindex").read_text()) for role, n in devices.items()}
        super().__init__(pin, devices["nic"], bpf_src, enabled, SIZES)

    def run(self, program: str, packet: bytes, device: str = "", mark: int = 0) -> Result:
        return self.runner(program, packet, device, mark)()

    def runner(self, program: str, packet: bytes, device: str = "", mark: int = 0) -> Runner:
        """program run on packet as if it arrived on device (a role; "": none)."""
        return Runner(self._fns[program].fd, packet, self.ifindex[device] if device else 0, mark)

    def close(self) -> None:
        for name in self._devices:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
