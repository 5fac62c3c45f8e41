"""Unit tests of the lxd charm as the consumer of ``lxd-member`` (workload mocked)."""

import dataclasses
import json
from unittest.mock import call

import pytest
from ops import testing

from charm_common.lxd_member import LXDObject, MemberRequest
from conftest import BOOTSTRAPPED, TOKEN, member, member_peer, peer, server_info, waiting_peer
from lxd import (
    LXDAPIError,
    ObjectPendingError,
    ObjectRefusedError,
    ObjectState,
    ObjectUpdateRefusedError,
    Profile,
)

NB = {"network.ovn.northbound_connection": "ssl:10.0.0.1:6641"}
UPLINK = LXDObject("UPLINK", "physical", {"mtu": "1500"}, {"parent": "br-uplink"}, "uplink")
DEFAULT = LXDObject("default", "ovn", {"network": "UPLINK"})
REMOTE = LXDObject("remote", "ceph", {"ceph.osd.pool_name": "lxd"}, {"source": "lxd"})
OVN_REQUEST = MemberRequest("ovn-bridge", NB, (UPLINK, DEFAULT), (), ready=True)
CEPH_REQUEST = MemberRequest("ceph-link", {}, (), (REMOTE,), ready=True)
OWN_CONFIG = call({"core.https_address": "192.0.2.0:8443", "core.metrics_address": ""})
CREATED = ObjectState("physical", "Created", ("lxd-0", "lxd-1"))


def subordinate(request: MemberRequest) -> testing.SubordinateRelation:
    """The relation with one subordinate application whose unit published ``request``."""
    return testing.SubordinateRelation(
        "lxd-member", remote_app_name=request.app, remote_unit_data=request.encode()
    )


def bad_subordinate(app: str, data: dict[str, str]) -> testing.SubordinateRelation:
    return testing.SubordinateRelation("lxd-member", remote_app_name=app, remote_unit_data=data)


def cluster_member(lxd, leader: bool, *relations, unit: int = 0, **state):
    """State of a clustered unit (lxd/0 or lxd/1) of a bootstrapped 2-member cluster."""
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0"), member("lxd-1")]
    other = 1 - unit
    cluster = peer(
        app={**BOOTSTRAPPED, "members": json.dumps({"lxd-0": "lxd/0", "lxd-1": "lxd/1"})},
        peers={other: member_peer(other)},
    )
    return cluster, testing.State(leader=leader, relations=[cluster, *relations], **state)


def not_applied(lxd) -> None:
    """Nothing any subordinate asked for reached LXD."""
    assert lxd.update_server_config.call_args_list in ([], [OWN_CONFIG])
    lxd.ensure_member_object.assert_not_called()
    lxd.ensure_cluster_object.assert_not_called()
    lxd.ensure_standalone_object.assert_not_called()


# -- MemberInfo ------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["install", "update_status", "relation_created"])
def test_member_info_reaches_every_subordinate_before_clustering(ctx_unit1, lxd, event):
    # GIVEN an unclustered unit waiting for the bootstrap, with two subordinates
    ovn, ceph = subordinate(OVN_REQUEST), subordinate(CEPH_REQUEST)
    state = testing.State(relations=[peer(), ovn, ceph])
    # WHEN any event runs
    run = getattr(ctx_unit1.on, event)
    out = ctx_unit1.run(run(ovn) if event == "relation_created" else run(), state)
    # THEN each subordinate learns its member, not clustered yet, and where LXD reads files
    published = {
        "member-name": "lxd-1",
        "clustered": "false",
        "lxd-version": "5.0.2",
        "api-extensions": '["clustering"]',
        "paths": '{"ceph": "/etc/ceph", "ovn": "/etc/ovn"}',
    }
    for relation in (ovn, ceph):
        local = out.get_relation(relation.id).local_unit_data
        assert {key: local.get(key) for key in published} == published
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to bootstrap the cluster"
    )


def test_member_info_says_clustered_once_bootstrapped(ctx, lxd):
    lxd.bootstrap_cluster.side_effect = lambda *a, **k: (
        setattr(lxd.server_info, "return_value", server_info(True)) or True
    )
    ovn = subordinate(OVN_REQUEST)
    out = ctx.run(ctx.on.install(), testing.State(leader=True, relations=[peer(), ovn]))
    assert out.get_relation(ovn.id).local_unit_data["clustered"] == "true"


# -- refusing what cannot be applied -----------------------------------------------------


