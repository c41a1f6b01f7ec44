"""Swarm service VIPs: learned from this host's dockerd, balanced by the socket programs.

Docker builds the load balancer behind a VIP (IPVS) only for its own overlay driver. On an
xmasq network every node's dockerd still knows each service's VIP and its running tasks'
addresses (gossip), so a background thread reads them (`network inspect --verbose`, every
`service_poll` seconds, for this host's networks only) and makes the datapath's VIP table
exactly that: a connect to a VIP is made to a task's own address (bpf/bpf_sock.c). Never read
from a plugin request handler: Docker waits on the driver while it serves one (DESIGN.md 6).
While dockerd does not answer, the last table stays programmed.

Docker lists a service only while it has a task. A VIP whose service left the list (scaled to
0, or removed) is kept with no task, so that a client that resolved it earlier is refused at
once rather than left waiting on an address nobody answers, until the network leaves this
host or an endpoint takes the address (Swarm freed it with the service and gave it out again).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .. import log
from ..control.model import Service
from ..control.state import LocalState
from ..errors import BackendError

_log = log.get("services")
DOCKER_TIMEOUT = 3.0  # seconds per read of dockerd (a poll that waits longer only delays the next)


class ServiceSource(Protocol):
    def network_services(self, network_id: str) -> list[Service]:
        """The services of a network ([] if dockerd does not have it); BackendError if it does not answer."""
        ...


class ServiceTable(Protocol):
    def set_services(self, table: dict[str, tuple[str, ...]]) -> int: ...


class DockerServices:
    """Services as a dockerd lists them, through the Docker SDK (`docker_host`)."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url, self.timeout = base_url, timeout
        self._api: Any = None

    def network_services(self, network_id: str) -> list[Service]:
        data = self._call(lambda api: api.inspect_network(network_id, verbose=True))
        if data is None:
            return []
        found = (Service.from_docker(network_id, name, s) for name, s in (data.get("Services") or {}).items())
        return [s for s in found if s is not None]

    def network_options(self) -> dict[str, dict[str, str]]:
        """Every network dockerd has, by id: its driver options (what `-o` gave)."""
        listed = self._call(lambda api: api.networks()) or []
        return {n["Id"]: n.get("Options") or {} for n in listed}

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """fn(the API client); None if dockerd does not have what was asked for."""
        import docker
        import requests

        try:
            if self._api is None:  # "auto": the engine's own API version (20.10 speaks 1.41)
                self._api = docker.APIClient(base_url=self.base_url, version="auto", timeout=self.timeout)
            return fn(self._api)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            self._api = None
            raise BackendError(f"dockerd at {self.base_url} did not answer ({type(e).__name__}: {e})")


def _name(s: Service) -> str:
    return s.name


def table_of(services: list[Service]) -> tuple[dict[str, tuple[str, ...]], dict[str, list[Service]]]:
    """{vip: tasks} to program, and the VIPs left out because two of this host's networks have
    them (overlapping subnets): a socket could be meant for either, so neither is balanced."""
    by_vip: dict[str, list[Service]] = {}
    for s in services:
        by_vip.setdefault(s.vip, []).append(s)
    table = {vip: same[0].tasks for vip, same in by_vip.items() if len(same) == 1}
    return table, {vip: same for vip, same in by_vip.items() if len(same) > 1}


