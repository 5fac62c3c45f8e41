"""Unit tests of the lxd charm (ops.testing Context/State, workload mocked)."""

import dataclasses
import json
from unittest.mock import MagicMock

import pytest
from ops import testing

from conftest import (
    BOOTSTRAPPED,
    FINGERPRINT,
    TOKEN,
    member,
    member_peer,
    peer,
    server_info,
    waiting_peer,
)
from installer import InstallError
from lxd import (
    CREATED,
    JoinToken,
    JoinTokenError,
    LXDAPIError,
    LXDUnavailableError,
    Member,
    MemberConfigKey,
    MemberNotEmptyError,
    ObjectState,
    SoleDatabaseMemberError,
)


def all_databag_text(state: testing.State) -> str:
    chunks = []
    for rel in state.relations:
        chunks.append(json.dumps(rel.local_app_data))
        chunks.append(json.dumps(rel.local_unit_data))
        for data in getattr(rel, "peers_data", {}).values():
            chunks.append(json.dumps(data))
    return "\n".join(chunks)


# -- bootstrap -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    ["install", "config_changed", "start", "leader_elected", "update_status", "upgrade_charm"],
)
def test_leader_bootstraps_the_cluster_once_on_any_event(ctx, lxd, event):
    # GIVEN a fresh leader with the peer relation and a daemon that bootstraps on request
    lxd.bootstrap_cluster.side_effect = lambda *a, **k: (
        setattr(lxd.server_info, "return_value", server_info(True, **{"core.https_address": "x"}))
        or True
    )
    lxd.members.return_value = [member("lxd-0")]
    relation = peer()
    # WHEN any "world changed" event runs
    out = ctx.run(getattr(ctx.on, event)(), testing.State(leader=True, relations=[relation]))
    # THEN the cluster exists, recorded for the application, and the unit says so
    lxd.bootstrap_cluster.assert_called_once_with(
        "lxd-0", "192.0.2.0:8443", {}, cluster_address="192.0.2.0:8443"
    )
    app = out.get_relation(relation.id).local_app_data
    assert app["mode"] == "cluster"
    assert app["cluster-fingerprint"] == FINGERPRINT
    assert app["api-port"] == "8443"
    assert app["issuer"] == "lxd/0"
    assert json.loads(app["members"]) == {"lxd-0": "lxd/0"}
    assert out.get_relation(relation.id).local_unit_data["clustered"] == "true"
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (1 members)")
    assert out.app_status == testing.ActiveStatus("1 members")


def test_new_leader_never_bootstraps_again(ctx, lxd):
    # GIVEN the application was bootstrapped by another unit and this one is a member
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1")]
    relation = peer(app={**BOOTSTRAPPED, "issuer": "lxd/1"}, peers={1: member_peer(1)})
    # WHEN leadership moves here
    out = ctx.run(ctx.on.leader_elected(), testing.State(leader=True, relations=[relation]))
    # THEN no bootstrap, and this unit takes over issuing tokens
    lxd.bootstrap_cluster.assert_not_called()
    assert out.get_relation(relation.id).local_app_data["issuer"] == "lxd/0"
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (2 members)")


def test_leader_that_is_not_a_member_delegates_token_issuing(ctx, lxd):
    # GIVEN a leader that has not joined yet, and two member peers
    relation = peer(app=BOOTSTRAPPED, peers={2: member_peer(2), 1: member_peer(1)})
    # WHEN it reconciles
    out = ctx.run(ctx.on.leader_elected(), testing.State(leader=True, relations=[relation]))
    # THEN the lowest-numbered member issues tokens, and this unit waits for one
    assert out.get_relation(relation.id).local_app_data["issuer"] == "lxd/1"
    assert out.unit_status == testing.WaitingStatus("waiting for a join token")


def test_leader_does_not_fork_a_cluster_whose_record_is_missing(ctx, lxd):
    # GIVEN no cluster record but a peer that says it is a member
    relation = peer(peers={1: member_peer(1)})
    out = ctx.run(ctx.on.leader_elected(), testing.State(leader=True, relations=[relation]))
    lxd.bootstrap_cluster.assert_not_called()
    assert out.unit_status == testing.WaitingStatus(
        "a peer is clustered but the cluster record is missing"
    )


def test_non_leader_waits_for_the_bootstrap(ctx_unit1, lxd):
    relation = peer(peers={0: {}})
    out = ctx_unit1.run(ctx_unit1.on.install(), testing.State(relations=[relation]))
    lxd.bootstrap_cluster.assert_not_called()
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to bootstrap the cluster"
    )


def test_leader_waits_for_the_peer_relation(ctx, lxd):
    out = ctx.run(ctx.on.install(), testing.State(leader=True))
    lxd.bootstrap_cluster.assert_not_called()
    assert out.unit_status == testing.WaitingStatus("waiting for the peer relation")


# -- tokens ----------------------------------------------------------------------------


def bootstrapped_leader(lxd: MagicMock) -> None:
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0")]
    lxd.issue_join_token.return_value = TOKEN
    lxd.member_config.return_value = [MemberConfigKey("storage-pool", "default", "source")]


def holding_token(secret: testing.Secret, **peers: dict[str, str]):
    """The issuer (leader) holding ``secret``'s token for lxd/1, with these peers."""
    relation = peer(
        app=BOOTSTRAPPED,
        local={"join-tokens": json.dumps({"lxd/1": secret.id})},
        peers={int(unit[1:]): data for unit, data in peers.items()},
    )
    return relation, testing.State(leader=True, relations=[relation], secrets=[secret])