def test_invalid_request_blocks_and_nothing_is_applied(ctx, lxd):
    # GIVEN a valid, ready ovn-bridge and a ceph-link publishing an unusable pool name
    bad = bad_subordinate(
        "ceph-link",
        {"storage-pools": json.dumps([{"name": "bad name", "driver": "ceph"}]), "ready": "true"},
    )
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST), bad)
    # WHEN the leader reconciles
    out = ctx.run(ctx.on.update_status(), state)
    # THEN it names the application and the key, and applies nothing of anyone's
    assert out.unit_status == testing.BlockedStatus(
        "lxd-member data from ceph-link: 'storage-pools'[0]: invalid name 'bad name'"
    )
    not_applied(lxd)


@pytest.mark.parametrize(
    ("ceph", "message"),
    [
        (
            MemberRequest("ceph-link", networks=(UPLINK,), ready=True),
            "conflicting lxd-member requests: ceph-link and ovn-bridge both declare "
            "network UPLINK",
        ),
        (
            MemberRequest("ceph-link", {"network.ovn.northbound_connection": "tcp:x"}),
            "conflicting lxd-member requests: ceph-link and ovn-bridge want different values "
            "of server config network.ovn.northbound_connection",
        ),
    ],
)
def test_conflicting_requests_block_naming_both(ctx, lxd, ceph, message):
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST), subordinate(ceph))
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(message)
    not_applied(lxd)


def test_request_not_ready_is_not_applied_while_ready_ones_are(ctx, lxd):
    # GIVEN ovn-bridge is not ready yet, ceph-link is
    waiting = MemberRequest("ovn-bridge", NB, (UPLINK,), (), ready=False)
    _, state = cluster_member(lxd, True, subordinate(waiting), subordinate(CEPH_REQUEST))
    out = ctx.run(ctx.on.update_status(), state)
    # THEN only ceph-link's pool is handled, and the unit says what it waits for
    assert lxd.update_server_config.call_args_list == [OWN_CONFIG]
    lxd.ensure_member_object.assert_called_once_with("storage-pool", REMOTE, "lxd-0")
    lxd.ensure_cluster_object.assert_called_once_with("storage-pool", REMOTE)
    assert out.unit_status == testing.WaitingStatus("waiting for ovn-bridge to be ready")


# -- server config -----------------------------------------------------------------------


def test_leader_applies_the_requested_server_config(ctx, lxd):
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST))
    ctx.run(ctx.on.update_status(), state)
    assert lxd.update_server_config.call_args_list == [OWN_CONFIG, call(NB)]


def test_every_member_sets_the_server_config_it_does_not_see(ctx_unit1, lxd):
    # LXD 5.0: a member that joined after a key was set does not see it until it is set again
    lxd.object_state.return_value = CREATED
    _, state = cluster_member(lxd, False, subordinate(OVN_REQUEST), unit=1)
    ctx_unit1.run(ctx_unit1.on.update_status(), state)
    assert NB in [c.args[0] for c in lxd.update_server_config.call_args_list]


def test_server_config_lxd_refuses_blocks(ctx, lxd):
    lxd.update_server_config.side_effect = [False, LXDAPIError("PATCH /1.0", "unknown key")]
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST))
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(
        "LXD refused the server config ovn-bridge asks for: unknown key"
    )
    lxd.ensure_cluster_object.assert_not_called()


# -- networks and pools in a cluster ------------------------------------------------------


def test_each_member_defines_the_objects_on_itself(ctx_unit1, lxd):
    # GIVEN a clustered, non-leader unit whose ovn-bridge is ready
    lxd.ensure_member_object.return_value = True
    lxd.object_state.return_value = ObjectState("physical", "Pending", ("lxd-1",))
    cluster, state = cluster_member(lxd, False, subordinate(OVN_REQUEST), unit=1)
    # WHEN it reconciles
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    # THEN it defined UPLINK on its own member (the OVN network needs no member stage),
    # tells the leader so, and waits for the leader to create it cluster-wide
    lxd.ensure_member_object.assert_called_once_with("network", UPLINK, "lxd-1")
    lxd.ensure_cluster_object.assert_not_called()
    local = out.get_relation(cluster.id).local_unit_data
    assert local["defined-objects"] == '["network/UPLINK"]'
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to create network UPLINK"
    )