class ServiceWatcher:
    def __init__(
        self,
        source: ServiceSource,
        state: LocalState,
        table: ServiceTable,
        interval: float,
        in_use: Callable[[str, str], bool] = lambda network_id, ip: False,
    ):
        """in_use(network id, ip): whether an endpoint of the network has that address (anywhere)."""
        self.source, self.state, self.table, self.interval, self.in_use = source, state, table, interval, in_use
        self.services: dict[str, list[Service]] = {}  # by network id, as last read
        self.ghosts: dict[str, Service] = {}  # VIP -> its service, gone from Docker's list: no task
        self.conflicts: dict[str, list[Service]] = {}
        self.error = ""
        self.passes = 0
        self._listed: list[Service] = []
        self._programmed: dict[str, tuple[str, ...]] | None = None  # None: not yet this process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="services", daemon=True)
        self._thread.start()
        _log.info("watching swarm services", interval=self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failed = ""
        while not self._stop.is_set():
            try:
                self.run_once()
                failed = ""
            except Exception as e:  # a bug here must not stop the watching (logged once, not every pass)
                error = f"{type(e).__name__}: {e}"
                if error != failed:
                    _log.error("service pass failed", error=error)
                failed = error
            self._stop.wait(self.interval)

    def run_once(self) -> int:
        """Read every network's services and program what changed; returns the VIPs changed."""
        networks = set(self.state.snapshot().networks)
        errors = []
        for nid in networks:
            try:
                self.services[nid] = self.source.network_services(nid)
            except BackendError as e:
                errors.append(str(e))  # keep what was read last
        for nid in set(self.services) - networks:
            del self.services[nid]
        self._note_error(errors[0] if errors else "")
        if networks - self.services.keys():  # a network never read: its VIPs in the maps are kept
            return 0
        listed = [s for found in self.services.values() for s in found]
        self._note_ghosts(listed, networks)
        table, conflicts = table_of([*listed, *self.ghosts.values()])
        self._note_conflicts(conflicts)
        self.passes += 1
        if table == self._programmed:
            return 0
        self._log_changes(self._programmed or {}, table)
        changed = self.table.set_services(table)
        self._programmed = table
        return changed

    def _note_ghosts(self, listed: list[Service], networks: set[str]) -> None:
        before = {s.vip: s for s in [*self.ghosts.values(), *self._listed]}
        now = {s.vip for s in listed}
        self.ghosts = {
            vip: dataclasses.replace(s, tasks=())
            for vip, s in before.items()
            if vip not in now and s.network_id in networks and not self.in_use(s.network_id, vip)
        }
        self._listed = listed

    def _note_error(self, error: str) -> None:
        if error and not self.error:
            _log.warning("cannot read swarm services; the VIPs programmed stay", error=error)
        elif self.error and not error:
            _log.info("reading swarm services again")
        self.error = error

    def _note_conflicts(self, conflicts: dict[str, list[Service]]) -> None:
        for vip in conflicts.keys() - self.conflicts.keys():
            names = [f"{s.name} on network {s.network_id[:12]}" for s in conflicts[vip]]
            _log.warning("VIP of services on two networks of this host: not balanced", vip=vip, services=names)
        for vip in self.conflicts.keys() - conflicts.keys():
            _log.info("VIP conflict resolved", vip=vip)
        self.conflicts = conflicts

    def _log_changes(self, old: dict[str, tuple[str, ...]], new: dict[str, tuple[str, ...]]) -> None:
        names = {s.vip: s for found in self.services.values() for s in found}
        for vip in sorted(new.keys() | old.keys()):
            before, after = set(old.get(vip, ())), set(new.get(vip, ()))
            if before == after and vip in old and vip in new:
                continue
            svc = names.get(vip)
            where = {"service": svc.name, "network": svc.network_id[:12]} if svc else {}
            if vip not in new:
                _log.info("service VIP removed", vip=vip)
            else:
                _log.info(
                    "service VIP programmed" if vip not in old else "service tasks changed",
                    vip=vip,
                    **where,
                    tasks=len(after),
                    added=sorted(after - before),
                    removed=sorted(before - after),
                )

    def _network_view(self, nid: str, listed: list[Service]) -> list[dict[str, Any]]:
        found = [*listed, *(g for g in self.ghosts.values() if g.network_id == nid)]
        return [{"name": s.name, "vip": s.vip, "tasks": list(s.tasks)} for s in sorted(found, key=_name)]

    def view(self) -> dict[str, Any]:
        """For `xmasq status`: each network's services, and what is wrong, if anything."""
        return {
            "error": self.error,
            "passes": self.passes,
            "conflicts": sorted(self.conflicts),
            "networks": {nid: self._network_view(nid, found) for nid, found in self.services.items()},
        }
