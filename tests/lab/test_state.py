"""The model's typed state on disk: what is saved is what loads, and the file keeps its keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.state import (
    AppRecord,
    ModelState,
    RelationEnd,
    RelationRecord,
    SecretRecord,
    UnitRecord,
)


def a_state() -> ModelState:
    state = ModelState(model={"name": "lab", "uuid": "u"}, seed=7, lockstep=False, config={})
    state.applications["lxd"] = AppRecord(
        charm="lxd",
        charm_dir="/charms/lxd",
        run_dir="/build/lxd",
        subordinate=False,
        base="ubuntu@24.04",
        options={"api-port": 8443},
        config={"api-port": 8443},
        endpoints={"cluster": {"role": "peers", "interface": "lxd-cluster", "scope": None}},
        bindings=["cluster"],
        actions={},
        leader="lxd/0",
        next_unit=1,
    )
    state.units["lxd/0"] = UnitRecord("lxd", "0", None, "198.18.0.10")
    state.units["lxd/0"].queue.append({"name": "relation_changed", "relation": "0"})
    state.units["lxd/0"].data["0"] = {"address": "198.18.0.10:8443"}
    state.relations["0"] = RelationRecord(
        endpoints=[RelationEnd("lxd", "cluster")],
        interface="lxd-cluster",
        scope="global",
        app_data={"lxd": {"mode": "cluster"}},
        members=["lxd/0"],
    )
    state.secrets["secret:1"] = SecretRecord(
        owner="lxd/0", revision=1, contents={"1": {"token": "t"}}, label="join", grants={}
    )
    state.next_relation_id = 1
    return state


def test_what_is_saved_loads_the_same(tmp_path: Path):
    path = str(tmp_path / "model.json")
    state = a_state()

    state.save(path)

    assert ModelState.load(path) == state
    assert isinstance(ModelState.load(path).relations["0"].endpoints[0], RelationEnd)
    assert not os.path.exists(path + ".tmp")  # written to a temporary file, then renamed


def test_the_file_keeps_the_keys_it_had(tmp_path: Path):
    path = str(tmp_path / "model.json")
    a_state().save(path)

    with open(path) as f:
        raw = json.load(f)

    assert raw["units"]["lxd/0"]["queue"] == [{"name": "relation_changed", "relation": "0"}]
    assert raw["relations"]["0"]["endpoints"] == [{"app": "lxd", "endpoint": "cluster"}]
    assert raw["applications"]["lxd"]["leader"] == "lxd/0"
    assert raw["secrets"]["secret:1"]["contents"] == {"1": {"token": "t"}}
    assert {"hooks_run", "next_relation_id", "rounds", "seed", "lockstep", "down"} <= set(raw)


def test_a_unit_saved_without_the_newer_fields_loads_with_their_defaults(tmp_path: Path):
    path = str(tmp_path / "model.json")
    a_state().save(path)
    with open(path) as f:
        raw = json.load(f)
    for key in ("error_detail", "state", "timer"):
        del raw["units"]["lxd/0"][key]
    del raw["down"]
    with open(path, "w") as f:
        json.dump(raw, f)

    unit = ModelState.load(path).units["lxd/0"]

    assert (unit.error_detail, unit.state, unit.timer) == ("", {}, 0.0)
    assert ModelState.load(path).down == []
