"""Fixtures for the charm's unit tests: the workload modules are mocked, never subprocess."""

import json
from unittest.mock import MagicMock

import pytest
from ops import testing

from charm import LXDCharm
from lxd import LXD, JoinToken, LXDPaths, Member, ServerInfo, certificate_fingerprint

FINGERPRINT = "ab" * 32
TOKEN = JoinToken("lxd-1", FINGERPRINT, ("192.0.2.0:8443",), "s3cr3t-join-secret", "")
BOOTSTRAPPED = {
    "mode": "cluster",
    "cluster-fingerprint": FINGERPRINT,
    "issuer": "lxd/0",
    "members": json.dumps({"lxd-0": "lxd/0"}),
}


def peer(
    app: dict[str, str] | None = None,
    local: dict[str, str] | None = None,
    peers: dict[int, dict[str, str]] | None = None,
) -> testing.PeerRelation:
    return testing.PeerRelation(
        "cluster",
        local_app_data=app or {},
        local_unit_data=local or {},
        peers_data=peers or {},
    )


def waiting_peer(n: int) -> dict[str, str]:
    return {"member-name": f"lxd-{n}", "address": f"10.0.0.{n}:8443", "clustered": "false"}


def member_peer(n: int) -> dict[str, str]:
    return {"member-name": f"lxd-{n}", "address": f"10.0.0.{n}:8443", "clustered": "true"}


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
    # Nothing requested exists yet, and nothing needs doing unless a test says so.
    client.object_state.return_value = None
    client.unfinished_objects.return_value = {}
    client.ovn_networks.return_value = []
    client.ensure_member_object.return_value = False
    client.ensure_cluster_object.return_value = False
    client.ensure_standalone_object.return_value = False
    client.ensure_profile.return_value = False
    # Live members answer; only an offline one does not (tests override for dead members).
    client.member_answers.side_effect = lambda m: m.status != "Offline"
    monkeypatch.setattr("charm.LXD", lambda paths, **_: client)
    return client


@pytest.fixture
def installer(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    """The installer the charm detects (distro package flavour by default)."""
    inst = MagicMock()
    inst.uses_cohort = False
    inst.installed_version.return_value = "5.0.2"
    inst.ensure_running.return_value = False  # running already
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


def with_trust_store(lxd: MagicMock, cluster_cert: str) -> MagicMock:
    """``lxd`` as a clustered member with two members and an empty trust store."""
    lxd.server_info.return_value = server_info(True, **{"core.https_address": "10.0.0.0:8443"})
    lxd.members.return_value = [member("lxd-1"), member("lxd-0")]
    lxd.cluster_certificate.return_value = cluster_cert
    lxd.trusted_certificates.return_value = []
    lxd.trust_certificate.side_effect = lambda name, pem, *a, **k: certificate_fingerprint(pem)
    return lxd
