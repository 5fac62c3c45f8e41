"""Ceph from the product's bundle: ceph-link, real Ceph daemons and LXD, driven by ``lab``.

One deployment for the module: ``bundles/lxd-cluster.yaml`` with the lab overlay, whose
``ceph-provider`` runs a single-node Ceph (mon, mgr, OSD) and answers broker requests as
ceph-mon does → the pool exists in Ceph with the requested replicas and the ``rbd``
application; every LXD machine has the keyring (0600) of ``client.ceph-link``; LXD's
``remote`` ceph pool is CREATED on every member. Bad config blocks every unit and changes
nothing; a key rotated by the provider reaches every keyring; a 4th member joins with
the pool.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from .operator import BUNDLE, OVERLAY, lab, members, model_root, subordinates, units

pytestmark = pytest.mark.ordered_steps

TIMEOUT = "900"
POOL = "remote"  # pools: remote:3 in the bundle
REPLICAS = 3
USER = "ceph-link"
PROVIDER = "ceph-provider/0"
KEYRING = f"/etc/ceph/ceph.client.{USER}.keyring"


@pytest.fixture(scope="module")
def root():
    with model_root("lab-ceph-") as path:
        yield path


def ceph(root: str, *args: str) -> str:
    """A ``ceph`` command as the provider's admin, on its machine."""
    return lab(root, "exec", PROVIDER, "--", "ceph", *args).stdout


def key_in_ceph(root: str) -> str:
    return ceph(root, "auth", "get-key", f"client.{USER}").strip()


def key_in_keyring(root: str, unit: str) -> str:
    text = lab(root, "exec", unit, "--", "cat", KEYRING).stdout
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("key = ")]
    return line.split("=", 1)[1].strip()


def storage_pools(root: str, unit: str) -> dict[str, list[str]]:
    """``lxc storage list`` inside ``unit``'s machine: name -> csv fields."""
    out = lab(root, "exec", unit, "--", "lxc", "storage", "list", "-f", "csv").stdout
    return {line.split(",")[0]: line.split(",") for line in out.splitlines()}


def pool_on_member(root: str, member: str) -> dict:
    show = ["lxc", "storage", "show", POOL, "--target", member]
    return yaml.safe_load(lab(root, "exec", "lxd/0", "--", *show).stdout)


def assert_ceph_ready_on(root: str, lxd_units: list[str]) -> None:
    """Every member has the keyring (0600, Ceph's key) and the pool with its source."""
    key = key_in_ceph(root)
    for unit in lxd_units:
        mode = lab(root, "exec", unit, "--", "stat", "-c", "%a %U", KEYRING).stdout.split()
        assert mode == ["600", "root"], (unit, mode)
        assert key_in_keyring(root, unit) == key, unit
    for member in members(root, "lxd/0"):
        pool = pool_on_member(root, member)
        assert pool["driver"] == "ceph"
        # LXD keeps the member's `source` as ceph.osd.pool_name
        assert pool["config"]["ceph.osd.pool_name"] == POOL, (member, pool)
        assert pool["config"]["ceph.user.name"] == USER, (member, pool)
        assert pool["status"] == "Created", (member, pool)
        assert member in pool["locations"], (member, pool)


# -- steps -------------------------------------------------------------------------------


def test_deploy_creates_the_pool_in_ceph_and_in_lxd(root: str):
    lab(root, "deploy", BUNDLE, "--overlay", OVERLAY, "--timeout", TIMEOUT)

    links = subordinates(root, "ceph-link")
    assert sorted(links) == ["ceph-link/0", "ceph-link/1", "ceph-link/2"]
    for name, unit in links.items():
        assert unit["workload-status"] == {
            "current": "active",
            "message": f"pools {POOL} for client.{USER}",
        }, name
    # Ceph: the pool the broker request asked for, with its replicas and application
    size = json.loads(ceph(root, "osd", "pool", "get", POOL, "size", "--format", "json"))
    assert size["size"] == REPLICAS
    apps = json.loads(ceph(root, "osd", "pool", "application", "get", POOL, "--format", "json"))
    assert "rbd" in apps
    caps = ceph(root, "auth", "get", f"client.{USER}")
    assert "profile rbd" in caps
    # LXD: the pool CREATED cluster-wide, defined on every member with its source
    listing = storage_pools(root, "lxd/1")
    assert listing[POOL][1] == "ceph" and listing[POOL][-1] == "CREATED", listing
    assert_ceph_ready_on(root, sorted(units(root)))
    # LXD reached Ceph with ceph-link's key: it marked the pool as its own
    images = lab(root, "exec", PROVIDER, "--", "rbd", "ls", POOL).stdout.split()
    assert f"lxd_{POOL}" in images, images


def test_volumes_need_the_rbd_kernel_module(root: str):
    if not os.path.isdir("/sys/bus/rbd"):
        pytest.skip(
            "this kernel has no rbd support (/sys/bus/rbd is missing, modules cannot be "
            "loaded): LXD maps RBD images with the kernel ('rbd: failed to load rbd kernel "
            "module'), so no volume or instance can be created on the ceph pool here"
        )
    lab(root, "exec", "lxd/0", "--", "lxc", "storage", "volume", "create", POOL, "vol1")
    volumes = lab(root, "exec", "lxd/1", "--", "lxc", "storage", "volume", "list", POOL).stdout
    assert "vol1" in volumes


def test_invalid_pools_block_and_change_nothing(root: str):
    # The lab checks what Juju checks (the option exists, its type): each value reaches the
    # charm, which blocks naming the option and what is valid, and asks Ceph for nothing.
    before = ceph(root, "osd", "pool", "ls")
    good = yaml.safe_load(lab(root, "config", "ceph-link").stdout)["pools"]
    for value, words in (
        ("remote", "NAME:REPLICAS"),
        ("remote:0", "replicas must be"),
        ("remote:3:100", "power of two"),
    ):
        lab(root, "config", "ceph-link", f"pools={value}", "--timeout", TIMEOUT)
        for name, unit in subordinates(root, "ceph-link").items():
            status = unit["workload-status"]
            assert status["current"] == "blocked", (name, value, status)
            assert "'pools'" in status["message"] and words in status["message"], status
        assert ceph(root, "osd", "pool", "ls") == before

    lab(root, "config", "ceph-link", f"pools={good}", "--timeout", TIMEOUT)

    assert ceph(root, "osd", "pool", "ls") == before
    for name, unit in subordinates(root, "ceph-link").items():
        assert unit["workload-status"]["current"] == "active", name


def test_a_rotated_key_reaches_every_keyring(root: str):
    old = key_in_ceph(root)
    lab(root, "run", PROVIDER, "rotate-key", f"user={USER}")
    lab(root, "wait", "--timeout", TIMEOUT)
    new = key_in_ceph(root)
    assert new != old
    for unit in sorted(units(root)):
        assert key_in_keyring(root, unit) == new, unit
        # the ceph client on the machine gets in with the files ceph-link wrote
        status = ["ceph", "--id", USER, "--connect-timeout", "30", "osd", "pool", "ls"]
        assert POOL in lab(root, "exec", unit, "--", *status).stdout.split(), unit


def test_a_new_member_joins_with_the_pool(root: str):
    lab(root, "add-unit", "lxd", "--timeout", TIMEOUT)

    states = members(root, "lxd/0")
    assert len(states) == 4 and set(states.values()) == {"ONLINE"}, states
    assert_ceph_ready_on(root, sorted(units(root)))
    assert storage_pools(root, "lxd/3")[POOL][-1] == "CREATED"