def test_issuer_grants_a_token_secret_to_the_joiner_only(ctx, lxd):
    # GIVEN a bootstrapped issuer and a unit asking to join
    bootstrapped_leader(lxd)
    relation = peer(app=BOOTSTRAPPED, peers={1: waiting_peer(1)})
    # WHEN the joiner's data arrives
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=1),
        testing.State(leader=True, relations=[relation]),
    )
    # THEN a token for lxd-1 sits in a unit-owned secret granted to lxd/1 alone
    lxd.issue_join_token.assert_called_once_with("lxd-1")
    (secret,) = out.secrets
    assert secret.owner == "unit"
    assert secret.label == "join-token-lxd-1"
    assert secret.remote_grants == {relation.id: {"lxd/1"}}
    assert JoinToken.decode(secret.tracked_content["token"]) == TOKEN
    assert json.loads(secret.tracked_content["member-config"]) == [
        {"entity": "storage-pool", "name": "default", "key": "source", "description": ""}
    ]
    local = out.get_relation(relation.id).local_unit_data
    assert json.loads(local["join-tokens"]) == {"lxd/1": secret.id}
    # AND neither the token nor its secret is in any databag
    text = all_databag_text(out)
    assert TOKEN.secret not in text
    assert TOKEN.encode() not in text
    assert "PRIVATE KEY" not in text


def test_joins_are_serialized_one_token_at_a_time(ctx, lxd):
    bootstrapped_leader(lxd)
    relation = peer(app=BOOTSTRAPPED, peers={2: waiting_peer(2), 1: waiting_peer(1)})
    out = ctx.run(ctx.on.update_status(), testing.State(leader=True, relations=[relation]))
    lxd.issue_join_token.assert_called_once_with("lxd-1")
    assert list(json.loads(out.get_relation(relation.id).local_unit_data["join-tokens"])) == [
        "lxd/1"
    ]


def test_used_token_is_revoked_and_the_next_joiner_served(ctx, lxd):
    # GIVEN lxd/1 joined with its token while lxd/2 waits
    bootstrapped_leader(lxd)
    used = testing.Secret({"token": "x"}, owner="unit", label="join-token-lxd-1")
    relation, state = holding_token(used, u1=member_peer(1), u2=waiting_peer(2))
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=1), state)
    # THEN lxd/1's secret is gone, its LXD token revoked, and lxd/2 has the next token
    lxd.revoke_join_token.assert_any_call("lxd-1")
    assert [s.label for s in out.secrets] == ["join-token-lxd-2"]
    tokens = json.loads(out.get_relation(relation.id).local_unit_data["join-tokens"])
    assert list(tokens) == ["lxd/2"]
    assert json.loads(out.get_relation(relation.id).local_app_data["members"]) == {
        "lxd-0": "lxd/0",
        "lxd-1": "lxd/1",
    }


def test_token_of_a_unit_that_departs_before_joining_is_revoked(ctx, lxd):
    bootstrapped_leader(lxd)
    issued = testing.Secret({"token": "x"}, owner="unit", label="join-token-lxd-1")
    relation = peer(app=BOOTSTRAPPED, local={"join-tokens": json.dumps({"lxd/1": issued.id})})
    out = ctx.run(
        ctx.on.relation_departed(relation, remote_unit=1, departing_unit=1),
        testing.State(leader=True, relations=[relation], secrets=[issued]),
    )
    lxd.revoke_join_token.assert_called_once_with("lxd-1")
    assert out.secrets == frozenset()
    assert "join-tokens" not in out.get_relation(relation.id).local_unit_data


def test_former_issuer_revokes_its_outstanding_tokens(ctx, lxd):
    # GIVEN this unit issued a token but the leader moved issuing elsewhere
    bootstrapped_leader(lxd)
    issued = testing.Secret({"token": "x"}, owner="unit", label="join-token-lxd-2")
    relation = peer(
        app={**BOOTSTRAPPED, "issuer": "lxd/1"},
        local={"join-tokens": json.dumps({"lxd/2": issued.id})},
        peers={1: member_peer(1), 2: waiting_peer(2)},
    )
    out = ctx.run(ctx.on.update_status(), testing.State(relations=[relation], secrets=[issued]))
    lxd.revoke_join_token.assert_called_once_with("lxd-2")
    lxd.issue_join_token.assert_not_called()
    assert out.secrets == frozenset()


KEYS = json.dumps(
    [{"entity": "storage-pool", "name": "default", "key": "source", "description": ""}]
)


def failed_peer(unit: int) -> dict[str, str]:
    """A unit waiting to join whose join with :data:`TOKEN` failed."""
    failed = {"token": TOKEN.digest, "reason": "Missing network", "count": 1, "at": 0.0}
    return {**waiting_peer(unit), "join-failed": json.dumps(failed)}


def test_a_token_whose_join_failed_is_replaced_the_other_joiners_first(ctx, lxd):
    # GIVEN lxd/1's join failed with its token (LXD used it up) while lxd/2 also waits
    bootstrapped_leader(lxd)
    used = testing.Secret(
        {"token": TOKEN.encode(), "member-config": KEYS}, owner="unit", label="join-token-lxd-1"
    )
    relation, state = holding_token(used, u1=failed_peer(1), u2=waiting_peer(2))
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=1), state)
    # THEN its token is revoked, its secret gone, and the next token goes to lxd/2
    lxd.revoke_join_token.assert_any_call("lxd-1")
    lxd.issue_join_token.assert_called_once_with("lxd-2")
    assert [s.label for s in out.secrets] == ["join-token-lxd-2"]


