"""``lab remove-relation`` keeps Juju's semantics: shown by real hooks of two tiny charms.

One deployment (through the ``lab`` command) of ``probe`` (3 units) and ``probe-consumer``
(1 unit) related over ``feed``, over which probe's leader shares an application databag
and an application-owned secret (charms in ``tests/lab/charms``; every hook appends
``<unit> <hook> [remote=..] [departing=..] [app=..]`` to its machine's probe.log). The steps
below prove that

* a pair that is unknown, names a peer endpoint or is not related exits 2 and changes
  nothing;
* removing the relation gives every unit of each side that saw it ``feed-relation-departed``
  for each remote unit it had seen join (``JUJU_DEPARTING_UNIT`` the remote unit), in name
  order, then ``feed-relation-broken`` (its ``event.relation.app`` still set), and nothing
  else of that relation; a unit added just before (its ``relation-created`` not run yet)
  gets none of it and nobody departs it;
* the relation is then gone: from ``lab status``, the model, the units' databags, and the
  secret's grants (the consumer no longer sees the secret);
* relating the two again makes a new relation (new id, fresh databags) that works: joined
  hooks, the greeting and a new grant.

The container-scoped case (the subordinate's units go) and an ambiguous pair are steps of
``test_model_semantics.py``, on its principal/subordinate deployment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from lab import hookcontext
from lab.machines import Lab
from lab.model import Model

from .conftest import bundle_model_root
from .test_model_semantics import CHARMS, TIMEOUT, lab, lab_log, ok, probe_log, status

pytestmark = pytest.mark.ordered_steps

BUNDLE = f"""
applications:
  probe:
    charm: {CHARMS}/probe
    num_units: 3
  probe-consumer:
    charm: {CHARMS}/probe-consumer
    num_units: 1
relations:
  - [probe:feed, probe-consumer:feed]
