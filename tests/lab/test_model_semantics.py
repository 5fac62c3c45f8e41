"""The lab model keeps Juju's semantics: shown by real hooks of two tiny charms.

One deployment (through the ``lab`` command) of ``probe`` (a principal, 2 units) and its
subordinate ``probe-sub``, related over the container-scoped ``host`` and the global
``feed`` (charms in ``tests/lab/charms``). Every hook is its own process inside the unit's
lab machine and appends ``<unit> <hook> [remote=<unit>] [departing=<unit>]`` to that
machine's private ``/var/lib/juju/probe.log``. From those logs, ``lab status`` and the
model's state, the steps below prove that

* a new unit runs install, relation-created, leader-elected (the leader only),
  config-changed and start before any relation-joined, and relation-changed for a remote
  unit only after its relation-joined;
* every principal unit gets one subordinate unit, on its machine, that sees only its
  principal over the container-scoped relation but every probe unit over ``feed``;
* an application databag and an application-owned secret granted over ``feed`` reach the
  other side; a new secret revision reaches its observers as secret-changed, and an
  application databag change arrives as relation-changed without a remote unit;
* ``lab deploy`` prints a progress line per unit status change, the last one active;
* the model is idle as soon as no hook is queued (no update-status round to find out);
  ``update-status`` follows the model's ``update-status-hook-interval`` (``lab
  model-config``, checked as Juju checks it), and ``lab wait --idle-period`` runs the timers
  that fall due meanwhile;
* a unit that changes its peer databag in every hook keeps the model from settling, and
  ``lab wait`` names it;
* a killed machine (``lab kill-machine``: every process gone) runs no hooks and its units
  show a lost agent while the others go on; started again, its units run ``start``, then
  the hooks that waited;
* removing the leader takes its subordinate and its machine with it: every unit it saw
  departs on both sides, then relation-broken, stop and remove; another unit is elected;
* ``lab remove-relation`` refuses an ambiguous pair and a peer relation (exit 2); removing
  the container-scoped relation removes the subordinate's unit (departed on both sides,
  relation-broken, stop, remove) but not the principal's machine, and relating again gives
  the principal a new subordinate unit;
* ``lab destroy`` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from lab.build import REPO
from lab.machines import IP, Lab
from lab.model import Model
from lab.runner import HOOK_LOG
from lab.state import RelationEnd

from .conftest import bundle_model_root

pytestmark = pytest.mark.ordered_steps

CHARMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "charms")
PROBE_LOG = "/var/lib/juju/probe.log"
TIMEOUT = "120"  # seconds for a lab command to settle the model (it takes a few)
SEED = "7"  # orders the hooks that start together (the same for both deployments)
BUNDLE = f"""
applications:
  probe:
    charm: {CHARMS}/probe
    num_units: 2
  probe-sub:
    charm: {CHARMS}/probe-sub
relations:
  - [probe:host, probe-sub:host]
  - [probe:feed, probe-sub:feed]
"""
# A progress line of a lab command that waits (on stderr)
PROGRESS_LINE = re.compile(r"^ *[0-9.]+s +(?P<hooks>\d+) hooks  (?P<unit>\S+): (?P<status>.*)$")
# A line of the lab's own hook record: logs/unit-<app>-<n>.log
LAB_LOG_LINE = re.compile(r"^\S+ \S+ (?P<hook>[a-z-]+) \((?P<detail>[^)]*)\) (?P<outcome>\w+)$")


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    """Where the model lives; what is left of its lab is destroyed after the module."""
    with bundle_model_root("lab-semantics-", BUNDLE) as path:
        yield path


def lab(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``lab --root ROOT ARGS...`` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "lab", "--root", root, *args],
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """``done``'s stdout, once it is known to have succeeded."""
    assert done.returncode == 0, f"{done.args[4:]} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def status(root: str) -> dict[str, Any]:
    return json.loads(ok(lab(root, "status", "--format", "json")))


def units(root: str) -> dict[str, dict[str, Any]]:
    """Every unit's status record, subordinates too."""
    found = {}
    for app in status(root)["applications"].values():
        for name, unit in app.get("units", {}).items():
            found[name] = unit
            for sub, record in unit.get("subordinates", {}).items():
                found[sub] = record
    return found


