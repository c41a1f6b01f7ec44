"""Which hosts are live: this host's own heartbeat, and the others' as etcd shows them.

- heartbeat: this host's key `hosts/<id>` (its HostRecord: underlay ip, WireGuard key) on a
  lease, refreshed every ttl/3, re-registered if the lease expired (e.g. etcd was down longer
  than the ttl); `announce` writes a changed record (a rotated key) at once;
- grace: a host whose key is gone stays live `grace` seconds more, so a driver that restarts (or
  a short etcd hiccup) does not flap its containers' reachability;
- probe: after that, a host that still answers on the underlay (`probe`, an ICMP echo) stays live
  and is probed again every `grace` seconds: it may only have lost etcd (a partition) or its
  driver, while its containers run on; one that does not answer is evicted;
- hold: etcd restored empty or from an older snapshot shows as its revision going back; for
  `hold` seconds after that every host seen stays live (and no peer entry goes) while every host
  writes its records back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import log
from ..errors import BackendError
from .model import HostRecord
from .store import ClusterStore

_log = log.get("liveness")


@dataclass
class LivenessCounters:
    data_loss: int = 0  # times etcd's revision went back
    etcd_back: int = 0  # times etcd answered the heartbeat again after it had failed


class Liveness:
    def __init__(
        self,
        store: ClusterStore,
        record: HostRecord,
        ttl: int = 10,
        grace: float = 5.0,
        hold: float = 30.0,
        probe: Callable[[set[str]], set[str]] = lambda ips: set(),
    ):
        self.store, self.record, self.probe = store, record, probe
        self._answering: set[str] = set()  # hosts gone from etcd, kept because they answer
        self._lease = 0
        self._unannounced = False  # the record changed and etcd has not got it yet
        self.ttl, self.grace, self.hold = ttl, grace, hold
        self.counters = LivenessCounters()
        self.grace_ends = float("inf")  # when the next host in its grace period goes
        self.hold_until = 0.0
        self._missing_since: dict[str, float] = {}  # -1: gone, and reported
        self._last_ip: dict[str, str] = {}
        self._revision = 0  # the highest etcd revision seen

    # -- this host ----------------------------------------------------------
    def heartbeat(self, stop: threading.Event) -> None:
        """Keep this host registered until `stop` is set."""
        failing = False
        while not stop.is_set():
            try:
                self._lease, registered = self.store.keep_registered(self.record, self.ttl, self._lease)
                if self._unannounced and not registered:  # a change announce could not write
                    self.store.register_host(self.record, self._lease)
                self._unannounced = False
                if registered:
                    _log.info("host registered", host=self.store.host, ip=self.record.ip, ttl=self.ttl)
                if failing:
                    _log.info("etcd reachable again", host=self.store.host)
                    self.counters.etcd_back += 1
                failing = False
            except BackendError as e:
                if not failing:
                    _log.warning("heartbeat failed; retrying", error=e)
                failing = True
            stop.wait(self.ttl / 3)

    def announce(self, record: HostRecord) -> None:
        """This host's record changed: written now on the live lease (else by the next heartbeat)."""
        self.record, self._unannounced = record, True
        if self._lease:
            try:
                self.store.register_host(record, self._lease)
                self._unannounced = False
            except BackendError as e:
                _log.warning("host record not published; the heartbeat retries", error=e)
        if not self._unannounced:
            _log.info("host record published", host=self.store.host, ip=record.ip, key=record.key)

    # -- the others ---------------------------------------------------------
    @property
    def holding(self) -> bool:
        return time.monotonic() < self.hold_until

    def hold_over(self) -> bool:
        """True once, when a hold has just ended (what was held and is still gone may go now)."""
        if not self.hold_until or self.holding:
            return False
        self.hold_until = 0.0
        return True

    def seen(self, revision: int) -> bool:
        """Note the revision of a full listing; True while holding (it went back: etcd lost data)."""
        if revision < self._revision:
            self.counters.data_loss += 1
            self.hold_until = time.monotonic() + self.hold
            _log.warning(
                "etcd lost data: its revision went back; every peer entry is kept while hosts re-assert their records",
                revision_was=self._revision,
                revision=revision,
                hold=self.hold,
            )
        self._revision = revision
        return self.holding

    def advanced(self, revision: int) -> None:
        """Note the revision of an event applied."""
        self._revision = max(self._revision, revision)

    def live(self, hosts: dict[str, str]) -> dict[str, str]:
        """Hosts with a key, plus those gone for less than the grace period."""
        now = time.monotonic()
        self._last_ip.update(hosts)
        for host in list(self._missing_since):
            if host in hosts:
                del self._missing_since[host]
                self._answering.discard(host)
                _log.info("host back", host=host, ip=hosts[host])
        live = dict(hosts)
        self.grace_ends = float("inf")
        gone = {host: ip for host, ip in self._last_ip.items() if host not in hosts}
        due = set()  # past their grace period, not yet evicted: asked all at once
        for host, ip in gone.items():
            since = self._missing_since.setdefault(host, now)
            if since != -1 and now - since >= self.grace:
                due.add(ip)
        answering = self.probe(due) if due else set()
        for host, ip in gone.items():
            since = self._missing_since[host]
            if ip in answering:
                if host not in self._answering:
                    _log.warning(
                        "host gone from etcd but answers on the underlay: its endpoints kept", host=host, ip=ip
                    )
                    self._answering.add(host)
                self._missing_since[host] = since = now  # probed again after another grace period
            if now - since < self.grace:
                live[host] = ip
                self.grace_ends = min(self.grace_ends, since + self.grace)
            elif since != -1:
                _log.warning("host gone; its endpoints removed", host=host, ip=ip)
                self._missing_since[host] = -1  # reported; stays evicted until it comes back
                self._answering.discard(host)
        return live
