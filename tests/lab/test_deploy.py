"""The product's bundle deployed by the ``lab`` command, with the real lxd charm and real LXD.

One deployment for the module, driven only through the ``lab`` command as an operator would:
``bundles/lxd-cluster.yaml`` (with the lab overlay) → 3 active units and 3 ONLINE members,
the machines running their hooks freely (one at a time each);
``add-unit`` → 4, even when LXD forgets the first join token (a failed join uses it up);
``remove-unit`` of a non-leader whose member runs a container → 3 members,
the container running on another member, the removed member's certificate refused (403);
``remove-unit`` of the Juju leader → another leader, the cluster still serving;
``remove-unit`` of the unit whose member holds the only database copy → its hook fails on
purpose and nothing is removed; ``destroy`` → no process, namespace or mount left. Invalid
bundles start nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import hosts, procs
from lab.build import REPO
from lab.machines import Lab
from lab.model import Model
from lab.runner import HOOK_LOG, Runner
from lab.state import SecretRecord

from ..functional.checks import wait_for
from .operator import (
    BUNDLE,
    OVERLAY,
    https_status,
    instances,
    lab,
    leader,
    members,
    model_root,
    netns_names,
    units,
)

pytestmark = pytest.mark.ordered_steps

TIMEOUT = "600"


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with model_root("lab-deploy-") as path:
        yield path


def join_tokens(secrets: dict[str, SecretRecord]) -> list[SecretRecord]:
    """The secrets lxd units own: join tokens (ovn-bridge's CA secret is its app's)."""
    return [s for s in secrets.values() if s.owner.startswith("lxd/")]


# -- steps -------------------------------------------------------------------------------


def bad_bundle(tmp: Path, text: str) -> str:
    path = tmp / "bundle.yaml"
    path.write_text(text.replace("CHARM", os.path.join(REPO, "charms", "lxd")))
    return str(path)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "applications:\n  lxd:\n    charm: ./no-such-charm\n    num_units: 3\n",
            "applications.lxd.charm: charm directory './no-such-charm'",
        ),
        (
            "applications:\n  lxd:\n    charm: CHARM\n    num_units: 3\n"
            "    options: {api-port: 8443x}\n",
            "applications.lxd.options.api-port: expected an int",
        ),
        (
            "applications:\n  lxd:\n    charm: CHARM\n    num_units: 3\n    to: ['0']\n",
            "applications.lxd.to: unsupported key 'to'",
        ),
    ],
    ids=["missing-charm-path", "invalid-option-value", "unknown-key"],
)
def test_bad_bundle_is_refused_and_nothing_starts(tmp_path: Path, text: str, named: str):
    root = str(tmp_path / "model")
    before = netns_names()

    done = lab(root, "deploy", bad_bundle(tmp_path, text), check=False)

    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr
    assert not os.path.exists(root)  # no model, no machine
    assert netns_names() == before


def test_deploy_forms_a_three_member_cluster(root: str):
    lab(root, "deploy", BUNDLE, "--overlay", OVERLAY, "--timeout", TIMEOUT)

    found = units(root)
    assert sorted(found) == ["lxd/0", "lxd/1", "lxd/2"]
    for name, unit in found.items():
        assert unit["workload-status"]["current"] == "active", (name, unit)
        assert unit["workload-status"]["message"].endswith("(3 members)"), (name, unit)
        assert unit["public-address"].startswith("198.18.0.")
        assert unit["open-ports"] == ["8443/tcp"]
    assert sum(unit["leader"] for unit in found.values()) == 1
    assert members(root, "lxd/0") == {"lxd-0": "ONLINE", "lxd-1": "ONLINE", "lxd-2": "ONLINE"}
    # the join tokens travelled in secrets, all removed once used; none in any databag
    assert join_tokens(Model(root).secrets) == []
    with open(os.path.join(root, "model.json")) as f:  # the state as the lab persists it
        model = json.load(f)
    # the hooks ran the charms as scripts/build-charms lays them out, not their sources
    for app in ("lxd", "ovn-bridge", "ceph-link"):
        assert model["applications"][app]["run_dir"] == os.path.join(REPO, "build", app)
    # every hook run is a line of the hook log, as long as it took
    with open(os.path.join(root, "logs", HOOK_LOG)) as f:
        hooks = [json.loads(line) for line in f]
    assert len(hooks) == model["hooks_run"]
    assert {h["unit"] for h in hooks} == set(model["units"])
    assert all(0 < h["ended"] - h["started"] < 600 for h in hooks)
    # deployed without a seed, the machines run freely: one starts a hook while another's
    # earlier hook still runs (no lockstep rounds), and no machine runs two hooks at once
    assert any(
        a["machine"] != b["machine"] and a["started"] + 0.2 < b["started"] < a["ended"]
        for a in hooks
        for b in hooks
    )
    for machine in {h["machine"] for h in hooks}:
        mine = sorted((h for h in hooks if h["machine"] == machine), key=lambda h: h["started"])
        assert all(a["ended"] <= b["started"] for a, b in zip(mine, mine[1:], strict=False))
    joined = [h for h in hooks if h["hook"] == "relation-joined" and h["unit"] == "lxd/0"]
    assert {h["endpoint"] for h in joined} == {"cluster", "lxd-member"}
    databags = json.dumps([r["app_data"] for r in model["relations"].values()])
    for unit in model["units"].values():  # LXD's API extension names include "token"
        data = {
            rid: {k: v for k, v in d.items() if k != "api-extensions"}
            for rid, d in unit["data"].items()
        }
        databags += json.dumps(data)
    assert "PRIVATE KEY" not in databags and "token" not in databags.replace("join-tokens", "")
    # each machine is its own server: its own LXD on its own address
    for name, unit in found.items():
        listing = lab(root, "exec", name, "--", "lxc", "config", "get", "cluster.https_address")
        assert listing.stdout.strip() == f"{unit['public-address']}:8443"


def test_add_unit_joins_a_fourth_member(root: str):
    lab(root, "add-unit", "lxd", "--no-wait")
    # Step the model hook by hook until the issuer hands lxd/3 its join token
    model = Model(root)
    runner = Runner(model)
    while not join_tokens(model.secrets) and any(u.queue for u in model.units.values()):
        for name in [n for n, unit in model.units.items() if unit.queue]:
            runner.step(name)
    (token,) = join_tokens(model.secrets)
    # the token is in a secret the issuer owns, granted to the joiner only, in no databag
    assert token.owner == model.apps["lxd"].leader
    assert [unit for names in token.grants.values() for unit in names] == ["lxd/3"]
    content = token.contents[str(token.revision)]["token"]
    state = dataclasses.asdict(model.state)
    assert content not in json.dumps([state["relations"], state["units"]])
    # LXD forgets the token before lxd/3 uses it, as when a failed join has used it up
    lab(root, "exec", token.owner, "--", "lxc", "cluster", "revoke-token", "lxd-3")

    def failed() -> bool:
        return model.units["lxd/3"].status[1].startswith("joining failed")

    others = [name for name in model.units if name != token.owner]
    while not failed():  # the issuer runs no hook meanwhile
        runnable = [name for name in others if model.units[name].queue]
        if not runnable:
            break
        for name in runnable:
            runner.step(name)
    assert model.units["lxd/3"].status[1].startswith("joining failed (Failed to setup")

    lab(root, "wait", "--timeout", TIMEOUT)

    assert units(root)["lxd/3"]["workload-status"]["current"] == "active"
    assert members(root, "lxd/0") == {f"lxd-{n}": "ONLINE" for n in range(4)}
    # it asked for another token, and the issuer gave it one at once (the model settled
    # before any update-status: their interval is 5 minutes), in the same secret
    with open(os.path.join(root, "logs", f"unit-{token.owner.replace('/', '-')}.log")) as f:
        assert f.read().count("issued a join token for lxd-3") == 2


def test_remove_non_leader_running_a_container(root: str):
    # GIVEN a container running on the member of a non-leader unit
    assert leader(root) != "lxd/3"
    image = hosts.build_busybox_image(os.path.join(os.path.dirname(root), "busybox.tar.gz"))
    lab(root, "exec", "lxd/0", "--", "lxc", "image", "import", image, "--alias", "busybox")
    lab(root, "exec", "lxd/0", "--", "lxc", "launch", "busybox", "c1", "--target", "lxd-3")
    assert instances(root, "lxd/0")["c1"] == ("lxd-3", "RUNNING")
    # and the member's own certificate, which the cluster trusts while it is a member
    state = os.path.join(os.path.dirname(root), "lxd-3")
    os.makedirs(state)
    machine_dir = Lab.open(root).machine(units(root)["lxd/3"]["machine"])
    for name in ("server.crt", "server.key"):
        shutil.copy(machine_dir.host_path(f"/var/lib/lxd/{name}"), state)
    cert, key = os.path.join(state, "server.crt"), os.path.join(state, "server.key")
    address = units(root)["lxd/0"]["public-address"]
    assert https_status(root, "lxd/0", address, cert, key) == 200

    # WHEN
    lab(root, "remove-unit", "lxd/3", "--timeout", TIMEOUT)

    # THEN three members, the container running elsewhere, the removed member distrusted
    assert sorted(units(root)) == ["lxd/0", "lxd/1", "lxd/2"]
    assert members(root, "lxd/0") == {f"lxd-{n}": "ONLINE" for n in range(3)}
    where, state_now = instances(root, "lxd/0")["c1"]
    assert where in {"lxd-0", "lxd-1", "lxd-2"} and state_now == "RUNNING"
    assert https_status(root, "lxd/0", address, cert, key) == 403
    assert machine_dir.netns not in netns_names()  # its machine was wiped


def test_remove_leader_elects_another_and_the_cluster_serves(root: str):
    old = leader(root)
    old_member = "lxd-" + old.split("/")[1]

    lab(root, "remove-unit", old, "--timeout", TIMEOUT)

    new = leader(root)
    assert new != old and new in units(root)
    assert all(u["workload-status"]["current"] == "active" for u in units(root).values())
    left = members(root, new)
    assert old_member not in left and len(left) == 2 and set(left.values()) == {"ONLINE"}
    # the cluster serves: its container still runs, and a new one starts
    assert instances(root, new)["c1"][1] == "RUNNING"
    lab(root, "exec", new, "--", "lxc", "launch", "busybox", "c2")
    assert instances(root, new)["c2"][1] == "RUNNING"


def database_holder(root: str, unit: str) -> str:
    """The one member holding the database once LXD has settled the roles (2 members)."""
    command = ["exec", unit, "--", "lxc", "cluster", "list", "-f", "json"]

    def holders() -> list[str]:
        listing = json.loads(lab(root, *command).stdout)
        found = [m["server_name"] for m in listing if "database" in m["roles"]]
        return found if len(found) == 1 else []

    found = wait_for(holders, timeout=60, interval=2)
    assert len(found) == 1, found
    return found[0]


def test_sole_database_member_refuses_to_leave(root: str):
    # GIVEN two members: LXD 5.0 keeps the database on one of them only
    holder = database_holder(root, leader(root))
    unit = "lxd/" + holder.split("-")[1]

    # WHEN its unit is removed, its hook fails on purpose, retried and left in error
    done = lab(root, "remove-unit", unit, "--timeout", TIMEOUT, check=False)

    assert done.returncode == 1, done.stdout + done.stderr
    assert f'{unit}: hook failed: "relation-departed"' in done.stderr
    assert f"member {holder} holds the only copy of the cluster database" in done.stderr
    assert units(root)[unit]["juju-status"]["current"] == "error"
    # AND nothing was evacuated or removed: both members serve, the containers run
    other = next(name for name in units(root) if name != unit)
    assert set(members(root, other).values()) == {"ONLINE"} and len(members(root, other)) == 2
    assert {state for _, state in instances(root, other).values()} == {"RUNNING"}


def test_destroy_leaves_nothing_behind(root: str):
    lab_state = Lab.open(root)
    pids = [pid for machine in lab_state.machines() for pid in machine.pids()]
    assert pids  # LXD daemons and the containers' processes, at least

    done = lab(root, "destroy")

    assert "destroyed" in done.stdout, done.stdout
    assert not os.path.exists(root)
    assert not [n for n in netns_names() if n.startswith(f"{lab_state.prefix}-")]
    assert lab_state.leftovers() == []
    assert [pid for pid in pids if procs.alive(pid)] == []
    with open("/proc/self/mountinfo") as f:
        assert root not in f.read()
