"""Fixtures for the ceph-link charm's unit tests: apt and the ceph CLI are mocked.

The files the charm writes (ceph.conf, the keyring) go to a real temporary directory: the
one the lxd unit names in its ``paths`` (``{"ceph": DIR}``).
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
from pathlib import Path
from unittest.mock import MagicMock

import charmhelpers.osplatform
import pytest
from ops import testing

from charm import CephLinkCharm

# TEST-ONLY: charmhelpers refuses to import its hook toolkit (which CephBrokerRq pulls in)
# on anything but Ubuntu-like systems: ``get_platform`` raises "not supported on Debian
# GNU/Linux". The CI host is Debian 12; production is Ubuntu (and the lab machines present
# Ubuntu's os-release), where this is the real answer. Set before anything imports
# charmhelpers.core.host / charmhelpers.fetch, which call it at import time. CephBrokerRq
# itself is NOT mocked: broker requests are built by the real library.
charmhelpers.osplatform.get_platform = lambda: "ubuntu"
# Import it now, once: on import charmhelpers.fetch runs ``apt-config dump`` (read-only),
# which charm tests would otherwise see as a command run by the charm (``no_commands``).
importlib.import_module("charmhelpers.contrib.storage.linux.ceph")

APP = "ceph-link"
UNIT = "ceph-link/0"
PROVIDER = "ceph-mon"
RESPONSE_KEY = "broker-rsp-ceph-link-0"  # what ceph-mon answers unit ceph-link/0 under


def cephx_key(seed: int) -> str:
    """A well-formed cephx secret (base64 of 28 bytes), different for each seed."""
    return base64.b64encode(bytes([1, 0]) + bytes([seed]) * 26).decode()


KEY = cephx_key(1)
NEW_KEY = cephx_key(2)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """``charm_common.packages.install`` (apt-get): nothing is missing."""
    mock = MagicMock(return_value=False)
    monkeypatch.setattr("charm_common.packages.install", mock)
    return mock


@pytest.fixture
def filesystems(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """``ceph.filesystems`` (``ceph fs ls``): no CephFS filesystem."""
    mock = MagicMock(return_value=[])
    monkeypatch.setattr("ceph.filesystems", mock)
    return mock


@pytest.fixture
def no_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Charm tests never run a command: any subprocess.run fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a charm test ran a command: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture
def ceph_dir(tmp_path: Path) -> Path:
    """Where the lxd unit says its LXD reads Ceph's files (created by the charm)."""
    return tmp_path / "etc-ceph"


@pytest.fixture
def ctx(install: MagicMock, filesystems: MagicMock, no_commands: None) -> testing.Context:
    """Context for unit ceph-link/0."""
    return testing.Context(CephLinkCharm)


def member_info(ceph_dir: Path | str, **paths: str) -> dict[str, str]:
    """What the lxd unit publishes over lxd-member."""
    return {
        "member-name": "lxd-0",
        "clustered": "true",
        "lxd-version": "5.0.2",
        "api-extensions": "[]",
        "paths": json.dumps({"ceph": str(ceph_dir), "ovn": "/etc/ovn", **paths}),
    }
