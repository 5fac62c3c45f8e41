"""Networks and storage pools through ``lxd.py`` against REAL LXD daemons (Debian's LXD 5.0).

What the lxd charm does with the ``lxd-member`` requests of its subordinates, step by step
on one deployment of five daemons (127.0.0.2-6:8443): lxd-0..2 form a cluster, lxd-3 joins
it later, lxd-4 stays a standalone server. The steps run in file order; once one fails
the later ones are skipped.

1. A 3-member cluster forms.
2. A ``physical`` network with a member-specific ``parent`` (one veth end per member):
   cluster-wide creation is refused until every member has its definition; each member
   defines it on itself (``?target=``), then it is created cluster-wide and is Created on
   every member with its own parent; a changed cluster-wide key is updated everywhere and
   keys the request does not name are left alone.
3. A ``dir`` pool with a member-specific ``source``: the same, for storage pools. LXD also
   wants a definition per member for a pool without member-specific keys.
   An ``ovn`` network, by contrast, goes to creation with no definition per member.
4. Creation fails on one member (its parent interface is missing): the error names the
   object and carries LXD's message; the network is Errored. Once the member's pending
   definition is corrected, the retry creates it everywhere.
5. lxd-3 joins with the member-specific values of the requested objects, one of them
   created after its token was issued (so missing from the token's list of keys): it gets
   every network and pool with its own values.
6. A standalone server creates the objects directly (config and member config merged).

The host has no ``dummy`` link type (kernel without modules): parents are veth ends, all in
the host's network namespace (every daemon shares it), deleted at the end. For the same
reason no ``bridge`` network is created here: every member would create the same
interface in one namespace ("Network interface ... already exists", measured).

LXD 5.0.2 facts these steps rely on (measured on this host, see the report in the lxd
charm's ``lxd.py``): a cluster-wide POST of a physical/bridge network or any pool without
per-member definitions answers "... not pending on any node (use --target <node> first)"
(with member keys: "Config key "parent" is cluster member specific"); with some members
defined: "... not defined on nodes: <names>". ``GET`` without target shows the object's
status (Pending/Created/Errored) and cluster-wide keys only; ``?target=<member>`` shows
that member's status ("Unknown" without a definition) and its member keys. A failed
creation leaves the object Errored with its cluster-wide config stored; a retry must send
no config, and member definitions stay editable (PATCH ``?target=``) until it is Created.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from lab.hosts import Lab
from lxd import (
    CREATED,
    ERRORED,
    PENDING,
    ObjectPendingError,
    ObjectRefusedError,
    Profile,
    fill_member_config,
    member_values_from_objects,
    needs_member_stage,
)

from .conftest import MEMBERS, deployment

pytestmark = pytest.mark.ordered_steps

CLUSTER = ("lxd-0", "lxd-1", "lxd-2")
JOINER = "lxd-3"
STANDALONE = "lxd-4"
IP = "/usr/sbin/ip"


@dataclass(frozen=True)
class Spec:
    """A requested object, as ``charm_common.lxd_member.LXDObject`` carries it."""

    name: str
    kind: str
    config: dict[str, str] = field(default_factory=dict)
    member_config: dict[str, str] = field(default_factory=dict)
    description: str = ""


def uplink(member: str, mtu: str = "1500") -> Spec:
    """The physical network as ``member``'s subordinate would declare it."""
    return Spec("UPLINK", "physical", {"mtu": mtu}, {"parent": f"lxt-up-{member[-1]}"}, "uplink")