def test_a_unit_whose_join_failed_gets_a_new_token_in_its_secret(ctx, lxd):
    bootstrapped_leader(lxd)
    used = testing.Secret(
        {"token": TOKEN.encode(), "member-config": KEYS}, owner="unit", label="join-token-lxd-1"
    )
    relation = peer(
        app=BOOTSTRAPPED,
        local={"join-tokens": json.dumps({"lxd/1": used.id})},
        peers={1: failed_peer(1)},
    )
    fresh = dataclasses.replace(TOKEN, secret="another-secret")
    lxd.issue_join_token.return_value = fresh
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=1),
        testing.State(leader=True, relations=[relation], secrets=[used]),
    )
    # THEN a new token for lxd-1, as a new revision of the secret it can already read
    # (a secret with the same label cannot be added while the old one's removal is pending)
    lxd.revoke_join_token.assert_any_call("lxd-1")
    lxd.issue_join_token.assert_called_once_with("lxd-1")
    (secret,) = out.secrets
    assert secret.id == used.id
    assert JoinToken.decode(secret.latest_content["token"]) == fresh
    tokens = json.loads(out.get_relation(relation.id).local_unit_data["join-tokens"])
    assert tokens == {"lxd/1": used.id}
    assert fresh.secret not in all_databag_text(out)


@pytest.mark.parametrize("newer_object", [False, True])
def test_a_token_is_replaced_when_an_object_came_after_it(ctx, lxd, newer_object):
    # GIVEN lxd/1 holds a token that names the keys of the cluster's objects of that time
    bootstrapped_leader(lxd)
    issued = testing.Secret(
        {"token": TOKEN.encode(), "member-config": KEYS}, owner="unit", label="join-token-lxd-1"
    )
    if newer_object:  # a pool with its own member-specific key was created since
        lxd.member_config.return_value = [
            MemberConfigKey("storage-pool", "default", "source"),
            MemberConfigKey("storage-pool", "remote", "source"),
        ]
    relation = peer(
        app=BOOTSTRAPPED,
        local={"join-tokens": json.dumps({"lxd/1": issued.id})},
        peers={1: waiting_peer(1)},
    )
    out = ctx.run(
        ctx.on.update_status(), testing.State(leader=True, relations=[relation], secrets=[issued])
    )
    # THEN a token that lacks a key is replaced (in the same secret); a current one is kept
    (secret,) = out.secrets
    assert secret.id == issued.id
    assert lxd.issue_join_token.call_count == int(newer_object)
    keys = json.loads(secret.latest_content["member-config"])
    assert len(keys) == (2 if newer_object else 1)


def test_a_token_is_kept_when_lxd_lists_the_same_keys_in_another_order(ctx, lxd):
    bootstrapped_leader(lxd)
    keys = [
        MemberConfigKey("network", "UPLINK", "parent"),
        MemberConfigKey("storage-pool", "default", "source"),
    ]
    lxd.member_config.return_value = keys
    issued_keys = [
        {"entity": k.entity, "name": k.name, "key": k.key, "description": ""} for k in keys
    ]
    issued = testing.Secret(
        {"token": TOKEN.encode(), "member-config": json.dumps(issued_keys)},
        owner="unit",
        label="join-token-lxd-1",
    )
    lxd.member_config.return_value = keys[::-1]  # Go's map order
    relation = peer(
        app=BOOTSTRAPPED,
        local={"join-tokens": json.dumps({"lxd/1": issued.id})},
        peers={1: waiting_peer(1)},
    )
    ctx.run(
        ctx.on.update_status(), testing.State(leader=True, relations=[relation], secrets=[issued])
    )
    lxd.issue_join_token.assert_not_called()
    lxd.revoke_join_token.assert_not_called()


@pytest.mark.parametrize("garbage", ["not json", "[]", '{"token": 1}', '{"count": "x"}'])
def test_a_malformed_join_failure_from_a_peer_changes_nothing(ctx, lxd, garbage):
    # GIVEN a waiting peer whose join-failed is not what this charm writes
    bootstrapped_leader(lxd)
    issued = testing.Secret(
        {"token": TOKEN.encode(), "member-config": KEYS}, owner="unit", label="join-token-lxd-1"
    )
    relation, state = holding_token(issued, u1={**waiting_peer(1), "join-failed": garbage})
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=1), state)
    # THEN it counts as no failure: the token it holds is kept, nothing raised
    lxd.revoke_join_token.assert_not_called()
    lxd.issue_join_token.assert_not_called()
    assert [s.id for s in out.secrets] == [issued.id]


def test_issuer_holds_tokens_back_while_an_object_is_pending(ctx, lxd):
    # GIVEN lxd/1 waits to join while the cluster's ceph pool is defined, not created
    bootstrapped_leader(lxd)
    lxd.unfinished_objects.return_value = {"storage-pool remote": "Pending"}
    relation = peer(app=BOOTSTRAPPED, peers={1: waiting_peer(1)})
    out = ctx.run(ctx.on.update_status(), testing.State(leader=True, relations=[relation]))
    # THEN no token is issued (the join would fail and use it up)
    lxd.issue_join_token.assert_not_called()
    assert "join-tokens" not in out.get_relation(relation.id).local_unit_data


# -- joining ---------------------------------------------------------------------------


def joins_as_lxd_1(lxd: MagicMock) -> None:
    """LXD accepts lxd/1's join: it is then the 2nd member of the cluster."""
    lxd.join_cluster.side_effect = lambda *a: (
        setattr(lxd.server_info, "return_value", server_info(True)) or True
    )
    lxd.members.return_value = [member("lxd-0"), member("lxd-1")]