"""
PROBES = ["probe/0", "probe/1", "probe/2"]
CONSUMER = "probe-consumer/0"
JUJU_KEYS = {"ingress-address", "private-address", "egress-subnets"}


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    """Where the model lives; what is left of its lab is destroyed after the module."""
    with bundle_model_root("lab-remove-relation-", BUNDLE) as path:
        yield path


@pytest.fixture(scope="module")
def removed() -> dict[str, Any]:
    """What the steps learn about the relation they remove (its id, the log offsets)."""
    return {}


def feed_id(model: Model) -> str | None:
    """The id of the probe:feed - probe-consumer:feed relation, if there is one."""
    found = [
        rid
        for rid, r in model.relations.items()
        if {(e.app, e.endpoint) for e in r.endpoints}
        == {("probe", "feed"), ("probe-consumer", "feed")}
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def feed_hooks(lines: list[str]) -> list[str]:
    """The lines of ``feed`` relation hooks."""
    return [line for line in lines if line.startswith("feed-relation-")]


# -- the steps ------------------------------------------------------------------------------


def test_deploy_settles(root: str):
    bundle = os.path.join(os.path.dirname(root), "bundle.yaml")

    ok(lab(root, "deploy", bundle, "--timeout", TIMEOUT))

    model = Model(root)
    rid = feed_id(model)
    assert rid is not None
    ((sid, secret),) = model.secrets.items()
    assert secret.grants == {rid: ["probe-consumer"]}
    assert CONSUMER in secret.observers
    assert model.units[CONSUMER].status == ["active", "greeting hello"]
    assert sorted(model.units[CONSUMER].seen[rid]) == PROBES
    assert status(root)["applications"]["probe-consumer"]["relations"] == {"feed": ["probe"]}


@pytest.mark.parametrize(
    ("a", "b", "says"),
    [
        ("probe", "nope", "unknown application 'nope'"),
        ("probe:nope", "probe-consumer", "'probe' has no endpoint 'nope'"),
        ("probe:peers", "probe-consumer", "probe:peers is a peer relation"),
        ("probe", "probe", "peer relations, which cannot be removed"),
        ("probe:host", "probe-consumer", "probe:host"),  # no pair: the interfaces differ
    ],
)
def test_a_bad_pair_exits_2_and_changes_nothing(root: str, a: str, b: str, says: str):
    before = Model(root).state

    done = lab(root, "remove-relation", a, b, "--timeout", TIMEOUT)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr, done.stderr
    assert Model(root).state == before


def test_remove_relation_departs_each_remote_unit_then_breaks(root: str, removed: dict):
    rid = feed_id(Model(root))
    removed["rid"] = rid
    # a unit added just before: it has not run feed-relation-created when the relation goes
    ok(lab(root, "add-unit", "probe", "--no-wait"))
    removed["before"] = {u: len(probe_log(root, u)) for u in [*PROBES, CONSUMER]}

    ok(lab(root, "remove-relation", "probe", "probe-consumer", "--timeout", TIMEOUT))

    new = {u: probe_log(root, u)[n:] for u, n in removed["before"].items()}
    for probe in PROBES:
        assert feed_hooks(new[probe]) == [
            f"feed-relation-departed remote={CONSUMER} departing={CONSUMER}",
            "feed-relation-broken app=probe-consumer",
        ], new[probe]
    assert feed_hooks(new[CONSUMER]) == [
        *(f"feed-relation-departed remote={p} departing={p}" for p in PROBES),
        "feed-relation-broken app=probe",
    ], new[CONSUMER]
    # the late unit never took part: no feed hook at all, and nobody departs it
    assert not feed_hooks(probe_log(root, "probe/3"))
    # the lab ran them on the removed relation's id
    for unit, remotes in [*((p, 1) for p in PROBES), (CONSUMER, len(PROBES))]:
        ran = [h for h, d in lab_log(root, unit) if d.get("relation") == rid]
        assert ran[-remotes - 1 :] == [*["relation-departed"] * remotes, "relation-broken"]


def test_the_relation_is_gone_with_its_databags_and_secret_grant(root: str, removed: dict):
    rid = removed["rid"]
    model = Model(root)

    assert feed_id(model) is None and rid not in model.relations
    apps = status(root)["applications"]
    assert apps["probe-consumer"]["relations"] == {}
    assert apps["probe"]["relations"] == {"peers": ["probe"]}
    for name, unit in model.units.items():
        assert rid not in unit.data and rid not in unit.seen, name
        assert rid not in unit.relations, name
    # the grant was scoped to the relation: revoked; the consumer no longer sees the secret
    ((sid, secret),) = model.secrets.items()
    assert secret.grants == {}
    assert CONSUMER not in secret.observers
    assert hookcontext.request(model, CONSUMER, {"name": "update_status"})["secrets"] == []
    assert model.units[CONSUMER].status == ["active", "no feed"]


def test_removing_it_again_exits_2(root: str):
    done = lab(root, "remove-relation", "probe", "probe-consumer", "--timeout", TIMEOUT)

    assert done.returncode == 2
    assert "no relation probe:feed - probe-consumer:feed" in done.stderr, done.stderr


def test_relating_again_makes_a_new_relation(root: str, removed: dict):
    before = {u: len(probe_log(root, u)) for u in [*PROBES, "probe/3", CONSUMER]}

    ok(lab(root, "relate", "probe-consumer", "probe", "--timeout", TIMEOUT))

    model = Model(root)
    rid = feed_id(model)
    assert rid is not None and int(rid) > int(removed["rid"])
    probes = [*PROBES, "probe/3"]
    new = {u: probe_log(root, u)[n:] for u, n in before.items()}
    for probe in probes:
        assert f"feed-relation-joined remote={CONSUMER}" in new[probe], new[probe]
    joined = {line for line in new[CONSUMER] if line.startswith("feed-relation-joined")}
    assert joined == {f"feed-relation-joined remote={p}" for p in probes}
    # fresh databags: what Juju puts there and what the charms wrote since, nothing older
    for name in [*probes, CONSUMER]:
        data = model.units[name].data[rid]
        assert data == {**{k: data[k] for k in JUJU_KEYS}, "unit": name}, name
    ((sid, secret),) = model.secrets.items()
    assert model.relations[rid].app_data == {
        "probe": {"greeting": "hello", "secret-id": sid},
        "probe-consumer": {},
    }
    assert secret.grants == {rid: ["probe-consumer"]}
    assert model.units[CONSUMER].status == ["active", "greeting hello"]
    assert status(root)["applications"]["probe-consumer"]["relations"] == {"feed": ["probe"]}


def test_destroy_leaves_nothing(root: str):
    the_lab = Lab.open(root)

    ok(lab(root, "destroy"))

    assert not os.path.exists(root)
    assert the_lab.leftovers() == []
