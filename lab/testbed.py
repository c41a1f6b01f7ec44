"""A multi-host testbed on one machine: `python -m lab testbed up --hosts N | down | exec HOST -- CMD`.

Each host is a network namespace `xmtb-h<i>` on an underlay bridge `xmtb0` (the host's
eth0 at <subnet>.<i>, the bridge at <subnet>.254), with its own dockerd (own data and
exec roots, socket, cgroup parent, and a private mount namespace in which its plugin
directory is bind-mounted over /run/docker/plugins, so it finds its own driver) and its
own xmasq driver. One etcd for the testbed listens on the bridge address.
Nothing leaves the testbed: the root namespace drops anything from the underlay bridge
that is not going back to it. `down` removes every namespace, link, process, rule and
file that `up` made, from the record `up` wrote and by name, also after a failed run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lab.engine import SYSTEM, Engine
from xmasq_driver import config, log
from xmasq_driver.dataplane.datapath import mount_bpffs
from xmasq_driver.dataplane.overlay import ensure_sock_flow_table
from xmasq_driver.ops import daemon

RUN_DIR = "/run/xmasq-testbed"
DATA_DIR = "/var/lib/xmasq-testbed"
BRIDGE = "xmtb0"
# Set, not left to the kernel: a bridge without an address of its own takes its lowest port's, so a
# namespace joining the underlay (a new host, a test's stranger) could change the gateway's MAC
# under every host's ARP cache (etcd on the gateway timed out so once).
BRIDGE_MAC = "02:58:74:62:00:fe"
NS_PREFIX = "xmtb-"
DEFAULT_SUBNET = "172.31.255.0/24"
ETCD_PORT, ETCD_PEER_PORT = 23790, 23800  # member 0's; member i's are the ports i after them
RULE_TAG = "xmasq-testbed"
_log = log.get("testbed")
T = TypeVar("T")


def with_own_sys(argv: list[str], keep: str) -> list[str]:
    """argv (run in a network namespace) with that namespace's own /sys, as on a real host (the
    root namespace's shows the root's links; flow steering writes under /sys/class/net), and the
    machine's bpffs kept at /sys/fs/bpf, so pinned maps outlive the driver as on a real host.
    `keep` is an empty directory for the move."""
    mount_bpffs()
    os.makedirs(keep, exist_ok=True)
    script = (
        f"mount --bind /sys/fs/bpf {keep} && mount -t sysfs sysfs /sys"
        f" && mount --move {keep} /sys/fs/bpf && exec {shlex.join(argv)}"
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _etcd_member(member: int) -> tuple[str, str]:
    """An etcd member's name and peer URL."""
    return ("testbed" if not member else f"testbed-{member}"), f"http://127.0.0.1:{ETCD_PEER_PORT + member}"


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _wait(what: str, ok, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Until ok() is true. What fails meanwhile is what is not up yet, and is named if it lasts; a
    missing module is not going to come up: it stops the wait at once."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except ImportError:
            raise
        except Exception as e:
            last = f" (last: {type(e).__name__}: {e})"
        time.sleep(0.1)
    raise RuntimeError(f"testbed: {what} did not come up within {timeout}s{last}")


def _retrying(fn: Callable[[], T], timeout: float = 30) -> T:
    """fn()'s result, tried again while it fails (etcd refuses to change its membership while the
    member added last is new: connected for under 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class

    hosts: list[str]
    subnet: str = DEFAULT_SUBNET
    run_dir: str = RUN_DIR
    data_dir: str = DATA_DIR
    engine: str = SYSTEM  # the Docker engine of every host (lab/engine.py)

    # -- addresses and paths ---------------------------------------------
    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.subnet).network_address + 254)

    @property
    def etcd_endpoint(self) -> str:
        return self.etcd_url(0)

    def host_ip(self, host: str) -> str:
        return str(ipaddress.IPv4Network(self.subnet).network_address + int(host[1:]))

    def netns(self, host: str) -> str:
        return NS_PREFIX + host

    def path(self, host: str, name: str) -> str:
        return os.path.join(self.run_dir, host, name)

    def docker_socket(self, host: str) -> str:
        return self.path(host, "docker.sock")

    def docker_host(self, host: str) -> str:
        return "unix://" + self.docker_socket(host)

    def pidfile(self, host: str) -> str:
        return self.path(host, "xmasq.pid")

    def driver_env(self, host: str) -> dict[str, str]:
        paths = config.environment(
            socket=self.path(host, "plugins/xmasq.sock"),
            state_dir=os.path.join(self.data_dir, host, "state"),
            pidfile=self.pidfile(host),
            logfile=self.path(host, "xmasq.log"),
            docker_host=self.docker_host(host),  # its own dockerd (the plugin's is mounted at the default)
        )
        return dict(os.environ, **self._settings(host), **paths)

    def _settings(self, host: str) -> dict[str, str]:
        """What every driver of the testbed is configured with, as a process or as the plugin."""
        # Device names differ: wireguard-go's control sockets (/var/run/wireguard) are one directory
        # for every namespace of the machine.
        return config.environment(
            host_id=host, etcd_endpoints=self.etcd_endpoint, underlay_interface="eth0", wireguard_device=f"xmwg-{host}"
        )

    def in_host(self, host: str, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        """Run argv in the host's network namespace, with DOCKER_HOST set to its dockerd."""
        env = dict(kw.pop("env", os.environ), DOCKER_HOST=self.docker_host(host))
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns(host)}", *argv], env=env, text=True, **kw)

    # -- up ---------------------------------------------------------------
    @classmethod
    def up(cls, count: int, subnet: str = DEFAULT_SUBNET, mtu: int = 1500, engine: str = SYSTEM) -> Testbed:
        if not 1 <= count <= 250:
            raise SystemExit("testbed: --hosts must be 1..250")
        Engine(engine).ensure()
        existing = cls.load()
        if existing is not None:
            existing.down()
        tb = cls([f"h{i}" for i in range(1, count + 1)], subnet, engine=engine)
        os.makedirs(tb.run_dir, exist_ok=True)
        tb._save()  # first, so `down` finds everything even if `up` fails half way
        try:
            # The hosts' drivers see only their own namespaces' settings: the machine's socket flow
            # table, which their flow steering (rfs) needs, is raised here as on a real host (where
            # this machine is itself in a network namespace, a container's, the table is not ours).
            with contextlib.suppress(FileNotFoundError):
                ensure_sock_flow_table()
            tb._underlay(mtu)
            tb._etcd()
            for host in tb.hosts:
                tb._host(host, mtu)
            for host in tb.hosts:
                tb.start_driver(host)
                tb._dockerd(host)
        except BaseException:
            tb.down()
            raise
        _log.info("testbed up", hosts=count, subnet=subnet, etcd=tb.etcd_endpoint, engine=engine)
        return tb

    def _save(self) -> None:
        with open(os.path.join(self.run_dir, "testbed.json"), "w") as f:
            json.dump({"hosts": self.hosts, "subnet": self.subnet, "engine": self.engine}, f)

    @classmethod
    def load(cls, run_dir: str = RUN_DIR) -> Testbed | None:
        try:
            with open(os.path.join(run_dir, "testbed.json")) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return cls(data["hosts"], data["subnet"], run_dir, engine=data.get("engine", SYSTEM))

    def _underlay(self, mtu: int) -> None:
        prefix = ipaddress.IPv4Network(self.subnet).prefixlen
        _run("ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "mtu", str(mtu), "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        tag = ["-m", "comment", "--comment", RULE_TAG]
        # Underlay traffic between hosts is bridged (br_netfilter sends it through FORWARD,
        # whose policy Docker sets to DROP); nothing from the testbed leaves it.
        _run("iptables", "-w", "-I", "FORWARD", "1", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "ACCEPT")
        _run("iptables", "-w", "-I", "FORWARD", "2", "-i", BRIDGE, "!", "-o", BRIDGE, *tag, "-j", "DROP")

    def _etcd(self, member: int = 0, cluster: str = "", state: str = "new") -> None:
        """etcd member `member` (0: the testbed's own; more are added by `grow_etcd`), its client
        port the next after the first's."""
        name, peer = _etcd_member(member)
        local = f"http://127.0.0.1:{ETCD_PORT + member}"
        data = os.path.join(self.data_dir, "etcd" if not member else f"etcd-{member}")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(self.run_dir, "etcd.log"), "ab") as logf:
            proc = subprocess.Popen(
                [
                    "etcd",
                    *("--name", name, "--data-dir", data),
                    *("--listen-client-urls", f"{self.etcd_url(member)},{local}"),
                    *("--advertise-client-urls", self.etcd_url(member)),
                    *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
                    *("--initial-cluster", cluster or f"{name}={peer}", "--initial-cluster-state", state),
                    *("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        with open(self._etcd_pidfile(member), "w") as f:
            f.write(str(proc.pid))
        _wait("etcd", lambda: _run("curl", "-sf", "-m", "1", f"{local}/health").returncode == 0, 30)

    def _etcd_pidfile(self, member: int) -> str:
        return os.path.join(self.run_dir, "etcd.pid" if not member else f"etcd-{member}.pid")

    def etcd_url(self, member: int = 0) -> str:
        return f"http://{self.gateway}:{ETCD_PORT + member}"

    def stop_etcd(self) -> None:
        daemon.stop(self._etcd_pidfile(0), wait=10)

    def start_etcd(self) -> None:
        self._etcd()

    def grow_etcd(self, members: int) -> None:
        """The testbed's etcd grown to `members` members by runtime reconfiguration (as an operator
        adds them: `member add`, then the new member started into the existing cluster); the
        drivers keep talking to member 0. `shrink_etcd` takes them out again."""
        for member in range(1, members):
            name, peer = _etcd_member(member)
            out = _retrying(functools.partial(self.etcdctl, "member", "add", name, f"--peer-urls={peer}")).stdout
            cluster = next(line for line in out.splitlines() if line.startswith("ETCD_INITIAL_CLUSTER="))
            self._etcd(member, cluster.split("=", 1)[1].strip('"'), "existing")

    def shrink_etcd(self) -> None:
        """Back to member 0 alone (the leadership moved to it first: removing the leader would
        leave the cluster leaderless for an election)."""
        members = self.etcd_members()
        first = next(m for m in members if m["name"] == _etcd_member(0)[0])
        if self.etcd_leader() != first["ID"]:
            self.move_etcd_leader(first["ID"])
        for m in members:
            if m["ID"] != first["ID"]:
                _retrying(functools.partial(self.etcdctl, "member", "remove", f"{m['ID']:x}"))
                member = int(m["name"].rsplit("-", 1)[1])
                daemon.stop(self._etcd_pidfile(member), wait=10)
                shutil.rmtree(os.path.join(self.data_dir, f"etcd-{member}"), ignore_errors=True)

    def etcd_members(self) -> list[dict[str, Any]]:
        """The etcd cluster's members as `etcdctl member list` has them (ID, name, clientURLs)."""
        return list(json.loads(self.etcdctl("member", "list", "-w", "json").stdout)["members"])

    def etcd_status(self) -> dict[str, Any]:
        """Member 0's `etcdctl endpoint status` (leader, dbSize, dbSizeInUse, ...)."""
        return dict(json.loads(self.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"])

    def etcd_leader(self) -> int:
        """The etcd leader's member id."""
        return int(self.etcd_status()["leader"])

    def move_etcd_leader(self, to: int) -> None:
        """Leadership handed to member `to` (an id), asked of the leader: only it can hand it over."""
        leader = self.etcd_leader()
        url = next(m["clientURLs"][0] for m in self.etcd_members() if m["ID"] == leader)
        self.etcdctl("move-leader", f"{to:x}", endpoint=url)

    def etcdctl(self, *args: str, endpoint: str = "") -> subprocess.CompletedProcess[str]:
        return _run("etcdctl", "--endpoints", endpoint or f"http://127.0.0.1:{ETCD_PORT}", *args)

    def save_etcd_snapshot(self, path: str) -> None:
        self.etcdctl("snapshot", "save", path)

    def replace_etcd_data(self, snapshot: str | None = None) -> None:
        """etcd losing its data: stopped, its data directory replaced by an empty one or by
        `snapshot` restored (`etcdctl snapshot restore`), started again."""
        self.stop_etcd()
        data = os.path.join(self.data_dir, "etcd")
        shutil.rmtree(data, ignore_errors=True)
        if snapshot:
            tool = "etcdutl" if shutil.which("etcdutl") else "etcdctl"  # etcd 3.5 moved restore to etcdutl
            _run(
                tool,
                "snapshot",
                "restore",
                snapshot,
                "--data-dir",
                data,
                *("--name", _etcd_member(0)[0], "--initial-cluster", "=".join(_etcd_member(0))),
                *("--initial-advertise-peer-urls", _etcd_member(0)[1]),
            )
        self._etcd()

    def _host(self, host: str, mtu: int) -> None:
        ns, prefix = self.netns(host), ipaddress.IPv4Network(self.subnet).prefixlen
        os.makedirs(self.path(host, "plugins"), exist_ok=True)
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", ns, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", ns, "master", BRIDGE, "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.host_ip(host)}/{prefix}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", self.gateway)

    def start_driver(self, host: str, tree: str | None = None, env: dict[str, str] | None = None) -> None:
        """The host's driver, from this tree or (`tree`) another release's (its xmasq_driver/ and bpf/);
        `env`: what to set in its environment besides (a test's PATH, say)."""
        driver = [sys.executable, "-m", "xmasq_driver", "daemon", "start"]
        self.in_host(
            host,
            with_own_sys(driver, self.path(host, "bpffs")),
            env=dict(self.driver_env(host), **({"PYTHONPATH": tree} if tree else {}), **(env or {})),
            cwd=tree,  # `python -m` looks in the working directory first: this tree's, otherwise
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop_driver(self, host: str, kill: bool = False) -> None:
        daemon.stop(self.pidfile(host), signal.SIGKILL if kill else signal.SIGTERM)

    def _dockerd(self, host: str) -> None:
        root = os.path.join(self.data_dir, host, "docker")
        os.makedirs(root, exist_ok=True)
        engine = Engine(self.engine)
        # A private mount namespace in which this host's plugin directory is the one dockerd reads
        # (and, for another engine, the testbed's directories are at their paths in its root).
        binds = {self.path(host, "plugins"): "/run/docker/plugins"}
        if engine.root:
            binds |= {self.run_dir: self.run_dir, self.data_dir: self.data_dir}
        dockerd = [
            "env",
            "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1",  # swarm tasks use the image present here (no registry)
            "dockerd",
            *("--data-root", root, "--exec-root", self.path(host, "exec"), "-H", self.docker_host(host)),
            *("--pidfile", self.path(host, "docker.pid"), "--cgroup-parent", f"/xmtb-{host}", "--log-level", "warn"),
        ]
        with open(self.path(host, "dockerd.log"), "ab") as logf:
            subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.netns(host)}",
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    engine.script(binds, dockerd),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        _wait(f"dockerd of {host}", lambda: self.docker(host).ping(), 60)
        engine.check(self.docker(host).version()["Version"])

    def restart_dockerd(self, host: str) -> None:
        """Stop the host's dockerd cleanly (its containers stop) and start it again."""
        daemon.stop(self.path(host, "docker.pid"), wait=30)
        self._dockerd(host)

    # -- swarm and the managed plugin ---------------------------------------
    def swarm(self, manager: str, workers: list[str]) -> None:
        """A swarm over the underlay: `manager` inits it, `workers` join."""
        ip = self.host_ip(manager)
        self.docker(manager).swarm.init(advertise_addr=ip, listen_addr=f"{ip}:2377")
        for w in workers:
            self.join_swarm(manager, w)

    def join_swarm(self, manager: str, worker: str) -> None:
        token = self.docker(manager).swarm.attrs["JoinTokens"]["Worker"]
        wip = self.host_ip(worker)
        self.docker(worker).swarm.join(
            [f"{self.host_ip(manager)}:2377"], token, listen_addr=f"{wip}:2377", advertise_addr=wip
        )

    def install_plugin(self, host: str, build_dir: str, name: str) -> str:
        """Create the managed plugin from a `make plugin` build in the host's dockerd and enable it
        in place of the host's driver process (same host id, state and pinned maps); returns the
        plugin's socket path as seen from here."""
        self.stop_driver(host)
        state = os.path.join(self.data_dir, host, "state")
        os.makedirs(state, exist_ok=True)
        client = self.docker(host)
        plugin = client.plugins.create(name, build_dir)
        here = config.load()  # the lease and grace the testbed's processes get (the tests shorten them)
        leases = config.environment(host_ttl=here.host_ttl, host_grace=here.host_grace)
        sources = {"state.source": state, "docker.source": self.docker_socket(host)}
        plugin.configure({**self._settings(host), **leases, **sources})
        plugin.enable(timeout=60)
        plugin.reload()
        return self.path(host, f"plugins/{plugin.id}/xmasq.sock")

    def remove_plugin(self, host: str, name: str) -> None:
        """Disable and remove the plugin; the host's driver process takes over again."""
        with contextlib.suppress(Exception):
            plugin = self.docker(host).plugins.get(name)
            if plugin.enabled:
                plugin.disable(force=True)
            plugin.remove(force=True)
        self.start_driver(host)

    # -- hosts coming and going (fault tests) ------------------------------
    def add_host(self, host: str, mtu: int = 1500) -> None:
        self.hosts.append(host)
        self._save()
        self._host(host, mtu)
        self.start_driver(host)
        self._dockerd(host)

    def crash_host(self, host: str) -> None:
        """The host vanishes: every process of it is killed and its namespace deleted, no clean-up
        of any kind (its etcd lease simply stops being renewed)."""
        with contextlib.suppress(Exception):
            for c in self.docker(host).containers.list():
                os.kill(c.attrs["State"]["Pid"], signal.SIGKILL)  # each container's init: all of it dies
        for pid in _run("ip", "netns", "pids", self.netns(host), check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "del", self.netns(host), check=False)
        _run("ip", "link", "del", self.netns(host), check=False)
        self.hosts.remove(host)
        self._save()
        shutil.rmtree(os.path.join(config.load().bpf_pin_dir, host), ignore_errors=True)

    def docker(self, host: str):  # type: ignore[no-untyped-def]
        import docker

        return docker.DockerClient(base_url=self.docker_host(host), timeout=120)

    # -- down -------------------------------------------------------------
    def down(self) -> None:
        hosts = sorted(set(self.hosts) | {n[len(NS_PREFIX) :] for n in _netns_names() if n.startswith(NS_PREFIX)})
        # dockerd takes seconds to stop: stop the hosts in parallel.
        with concurrent.futures.ThreadPoolExecutor(max(1, len(hosts))) as pool:
            list(pool.map(self._stop_host, hosts))
        for host in hosts:
            _run("ip", "netns", "del", self.netns(host), check=False)
            _run("ip", "link", "del", self.netns(host), check=False)
        for name in os.listdir(self.run_dir) if os.path.isdir(self.run_dir) else []:
            if name.startswith("etcd") and name.endswith(".pid"):  # member 0 and any grow_etcd added
                daemon.stop(os.path.join(self.run_dir, name), wait=10)
        _run("ip", "link", "del", BRIDGE, check=False)
        for line in _run("iptables", "-w", "-S", "FORWARD", check=False).stdout.splitlines():
            if RULE_TAG in line:
                _run("iptables", "-w", "-D", *shlex.split(line)[1:], check=False)
        for host in hosts:  # the hosts' pinned eBPF maps (their programs went with the namespaces)
            shutil.rmtree(os.path.join(config.load().bpf_pin_dir, host), ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        _log.info("testbed down", hosts=len(hosts))

    def _stop_host(self, host: str) -> None:
        with contextlib.suppress(Exception):
            client = self.docker(host)
            for c in client.containers.list(all=True):
                c.remove(force=True)
            if client.info().get("Swarm", {}).get("LocalNodeState") == "active":
                client.swarm.leave(force=True)
        daemon.stop(self.path(host, "docker.pid"), wait=30)
        self.stop_driver(host)
        # Anything still in the namespace (a containerd shim, a test's helper) goes too.
        pids = _run("ip", "netns", "pids", self.netns(host), check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


def _netns_names() -> list[str]:
    return os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
