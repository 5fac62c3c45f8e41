"""Fixtures for the charm's unit tests: the workload modules are mocked, never subprocess."""

from unittest.mock import MagicMock

import pytest
from ops import testing

from charm import LXDCharm
from lxd import LXD, LXDPaths, Member, ServerInfo

FINGERPRINT = "ab" * 32


def server_info(clustered: bool = False, **config: str) -> ServerInfo:
    """What ``GET /1.0`` would say."""
    return ServerInfo(
        version="5.0.2",
        api_extensions=["clustering"],
        clustered=clustered,
        server_name="lxd-0" if clustered else "none",
        certificate_fingerprint=FINGERPRINT,
        config=dict(config),
    )


def member(name: str, status: str = "Online") -> Member:
    """A cluster member as ``LXD.members`` returns it."""
    return Member(name=name, url=f"https://{name}:8443", status=status)


@pytest.fixture
def lxd(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """The LXD workload client the charm builds, as a mock (a fresh, standalone daemon)."""
    client = MagicMock(spec=LXD)
    client.server_info.return_value = server_info(clustered=False)
    client.members.return_value = []
    client.member_instances.return_value = []
    client.member_config.return_value = []
    client.update_server_config.return_value = False
    # Live members answer; only an offline one does not (tests override for dead members).
    client.member_answers.side_effect = lambda m: m.status != "Offline"
    monkeypatch.setattr("charm.LXD", lambda paths: client)
    return client


@pytest.fixture
def installer(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """The installer the charm detects (distro package flavour by default)."""
    inst = MagicMock()
    inst.uses_cohort = False
    inst.installed_version.return_value = "5.0.2"
    inst.paths = LXDPaths("/var/lib/lxd", "/usr/bin/lxd", "/etc/ceph", "/etc/ovn")
    monkeypatch.setattr("charm.detect_installer", lambda: inst)
    return inst


@pytest.fixture
def tuning(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """The sysctl writer (never touches the host in unit tests)."""
    apply = MagicMock(return_value=[])
    monkeypatch.setattr("charm.apply_settings", apply)
    return apply


@pytest.fixture
def ctx(lxd: MagicMock, installer: MagicMock, tuning: MagicMock) -> testing.Context:
    """Context for unit lxd/0."""
    return testing.Context(LXDCharm)


@pytest.fixture
def ctx_unit1(lxd: MagicMock, installer: MagicMock, tuning: MagicMock) -> testing.Context:
    """Context for unit lxd/1 (a joiner)."""
    return testing.Context(LXDCharm, unit_id=1)