def joiner_state(content: dict[str, str], app: dict[str, str] | None = None):
    secret = testing.Secret(content)
    relation = peer(
        app=app or BOOTSTRAPPED,
        peers={0: {**member_peer(0), "join-tokens": json.dumps({"lxd/1": secret.id})}},
    )
    return relation, testing.State(relations=[relation], secrets=[secret])


@pytest.mark.parametrize("ovn", [[], ["default"]])
def test_a_joiner_restarts_lxd_when_the_cluster_has_ovn_networks(
    ctx_unit1, lxd, installer, ovn: list[str]
):
    # GIVEN a granted token, and a cluster with or without an OVN network
    relation, state = joiner_state({"token": TOKEN.encode(), "member-config": "[]"})
    joins_as_lxd_1(lxd)
    lxd.ovn_networks.return_value = ovn
    # WHEN it joins
    ctx_unit1.run(ctx_unit1.on.relation_changed(relation, remote_unit=0), state)
    # THEN LXD is restarted after the join only when an OVN network must start on it
    lxd.join_cluster.assert_called_once()
    assert installer.restart.call_count == (1 if ovn else 0)


def test_joiner_joins_with_its_token_and_member_config(ctx_unit1, lxd):
    # GIVEN a granted token and a preseed that names this member's pool source
    keys = [{"entity": "storage-pool", "name": "default", "key": "source", "description": ""}]
    relation, state = joiner_state({"token": TOKEN.encode(), "member-config": json.dumps(keys)})
    preseed = "storage_pools:\n- {name: default, driver: dir, config: {source: /srv/lxd}}\n"
    state = testing.State(
        relations=state.relations, secrets=state.secrets, config={"preseed": preseed}
    )
    joins_as_lxd_1(lxd)
    lxd.object_state.return_value = ObjectState("dir", CREATED, ("lxd-0",))  # bootstrap's pool
    # WHEN the secret reaches it
    out = ctx_unit1.run(ctx_unit1.on.relation_changed(relation, remote_unit=0), state)
    # THEN it joined as lxd-1 with its own source, and says it is a member
    lxd.join_cluster.assert_called_once_with(
        TOKEN,
        "lxd-1",
        "192.0.2.0:8443",
        [{"entity": "storage-pool", "name": "default", "key": "source", "value": "/srv/lxd"}],
    )
    assert out.get_relation(relation.id).local_unit_data["clustered"] == "true"
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-1 (2 members)")
    assert TOKEN.secret not in all_databag_text(out)


def test_joiner_asks_for_a_token_and_waits(ctx_unit1, lxd):
    relation = peer(app=BOOTSTRAPPED, peers={0: member_peer(0)})
    out = ctx_unit1.run(
        ctx_unit1.on.relation_joined(relation, remote_unit=0), testing.State(relations=[relation])
    )
    local = out.get_relation(relation.id).local_unit_data
    assert local == {"member-name": "lxd-1", "address": "192.0.2.0:8443", "clustered": "false"}
    assert out.unit_status == testing.WaitingStatus("waiting for a join token")


def test_joiner_refuses_a_token_for_another_cluster(ctx_unit1, lxd):
    other = JoinToken("lxd-1", "cd" * 32, ("192.0.2.9:8443",), "x")
    relation, state = joiner_state({"token": other.encode()})
    (secret,) = state.secrets
    out = ctx_unit1.run(ctx_unit1.on.secret_changed(secret), state)
    lxd.join_cluster.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        f"join token names certificate {'cd' * 6}, the cluster's is {'ab' * 6}; refusing to join"
    )


def test_joiner_reports_a_malformed_token(ctx_unit1, lxd):
    relation, state = joiner_state({"token": "not-a-token"})
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.join_cluster.assert_not_called()
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("join token from lxd/0 is unusable: malformed")


def test_joiner_reports_a_token_the_cluster_refuses(ctx_unit1, lxd):
    relation, state = joiner_state({"token": TOKEN.encode()})
    lxd.join_cluster.side_effect = JoinTokenError("fingerprint does not match the cluster")
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(
        "join token rejected: fingerprint does not match the cluster"
    )


def test_a_failed_join_asks_for_a_new_token_and_does_not_retry_the_old_one(ctx_unit1, lxd):
    # GIVEN a granted token that LXD no longer has (a join used it up)
    relation, state = joiner_state({"token": TOKEN.encode(), "member-config": "[]"})
    reason = "No matching cluster join operation found"
    lxd.join_cluster.side_effect = LXDAPIError("PUT /1.0/cluster", reason)
    # WHEN it joins
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    # THEN it says so to the issuer, with that token's secret, and waits for another
    local = out.get_relation(relation.id).local_unit_data
    failure = json.loads(local["join-failed"])
    assert (failure["token"], failure["reason"], failure["count"]) == (TOKEN.digest, reason, 1)
    assert TOKEN.secret not in all_databag_text(out)
    assert out.unit_status == testing.WaitingStatus(
        f"joining failed ({reason}); waiting for a new join token"
    )
    # AND the next hook does not try the same token again
    lxd.join_cluster.reset_mock()
    again = ctx_unit1.run(ctx_unit1.on.update_status(), out)
    lxd.join_cluster.assert_not_called()
    assert again.unit_status == out.unit_status