def test_member_is_active_once_the_leader_created_everything(ctx_unit1, lxd):
    lxd.object_state.return_value = CREATED
    _, state = cluster_member(lxd, False, subordinate(OVN_REQUEST), unit=1)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-1 (2 members)")


def test_leader_waits_until_every_member_defined_the_object(ctx, lxd):
    lxd.ensure_cluster_object.side_effect = ObjectPendingError("network", "UPLINK", ["lxd-1"])
    cluster, state = cluster_member(lxd, True, subordinate(OVN_REQUEST))
    out = ctx.run(ctx.on.update_status(), state)
    # It defined its own part, then stopped at UPLINK: the OVN network needs it.
    lxd.ensure_member_object.assert_called_once_with("network", UPLINK, "lxd-0")
    lxd.ensure_cluster_object.assert_called_once_with("network", UPLINK)
    assert out.unit_status == testing.WaitingStatus(
        "waiting for every member to define network UPLINK (missing: lxd-1)"
    )
    assert "created-objects" not in out.get_relation(cluster.id).local_app_data


def test_leader_creates_networks_then_pools_and_tells_the_members(ctx, lxd):
    lxd.ensure_cluster_object.return_value = True
    ovn, ceph = subordinate(OVN_REQUEST), subordinate(CEPH_REQUEST)
    cluster, state = cluster_member(lxd, True, ceph, ovn)
    out = ctx.run(ctx.on.relation_changed(ovn), state)
    assert lxd.ensure_cluster_object.call_args_list == [
        call("network", UPLINK),
        call("network", DEFAULT),
        call("storage-pool", REMOTE),
    ]
    app = out.get_relation(cluster.id).local_app_data
    assert json.loads(app["created-objects"]) == [
        "network/UPLINK",
        "network/default",
        "storage-pool/remote",
    ]
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (2 members)")


@pytest.mark.parametrize("failing", ["ensure_member_object", "ensure_cluster_object"])
def test_lxd_refusing_an_object_blocks_with_its_message(ctx, lxd, failing):
    refusal = 'network UPLINK: failed to notify peer 10.0.0.1:8443: Parent interface "x" not found'
    getattr(lxd, failing).side_effect = ObjectRefusedError(refusal)
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST))
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(refusal)
    assert call("network", DEFAULT) not in lxd.ensure_cluster_object.call_args_list


def test_refused_update_of_an_existing_object_does_not_stop_the_others(ctx, lxd):
    # GIVEN LXD refuses to change UPLINK (it exists, as it was)
    refusal = "network UPLINK: Invalid value for mtu"
    lxd.ensure_cluster_object.side_effect = [ObjectUpdateRefusedError(refusal), False, False]
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST), subordinate(CEPH_REQUEST))
    out = ctx.run(ctx.on.update_status(), state)
    # THEN the objects after it are still handled, and the unit says what was refused
    assert [c.args[1].name for c in lxd.ensure_cluster_object.call_args_list] == [
        "UPLINK",
        "default",
        "remote",
    ]
    assert out.unit_status == testing.BlockedStatus(refusal)


# -- the preseed after bootstrap ----------------------------------------------------------

PRESEED = (
    "config: {images.auto_update_interval: 12}\n"
    "networks: [{name: UPLINK, type: physical, config: {parent: eth0}}, {name: br0}]\n"
    "storage_pools: [{name: local, driver: dir, config: {source: /srv/lxd}}]\n"
    "profiles: [{name: lab, config: {limits.cpu: 1}}]\n"
)
BR0 = LXDObject("br0", "bridge")
LOCAL = LXDObject("local", "dir", member_config={"source": "/srv/lxd"})
LAB = Profile("lab", {"limits.cpu": "1"})


def test_leader_makes_the_preseed_true_after_bootstrap(ctx, lxd):
    # GIVEN the cluster exists and the operator has changed the preseed
    lxd.ensure_cluster_object.return_value = True
    cluster, state = cluster_member(lxd, True, config={"preseed": PRESEED})
    # WHEN the leader reconciles
    out = ctx.run(ctx.on.config_changed(), state)
    # THEN its server key is set, its objects defined here and created, its profile made
    assert call({"images.auto_update_interval": "12"}) in lxd.update_server_config.call_args_list
    uplink = LXDObject("UPLINK", "physical", member_config={"parent": "eth0"})
    assert lxd.ensure_cluster_object.call_args_list == [
        call("network", uplink),
        call("network", BR0),
        call("storage-pool", LOCAL),
    ]
    assert call("storage-pool", LOCAL, "lxd-0") in lxd.ensure_member_object.call_args_list
    lxd.ensure_profile.assert_called_once_with(LAB)
    # a later joiner takes the preseed's values, or LXD's defaults: it waits for nothing
    assert "created-objects" not in out.get_relation(cluster.id).local_app_data
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (2 members)")


