"""Checks the functional tests make of real daemons (trust, HTTPS status, polling)."""

from __future__ import annotations

import json
import time
import warnings

import requests
import urllib3

from charm_common.retry import retry_transient
from lab import hosts as lxdhosts
from lab.hosts import Lab
from lxd import LXDUnavailableError


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.5):
    """Poll until ``predicate()`` is truthy; return its value (or fail with the last one)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_unclustered(host: lxdhosts.LXDHost) -> bool:
    """A removed member resets (re-executes) itself: wait until it answers, unclustered."""

    def check() -> bool:
        if host.lxd.server_info().clustered:
            raise LXDUnavailableError("still clustered")
        return True

    return retry_transient(check, retry_on=(LXDUnavailableError,), timeout=60)


def https_status(address: str, cert: tuple[bytes, bytes], lab: Lab, label: str) -> int:
    """Status of ``GET https://<address>/1.0/instances`` with ``cert`` as client certificate."""
    crt_path, key_path = lab.path("certs", f"{label}.crt"), lab.path("certs", f"{label}.key")
    with open(crt_path, "wb") as f:
        f.write(cert[0])
    with open(key_path, "wb") as f:
        f.write(cert[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        response = requests.get(
            f"https://{address}/1.0/instances",
            cert=(crt_path, key_path),
            verify=False,  # noqa: S501 - the served certificate is pinned by the caller
            timeout=30,
        )
    return response.status_code


def seconds_until_forbidden(
    address: str, cert: tuple[bytes, bytes], lab: Lab, label: str, timeout: float = 45.0
) -> float | None:
    """Poll until ``address`` answers 403 to ``cert``; seconds it took (None: never did).

    Only the member that processes a removal refreshes its trust cache at once; LXD lets
    the other members catch up at their next heartbeat.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if https_status(address, cert, lab, label) == 403:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def server_certificate_names(lab: Lab, via: str) -> list[str]:
    """Names of the ``server`` entries in the trust store (read with ``lxc``, not lxd.py)."""
    certs = json.loads(lab[via].lxc("query", "/1.0/certificates?recursion=1"))
    return sorted(c["name"] for c in certs if c.get("type") == "server")


def member_view(host: lxdhosts.LXDHost) -> dict[str, str] | str:
    """``{member: STATUS}`` as ``host`` sees it, or why it cannot say right now."""
    try:
        return {m.name: m.status.upper() for m in host.lxd.members()}
    except LXDUnavailableError as exc:
        return str(exc)


def database_leaders(host: lxdhosts.LXDHost) -> list[str] | None:
    """The members ``host`` lists as database leader, or ``None`` while it cannot say."""
    try:
        return [m.name for m in host.lxd.members() if "database-leader" in m.roles]
    except LXDUnavailableError:
        return None


def wait_members(
    host: lxdhosts.LXDHost, expected: dict[str, str], timeout: float = 90.0, stable: int = 3
) -> dict[str, str] | str:
    """Poll until ``host`` sees ``expected`` ``stable`` times in a row; return the last view.

    After the database leader leaves, a member may answer, then lose the database again
    while the election settles: one good answer is not enough.
    """
    deadline = time.monotonic() + timeout
    streak = 0
    while True:
        view = member_view(host)
        streak = streak + 1 if view == expected else 0
        if streak >= stable or time.monotonic() > deadline:
            return view
        time.sleep(1)
