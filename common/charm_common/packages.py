"""Distro packages a charm needs on its machine (``dpkg-query`` / ``apt-get``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

APT_GET = "/usr/bin/apt-get"
DPKG_QUERY = "/usr/bin/dpkg-query"
INSTALL_TIMEOUT = 900  # seconds: a slow mirror, a big package set


class PackageError(Exception):
    """``apt-get install`` failed (the message carries apt's own words)."""


def missing(packages: Sequence[str]) -> list[str]:
    """The packages of ``packages`` that are not installed, in their order."""
    result = subprocess.run(  # noqa: S603 - absolute path, list args
        [DPKG_QUERY, "-W", "-f=${Package} ${Status}\\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0]
        for line in result.stdout.splitlines()
        if line.strip().endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def install(packages: Sequence[str]) -> bool:
    """``apt-get install`` ``packages`` when any is missing; whether it installed.

    Raises:
        PackageError: apt failed or timed out.
    """
    absent = missing(packages)
    if not absent:
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = [APT_GET, "install", "-y", "--no-install-recommends", *absent]
    try:
        result = subprocess.run(  # noqa: S603 - absolute path, list args
            argv, capture_output=True, text=True, check=False, env=env, timeout=INSTALL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PackageError(f"apt-get install {' '.join(absent)} failed: {exc}") from None
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-300:]
        raise PackageError(f"apt-get install {' '.join(absent)} failed: {tail}")
    return True