def test_a_joiner_that_failed_three_times_pauses_then_joins(ctx_unit1, lxd, monkeypatch):
    relation, state = joiner_state({"token": TOKEN.encode(), "member-config": "[]"})
    failed = {"token": "0123456789abcdef", "reason": "Missing network", "count": 3, "at": 1000.0}
    relation = dataclasses.replace(relation, local_unit_data={"join-failed": json.dumps(failed)})
    state = dataclasses.replace(state, relations=[relation])
    monkeypatch.setattr("charm.time.time", lambda: 1100.0)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.join_cluster.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "joining the cluster failed 3 times, last: Missing network; "
        "trying again at the next update-status"
    )
    # 5 minutes later it tries the new token, and once joined the failures are forgotten
    monkeypatch.setattr("charm.time.time", lambda: 1300.0)
    joins_as_lxd_1(lxd)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), out)
    lxd.join_cluster.assert_called_once()
    assert "join-failed" not in out.get_relation(relation.id).local_unit_data


def test_a_joiner_whose_own_failure_record_is_unreadable_joins(ctx_unit1, lxd):
    relation, state = joiner_state({"token": TOKEN.encode(), "member-config": "[]"})
    relation = dataclasses.replace(relation, local_unit_data={"join-failed": "not json"})
    state = dataclasses.replace(state, relations=[relation])
    joins_as_lxd_1(lxd)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.join_cluster.assert_called_once()
    assert "join-failed" not in out.get_relation(relation.id).local_unit_data


def test_joiner_waits_until_the_secret_is_readable(ctx_unit1, lxd):
    relation = peer(
        app=BOOTSTRAPPED, peers={0: {"join-tokens": json.dumps({"lxd/1": "secret:missing"})}}
    )
    out = ctx_unit1.run(ctx_unit1.on.update_status(), testing.State(relations=[relation]))
    assert out.unit_status == testing.WaitingStatus("waiting for access to the join token")


# -- scale-in --------------------------------------------------------------------------


def depart_lxd1(ctx_unit1, lxd, members, planned_units=1):
    """Run lxd/1's own departed hook (juju remove-unit lxd/1) in a cluster of ``members``."""
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = members
    relation = peer(app=BOOTSTRAPPED, peers={0: member_peer(0)})
    return ctx_unit1.run(
        ctx_unit1.on.relation_departed(relation, remote_unit=0, departing_unit=1),
        testing.State(relations=[relation], planned_units=planned_units),
    )


def test_departing_unit_evacuates_itself_while_others_are_online(ctx_unit1, lxd):
    depart_lxd1(ctx_unit1, lxd, [member("lxd-0"), member("lxd-1")])
    lxd.check_database_survives.assert_called_once_with("lxd-1")
    lxd.evacuate_member.assert_called_once_with("lxd-1")
    lxd.remove_member.assert_not_called()


def test_departing_leader_does_not_remove_the_peers_that_leave_its_view(ctx_unit1, lxd):
    # GIVEN the leader lxd/1 of a 3-member cluster is being removed: Juju runs its own
    # relation-departed once per peer, and each peer leaves its relation view in turn
    # (lxd/1, not lxd/0: ops.testing 8.9 cannot name unit 0 as the departing unit)
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1"), member("lxd-2")]
    members = {"lxd-0": "lxd/0", "lxd-1": "lxd/1", "lxd-2": "lxd/2"}
    relation = peer(
        app={**BOOTSTRAPPED, "members": json.dumps(members)}, peers={0: member_peer(0)}
    )
    state = testing.State(leader=True, relations=[relation], planned_units=2)
    ctx = ctx_unit1
    out = ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=1), state)
    # WHEN any later hook runs on it (update-status here) with lxd/2 gone from its view
    out = ctx.run(ctx.on.update_status(), out)
    # THEN it marked itself departing, emptied its own member and removed nobody
    assert out.get_relation(relation.id).local_unit_data["departing"] == "true"
    lxd.evacuate_member.assert_called_once_with("lxd-1")
    lxd.remove_member.assert_not_called()


def test_departing_sole_database_member_refuses_to_leave(ctx_unit1, lxd):
    # GIVEN a 2-member cluster whose database lives on this unit's member alone
    lxd.check_database_survives.side_effect = SoleDatabaseMemberError(
        "member lxd-1 holds the only copy of the cluster database"
    )
    # WHEN only this unit is removed, THEN its hook fails (Juju keeps the machine)
    with pytest.raises(testing.errors.UncaughtCharmError) as failure:
        depart_lxd1(ctx_unit1, lxd, [member("lxd-0"), member("lxd-1")])
    assert "RefusedToLeaveError" in str(failure.value)
    assert "juju add-unit lxd" in str(failure.value)
    assert "juju resolved lxd/1" in str(failure.value)
    lxd.evacuate_member.assert_not_called()


def test_departing_sole_database_member_goes_with_its_application(ctx_unit1, lxd):
    # GIVEN the whole application is being removed (no unit is planned to stay)
    depart_lxd1(ctx_unit1, lxd, [member("lxd-0"), member("lxd-1")], planned_units=0)
    lxd.check_database_survives.assert_not_called()
    lxd.evacuate_member.assert_called_once_with("lxd-1")


def test_last_departing_member_keeps_its_instances(ctx_unit1, lxd):
    depart_lxd1(ctx_unit1, lxd, [member("lxd-0", "Offline"), member("lxd-1")])
    lxd.evacuate_member.assert_not_called()


def departed_state():
    """The leader's view after lxd/2 (a recorded member) left the relation."""
    record = {"lxd-0": "lxd/0", "lxd-1": "lxd/1", "lxd-2": "lxd/2"}
    relation = peer(app={**BOOTSTRAPPED, "members": json.dumps(record)}, peers={1: member_peer(1)})
    return relation, testing.State(leader=True, relations=[relation])