def pool(lab: Lab, member: str, bwlimit: str = "", directory: str = "local") -> Spec:
    """A dir pool whose directory differs per member (LXD wants it to exist)."""
    source = lab.path("pools", member, directory)
    os.makedirs(source, exist_ok=True)
    config = {"rsync.bwlimit": bwlimit} if bwlimit else {}
    return Spec("local", "dir", config, {"source": source})


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Five daemons; veth pairs as parent interfaces, deleted afterwards."""
    members = (*MEMBERS, ("lxd-4", "127.0.0.6"))
    names = [f"lxt-up-{n}" for n in range(5)] + [f"lxt-bad-{n}" for n in range(5)]
    for name in names:
        subprocess.run([IP, "link", "del", name], capture_output=True, check=False)
        subprocess.run(
            [IP, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True
        )
    try:
        with deployment(members, "lxd-objects-") as daemons:
            yield daemons
    finally:
        for name in names:
            subprocess.run([IP, "link", "del", name], capture_output=True, check=False)
    left = subprocess.run([IP, "-br", "link"], capture_output=True, text=True).stdout
    assert "lxt-up-" not in left and "lxt-bad-" not in left, left


def lxc_json(lab: Lab, member: str, path: str) -> dict:
    """``GET path`` with ``lxc query`` (the API as LXD's own client sees it)."""
    return json.loads(lab[member].lxc("query", path))


def lxc_refusal(lab: Lab, member: str, method: str, path: str, body: dict) -> str:
    """What LXD answers to a request it refuses (its error text)."""
    with pytest.raises(RuntimeError) as refused:
        lab[member].lxc("query", "-X", method, "-d", json.dumps(body), path)
    return str(refused.value)


# -- steps -------------------------------------------------------------------------------


def test_cluster_forms(lab: Lab):
    lxd0 = lab["lxd-0"]
    assert lxd0.lxd.bootstrap_cluster("lxd-0", lxd0.address, {}) is True
    for name in CLUSTER[1:]:
        token = lxd0.lxd.issue_join_token(name)
        config = fill_member_config(lxd0.lxd.member_config(), {})
        assert lab[name].lxd.join_cluster(token, name, lab[name].address, config) is True
    assert sorted(m.name for m in lxd0.lxd.members() if m.online) == list(CLUSTER)


def test_physical_network_member_by_member_then_cluster_wide(lab: Lab):
    lxd0 = lab["lxd-0"].lxd
    assert needs_member_stage("network", uplink("lxd-0"))
    # LXD itself refuses a cluster-wide creation before any member has a definition.
    with_parent = {"name": "UPLINK", "type": "physical", "config": {"parent": "lxt-up-0"}}
    assert 'Config key "parent" is cluster member specific' in lxc_refusal(
        lab, "lxd-0", "POST", "/1.0/networks", with_parent
    )
    assert "Network not pending on any node" in lxc_refusal(
        lab, "lxd-0", "POST", "/1.0/networks", {"name": "UPLINK", "type": "physical"}
    )
    with pytest.raises(ObjectPendingError) as pending:
        lxd0.ensure_cluster_object("network", uplink("lxd-0"))
    assert pending.value.missing == CLUSTER

    # lxd-0 defines it on its own member: Pending, only there, only its member key.
    assert lxd0.ensure_member_object("network", uplink("lxd-0"), "lxd-0") is True
    assert lxd0.ensure_member_object("network", uplink("lxd-0"), "lxd-0") is False
    state = lxd0.object_state("network", "UPLINK")
    assert (state.status, state.locations, dict(state.config)) == (PENDING, ("lxd-0",), {})
    assert lxd0.object_state("network", "UPLINK", "lxd-0").config == {"parent": "lxt-up-0"}
    assert lxd0.object_state("network", "UPLINK", "lxd-1").status == "Unknown"
    with pytest.raises(ObjectPendingError) as pending:
        lxd0.ensure_cluster_object("network", uplink("lxd-0"))
    assert pending.value.missing == ("lxd-1", "lxd-2")
    assert "Network not defined on nodes: lxd-1, lxd-2" in lxc_refusal(
        lab, "lxd-0", "POST", "/1.0/networks", {"name": "UPLINK", "type": "physical"}
    )

    # Each other member defines it on itself, through its own daemon.
    for name in CLUSTER[1:]:
        assert lab[name].lxd.ensure_member_object("network", uplink(name), name) is True

    assert lxd0.ensure_cluster_object("network", uplink("lxd-0")) is True

    for name in CLUSTER:
        mine = lxd0.object_state("network", "UPLINK", name)
        assert mine.status == CREATED
        assert (mine.config["parent"], mine.config["mtu"]) == (f"lxt-up-{name[-1]}", "1500")
    listing = lab["lxd-1"].lxc("network", "list", "--format", "csv")
    assert "UPLINK,physical,YES,,,uplink,0,CREATED" in listing.splitlines(), listing
    # Nothing more to do, on any member.
    assert lxd0.ensure_cluster_object("network", uplink("lxd-0")) is False
    assert lab["lxd-2"].lxd.ensure_member_object("network", uplink("lxd-2"), "lxd-2") is False


def test_ovn_network_needs_no_member_stage(lab: Lab):
    # No OVN runs here, so LXD cannot finish it: what matters is that it goes past the
    # "not pending" check without any per-member definition, to OVN's own validation.
    ovn = Spec("ovntest", "ovn", {"network": "UPLINK", "ipv4.address": "10.10.0.1/24"})
    assert not needs_member_stage("network", ovn)
    lxd0 = lab["lxd-0"].lxd
    with pytest.raises(ObjectRefusedError) as refused:
        lxd0.ensure_cluster_object("network", ovn)
    assert str(refused.value) == (
        'network ovntest: Uplink network doesn\'t contain "10.10.0.0/24" in its routes'
    )
    assert lxd0.object_state("network", "ovntest").status == ERRORED
    lab["lxd-0"].lxc("network", "delete", "ovntest")


def test_changed_cluster_wide_key_is_updated_and_others_are_kept(lab: Lab):
    lxd0 = lab["lxd-0"].lxd
    lab["lxd-0"].lxc("network", "set", "UPLINK", "dns.nameservers", "192.0.2.53")

    assert lab["lxd-2"].lxd.ensure_cluster_object("network", uplink("lxd-2", "1400")) is True

    for name in CLUSTER:
        config = lxc_json(lab, "lxd-0", f"/1.0/networks/UPLINK?target={name}")["config"]
        assert config["mtu"] == "1400"
        assert config["dns.nameservers"] == "192.0.2.53"  # not in the request: untouched
        assert config["parent"] == f"lxt-up-{name[-1]}"
    assert lxd0.ensure_cluster_object("network", uplink("lxd-0", "1400")) is False


def test_dir_pool_member_by_member_then_cluster_wide(lab: Lab):
    lxd0 = lab["lxd-0"].lxd
    # Even without member-specific keys a pool needs a definition per member first.
    assert "Pool not pending on any node" in lxc_refusal(
        lab, "lxd-0", "POST", "/1.0/storage-pools", {"name": "nosource", "driver": "dir"}
    )
    assert needs_member_stage("storage-pool", Spec("nosource", "dir"))
    for name in CLUSTER[:2]:
        assert lab[name].lxd.ensure_member_object("storage-pool", pool(lab, name), name)
    with pytest.raises(ObjectPendingError) as pending:
        lxd0.ensure_cluster_object("storage-pool", pool(lab, "lxd-0"))
    assert pending.value.missing == ("lxd-2",)
    # A pending definition is corrected in place (here: the member's source moved).
    moved = pool(lab, "lxd-2", directory="moved")
    assert lab["lxd-2"].lxd.ensure_member_object("storage-pool", moved, "lxd-2") is True
    assert lab["lxd-2"].lxd.ensure_member_object("storage-pool", pool(lab, "lxd-2"), "lxd-2")
    assert lxd0.object_state("storage-pool", "local", "lxd-2").config == {
        "source": lab.path("pools", "lxd-2", "local")
    }

    assert lxd0.ensure_cluster_object("storage-pool", pool(lab, "lxd-0", "10MB")) is True

    for name in CLUSTER:
        mine = lxd0.object_state("storage-pool", "local", name)
        assert mine.status == CREATED
        assert mine.config["source"] == lab.path("pools", name, "local")
        assert mine.config["rsync.bwlimit"] == "10MB"
        assert os.path.isdir(os.path.join(lab.path("pools", name, "local"), "containers"))
    assert lxd0.ensure_cluster_object("storage-pool", pool(lab, "lxd-0", "10MB")) is False
    assert lxd0.ensure_cluster_object("storage-pool", pool(lab, "lxd-0", "20MB")) is True
    assert lxd0.object_state("storage-pool", "local").config["rsync.bwlimit"] == "20MB"


def test_what_lxd_cannot_change_in_place_is_refused_before_anything_is_sent(lab: Lab):
    lxd1 = lab["lxd-1"].lxd
    lxd1.check_changeable("storage-pool", pool(lab, "lxd-1", "30MB"), "lxd-1")  # mutable keys
    with pytest.raises(ObjectRefusedError) as refused:
        lxd1.check_changeable("storage-pool", pool(lab, "lxd-1", directory="moved"), "lxd-1")
    assert str(refused.value).startswith(
        f"storage-pool local has source {lab.path('pools', 'lxd-1', 'local')!r} on lxd-1, not "
    )
    with pytest.raises(ObjectRefusedError, match="exists with driver dir, not btrfs"):
        lxd1.check_changeable("storage-pool", Spec("local", "btrfs"), "lxd-1")
    # LXD itself would refuse the source change only after it was asked:
    assert "cannot be changed" in lxc_refusal(
        lab,
        "lxd-1",
        "PATCH",
        "/1.0/storage-pools/local?target=lxd-1",
        {"config": {"source": lab.path("pools", "lxd-1", "moved")}},
    )


def test_a_profile_is_created_then_given_what_differs_and_keeps_the_rest(lab: Lab):
    wanted = Profile("lab", {"limits.cpu": "1"}, {"marker": {"type": "none"}}, "lab profile")
    assert lab["lxd-0"].lxd.ensure_profile(wanted) is True
    assert lab["lxd-0"].lxd.ensure_profile(wanted) is False
    # The operator adds a key and a device of their own; the preseed changes the limit.
    lab["lxd-1"].lxc("profile", "set", "lab", "limits.memory", "64MB")
    lab["lxd-1"].lxc("profile", "device", "add", "lab", "own", "none")
    changed = Profile("lab", {"limits.cpu": "2"}, dict(wanted.devices))

    assert lab["lxd-0"].lxd.ensure_profile(changed) is True

    shown = lxc_json(lab, "lxd-2", "/1.0/profiles/lab")  # cluster-wide
    assert shown["config"] == {"limits.cpu": "2", "limits.memory": "64MB"}
    assert shown["devices"] == {"marker": {"type": "none"}, "own": {"type": "none"}}
    assert shown["description"] == "lab profile"  # a profile without one keeps it
    with pytest.raises(ObjectRefusedError, match="^profile lab: "):
        lab["lxd-0"].lxd.ensure_profile(Profile("lab", devices={"bad": {"type": "bogus"}}))


def test_failed_creation_names_the_object_and_recovers(lab: Lab):
    lxd0 = lab["lxd-0"].lxd

    def bad(member: str, parent: str = "") -> Spec:
        return Spec(
            "BAD", "physical", {"mtu": "1500"}, {"parent": parent or f"lxt-bad-{member[-1]}"}
        )

    # lxd-1 names an interface its machine does not have: LXD accepts the definition...
    for name in CLUSTER:
        parent = "lxt-missing" if name == "lxd-1" else ""
        assert lab[name].lxd.ensure_member_object("network", bad(name, parent), name)
    assert lxd0.unfinished_objects() == {"network BAD": PENDING}  # no join token either
    # ...and refuses the creation, which leaves the network Errored.
    with pytest.raises(ObjectRefusedError) as refused:
        lxd0.ensure_cluster_object("network", bad("lxd-0"))
    assert str(refused.value).startswith("network BAD: failed to notify peer 127.0.0.3:8443")
    assert 'Parent interface "lxt-missing" not found' in str(refused.value)
    assert lxd0.object_state("network", "BAD").status == ERRORED
    assert lxd0.unfinished_objects() == {"network BAD": ERRORED}  # so no join token now
    assert lxd0.object_state("network", "BAD", "lxd-0").status == CREATED
    assert lxd0.object_state("network", "BAD", "lxd-1").status == PENDING
    # Retrying as it is fails the same way, with LXD's message.
    with pytest.raises(ObjectRefusedError, match='Parent interface "lxt-missing" not found'):
        lxd0.ensure_cluster_object("network", bad("lxd-0"))
    # Other cluster-wide values cannot be applied to an Errored network: say how to fix it.
    with pytest.raises(ObjectRefusedError, match=r"other values of mtu.*lxc network delete BAD"):
        lxd0.ensure_cluster_object("network", Spec("BAD", "physical", {"mtu": "1400"}))

    # lxd-1 corrects its own definition (still pending there), and the retry succeeds.
    assert lab["lxd-1"].lxd.ensure_member_object("network", bad("lxd-1"), "lxd-1") is True
    assert lxd0.ensure_cluster_object("network", bad("lxd-0")) is True

    assert lxd0.object_state("network", "BAD").status == CREATED
    assert lxd0.unfinished_objects() == {}
    assert lxd0.object_state("network", "BAD", "lxd-1").config["parent"] == "lxt-bad-1"
    lab["lxd-0"].lxc("network", "delete", "BAD")


def test_a_later_member_joins_with_the_requested_member_values(lab: Lab):
    lxd0, joiner = lab["lxd-0"], lab[JOINER]
    # GIVEN a token whose list of member keys predates the LATE network
    token = lxd0.lxd.issue_join_token(JOINER)
    keys = lxd0.lxd.member_config()
    asked = {(k.entity, k.name, k.key) for k in keys}
    assert {("network", "UPLINK", "parent"), ("storage-pool", "local", "source")} <= asked

    def late(member: str) -> Spec:
        return Spec("LATE", "physical", {}, {"parent": f"lxt-bad-{member[-1]}"})

    for name in CLUSTER:
        lab[name].lxd.ensure_member_object("network", late(name), name)
    assert lxd0.lxd.ensure_cluster_object("network", late("lxd-0")) is True
    assert ("network", "LATE", "parent") not in asked

    # WHEN lxd-3 joins with its own values of every requested object
    objects = [
        ("network", uplink(JOINER)),
        ("network", late(JOINER)),
        ("storage-pool", pool(lab, JOINER)),
    ]
    config = fill_member_config(keys, member_values_from_objects(objects))
    assert joiner.lxd.join_cluster(token, JOINER, joiner.address, config) is True

    # THEN it has every object, with its own values, LATE included
    network = lxd0.lxd.object_state("network", "UPLINK", JOINER)
    assert (network.status, network.config["parent"]) == (CREATED, "lxt-up-3")
    network = lxd0.lxd.object_state("network", "LATE", JOINER)
    assert (network.status, network.config["parent"]) == (CREATED, "lxt-bad-3")
    local = lxd0.lxd.object_state("storage-pool", "local", JOINER)
    assert (local.status, local.config["source"]) == (CREATED, lab.path("pools", JOINER, "local"))
    # Nothing left for the joiner's own unit to do.
    for entity, obj in objects:
        assert joiner.lxd.ensure_member_object(entity, obj, JOINER) is False


def test_standalone_server_creates_objects_directly(lab: Lab):
    host = lab[STANDALONE]
    assert host.lxd.init_standalone(host.address, {}) is True

    assert host.lxd.ensure_standalone_object("network", uplink(STANDALONE)) is True
    assert host.lxd.ensure_standalone_object("storage-pool", pool(lab, STANDALONE)) is True

    network = host.lxd.object_state("network", "UPLINK")
    assert (network.status, network.config["parent"], network.config["mtu"]) == (
        CREATED,
        "lxt-up-4",
        "1500",
    )
    assert host.lxd.object_state("storage-pool", "local").config["source"] == lab.path(
        "pools", STANDALONE, "local"
    )
    assert host.lxd.ensure_standalone_object("network", uplink(STANDALONE)) is False
    assert host.lxd.ensure_standalone_object("network", uplink(STANDALONE, "1400")) is True
    assert host.lxd.object_state("network", "UPLINK").config["mtu"] == "1400"
    # Another type under a taken name is refused before LXD is asked.
    with pytest.raises(ObjectRefusedError, match="exists with type physical, not bridge"):
        host.lxd.ensure_standalone_object("network", Spec("UPLINK", "bridge"))
