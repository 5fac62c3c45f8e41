"""The lxd charm's own hooks against REAL LXD daemons: formation, scale-in, leader loss.

Unlike ``test_lxd_cluster.py`` (the workload module alone), this runs ``charm.py`` hook by
hook with ops.testing for three units, each wired to its own real daemon (127.0.0.12-14),
while a small model keeps what Juju keeps between hooks: the peer databags, the unit-owned
secrets and who they are granted to, and the leader. Every LXD effect is real: the
bootstrap, the tokens (in secrets only the joiner can read), the joins, the removal of the
Juju leader whose member leads the database, the refusal of a unit whose member holds the
only database copy (LXD 5.0 below three members), and the evacuation of a running
container when its unit is removed.

A failed hook is retried as Juju retries it (its changes discarded), a few times.
(The lab will run these hooks as processes inside per-machine namespaces, in Juju's order;
here the order is written out step by step.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from ops import testing

from charm import LXDCharm
from lab import hosts as lxdhosts
from lab.hosts import Lab
from lxd import JoinToken, LXDUnavailableError, certificate_fingerprint

from .checks import (
    member_view,
    seconds_until_forbidden,
    server_certificate_names,
    wait_for,
    wait_members,
)

# Skipped as a whole (with the reason) by the fixture when real daemons cannot run here.
pytestmark = pytest.mark.ordered_steps

PEER_RELATION_ID = 7
# Kernel settings are global to the host: the lab never changes them.
CONFIG = {"sysctl-tuning": False, "kernel-hardening": False}
Event = Callable[[testing.Context, testing.PeerRelation], Any]


class Model:
    """What Juju keeps for one application between hooks."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.present = {0, 1, 2}
        self.leader = 0
        self.app_data: dict[str, str] = {}
        self.unit_data: dict[int, dict[str, str]] = {n: {} for n in self.present}
        # secret id -> owner unit, content, label, and the units it is granted to
        self.secrets: dict[str, dict[str, Any]] = {}

    def state(self, n: int) -> testing.State:
        """The world as unit ``n`` sees it."""
        relation = testing.PeerRelation(
            "cluster",
            id=PEER_RELATION_ID,
            local_app_data=dict(self.app_data),
            local_unit_data=dict(self.unit_data[n]),
            peers_data={m: dict(self.unit_data[m]) for m in sorted(self.present - {n})},
        )
        secrets = []
        for secret_id, s in self.secrets.items():
            if s["owner"] == n:
                secrets.append(
                    testing.Secret(
                        s["content"],
                        id=secret_id,
                        owner="unit",
                        label=s["label"],
                        remote_grants={PEER_RELATION_ID: frozenset(s["grants"])},
                    )
                )
            elif f"lxd/{n}" in s["grants"]:
                secrets.append(testing.Secret(s["content"], id=secret_id))
        ip = self.lab[f"lxd-{n}"].ip
        networks = {
            testing.Network(name, [testing.BindAddress([testing.Address(ip)])])
            for name in ("cluster", "api")
        }
        return testing.State(
            leader=n == self.leader,
            config=CONFIG,
            relations=[relation],
            secrets=secrets,
            networks=networks,
        )

    def run(self, n: int, event: Event, attempts: int = 1) -> testing.State:
        """Run one hook on unit ``n`` against its real daemon; keep what Juju would keep."""
        for attempt in range(1, attempts + 1):
            state = self.state(n)
            ctx = testing.Context(LXDCharm, unit_id=n)
            installer = self.lab[f"lxd-{n}"].installer
            try:
                with mock.patch("charm.detect_installer", return_value=installer):
                    out = ctx.run(event(ctx, state.get_relation(PEER_RELATION_ID)), state)
                break
            except testing.errors.UncaughtCharmError:
                if attempt == attempts:
                    raise
                time.sleep(2)
        relation = out.get_relation(PEER_RELATION_ID)
        self.unit_data[n] = dict(relation.local_unit_data)
        if n == self.leader:
            self.app_data = dict(relation.local_app_data)
        owned = {s.id: s for s in out.secrets if s.owner == "unit"}
        for secret_id in [i for i, s in self.secrets.items() if s["owner"] == n]:
            if secret_id not in owned:
                del self.secrets[secret_id]
        for secret_id, s in owned.items():
            self.secrets[secret_id] = {
                "owner": n,
                "content": dict(s.tracked_content),
                "label": s.label,
                "grants": set().union(*s.remote_grants.values()),
            }
        return out

    def settle(self, n: int, timeout: float = 90.0) -> testing.State:
        """Run update-status on unit ``n`` (Juju does on a timer) until it reports active."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(n, lambda ctx, rel: ctx.on.update_status())
            if out.unit_status.name == "active" or time.monotonic() > deadline:
                return out
            time.sleep(2)

    def databag_text(self) -> str:
        """Everything in every databag, for leak checks."""
        bags = [self.app_data, *self.unit_data.values()]
        return "\n".join(f"{k}={v}" for bag in bags for k, v in bag.items())


def changed(remote: int) -> Event:
    return lambda ctx, rel: ctx.on.relation_changed(rel, remote_unit=remote)


def departed(remote: int, departing: int) -> Event:
    return lambda ctx, rel: ctx.on.relation_departed(
        rel, remote_unit=remote, departing_unit=departing
    )


def install(ctx: testing.Context, rel: testing.PeerRelation) -> Any:
    return ctx.on.install()


def unit_of(member: str) -> int:
    """The unit number of a member: lxd-2 -> 2."""
    return int(member.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def model(charm_lab: Lab) -> Model:
    return Model(charm_lab)


# -- steps -------------------------------------------------------------------------------


def test_leader_bootstraps(model: Model, charm_lab: Lab):
    out = model.run(0, install)

    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (1 members)")
    expected = certificate_fingerprint(charm_lab["lxd-0"].cluster_certificate())
    assert model.app_data["cluster-fingerprint"] == expected
    assert model.app_data["issuer"] == "lxd/0"
    assert member_view(charm_lab["lxd-0"]) == {"lxd-0": "ONLINE"}


def test_units_ask_to_join(model: Model, charm_lab: Lab):
    for n in (1, 2):
        out = model.run(n, install)
        assert out.unit_status == testing.WaitingStatus("waiting for a join token")
        assert model.unit_data[n]["clustered"] == "false"
        assert charm_lab[f"lxd-{n}"].lxd.server_info().clustered is False


def test_leader_grants_one_token_to_one_unit(model: Model, charm_lab: Lab):
    model.run(0, changed(1))
    model.run(0, changed(2))

    (secret,) = model.secrets.values()
    assert secret["owner"] == 0
    assert secret["grants"] == {"lxd/1"}
    assert model.state(2).secrets == frozenset()  # lxd/2 cannot read lxd/1's token
    assert charm_lab["lxd-0"].lxd.pending_join_tokens() == ["lxd-1"]
    token = JoinToken.decode(secret["content"]["token"])
    for leak in (secret["content"]["token"], token.secret, "PRIVATE KEY"):
        assert leak not in model.databag_text()


def test_units_join_one_after_another(model: Model, charm_lab: Lab):
    out = model.run(1, changed(0))
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-1 (2 members)")

    model.run(0, changed(1))  # lxd/1 joined: its token goes, lxd/2 gets one
    assert [s["grants"] for s in model.secrets.values()] == [{"lxd/2"}]
    out = model.run(2, changed(0))
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-2 (3 members)")

    out = model.run(0, changed(2))
    assert model.secrets == {}
    assert charm_lab["lxd-0"].lxd.pending_join_tokens() == []
    assert out.app_status == testing.ActiveStatus("3 members")
    lines = charm_lab["lxd-0"].lxc("cluster", "list", "--format", "csv").splitlines()
    assert len(lines) == 3 and all(",ONLINE," in line for line in lines), lines


def test_remove_leader_unit_whose_member_leads_the_database(model: Model, charm_lab: Lab):
    # GIVEN three voters, the Juju leader's member also leading the database
    roles = {m.name: m.roles for m in charm_lab["lxd-0"].lxd.members()}
    assert "database-leader" in roles["lxd-0"], roles
    lxd0_cert = charm_lab["lxd-0"].read_server_certificate()

    # WHEN juju remove-unit lxd/0: its own hooks, then Juju elects lxd/1
    for remote in (1, 2):
        model.run(0, departed(remote, departing=0))
    model.present.discard(0)
    model.leader = 1
    model.run(1, lambda ctx, rel: ctx.on.leader_elected(), attempts=5)
    model.run(2, departed(0, departing=0), attempts=5)

    # THEN the new leader removed lxd-0; once the database has a new leader, the other
    # two serve again and lxd-0 is distrusted
    two = {"lxd-1": "ONLINE", "lxd-2": "ONLINE"}
    assert wait_members(charm_lab["lxd-1"], two) == two
    out = model.settle(1)
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-1 (2 members)")
    assert model.app_data["issuer"] == "lxd/1"
    assert "lxd-0" not in model.app_data["members"]
    lxd1 = charm_lab["lxd-1"].address
    assert seconds_until_forbidden(lxd1, lxd0_cert, charm_lab, "lxd-0") is not None


def database_member(lab: Lab) -> tuple[str, str]:
    """(member holding the database, the other member) once LXD has settled the roles."""

    def holders() -> list[str]:
        view = lab["lxd-1"].lxd
        try:
            return [m.name for m in view.members() if m.holds_database]
        except LXDUnavailableError:
            return []

    members = wait_for(holders, timeout=60)
    assert len(members) == 1, members
    holder = members[0]
    return holder, ({"lxd-1", "lxd-2"} - {holder}).pop()


def test_sole_database_member_refuses_to_leave(model: Model, charm_lab: Lab):
    # GIVEN two members: LXD 5.0 keeps the database on one of them only
    holder, other_member = database_member(charm_lab)
    n, other = unit_of(holder), unit_of(other_member)

    # WHEN juju remove-unit of the holder's unit, THEN its hook fails on purpose
    with pytest.raises(testing.errors.UncaughtCharmError) as failure:
        model.run(n, departed(other, departing=n))
    assert "RefusedToLeaveError" in str(failure.value)
    assert f"member {holder} holds the only copy of the cluster database" in str(failure.value)
    # AND nothing was evacuated or removed: the cluster is whole
    two = {"lxd-1": "ONLINE", "lxd-2": "ONLINE"}
    assert wait_members(charm_lab["lxd-1"], two, stable=1) == two


def test_remove_unit_evacuates_then_removes_its_member(model: Model, charm_lab: Lab):
    holder, leaving = database_member(charm_lab)
    n = unit_of(leaving)
    lxd_holder = charm_lab[holder]
    image = lxdhosts.build_busybox_image(charm_lab.path("busybox.tar.gz"))
    lxdhosts.import_image(lxd_holder, image)
    lxd_holder.lxc("launch", "busybox", "c1", "--target", leaving)
    assert lxd_holder.lxd.instance_locations()["default/c1"] == (leaving, "Running")
    leaving_cert = charm_lab[leaving].read_server_certificate()

    # juju remove-unit of the member that runs the container
    survivor = unit_of(holder)
    model.run(n, departed(survivor, departing=n))
    assert member_view(lxd_holder)[leaving] == "EVACUATED"
    model.present.discard(n)
    if n == model.leader:  # Juju elects the survivor, which removes the member
        model.leader = survivor
        out = model.run(survivor, lambda ctx, rel: ctx.on.leader_elected(), attempts=5)
    else:
        out = model.run(survivor, departed(n, departing=n), attempts=5)

    assert wait_members(lxd_holder, {holder: "ONLINE"}) == {holder: "ONLINE"}
    out = model.settle(survivor)
    assert out.unit_status == testing.ActiveStatus(f"cluster member {holder} (1 members)")
    assert lxd_holder.lxd.instance_locations()["default/c1"] == (holder, "Running")
    assert leaving not in server_certificate_names(charm_lab, holder)
    assert seconds_until_forbidden(lxd_holder.address, leaving_cert, charm_lab, leaving)
