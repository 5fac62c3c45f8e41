"""Fixtures for the ovn-bridge charm's unit tests: the ovn workload module is mocked."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from ops import testing

import ovn
from charm import OVNBridgeCharm
from charm_common import certs

ADDRESS = "192.0.2.0"  # what ops.testing's network-get gives every binding


def raft(status: str = "cluster member", db: str = "nb", servers: int = 3) -> ovn.RaftStatus:
    """A raft status as ``Central.status`` returns it."""
    return ovn.RaftStatus(
        db=db,
        cluster_id="c1d2",
        server_id="a1b2",
        address=f"ssl:{ADDRESS}:6643",
        status=status,
        role="leader",
        term=3,
        leader="self",
        servers=tuple(
            ovn.RaftServer(f"{n:x}{n:x}{n:x}{n:x}", f"ssl:192.0.2.{10 + n}:6643")
            for n in range(servers)
        ),
    )


class Machine:
    """What the charm's files on one machine hold (the unit's private key)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.written: list[tuple[str, str | None, str, str]] = []

    def ensure_private_key(self, files: ovn.TLSFiles, generate) -> str:
        if self.key is None:
            self.key = generate()
        return self.key

    def read_private_key(self, files: ovn.TLSFiles) -> str | None:
        return self.key

    def write_tls_files(self, files, key, cert, ca) -> bool:
        self.written.append((files.cert, key, cert, ca))
        return True


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    """The unit's key store, and every TLS file write."""
    m = Machine()
    monkeypatch.setattr("ovn.ensure_private_key", m.ensure_private_key)
    monkeypatch.setattr("ovn.read_private_key", m.read_private_key)
    monkeypatch.setattr("ovn.write_tls_files", m.write_tls_files)
    monkeypatch.setattr("charm_common.packages.install", MagicMock(return_value=False))
    return m


@pytest.fixture
def daemons(monkeypatch: pytest.MonkeyPatch) -> dict[str, MagicMock]:
    """The Switch, Controller and Central the charm builds, as mocks (nothing running)."""
    mocks = {
        "switch": MagicMock(spec=ovn.Switch),
        "controller": MagicMock(spec=ovn.Controller),
        "central": MagicMock(spec=ovn.Central),
    }
    mocks["switch"].configure.return_value = False
    central = mocks["central"]
    central.has_database.return_value = False
    central.running.return_value = False
    central.ensure.return_value = True
    central.status.side_effect = lambda db: raft(db=db)
    monkeypatch.setattr("charm.ovn.Switch", lambda: mocks["switch"])
    monkeypatch.setattr("charm.ovn.Controller", lambda: mocks["controller"])
    monkeypatch.setattr("charm.ovn.Central", lambda: central)
    return mocks


@pytest.fixture
def ctx(machine: Machine, daemons: dict[str, MagicMock]) -> testing.Context:
    """Context for unit ovn-bridge/0."""
    return testing.Context(OVNBridgeCharm)


@pytest.fixture(scope="session")
def ca() -> dict[str, str]:
    """A CA as the leader keeps it in its secret."""
    key, cert = certs.generate_ca("test CA")
    return {"ca-key": key, "ca-cert": cert}
