"""A driver of this tree in a network namespace of its own, with its own etcd members there.

Its NIC hooks, iptables chains and listeners touch nothing of this host, so a test may start
it with any configuration, kill etcd members under it, or scrape it. No dockerd: tests speak
the plugin protocol to its socket, as Docker would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from lab.testbed import with_own_sys
from xmasq_driver import config
from xmasq_driver.ops import client as plugin

ETCD_CLIENT, ETCD_PEER = 2479, 2480  # + 10 * member index, on the namespace's loopback
HOST_SIDE, NS_SIDE = "198.51.100.13", "198.51.100.14"  # the namespace's link (TEST-NET-2: routed nowhere)


def openssl_pki(d: str) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as file paths."""
    p = {n: os.path.join(d, n) for n in ("ca.key", "ca.pem", "server.key", "server.pem", "client.key", "client.pem")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=xmasq-test-ca",
        "-keyout",
        p["ca.key"],
        "-out",
        p["ca.pem"],
    )
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(d, f"{who}.ext"), "w") as f:
            f.write(ext + "\n")
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=xmasq-{who}",
            "-keyout",
            p[f"{who}.key"],
            "-out",
            os.path.join(d, f"{who}.csr"),
        )
        run(
            "x509",
            "-req",
            "-in",
            os.path.join(d, f"{who}.csr"),
            "-CA",
            p["ca.pem"],
            "-CAkey",
            p["ca.key"],
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            os.path.join(d, f"{who}.ext"),
            "-out",
            p[f"{who}.pem"],
        )
    return p


class Standalone:
    def __init__(self, tmp: str, name: str):
        self.tmp, self.name = tmp, name
        self.ns, self.link = f"xmt-{name}", f"tst{name}"[:15]
        self.host_id = f"{name}-{os.getpid()}"
        self.socket = os.path.join(tmp, "xmasq.sock")
        self.logfile = os.path.join(tmp, "xmasq.log")
        self.etcd: list[subprocess.Popen[bytes] | None] = []
        self.driver: subprocess.Popen[bytes] | None = None
        for cmd in (
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.ns],
            ["ip", "addr", "add", f"{HOST_SIDE}/30", "dev", self.link],
            ["ip", "link", "set", self.link, "up"],
            ["ip", "-n", self.ns, "addr", "add", f"{NS_SIDE}/30", "dev", "eth0"],
            ["ip", "-n", self.ns, "link", "set", "eth0", "up"],
            ["ip", "-n", self.ns, "link", "set", "lo", "up"],
            ["ip", "-n", self.ns, "route", "add", "default", "via", HOST_SIDE],
        ):
            subprocess.run(cmd, check=True, capture_output=True)

    def run(self, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", *argv], capture_output=True, text=True, **kw)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{self.ns}", *argv], **kw)

    # -- etcd -------------------------------------------------------------
    def start_etcd(self, members: int = 1, tls: dict[str, str] | None = None, also_on: str = "") -> str:
        """A cluster of `members` etcd servers; returns their client URLs, comma-separated. With
        `also_on` (the namespace's address) the first also listens there, for the root namespace."""
        scheme = "https" if tls else "http"
        names = [f"m{i}" for i in range(members)]
        peers = {n: f"http://127.0.0.1:{ETCD_PEER + 10 * i}" for i, n in enumerate(names)}
        clients = [f"{scheme}://127.0.0.1:{ETCD_CLIENT + 10 * i}" for i in range(members)]
        cluster = ",".join(f"{n}={u}" for n, u in peers.items())
        tls_args = (
            [
                "--cert-file",
                tls["server.pem"],
                "--key-file",
                tls["server.key"],
                "--trusted-ca-file",
                tls["ca.pem"],
                "--client-cert-auth",
            ]
            if tls
            else []
        )
        for i, n in enumerate(names):
            with open(os.path.join(self.tmp, f"etcd-{n}.log"), "ab") as logf:
                self.etcd.append(
                    self.popen(
                        [
                            "etcd",
                            "--name",
                            n,
                            "--data-dir",
                            os.path.join(self.tmp, f"etcd-{n}"),
                            "--listen-client-urls",
                            ",".join(
                                [clients[i], *([f"{scheme}://{also_on}:{ETCD_CLIENT}"] if also_on and not i else [])]
                            ),
                            "--advertise-client-urls",
                            clients[i],
                            "--listen-peer-urls",
                            peers[n],
                            "--initial-advertise-peer-urls",
                            peers[n],
                            "--initial-cluster",
                            cluster,
                            "--initial-cluster-state",
                            "new",
                            *tls_args,
                        ],
                        stdout=logf,
                        stderr=logf,
                    )
                )
        curl_tls = ["--cacert", tls["ca.pem"], "--cert", tls["client.pem"], "--key", tls["client.key"]] if tls else []
        health = ["curl", "-sf", "-m", "1", *curl_tls, f"{clients[0]}/health"]
        self._until("etcd healthy", lambda: self.run(*health).returncode == 0)
        return ",".join(clients)

    def etcd_keys(self, endpoint: str, prefix: str) -> list[str]:
        """Keys under prefix, read through etcd's JSON gateway from inside the namespace."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": _b64(prefix), "range_end": _b64(end), "keys_only": True})
        out = self.run("curl", "-sf", "-m", "5", "-X", "POST", "-d", body, f"{endpoint}/v3/kv/range", check=True)
        return [base64.b64decode(kv["key"]).decode() for kv in json.loads(out.stdout).get("kvs", [])]

    def kill_etcd(self, index: int) -> None:
        proc = self.etcd[index]
        if proc is not None:
            proc.kill()
            proc.wait(10)
            self.etcd[index] = None

    # -- driver -----------------------------------------------------------
    def env(self, **settings: str) -> dict[str, str]:
        defaults = {
            "socket": self.socket,
            "state_dir": os.path.join(self.tmp, "state"),
            "host_id": self.host_id,
            "etcd_timeout": "1",
        }
        return dict(os.environ, **config.environment(**{**defaults, **settings}))

    def start(self, argv: list[str] | None = None, **settings: str) -> subprocess.Popen[bytes]:
        """Start the driver (`xmasq serve`, or argv) and wait until it answers Plugin.Activate."""
        argv = argv or [sys.executable, "-m", "xmasq_driver", "serve"]
        with open(self.logfile, "ab") as logf:
            argv = with_own_sys(argv, os.path.join(self.tmp, "bpffs"))
            self.driver = self.popen(argv, env=self.env(**settings), stdout=logf, stderr=logf)

        def activated() -> bool:
            assert self.driver is not None and self.driver.poll() is None, self.log()
            return plugin.call(self.socket, "/Plugin.Activate")[0] == 200

        self._until("the driver's socket", activated)
        return self.driver

    def stop(self) -> int | None:
        if self.driver is None:
            return None
        if self.driver.poll() is None:
            self.driver.terminate()
        code = self.driver.wait(15)
        self.driver = None
        return code

    def call(self, path: str, body: Any = None) -> tuple[int, Any]:
        return plugin.call(self.socket, path, body)

    def log(self) -> str:
        with open(self.logfile, errors="replace") as f:
            return f.read()

    @staticmethod
    def _until(what: str, ok: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ok():
                    return
            except (OSError, AttributeError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{what}: not up within {timeout}s")

    def cleanup(self) -> None:
        if self.driver is not None and self.driver.poll() is None:
            self.driver.kill()
            self.driver.wait()
        for i in range(len(self.etcd)):
            self.kill_etcd(i)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        shutil.rmtree(os.path.join(config.load().bpf_pin_dir, self.host_id), ignore_errors=True)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
