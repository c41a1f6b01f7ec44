"""What is not the driver: the multi-host testbed, the offline test image, the scale harness and
the demo, shared by the tests (tests/), the benchmark (bench/) and `python -m lab` (the testbed's
command). The driver never imports it."""

from __future__ import annotations

import importlib.util
import shutil


def require(what: str, modules: tuple[str, ...] = (), commands: tuple[str, ...] = ()) -> None:
    """Stop at once, naming each missing one, unless these Python modules and commands (names or
    absolute paths) are installed: they come with the development dependencies."""
    missing = [f"Python module {m}" for m in modules if importlib.util.find_spec(m) is None]
    missing += [c for c in commands if shutil.which(c) is None]
    if missing:
        raise SystemExit(f"{what} needs {', '.join(missing)}: `make dev` installs them")
