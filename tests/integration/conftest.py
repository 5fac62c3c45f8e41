"""Integration tests need a real Juju controller; skip them all cleanly when there is none.

The tests stay *collected* and are marked skipped (rather than skipping the module at import
time), so a run with no controller reports "N skipped" and exits 0 instead of pytest's
"no tests collected" exit code 5.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@functools.cache
def juju_unavailable_reason() -> str | None:
    """Return why integration tests cannot run here, or None if a controller is reachable."""
    juju = shutil.which("juju")
    if juju is None:
        return "no juju CLI on PATH"
    try:
        result = subprocess.run(
            [juju, "controllers", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"juju CLI present but no controller (juju controllers failed: {exc})"
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        return f"juju CLI present but no controller (juju controllers failed: {detail[0]})"
    try:
        controllers = json.loads(result.stdout or "{}").get("controllers") or {}
    except json.JSONDecodeError:
        controllers = {}
    if not controllers:
        return "juju CLI present but no controller (juju controllers lists none)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = juju_unavailable_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(marker)