@pytest.mark.parametrize(
    ("status", "answers", "force"),
    [
        ("Evacuated", True, False),  # the departing unit emptied itself
        ("Online", True, False),  # it could not: the workload evacuates it before removal
        ("Offline", False, True),  # its machine is gone, but it held nothing
        ("Evacuated", False, True),  # emptied, then its machine went (LXD still says Evacuated)
    ],
)
def test_leader_removes_a_departed_member(ctx, lxd, status, answers, force):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1"), member("lxd-2", status)]
    lxd.member_answers.side_effect = lambda m: answers if m.name == "lxd-2" else True
    relation, state = departed_state()
    out = ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=2), state)
    lxd.remove_member.assert_called_once_with("lxd-2", force=force, evacuate=not force)
    assert json.loads(out.get_relation(relation.id).local_app_data["members"]) == {
        "lxd-0": "lxd/0",
        "lxd-1": "lxd/1",
    }


def test_offline_departed_member_with_instances_is_not_removed(ctx, lxd):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1"), member("lxd-2", "Offline")]
    lxd.member_instances.return_value = ["default/c1"]
    relation, state = departed_state()
    out = ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=2), state)
    lxd.remove_member.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "member lxd-2 is offline and still holds 1 instance(s); bring its machine back, "
        "or run remove-dead-member name=lxd-2 confirm=true"
    )
    assert "lxd-2" in json.loads(out.get_relation(relation.id).local_app_data["members"])


@pytest.mark.parametrize(
    "refusal",
    [
        MemberNotEmptyError("member lxd-2 still holds 1 instance(s)"),
        SoleDatabaseMemberError("member lxd-2 holds the only copy of the cluster database"),
    ],
)
def test_member_the_workload_refuses_to_remove_blocks(ctx, lxd, refusal):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-2", "Evacuated")]
    lxd.remove_member.side_effect = refusal
    relation, state = departed_state()
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(str(refusal))
    assert "lxd-2" in json.loads(out.get_relation(relation.id).local_app_data["members"])


def test_member_already_gone_is_dropped_from_the_record(ctx, lxd):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1")]
    relation, state = departed_state()
    out = ctx.run(ctx.on.update_status(), state)
    lxd.remove_member.assert_not_called()
    assert "lxd-2" not in json.loads(out.get_relation(relation.id).local_app_data["members"])


# -- remove-dead-member ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "members", "message"),
    [
        (
            {"name": "lxd-2"},
            [],
            "invalid 'confirm': force removal cannot be undone; run again with confirm=true",
        ),
        ({"name": "Bad_Name", "confirm": True}, [], "invalid 'name'"),
        (
            {"name": "lxd-9", "confirm": True},
            [member("lxd-0")],
            "no cluster member named lxd-9; members: ['lxd-0']",
        ),
        (
            {"name": "lxd-2", "confirm": True},
            [member("lxd-2")],
            "member lxd-2 still answers at lxd-2:8443, it is not dead: remove its unit "
            "instead (juju remove-unit) so it is evacuated first",
        ),
    ],
)
def test_remove_dead_member_refuses(ctx, lxd, params, members, message):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = members
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("remove-dead-member", params=params), testing.State())
    assert failure.value.message.startswith(message)
    lxd.remove_member.assert_not_called()


@pytest.mark.parametrize("status", ["Offline", "Evacuated"])
def test_remove_dead_member_forces_out_a_member_that_no_longer_answers(ctx, lxd, status):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-2", status)]
    lxd.member_answers.side_effect = lambda m: m.name != "lxd-2"
    ctx.run(
        ctx.on.action("remove-dead-member", params={"name": "lxd-2", "confirm": True}),
        testing.State(),
    )
    lxd.remove_member.assert_called_once_with("lxd-2", force=True)
    assert ctx.action_results == {"removed": "lxd-2", "members": 1}


def test_remove_dead_member_reports_lxd_errors(ctx, lxd):
    lxd.members.side_effect = LXDUnavailableError("no socket")
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(
            ctx.on.action("remove-dead-member", params={"name": "lxd-2", "confirm": True}),
            testing.State(),
        )
    assert failure.value.message == "removing lxd-2 failed: no socket"


# -- config, modes, install ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "bogus"}, "config: invalid 'mode': Input should be 'cluster' or 'standalone'"),
        ({"channel": "nope"}, "config: invalid 'channel': expected TRACK[/RISK[/BRANCH]]"),
        ({"preseed": "cluster: {enabled: true}"}, "config: invalid 'preseed': unsupported key"),
        ({"preseed": "[1, 2"}, "config: invalid 'preseed': not valid YAML"),
        ({"api-port": 0}, "config: invalid 'api-port': Input should be greater than or equal"),
        ({"metrics-port": 8443}, "config: metrics-port must differ from api-port"),
    ],
)
def test_bad_config_blocks_and_changes_nothing(ctx, lxd, installer, tuning, config, message):
    out = ctx.run(
        ctx.on.config_changed(), testing.State(leader=True, config=config, relations=[peer()])
    )
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(message)
    installer.install.assert_not_called()
    tuning.assert_not_called()
    lxd.bootstrap_cluster.assert_not_called()
    lxd.update_server_config.assert_not_called()


def test_mode_cannot_change_after_bootstrap(ctx, lxd):
    lxd.server_info.return_value = server_info(True)
    out = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            leader=True, config={"mode": "standalone"}, relations=[peer(app=BOOTSTRAPPED)]
        ),
    )
    lxd.init_standalone.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "mode is fixed at 'cluster' since bootstrap; set it back: juju config lxd mode=cluster"
    )


API_PORT_FIXED = (
    "api-port is fixed at 8443 since bootstrap (LXD cannot move a member's cluster address); "
    "set it back: juju config lxd api-port=8443"
)


