"""Unit tests of the ``lxd-member`` interface module (``charm_common.lxd_member``)."""

from __future__ import annotations

import json

import ops
import pytest
from ops import testing

from charm_common.lxd_member import (
    ConflictingRequestsError,
    InvalidMemberDataError,
    LXDMemberProvider,
    LXDMemberRequirer,
    LXDObject,
    MemberInfo,
    MemberRequest,
    check_conflicts,
    ready_requests,
    requested_objects,
    requested_server_config,
)

UPLINK = LXDObject("UPLINK", "physical", {"mtu": "1500"}, {"parent": "br-uplink"}, "uplink")
DEFAULT = LXDObject("default", "ovn", {"network": "UPLINK"})
REMOTE = LXDObject("remote", "ceph", {"ceph.osd.pool_name": "lxd"}, {"source": "lxd"})
NB = {"network.ovn.northbound_connection": "ssl:10.0.0.1:6641"}


def request(app: str = "ovn-bridge", **fields) -> MemberRequest:
    return MemberRequest(app=app, **fields)


# -- MemberInfo --------------------------------------------------------------------------


def test_member_info_round_trip():
    info = MemberInfo("lxd-0", True, "5.0.2", ("clustering",), {"ceph": "/etc/ceph"})
    data = info.encode()
    assert data == {
        "member-name": "lxd-0",
        "clustered": "true",
        "lxd-version": "5.0.2",
        "api-extensions": '["clustering"]',
        "paths": '{"ceph": "/etc/ceph"}',
    }
    assert MemberInfo.decode(data) == info


def test_member_info_not_published_yet():
    assert MemberInfo.decode({}) is None
    assert MemberInfo.decode({"clustered": "true"}) is None


def test_member_info_minimal():
    assert MemberInfo.decode({"member-name": "lxd-3"}) == MemberInfo("lxd-3", False, "")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"paths": "{"}, "'paths' is not valid json"),
        ({"paths": '{"ceph": "etc/ceph"}'}, "'paths' must map names to absolute directories"),
        ({"paths": '["/etc/ceph"]'}, "'paths' must map names to absolute directories"),
        ({"api-extensions": '{"a": 1}'}, "'api-extensions' must be a json list"),
    ],
)
def test_member_info_refuses(data, message):
    with pytest.raises(InvalidMemberDataError) as refused:
        MemberInfo.decode({"member-name": "lxd-0", **data})
    assert str(refused.value) == message


# -- MemberRequest -----------------------------------------------------------------------


def test_request_round_trip_keeps_order():
    sent = request(
        server_config=NB, networks=(UPLINK, DEFAULT), storage_pools=(REMOTE,), ready=True
    )
    data = sent.encode()
    assert json.loads(data["networks"])[0] == {
        "name": "UPLINK",
        "type": "physical",
        "config": {"mtu": "1500"},
        "member-config": {"parent": "br-uplink"},
        "description": "uplink",
    }
    assert json.loads(data["storage-pools"])[0]["driver"] == "ceph"
    assert MemberRequest.decode("ovn-bridge", data) == sent


def test_empty_request_is_for_nothing_and_not_ready():
    assert MemberRequest.decode("ceph-link", {}) == request("ceph-link")


@pytest.mark.parametrize("ready", ['"true"', "1", "false", "null"])
def test_only_json_true_is_ready(ready):
    assert MemberRequest.decode("x", {"ready": ready}).ready is False
    assert MemberRequest.decode("x", {"ready": "true"}).ready is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"networks": "[{"}, "'networks' is not valid json"),
        ({"networks": '{"name": "x"}'}, "'networks' must be a json list"),
        ({"networks": '["UPLINK"]'}, "'networks'[0] must be an object"),
        ({"networks": '[{"name": "bad name", "type": "bridge"}]'}, "'networks'[0]: invalid name"),
        ({"networks": '[{"name": "-x", "type": "bridge"}]'}, "'networks'[0]: invalid name '-x'"),
        ({"networks": '[{"type": "bridge"}]'}, "'networks'[0]: invalid name None"),
        ({"networks": '[{"name": "x"}]'}, "'networks'[0] (x): 'type' missing"),
        ({"storage-pools": '[{"name": "p", "driver": ""}]'}, "'storage-pools'[0] (p): 'driver'"),
        (
            {"networks": '[{"name": "x", "type": "bridge", "config": {"mtu": 1500}}]'},
            "'networks'[0] (x) config must map strings to strings",
        ),
        (
            {"networks": '[{"name": "x", "type": "bridge", "member-config": []}]'},
            "'networks'[0] (x) member-config must map strings to strings",
        ),
        (
            {
                "networks": json.dumps(
                    [
                        {
                            "name": "x",
                            "type": "physical",
                            "config": {"parent": "a"},
                            "member-config": {"parent": "b"},
                        }
                    ]
                )
            },
            "'networks'[0] (x): parent both cluster-wide and member-specific",
        ),  # fmt: skip
        (
            {"networks": '[{"name": "x", "type": "bridge", "description": 7}]'},
            "'networks'[0] (x): 'description' must be a string",
        ),
        (
            {"networks": json.dumps([{"name": "x", "type": "a"}, {"name": "x", "type": "b"}])},
            "'networks' names x twice",
        ),
        ({"server-config": '["a"]'}, "'server-config' must map strings to strings"),
        ({"ready": "yes"}, "'ready' is not valid json"),
        (
            {"server-config": '{"core.https_address": ":8443", "cluster.x": "1"}'},
            "'server-config' sets cluster.x, core.https_address, which the lxd charm owns",
        ),
    ],
)
def test_request_refuses(data, message):
    with pytest.raises(InvalidMemberDataError) as refused:
        MemberRequest.decode("ovn-bridge", data)
    assert str(refused.value).startswith(message)