def leader(root: str, app: str) -> str:
    (name,) = [n for n, u in units(root).items() if n.startswith(f"{app}/") and u["leader"]]
    return name


def probe_log(root: str, unit: str) -> list[str]:
    """The hooks ``unit`` logged in its machine's probe.log: ``<hook> [remote=..]...``."""
    path = Model(root).machine_of(unit).host_path(PROBE_LOG)
    with open(path) as f:
        return [line.split(" ", 1)[1].strip() for line in f if line.split(" ", 1)[0] == unit]


def hooks(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines]


def lab_log(root: str, unit: str) -> list[tuple[str, dict[str, str]]]:
    """(hook, its details) of every hook the lab ran for ``unit`` (kept after it is gone)."""
    path = os.path.join(root, "logs", f"unit-{unit.replace('/', '-')}.log")
    with open(path) as f:
        found = [LAB_LOG_LINE.match(line.strip()) for line in f]
    return [
        (m["hook"], dict(kv.split("=", 1) for kv in m["detail"].split(", ") if kv))
        for m in found
        if m and m["outcome"] == "ok"
    ]


def relation_id(model: Model, endpoint: str, app: str = "probe") -> str:
    (rid,) = [
        rid for rid, r in model.relations.items() if RelationEnd(app, endpoint) in r.endpoints
    ]
    return rid


def teardown(root: str, unit: str) -> set[tuple[str, str]]:
    """(endpoint, remote unit) of the relation-departed hooks removed ``unit`` ran.

    Asserts that they came first, then relation-broken for each relation, stop and remove.
    """
    app = unit.split("/")[0]
    endpoint = {  # relation id -> the unit's endpoint
        rid: end.endpoint
        for rid, relation in Model(root).relations.items()
        for end in relation.endpoints
        if end.app == app
    }
    ran = lab_log(root, unit)
    start = next(i for i, (hook, _) in enumerate(ran) if hook == "relation-departed")
    names = [hook for hook, _ in ran[start:]]
    assert names == [*["relation-departed"] * 4, *["relation-broken"] * 3, "stop", "remove"]
    departed = set()
    for _, detail in ran[start : start + 4]:
        assert detail["departing_unit"] in (unit, detail["remote_unit"]), detail
        departed.add((endpoint[detail["relation"]], detail["remote_unit"]))
    broken = {endpoint[detail["relation"]] for _, detail in ran[start + 4 : start + 7]}
    assert broken == {"peers", "host", "feed"}
    return departed


# -- the steps ------------------------------------------------------------------------------


def test_deploy_settles(root: str):
    bundle = os.path.join(os.path.dirname(root), "bundle.yaml")

    done = lab(root, "deploy", bundle, "--seed", SEED, "--timeout", TIMEOUT)
    deployed = ok(done)

    assert f"seed {SEED}" in deployed
    found = units(root)
    # progress on stderr: a line per status change, the last of each unit active and idle
    progress = [PROGRESS_LINE.match(line) for line in done.stderr.splitlines()]
    assert progress and all(progress), done.stderr
    counts = [int(m["hooks"]) for m in progress if m]
    assert counts == sorted(counts) and 0 < counts[-1] <= status(root)["model"]["hooks-run"]
    last = {m["unit"]: m["status"] for m in progress if m}
    assert sorted(last) == sorted(found)
    assert all(s.startswith("active: ") and s.endswith(" (idle)") for s in last.values()), last
    assert sorted(found) == ["probe-sub/0", "probe-sub/1", "probe/0", "probe/1"]
    assert {u["juju-status"]["current"] for u in found.values()} == {"idle"}
    assert sum(u["leader"] for n, u in found.items() if n.startswith("probe/")) == 1
    assert sum(u["leader"] for n, u in found.items() if n.startswith("probe-sub/")) == 1
    # idle as soon as the queues are empty: no update-status timer (5m) fell due meanwhile
    assert "update-status" not in {run["hook"] for run in hook_log(root)}


def hook_log(root: str) -> list[dict[str, Any]]:
    """Every hook the lab ran, as ``logs/hooks.jsonl`` records it."""
    with open(os.path.join(root, "logs", HOOK_LOG)) as f:
        return [json.loads(line) for line in f]