def test_other_members_set_the_preseed_config_and_define_its_objects(ctx_unit1, lxd):
    lxd.object_state.return_value = CREATED
    _, state = cluster_member(lxd, False, unit=1, config={"preseed": PRESEED})
    out = ctx_unit1.run(ctx_unit1.on.config_changed(), state)
    assert call({"images.auto_update_interval": "12"}) in lxd.update_server_config.call_args_list
    assert call("storage-pool", LOCAL, "lxd-1") in lxd.ensure_member_object.call_args_list
    lxd.ensure_cluster_object.assert_not_called()
    lxd.ensure_profile.assert_not_called()  # profiles are cluster-wide: the leader's
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-1 (2 members)")


@pytest.mark.parametrize("leader", [True, False])
def test_a_preseed_lxd_cannot_apply_in_place_changes_nothing(ctx, ctx_unit1, lxd, leader):
    # GIVEN the preseed asks for the pool with a driver it was not created with
    refusal = "storage-pool local exists with driver zfs, not dir: rename one of them"
    lxd.check_changeable.side_effect = lambda entity, obj, member: (
        _raise(ObjectRefusedError(refusal)) if obj.name == "local" else None
    )
    unit = 0 if leader else 1
    _, state = cluster_member(lxd, leader, unit=unit, config={"preseed": PRESEED})
    # WHEN any unit reconciles
    out = (ctx if leader else ctx_unit1).run(ctx.on.config_changed(), state)
    # THEN it says so, naming who asks, and applies nothing of it
    assert out.unit_status == testing.BlockedStatus(f"preseed: {refusal}")
    not_applied(lxd)
    lxd.ensure_profile.assert_not_called()
    assert call("storage-pool", LOCAL, f"lxd-{unit}") in lxd.check_changeable.call_args_list


def _raise(exc: Exception) -> None:
    raise exc


def test_a_subordinate_wins_over_the_preseed_for_what_both_name(ctx, lxd):
    # GIVEN the preseed and ovn-bridge both name UPLINK (the preseed has its own parent)
    lxd.ensure_cluster_object.return_value = True
    preseed = "networks: [{name: UPLINK, type: physical, config: {parent: eth0}}]\n"
    _, state = cluster_member(lxd, True, subordinate(OVN_REQUEST), config={"preseed": preseed})
    ctx.run(ctx.on.update_status(), state)
    # THEN ovn-bridge's UPLINK is made, never the preseed's
    assert [c.args for c in lxd.ensure_cluster_object.call_args_list] == [
        ("network", UPLINK),
        ("network", DEFAULT),
    ]


def test_a_profile_lxd_refuses_blocks(ctx, lxd):
    lxd.ensure_profile.side_effect = ObjectRefusedError("profile lab: Device validation failed")
    _, state = cluster_member(lxd, True, config={"preseed": PRESEED})
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(
        "preseed: profile lab: Device validation failed"
    )


