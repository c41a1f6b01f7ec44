"""Shared by all tests: figures that tests measure are printed at the end of the run."""

from __future__ import annotations

REPORT: list[str] = []


def report(line: str) -> None:
    """Record a measured figure; printed in the summary so CI logs show it."""
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if REPORT:
        terminalreporter.section("xmasq measurements")
        for line in REPORT:
            terminalreporter.write_line(line)