def bootstrapped_on_8443(lxd: MagicMock, api_port: int, leader: bool = True) -> testing.State:
    """A one-member cluster bootstrapped on port 8443, with ``api-port`` set to ``api_port``."""
    lxd.server_info.return_value = server_info(True, **{"cluster.https_address": "192.0.2.0:8443"})
    lxd.members.return_value = [member("lxd-0")]
    relation = peer(app={**BOOTSTRAPPED, "api-port": "8443"})
    return testing.State(leader=leader, config={"api-port": api_port}, relations=[relation])


@pytest.mark.parametrize("event", ["config_changed", "update_status", "leader_elected"])
@pytest.mark.parametrize("leader", [True, False])
def test_api_port_cannot_change_after_bootstrap(ctx, lxd, event, leader):
    # GIVEN a member of a cluster bootstrapped on port 8443, WHEN another port is set
    out = ctx.run(getattr(ctx.on, event)(), bootstrapped_on_8443(lxd, 8444, leader))
    # THEN the unit blocks naming the option, the bootstrap value and the fix; LXD untouched
    assert out.unit_status == testing.BlockedStatus(API_PORT_FIXED)
    lxd.update_server_config.assert_not_called()
    lxd.bootstrap_cluster.assert_not_called()
    lxd.join_cluster.assert_not_called()
    assert out.opened_ports == frozenset()
    if leader:  # and the application says so too
        assert out.app_status == testing.BlockedStatus(API_PORT_FIXED)