def test_a_preseed_setting_the_charms_address_blocks(ctx, lxd):
    _, state = cluster_member(
        lxd, True, config={"preseed": "config: {core.https_address: '0.0.0.0:9443'}"}
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(
        "config: invalid 'preseed': 'config' sets core.https_address, which the charm sets"
    )
    not_applied(lxd)


# -- standalone --------------------------------------------------------------------------


def test_standalone_server_creates_everything_itself(ctx_unit1, lxd):
    lxd.ensure_standalone_object.return_value = True
    relations = [peer(app={"mode": "standalone"}), subordinate(OVN_REQUEST)]
    state = testing.State(config={"mode": "standalone"}, relations=relations)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    assert lxd.update_server_config.call_args_list == [OWN_CONFIG, call(NB)]
    assert lxd.ensure_standalone_object.call_args_list == [
        call("network", UPLINK),
        call("network", DEFAULT),
    ]
    lxd.ensure_member_object.assert_not_called()
    assert out.unit_status == testing.ActiveStatus("standalone server (LXD 5.0.2)")


def test_standalone_server_makes_the_preseed_true(ctx_unit1, lxd):
    relations = [peer(app={"mode": "standalone"})]
    state = testing.State(config={"mode": "standalone", "preseed": PRESEED}, relations=relations)
    ctx_unit1.run(ctx_unit1.on.config_changed(), state)
    assert call({"images.auto_update_interval": "12"}) in lxd.update_server_config.call_args_list
    assert call("storage-pool", LOCAL) in lxd.ensure_standalone_object.call_args_list
    assert call("storage-pool", LOCAL, "") in lxd.check_changeable.call_args_list
    lxd.ensure_profile.assert_called_once_with(LAB)


# -- joining -----------------------------------------------------------------------------


ASKED = [
    {"entity": "network", "name": "UPLINK", "key": "parent", "description": ""},
    {"entity": "storage-pool", "name": "default", "key": "source", "description": ""},
]


def joiner_state(
    *relations, preseed: str = "", keys: list[dict[str, str]] = ASKED, app: dict | None = None
):
    secret = testing.Secret({"token": TOKEN.encode(), "member-config": json.dumps(keys)})
    cluster = peer(
        app=app or BOOTSTRAPPED,
        peers={0: {**member_peer(0), "join-tokens": json.dumps({"lxd/1": secret.id})}},
    )
    state = testing.State(
        relations=[cluster, *relations], secrets=[secret], config={"preseed": preseed}
    )
    return cluster, state


def test_joiner_waits_for_its_subordinates_once_the_cluster_has_their_objects(ctx_unit1, lxd):
    waiting = MemberRequest("ovn-bridge", NB, (UPLINK,), (), ready=False)
    created = {**BOOTSTRAPPED, "created-objects": '["network/UPLINK"]'}
    cluster, state = joiner_state(subordinate(waiting), subordinate(CEPH_REQUEST), app=created)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.join_cluster.assert_not_called()
    assert "address" not in out.get_relation(cluster.id).local_unit_data
    assert out.unit_status == testing.WaitingStatus(
        "waiting for ovn-bridge to be ready before joining"
    )


def test_joiner_does_not_wait_for_its_subordinates_while_the_cluster_has_no_objects(
    ctx_unit1, lxd
):
    # GIVEN ovn-bridge is not ready, and the cluster has none of its subordinates' objects
    waiting = MemberRequest("ovn-bridge", NB, (UPLINK,), (), ready=False)
    cluster, state = joiner_state(subordinate(waiting), keys=[])
    lxd.join_cluster.side_effect = lambda *a: (
        setattr(lxd.server_info, "return_value", server_info(True)) or True
    )
    # WHEN it reconciles
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    # THEN it joins now: it defines ovn-bridge's objects on itself once ovn-bridge is ready
    lxd.join_cluster.assert_called_once()
    assert out.get_relation(cluster.id).local_unit_data["clustered"] == "true"
    lxd.ensure_member_object.assert_not_called()


def test_joiner_refuses_to_join_with_unusable_subordinate_data(ctx_unit1, lxd):
    _, state = joiner_state(bad_subordinate("ovn-bridge", {"networks": "[", "ready": "true"}))
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.join_cluster.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "lxd-member data from ovn-bridge: 'networks' is not valid json"
    )


def test_joiner_carries_the_subordinates_member_config(ctx_unit1, lxd):
    # GIVEN the preseed and ovn-bridge both name UPLINK's parent; only the preseed the pool's
    preseed = (
        "networks:\n- {name: UPLINK, type: physical, config: {parent: eth0}}\n"
        "storage_pools:\n- {name: default, driver: dir, config: {source: /srv/lxd}}\n"
    )
    _, state = joiner_state(subordinate(OVN_REQUEST), preseed=preseed)
    # WHEN the unit joins
    ctx_unit1.run(ctx_unit1.on.update_status(), state)
    # THEN the subordinate's value wins for the key both set
    lxd.join_cluster.assert_called_once_with(
        TOKEN,
        "lxd-1",
        "192.0.2.0:8443",
        [
            {"entity": "network", "name": "UPLINK", "key": "parent", "value": "br-uplink"},
            {"entity": "storage-pool", "name": "default", "key": "source", "value": "/srv/lxd"},
        ],
    )


