"""Fixtures for the functional tests: real LXD daemons on loopback addresses.

Run as root with the Debian ``lxd``, ``lxd-client`` and ``busybox-static`` packages and
``PYTHONPATH=charms/lxd/src:common:.`` (tox env ``functional``); the daemons, their
teardown and the test image come from :mod:`lab.hosts`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

# The host may export a CA bundle: requests reads these on every request and lets them
# override ``verify=``, which breaks HTTPS to a daemon's self-signed certificate.
for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_var, None)

from lab import hosts as lxdhosts  # noqa: E402
from lab.hosts import Lab  # noqa: E402

# Member name -> loopback address; every daemon serves HTTPS on port 8443.
MEMBERS = (
    ("lxd-0", "127.0.0.2"),
    ("lxd-1", "127.0.0.3"),
    ("lxd-2", "127.0.0.4"),
    ("lxd-3", "127.0.0.5"),
)


@contextlib.contextmanager
def deployment(members: Sequence[tuple[str, str]], prefix: str) -> Iterator[Lab]:
    """Started, uninitialised daemons; torn down completely (and checked) afterwards."""
    reason = lxdhosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = lxdhosts.make_root(prefix=prefix)
    hosts = lxdhosts.make_hosts(root, members)
    started = time.monotonic()
    try:
        lxdhosts.start_hosts(hosts)
        sys.stderr.write(
            f"\n[lab] {len(hosts)} daemons ready in {time.monotonic() - started:.1f}s\n"
        )
        yield Lab(root=root, hosts={h.name: h for h in hosts})
    finally:
        started = time.monotonic()
        report = lxdhosts.cleanup_root(root, hosts)
        left = lxdhosts.leftovers(root)
        sys.stderr.write(
            f"\n[lab] torn down in {time.monotonic() - started:.1f}s: {'; '.join(report)}\n"
        )
        lxdhosts.remove_root(root)
    assert not left, f"teardown left these behind: {left}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Four daemons for the workload tests."""
    with deployment(MEMBERS, "lxd-functional-") as daemons:
        yield daemons