def test_same_name_as_network_and_pool_is_fine():
    data = request(networks=(LXDObject("x", "bridge"),), storage_pools=(LXDObject("x", "dir"),))
    assert MemberRequest.decode("ovn-bridge", data.encode()) == data


# -- combining requests ------------------------------------------------------------------


def test_requested_objects_networks_first_then_pools_in_request_order():
    ceph = request("ceph-link", storage_pools=(REMOTE,), networks=(LXDObject("n", "bridge"),))
    ovn = request("ovn-bridge", networks=(UPLINK, DEFAULT))
    assert [(e, o.name) for e, o in requested_objects([ceph, ovn])] == [
        ("network", "n"),
        ("network", "UPLINK"),
        ("network", "default"),
        ("storage-pool", "remote"),
    ]


def test_ready_requests_and_server_config():
    ready = request("ovn-bridge", server_config=NB, ready=True)
    other = request("ceph-link", server_config={"images.auto_update_interval": "0"})
    assert ready_requests([ready, other]) == [ready]
    assert requested_server_config([ready, other]) == {
        **NB,
        "images.auto_update_interval": "0",
    }


def test_no_conflict_for_distinct_objects_or_equal_server_config():
    check_conflicts(
        [
            request("ceph-link", server_config=NB, storage_pools=(REMOTE,)),
            request("ovn-bridge", server_config=NB, networks=(UPLINK,)),
        ]
    )


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            request("ceph-link", networks=(UPLINK,)),
            request("ovn-bridge", networks=(UPLINK,)),
            "ceph-link and ovn-bridge both declare network UPLINK",
        ),
        (
            request("a", storage_pools=(REMOTE,)),
            request("b", storage_pools=(LXDObject("remote", "dir"),)),
            "a and b both declare storage-pool remote",
        ),
        (
            request("a", server_config=NB),
            request("b", server_config={"network.ovn.northbound_connection": "tcp:x"}),
            "a and b want different values of server config network.ovn.northbound_connection",
        ),
    ],
)
def test_conflicts_name_both_applications(first, second, message):
    with pytest.raises(ConflictingRequestsError) as conflict:
        check_conflicts([first, second])
    assert str(conflict.value) == message


# -- the two sides, over a relation -------------------------------------------------------

META = {
    "name": "side",
    "provides": {"lxd-member": {"interface": "lxd-member", "scope": "container"}},
    "requires": {"lxd": {"interface": "lxd-member", "scope": "container"}},
}


class Side(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.provider = LXDMemberProvider(self)
        self.requirer = LXDMemberRequirer(self, endpoint="lxd")
        self.seen: object = None
        framework.observe(self.on.update_status, self._on_update_status)

    def _on_update_status(self, _: ops.EventBase) -> None:
        try:
            self.seen = (self.provider.requests(), self.requirer.member())
        except InvalidMemberDataError as exc:
            self.seen = str(exc)
        self.provider.publish(MemberInfo("lxd-0", False, "5.0.2"))
        self.requirer.publish(request(ready=True))


def run_side(*relations: testing.Relation):
    ctx = testing.Context(Side, meta=META)
    with ctx(ctx.on.update_status(), testing.State(relations=list(relations))) as manager:
        out = manager.run()
        return manager.charm.seen, out


def test_provider_reads_each_subordinate_and_publishes_to_all():
    ovn = testing.SubordinateRelation(
        "lxd-member", remote_app_name="ovn-bridge", remote_unit_data=request().encode()
    )
    ceph = testing.SubordinateRelation(
        "lxd-member",
        remote_app_name="ceph-link",
        remote_unit_data=request("ceph-link", storage_pools=(REMOTE,), ready=True).encode(),
    )
    (requests, member), out = run_side(ovn, ceph)
    assert [(r.app, r.ready, len(r.storage_pools)) for r in requests] == [
        ("ceph-link", True, 1),
        ("ovn-bridge", False, 0),
    ]
    assert member is None
    for relation in (ovn, ceph):
        assert out.get_relation(relation.id).local_unit_data["member-name"] == "lxd-0"


def test_provider_names_the_application_with_unusable_data():
    bad = testing.SubordinateRelation(
        "lxd-member", remote_app_name="ovn-bridge", remote_unit_data={"networks": "nope"}
    )
    seen, _ = run_side(bad)
    assert seen == "ovn-bridge: 'networks' is not valid json"


def test_requirer_reads_the_member_and_publishes_its_request():
    lxd = testing.SubordinateRelation(
        "lxd", remote_app_name="lxd", remote_unit_data=MemberInfo("lxd-2", True, "5.0").encode()
    )
    (requests, member), out = run_side(lxd)
    assert requests == []
    assert member == MemberInfo("lxd-2", True, "5.0")
    assert out.get_relation(lxd.id).local_unit_data["ready"] == "true"