def test_joiner_sends_values_for_objects_newer_than_its_token(ctx_unit1, lxd):
    # GIVEN a token issued before UPLINK existed (the cluster asked for the pool only)
    _, state = joiner_state(subordinate(OVN_REQUEST), keys=ASKED[1:])
    ctx_unit1.run(ctx_unit1.on.update_status(), state)
    # THEN UPLINK's parent goes along anyway (LXD ignores entries it does not need)
    (_, _, _, member_config), _ = lxd.join_cluster.call_args
    assert member_config == [
        {"entity": "storage-pool", "name": "default", "key": "source", "value": ""},
        {"entity": "network", "name": "UPLINK", "key": "parent", "value": "br-uplink"},
    ]


def test_joiner_waits_for_the_value_of_a_subordinates_object(ctx_unit1, lxd):
    # GIVEN the cluster has ceph-link's pool, and this machine's ceph-link asks for nothing yet
    keys = [{"entity": "storage-pool", "name": "remote", "key": "source", "description": ""}]
    secret = testing.Secret({"token": TOKEN.encode(), "member-config": json.dumps(keys)})
    cluster = peer(
        app={**BOOTSTRAPPED, "created-objects": json.dumps(["storage-pool/remote"])},
        peers={0: {**member_peer(0), "join-tokens": json.dumps({"lxd/1": secret.id})}},
    )
    idle = MemberRequest("ceph-link", ready=True)
    state = testing.State(relations=[cluster, subordinate(idle)], secrets=[secret])
    # WHEN the unit could join
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    # THEN it does not join with LXD's default source (no ceph files here): it waits
    lxd.join_cluster.assert_not_called()
    assert out.unit_status == testing.WaitingStatus(
        "waiting for a subordinate to give storage-pool remote source to join"
    )
    # AND once ceph-link asks for the pool, the join carries its source
    out = ctx_unit1.run(
        ctx_unit1.on.update_status(),
        testing.State(relations=[cluster, subordinate(CEPH_REQUEST)], secrets=[secret]),
    )
    (_, _, _, member_config), _ = lxd.join_cluster.call_args
    assert {"entity": "storage-pool", "name": "remote", "key": "source", "value": "lxd"} in (
        member_config
    )


def test_issuer_holds_tokens_back_while_a_network_is_errored(ctx, lxd):
    # GIVEN lxd/1 waits to join, and UPLINK failed on some member
    lxd.unfinished_objects.return_value = {"network UPLINK": "Errored"}
    issued = testing.Secret({"token": "x"}, owner="unit", label="join-token-lxd-1")
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member("lxd-0")]
    cluster = peer(
        app=BOOTSTRAPPED,
        local={"join-tokens": json.dumps({"lxd/1": issued.id})},
        peers={1: {"member-name": "lxd-1", "address": "10.0.0.1:8443", "clustered": "false"}},
    )
    state = testing.State(leader=True, relations=[cluster], secrets=[issued])
    # WHEN the issuer reconciles
    out = ctx.run(ctx.on.update_status(), state)
    # THEN no join is possible (LXD would fail it and break the joiner): no token is out
    lxd.issue_join_token.assert_not_called()
    lxd.revoke_join_token.assert_called_once_with("lxd-1")
    assert out.secrets == frozenset()


def test_a_failed_creation_revokes_the_outstanding_token_in_the_same_hook(ctx, lxd):
    # GIVEN the issuer (leader) holds a token for lxd/2 and LXD fails UPLINK's creation
    refusal = 'network UPLINK: failed to notify peer 10.0.0.1:8443: Parent interface "x" not found'
    lxd.ensure_cluster_object.side_effect = ObjectRefusedError(refusal)
    lxd.unfinished_objects.return_value = {"network UPLINK": "Errored"}
    issued = testing.Secret({"token": "x"}, owner="unit", label="join-token-lxd-2")
    cluster, state = cluster_member(lxd, True, subordinate(OVN_REQUEST), secrets=[issued])
    cluster = dataclasses.replace(
        cluster,
        local_unit_data={"join-tokens": json.dumps({"lxd/2": issued.id})},
        peers_data={**cluster.peers_data, 2: waiting_peer(2)},
    )
    state = dataclasses.replace(state, relations=[cluster, subordinate(OVN_REQUEST)])
    # WHEN it reconciles
    out = ctx.run(ctx.on.update_status(), state)
    # THEN it is blocked with LXD's message, and the token is revoked (lxd/2 would half-join)
    assert out.unit_status == testing.BlockedStatus(refusal)
    lxd.revoke_join_token.assert_called_once_with("lxd-2")
    lxd.issue_join_token.assert_not_called()
    assert out.secrets == frozenset()