def test_api_port_of_a_cluster_bootstrapped_without_the_record_is_its_address(ctx, lxd):
    # GIVEN a cluster whose record predates api-port: the member's cluster address says 8443
    state = bootstrapped_on_8443(lxd, 8444)
    state = dataclasses.replace(state, relations=[peer(app=BOOTSTRAPPED)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(API_PORT_FIXED)
    lxd.update_server_config.assert_not_called()


def test_api_port_set_back_is_applied_again(ctx, lxd):
    # GIVEN the blocked cluster above, WHEN api-port is set back to the bootstrap value
    out = ctx.run(ctx.on.config_changed(), bootstrapped_on_8443(lxd, 8443))
    # THEN the unit is active and serves on it
    lxd.update_server_config.assert_called_once_with(
        {"core.https_address": "192.0.2.0:8443", "core.metrics_address": ""}
    )
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (1 members)")


def test_api_port_of_a_standalone_server_moves(ctx, lxd):
    # GIVEN a standalone server (no cluster address to keep), WHEN api-port changes
    lxd.init_standalone.return_value = False
    relation = peer(app={"mode": "standalone"})
    state = testing.State(
        leader=True, config={"mode": "standalone", "api-port": 8444}, relations=[relation]
    )
    out = ctx.run(ctx.on.config_changed(), state)
    # THEN LXD listens on the new port
    lxd.update_server_config.assert_called_once_with(
        {"core.https_address": "192.0.2.0:8444", "core.metrics_address": ""}
    )
    assert out.opened_ports == {testing.TCPPort(8444)}


def test_standalone_mode_sets_up_an_independent_server(ctx, lxd):
    lxd.init_standalone.return_value = True
    relation = peer()
    out = ctx.run(
        ctx.on.install(),
        testing.State(
            leader=True, config={"mode": "standalone", "metrics-port": 9100}, relations=[relation]
        ),
    )
    lxd.init_standalone.assert_called_once_with("192.0.2.0:8443", {})
    lxd.bootstrap_cluster.assert_not_called()
    lxd.update_server_config.assert_called_once_with(
        {"core.https_address": "192.0.2.0:8443", "core.metrics_address": "192.0.2.0:9100"}
    )
    assert out.get_relation(relation.id).local_app_data == {"mode": "standalone"}
    assert out.opened_ports == {testing.TCPPort(8443), testing.TCPPort(9100)}
    assert out.unit_status == testing.ActiveStatus("standalone server (LXD 5.0.2)")


def test_install_failure_blocks_with_the_reason(ctx, installer):
    installer.installed_version.return_value = None
    installer.install.side_effect = InstallError("apt-get install -y failed: no space")
    out = ctx.run(ctx.on.install(), testing.State(leader=True))
    assert out.unit_status == testing.BlockedStatus(
        "installing LXD failed: apt-get install -y failed: no space"
    )


def test_unreachable_daemon_waits(ctx, lxd):
    lxd.wait_ready.side_effect = LXDUnavailableError("no socket at /var/lib/lxd/unix.socket")
    lxd.server_info.side_effect = LXDUnavailableError("no socket at /var/lib/lxd/unix.socket")
    out = ctx.run(ctx.on.start(), testing.State(leader=True, relations=[peer()]))
    assert out.unit_status == testing.WaitingStatus(
        "LXD is not answering: no socket at /var/lib/lxd/unix.socket"
    )


def test_sysctl_settings_follow_config(ctx, tuning):
    ctx.run(
        ctx.on.config_changed(), testing.State(config={"sysctl-tuning": False}, relations=[peer()])
    )
    (wanted,), _ = tuning.call_args
    assert wanted == {"kernel.dmesg_restrict": 1, "kernel.kptr_restrict": 1}


def test_snap_leader_creates_the_cohort_everyone_installs_with(ctx, installer):
    installer.uses_cohort = True
    installer.installed_version.return_value = None
    installer.create_cohort.return_value = "cohort-key-1"
    relation = peer()
    out = ctx.run(ctx.on.install(), testing.State(leader=True, relations=[relation]))
    installer.install.assert_called_once_with("5.21/stable", "cohort-key-1")
    assert out.get_relation(relation.id).local_app_data["snap-cohort"] == "cohort-key-1"


def test_snap_follower_waits_for_the_cohort(ctx_unit1, installer):
    installer.uses_cohort = True
    installer.installed_version.return_value = None
    out = ctx_unit1.run(ctx_unit1.on.install(), testing.State(relations=[peer()]))
    installer.install.assert_not_called()
    assert out.unit_status == testing.WaitingStatus("waiting for the leader's snap cohort")


def test_snap_follower_installs_with_the_leaders_cohort(ctx_unit1, installer):
    installer.uses_cohort = True
    installer.installed_version.return_value = None
    ctx_unit1.run(
        ctx_unit1.on.install(), testing.State(relations=[peer(app={"snap-cohort": "k"})])
    )
    installer.install.assert_called_once_with("5.21/stable", "k")


# -- member state in the statuses ------------------------------------------------------


def offline(name: str) -> Member:
    return Member(
        name=name, url=f"https://{name}:8443", status="Offline", message="No heartbeat since 40s"
    )


@pytest.mark.parametrize("event", ["update_status", "config_changed"])
def test_a_unit_whose_member_is_offline_blocks_with_lxds_message(ctx, lxd, event):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [offline("lxd-0"), member("lxd-1"), member("lxd-2")]
    out = ctx.run(getattr(ctx.on, event)(), testing.State(relations=[peer(app=BOOTSTRAPPED)]))
    assert out.unit_status == testing.BlockedStatus("member lxd-0 OFFLINE: No heartbeat since 40s")


def test_another_member_offline_is_named_by_the_units_and_blocks_the_application(ctx, lxd):
    # GIVEN three members, one of them no longer heard from
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1"), offline("lxd-2")]
    relation = peer(
        app={**BOOTSTRAPPED, "members": json.dumps({f"lxd-{n}": f"lxd/{n}" for n in range(3)})},
        peers={1: member_peer(1), 2: member_peer(2)},
    )
    # WHEN the leader's update-status runs
    out = ctx.run(ctx.on.update_status(), testing.State(leader=True, relations=[relation]))
    # THEN its unit names the member, and the application says how many are ONLINE
    assert out.unit_status == testing.ActiveStatus(
        "cluster member lxd-0 (3 members; lxd-2 OFFLINE)"
    )
    assert out.app_status == testing.BlockedStatus("2/3 members ONLINE; lxd-2 OFFLINE")
    lxd.remove_member.assert_not_called()


def test_an_evacuated_member_is_reported_and_the_application_stays_active(ctx, lxd):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0", "Evacuated"), member("lxd-1")]
    relation = peer(
        app={**BOOTSTRAPPED, "members": json.dumps({"lxd-0": "lxd/0", "lxd-1": "lxd/1"})},
        peers={1: member_peer(1)},
    )
    out = ctx.run(ctx.on.update_status(), testing.State(leader=True, relations=[relation]))
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 evacuated (2 members)")
    assert out.app_status == testing.ActiveStatus("2 members")


@pytest.mark.parametrize("leader", [True, False])
def test_a_blocked_unit_tells_its_peers_why_and_stops_once_active(ctx, lxd, leader):
    # GIVEN a member whose api-port was changed: Blocked
    state = bootstrapped_on_8443(lxd, 8444, leader)
    out = ctx.run(ctx.on.config_changed(), state)
    (relation,) = out.relations
    assert relation.local_unit_data["blocked"] == API_PORT_FIXED
    # WHEN it is set back, THEN it says nothing any more
    state = dataclasses.replace(out, config={"api-port": 8443})
    out = ctx.run(ctx.on.config_changed(), state)
    assert "blocked" not in out.get_relation(relation.id).local_unit_data


def test_the_application_shows_why_another_unit_is_blocked(ctx, lxd):
    # GIVEN an active leader and lxd/2, which says it is Blocked
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member(f"lxd-{n}") for n in range(3)]
    relation = peer(
        app={**BOOTSTRAPPED, "members": json.dumps({f"lxd-{n}": f"lxd/{n}" for n in range(3)})},
        peers={1: member_peer(1), 2: {**member_peer(2), "blocked": "preseed: bad"}},
    )
    # WHEN the leader's update-status runs
    out = ctx.run(ctx.on.update_status(), testing.State(leader=True, relations=[relation]))
    # THEN its own unit is active, the application says which unit is Blocked and why
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (3 members)")
    assert out.app_status == testing.BlockedStatus("lxd/2: preseed: bad")


def test_a_departing_unit_publishes_nothing_more(ctx, lxd):
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [offline("lxd-0"), member("lxd-1")]
    relation = peer(app=BOOTSTRAPPED, local={"departing": "true"})
    out = ctx.run(ctx.on.update_status(), testing.State(relations=[relation]))
    assert out.unit_status.name == "blocked"
    assert "blocked" not in out.get_relation(relation.id).local_unit_data


def test_a_daemon_that_died_is_started_by_the_next_hook_and_logged(ctx, lxd, installer, caplog):
    installer.ensure_running.return_value = True  # it was not running: started now
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0")]
    out = ctx.run(ctx.on.update_status(), testing.State(relations=[peer(app=BOOTSTRAPPED)]))
    assert "LXD was not running: started it" in caplog.text
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (1 members)")


def test_the_first_start_after_install_is_not_a_warning(ctx, lxd, installer, caplog):
    installer.installed_version.side_effect = lambda: "5.0.2" if installer.install.called else None
    installer.ensure_running.return_value = True
    ctx.run(ctx.on.install(), testing.State())
    installer.install.assert_called_once()
    assert "LXD was not running" not in caplog.text