def overlapping(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["started"] < b["ended"] and b["started"] < a["ended"]


def test_machines_run_hooks_at_once_but_one_machine_one_at_a_time(root: str):
    runs = hook_log(root)
    machines: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        machines.setdefault(run["machine"], []).append(run)

    assert len(machines) == 2
    for machine, mine in machines.items():
        assert {run["unit"].split("/")[0] for run in mine} == {"probe", "probe-sub"}
        mine.sort(key=lambda run: run["started"])
        for a, b in zip(mine, mine[1:], strict=False):
            assert a["ended"] <= b["started"], f"machine {machine}: {a} overlaps {b}"
    first, second = machines.values()
    assert any(overlapping(a, b) for a in first for b in second)


def test_the_same_seed_gives_the_same_order(root: str):
    def order(runs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((r["round"], r["unit"], r["hook"], r["endpoint"]) for r in runs)

    with bundle_model_root("lab-seed-", BUNDLE) as again:
        bundle = os.path.join(os.path.dirname(again), "bundle.yaml")
        ok(lab(again, "deploy", bundle, "--seed", SEED, "--timeout", TIMEOUT))
        assert order(hook_log(again)) == order(hook_log(root))


def test_update_status_follows_the_model_interval(root: str):
    assert yaml.safe_load(ok(lab(root, "model-config"))) == {"update-status-hook-interval": "5m"}
    for value, words in (
        ("update-status-hook-interval=0s", "from 1s to 60m"),
        ("update-status-hook-interval=2h", "from 1s to 60m"),
        ("update-status-hook-interval=soon", "'soon' is not a duration"),
        ("interval=10s", "unknown model config key 'interval'"),
    ):
        refused = lab(root, "model-config", value)
        assert refused.returncode == 2 and words in refused.stderr, (value, refused.stderr)
    before = len(hook_log(root))

    # an idle model: wait returns without running a hook
    ok(lab(root, "wait", "--timeout", TIMEOUT))
    assert len(hook_log(root)) == before

    # every 2 s: over 5 idle seconds every unit's timer fires, no sooner than 2 s apart
    ok(lab(root, "model-config", "update-status-hook-interval=2s"))
    ok(lab(root, "wait", "--idle-period", "5", "--timeout", TIMEOUT))
    ok(lab(root, "model-config", "update-status-hook-interval=5m"))
    ran = hook_log(root)[before:]
    assert {run["hook"] for run in ran} == {"update-status"}, ran
    for unit in units(root):
        starts = [run["started"] for run in ran if run["unit"] == unit]
        assert starts, (unit, ran)
        assert all(b - a >= 2.0 for a, b in zip(starts, starts[1:], strict=False)), starts


def test_new_unit_hooks_come_in_juju_order(root: str):
    model = Model(root)
    for name, unit in units(root).items():
        endpoints = model.apps[model.units[name].app].endpoints
        log = probe_log(root, name)
        names = hooks(log)
        setup = names[1 : names.index("start")]
        last = ["leader-elected", "config-changed"] if unit["leader"] else ["config-changed"]

        assert names[0] == "install", log
        assert sorted(setup[: -len(last)]) == sorted(f"{e}-relation-created" for e in endpoints)
        assert setup[-len(last) :] == last, log
        for i, line in enumerate(log):
            if line.split()[0].endswith("-relation-changed") and "remote=" in line:
                joined = line.replace("-relation-changed", "-relation-joined", 1)
                assert joined in log[:i], f"{name}: {line} before {joined}"


def test_one_subordinate_per_principal_on_its_machine(root: str):
    found = units(root)
    model = Model(root)
    probes = ["probe/0", "probe/1"]
    subs = {p: list(found[p]["subordinates"]) for p in probes}

    assert all(len(s) == 1 for s in subs.values()), subs
    assert sorted(s for (s,) in subs.values()) == ["probe-sub/0", "probe-sub/1"]
    assert status(root)["applications"]["probe-sub"]["subordinate-to"] == ["probe"]
    for principal, (sub,) in subs.items():
        assert found[sub]["machine"] == found[principal]["machine"]
        # the same machine-private probe.log holds both units' hooks
        path = model.machine_of(principal).host_path(PROBE_LOG)
        with open(path) as f:
            writers = {line.split()[0] for line in f}
        assert writers == {principal, sub}
        # container scope: each sees only the other; feed is global: every unit of the other
        assert [h for h in probe_log(root, sub) if h.startswith("host-relation-joined")] == [
            f"host-relation-joined remote={principal}"
        ]
        assert [h for h in probe_log(root, principal) if h.startswith("host-relation-joined")] == [
            f"host-relation-joined remote={sub}"
        ]
        feed = {h for h in probe_log(root, sub) if h.startswith("feed-relation-joined")}
        assert feed == {f"feed-relation-joined remote={p}" for p in probes}
    # every unit published its own name in every databag it has
    for name, unit in model.units.items():
        assert len(unit.data) == 3
        assert {data["unit"] for data in unit.data.values()} == {name}


def test_app_databag_and_app_secret_reach_the_subordinates(root: str):
    model = Model(root)
    feed = relation_id(model, "feed")
    app_data = model.relations[feed].app_data["probe"]
    ((sid, secret),) = model.secrets.items()

    assert app_data == {"greeting": "hello", "secret-id": sid}
    assert secret.owner == "probe" and secret.label == "greeting"
    assert secret.grants == {feed: ["probe-sub"]}
    assert secret.revision == 1 and secret.contents == {"1": {"greeting": "hello"}}
    for name, unit in units(root).items():
        assert unit["workload-status"] == {"current": "active", "message": "greeting hello"}, name


def test_new_secret_revision_reaches_observers(root: str):
    before = {name: len(probe_log(root, name)) for name in units(root)}

    ok(lab(root, "config", "probe", "greeting=bonjour", "--timeout", TIMEOUT))

    new = {name: probe_log(root, name)[count:] for name, count in before.items()}
    for name, lines in new.items():
        if name.startswith("probe-sub/"):
            assert "config-changed" not in hooks(lines), lines  # not its application's config
            assert "secret-changed" in lines, lines
            # the application databag changed: relation-changed names no remote unit
            assert "feed-relation-changed" in lines, lines
        else:
            assert "config-changed" in lines, lines
            assert "secret-changed" not in hooks(lines), lines  # the owner is not told
    model = Model(root)
    (secret,) = model.secrets.values()
    assert secret.revision == 2 and secret.contents["2"] == {"greeting": "bonjour"}
    assert {o: s["revision"] for o, s in secret.observers.items()} == {
        "probe-sub/0": 2,
        "probe-sub/1": 2,
    }
    for name, unit in units(root).items():
        assert unit["workload-status"]["message"] == "greeting bonjour", name


def test_a_secret_event_whose_secret_is_gone_is_dropped(root: str):
    # GIVEN a secret-changed queued for a secret removed before it could run
    model = Model(root)
    model.units["probe-sub/0"].queue.append({"name": "secret_changed", "secret_id": "gone"})
    model.save()
    before = len(probe_log(root, "probe-sub/0"))

    ok(lab(root, "wait", "--timeout", TIMEOUT))

    # THEN it is dropped, as Juju has nothing to tell: no hook ran, nothing failed
    assert "secret-changed" not in hooks(probe_log(root, "probe-sub/0")[before:])
    assert Model(root).units["probe-sub/0"].queue == []
    assert units(root)["probe-sub/0"]["juju-status"]["current"] == "idle"


def test_a_flapping_unit_keeps_the_model_from_settling(root: str):
    ok(lab(root, "config", "probe", "flap=true", "--no-wait"))

    waited = lab(root, "wait", "--timeout", "20")

    assert waited.returncode == 1, waited.stderr
    assert "did not settle within 20 s" in waited.stderr
    named = waited.stderr.split("still changing:", 1)[1]
    assert "probe/0" in named and "probe/1" in named, waited.stderr
    assert "probe-sub/" not in named, waited.stderr
    model = Model(root)
    peers = relation_id(model, "peers")
    assert all(int(model.units[p].data[peers]["flap"]) > 3 for p in ("probe/0", "probe/1"))
    # once it stops flapping, the model settles again
    ok(lab(root, "config", "probe", "flap=false", "--timeout", TIMEOUT))


def test_a_killed_machine_runs_no_hooks_until_it_starts_again(root: str):
    # GIVEN a process running on the non-leader's machine
    lost = next(n for n in ("probe/0", "probe/1") if n != leader(root, "probe"))
    (lost_sub,) = units(root)[lost]["subordinates"]
    machine = Model(root).machine_of(lost)
    ok(lab(root, "exec", lost, "--", "sh", "-c", "sleep 600 >/dev/null 2>&1 &"))
    assert machine.pids()
    before = {u: len(probe_log(root, u)) for u in (lost, lost_sub)}
    greeting = yaml.safe_load(ok(lab(root, "config", "probe")))["greeting"]

    # WHEN the machine is lost, and the config changes meanwhile
    ok(lab(root, "kill-machine", machine.name))
    ok(lab(root, "config", "probe", "greeting=salut", "--timeout", TIMEOUT))

    # THEN nothing of it runs; its units (the subordinate too) show a lost agent
    assert machine.pids() == []
    found = units(root)
    for name in (lost, lost_sub):
        assert len(probe_log(root, name)) == before[name]
        assert found[name]["juju-status"]["current"] == "lost"
        assert found[name]["workload-status"]["current"] == "unknown"
    assert status(root)["machines"][machine.name]["juju-status"]["current"] == "down"
    refused = lab(root, "run", lost, "greet")
    assert refused.returncode == 2 and "which is down" in refused.stderr, refused.stderr

    # WHEN it comes back, THEN its units run start, then the hooks that waited
    ok(lab(root, "start-machine", machine.name, "--timeout", TIMEOUT))

    ran = hooks(probe_log(root, lost)[before[lost] :])
    assert ran[0] == "start" and "config-changed" in ran, ran
    assert hooks(probe_log(root, lost_sub)[before[lost_sub] :])[0] == "start"
    assert units(root)[lost]["workload-status"]["message"] == "greeting salut"
    assert {units(root)[n]["juju-status"]["current"] for n in (lost, lost_sub)} == {"idle"}
    ok(lab(root, "config", "probe", f"greeting={greeting}", "--timeout", TIMEOUT))


def test_removing_the_leader_takes_its_subordinate_and_elects_another(root: str):
    found = units(root)
    gone = leader(root, "probe")
    (gone_sub,) = found[gone]["subordinates"]
    (survivor,) = {"probe/0", "probe/1"} - {gone}
    (survivor_sub,) = found[survivor]["subordinates"]
    machine = Model(root).machine_of(gone)
    before = {u: len(probe_log(root, u)) for u in (survivor, survivor_sub)}
    sub_was_leader = found[gone_sub]["leader"]

    ok(lab(root, "remove-unit", gone, "--timeout", TIMEOUT))

    after = units(root)
    assert sorted(after) == sorted([survivor, survivor_sub])
    assert after[survivor]["leader"] and after[survivor_sub]["leader"]
    assert list(status(root)["machines"]) == [after[survivor]["machine"]]
    netns = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=True)
    assert machine.netns not in netns.stdout.split()
    assert not os.path.exists(machine.state_dir)
    # the survivors saw both units depart; the principal's survivor is the new leader
    new = probe_log(root, survivor)[before[survivor] :]
    assert f"peers-relation-departed remote={gone} departing={gone}" in new
    assert f"feed-relation-departed remote={gone_sub} departing={gone_sub}" in new
    assert hooks(new).count("leader-elected") == 1
    assert new.index("leader-elected") > new.index(
        f"peers-relation-departed remote={gone} departing={gone}"
    )
    new_sub = probe_log(root, survivor_sub)[before[survivor_sub] :]
    assert f"feed-relation-departed remote={gone} departing={gone}" in new_sub
    assert f"peers-relation-departed remote={gone_sub} departing={gone_sub}" in new_sub
    assert ("leader-elected" in new_sub) == sub_was_leader
    assert not any(h.startswith("host-relation-") for h in hooks(new + new_sub))
    # the survivors still have the greeting: the secret and databag are the application's
    assert {u["workload-status"]["message"] for u in after.values()} == {"greeting bonjour"}
    # the removed units (their machine is wiped: the lab's record of the hooks it ran) got
    # relation-departed for every unit they had seen, then relation-broken, stop, remove
    subs = ("probe-sub/0", "probe-sub/1")
    assert teardown(root, gone) == {
        ("peers", survivor),
        ("host", gone_sub),
        *(("feed", sub) for sub in subs),
    }
    assert teardown(root, gone_sub) == {
        ("peers", survivor_sub),
        ("host", gone),
        *(("feed", probe) for probe in ("probe/0", "probe/1")),
    }


def test_remove_relation_refuses_an_ambiguous_pair_and_a_peer_relation(root: str):
    before = Model(root).state

    ambiguous = lab(root, "remove-relation", "probe", "probe-sub", "--timeout", TIMEOUT)
    peer = lab(root, "remove-relation", "probe-sub:peers", "probe", "--timeout", TIMEOUT)

    assert ambiguous.returncode == 2 and "ambiguous relation" in ambiguous.stderr
    assert peer.returncode == 2 and "peer relations cannot be removed" in peer.stderr
    assert Model(root).state == before


def test_removing_the_container_relation_removes_the_subordinate(root: str):
    found = units(root)
    (principal,) = [name for name in found if name.startswith("probe/")]
    (sub,) = found[principal]["subordinates"]
    model = Model(root)
    host = relation_id(model, "host")
    machine = model.machine_of(principal)
    before = len(probe_log(root, principal))
    with open(machine.host_path(PROBE_LOG)) as f:
        sub_before = sum(line.split()[0] == sub for line in f)

    ok(lab(root, "remove-relation", "probe:host", "probe-sub:host", "--timeout", TIMEOUT))

    assert list(units(root)) == [principal]
    apps = status(root)["applications"]
    assert apps["probe-sub"]["subordinate-to"] == []
    assert apps["probe"]["relations"] == {"peers": ["probe"], "feed": ["probe-sub"]}
    assert host not in Model(root).relations
    assert os.path.exists(machine.state_dir)  # the principal's machine stays
    new = probe_log(root, principal)[before:]
    assert [line for line in new if line.startswith("host-")] == [
        f"host-relation-departed remote={sub} departing={sub}",
        "host-relation-broken app=probe-sub",
    ]
    assert [line for line in new if line.startswith("feed-")] == [
        f"feed-relation-departed remote={sub} departing={sub}"
    ]
    # the subordinate (it shares the machine's probe.log) left everything, then went
    with open(machine.host_path(PROBE_LOG)) as f:
        gone = [line.split(" ", 1)[1].strip() for line in f if line.split()[0] == sub]
    gone = gone[sub_before:]
    assert len(gone) == 7, gone
    assert set(gone[:2]) == {
        f"host-relation-departed remote={principal} departing={sub}",
        f"feed-relation-departed remote={principal} departing={sub}",
    }
    assert sorted(hooks(gone[2:5])) == sorted(
        ["peers-relation-broken", "host-relation-broken", "feed-relation-broken"]
    )
    assert hooks(gone[5:]) == ["stop", "remove"]


def test_relating_the_subordinate_again_gives_the_principal_a_new_one(root: str):
    ok(lab(root, "relate", "probe:host", "probe-sub:host", "--timeout", TIMEOUT))

    found = units(root)
    (principal,) = [name for name in found if name.startswith("probe/")]
    (sub,) = found[principal]["subordinates"]
    model = Model(root)
    assert sub == "probe-sub/2"  # unit numbers are never reused
    assert int(relation_id(model, "host")) == model.state.next_relation_id - 1  # a new one
    assert found[sub]["leader"] and found[sub]["machine"] == found[principal]["machine"]
    assert found[sub]["workload-status"]["message"] == "greeting bonjour"
    assert f"host-relation-joined remote={principal}" in probe_log(root, sub)
    assert f"host-relation-joined remote={sub}" in probe_log(root, principal)


def test_destroy_leaves_nothing(root: str):
    the_lab = Lab.open(root)

    ok(lab(root, "destroy"))

    assert not os.path.exists(root)
    assert the_lab.leftovers() == []
