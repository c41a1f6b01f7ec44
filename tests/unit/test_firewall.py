"""What the firewall makes of iptables' answers (the rules themselves: the e2e tests)."""

from __future__ import annotations

import subprocess

import pytest

from xmasq_driver.dataplane import firewall
from xmasq_driver.errors import BackendError


def _answering(code: int, stderr: str = "", stdout: str = ""):  # type: ignore[no-untyped-def]
    def run(argv, timeout, check=True, **kw):  # type: ignore[no-untyped-def]
        return subprocess.CompletedProcess(argv, code, stdout, stderr)

    return run


def test_a_chain_that_cannot_be_listed_is_an_error_not_an_empty_chain(monkeypatch) -> None:
    """Legacy iptables exits 4 when the xtables lock was not had within -w: taken for "no rules",
    an endpoint's removal would leave its port rules behind."""
    monkeypatch.setattr(firewall.tools, "run", _answering(4, "Another app is currently holding the xtables lock."))
    with pytest.raises(BackendError, match="xtables lock"):
        firewall.Firewall().remove_ports("e" * 64)


def test_a_chain_not_made_on_this_host_holds_no_rules(monkeypatch) -> None:
    monkeypatch.setattr(firewall.tools, "run", _answering(1, "iptables: No chain/target/match by that name."))
    assert firewall.Firewall().owned_rules() == []
