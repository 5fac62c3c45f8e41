"""Hooks through the built charm's ``dispatch``, as the lab runs every hook.

One deployment for the module: the product's lxd charm (one unit, real LXD) and the
``runner-probe`` test charm (two units, ``tests/lab/charms/runner-probe``), each hook run
as Juju's unit agent runs it: ``./dispatch`` of the unit's own copy of ``build/<charm>/``,
Juju's environment, the lab's hook tools on the ``PATH`` (:mod:`lab.dispatch`,
:mod:`lab.hooktools`). The steps show what a unit-test framework could not:

* the lxd charm, run by ops' real model backend, forms its one-member cluster;
* ops' StoredState carries over between hooks (and across ``lab refresh``): the probe
  counts the dispatches that completed, and the count is the lab's own count of them;
* a deferred event is re-emitted before the next hook's own event;
* a hook tool called with a flag the lab does not know fails the hook, naming it;
* a non-leader writing its application's databag fails the hook, as on Juju;
* what a failed hook wrote with ``relation-set`` is not visible to the peer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from lab.build import REPO
from lab.model import Model

from .operator import lab, members, model_root, status

pytestmark = pytest.mark.ordered_steps

CHARMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "charms")
PROBE_LOG = "/var/lib/juju/runner-probe.log"
TIMEOUT = "300"
BUNDLE = f"""
applications:
  lxd:
    charm: {REPO}/charms/lxd
    base: ubuntu@24.04/stable
    num_units: 1
    options:
      mode: cluster
      sysctl-tuning: false
      kernel-hardening: false
  runner-probe:
    charm: {CHARMS}/runner-probe
    base: ubuntu@24.04/stable
    num_units: 2
"""
LAB_LOG_LINE = re.compile(r"^\S+ \S+ (?P<hook>[a-z-]+) \((?P<detail>[^)]*)\) (?P<outcome>\w+)$")


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with model_root("lab-dispatch-") as path:
        with open(os.path.join(os.path.dirname(path), "bundle.yaml"), "w") as f:
            f.write(BUNDLE)
        yield path


def probe_units(root: str) -> dict[str, dict]:
    return status(root)["applications"]["runner-probe"]["units"]


def probe_leader(root: str) -> str:
    (name,) = [n for n, u in probe_units(root).items() if u["leader"]]
    return name


def probe_other(root: str) -> str:
    (name,) = [n for n, u in probe_units(root).items() if not u["leader"]]
    return name


def probe_log(root: str, unit: str) -> list[tuple[str, str, int]]:
    """(dispatch path, event, StoredState's count) of each event ``unit`` handled."""
    path = Model(root).machine_of(unit).host_path(PROBE_LOG)
    with open(path) as f:
        words = [line.split() for line in f]
    return [(w[1], w[2], int(w[3].removeprefix("hooks="))) for w in words if w[0] == unit]


def lab_outcomes(root: str, unit: str) -> list[tuple[str, str]]:
    """(hook or action, outcome) of every dispatch the lab ran for ``unit``."""
    path = os.path.join(root, "logs", f"unit-{unit.replace('/', '-')}.log")
    with open(path) as f:
        found = [LAB_LOG_LINE.match(line.strip()) for line in f]
    return [(m["hook"], m["outcome"]) for m in found if m]


def call_tool(root: str, unit: str, command: str, check: bool = True):
    """Run the probe's ``call-tool`` action: a hook tool command line inside a hook."""
    return lab(root, "run", unit, "call-tool", f"command={command}", check=check)


def tool_output(root: str, unit: str, command: str) -> Any:
    """What the hook tool ``command`` (``--format=json``) printed inside ``unit``'s hook."""
    # The action's outcome only: ``lab run`` also exits 1 when other units are in error.
    done = call_tool(root, unit, f"{command} --format=json", check=False)
    assert done.stdout.startswith("stdout:"), done
    return json.loads(yaml.safe_load(done.stdout)["stdout"])


def peer_view(root: str, reader: str, writer: str) -> dict[str, str]:
    """``writer``'s peer unit databag as ``reader`` reads it with ``relation-get``."""
    return tool_output(root, reader, f"relation-get -r {{peers}} - {writer}")


# -- the steps ------------------------------------------------------------------------------


def test_deploy_through_dispatch(root: str):
    bundle = os.path.join(os.path.dirname(root), "bundle.yaml")

    lab(root, "deploy", bundle, "--timeout", TIMEOUT)

    found = status(root)
    lxd = found["applications"]["lxd"]["units"]["lxd/0"]
    assert lxd["workload-status"] == {
        "current": "active",
        "message": "cluster member lxd-0 (1 members)",
    }
    assert members(root, "lxd/0") == {"lxd-0": "ONLINE"}
    assert lxd["open-ports"] == ["8443/tcp"]
    for unit in probe_units(root).values():
        assert unit["workload-status"]["current"] == "active"
        # opened by the install hook only, still open after every hook since, as on Juju
        assert unit["open-ports"] == ["8080/tcp"]
    # ops ran its real model backend: the hook tools were called, from the unit's charm dir
    model = Model(root)
    charm = model.machine_of("lxd/0").host_path("/var/lib/juju/agents/unit-lxd-0/charm")
    assert os.path.isfile(os.path.join(charm, ".unit-state.db"))
    assert os.access(os.path.join(charm, "dispatch"), os.X_OK)


def test_stored_state_counts_every_completed_dispatch(root: str):
    for unit in probe_units(root):
        log = probe_log(root, unit)
        ok = [hook for hook, outcome in lab_outcomes(root, unit) if outcome == "ok"]

        # StoredState's count grows by one per dispatch and equals the lab's own count
        assert log[0] == ("hooks/install", "install", 1), log
        assert log[-1][2] == len(ok) > 4, (log, ok)


def test_a_deferred_event_is_emitted_again_before_the_next_hook(root: str):
    unit = probe_leader(root)
    before = len(probe_log(root, unit))

    lab(root, "config", "runner-probe", "defer=true", "--timeout", TIMEOUT)
    assert tool_output(root, unit, "is-leader") is True

    log = probe_log(root, unit)[before:]
    assert log[0][:2] == ("hooks/config-changed", "config_changed"), log  # deferred
    # The next dispatch, whichever it is (the lab's update-status round or the action),
    # handles the deferred config-changed first, then its own event.
    (path, event, count), (own_path, own_event, own_count) = log[1], log[2]
    assert (event, path, count) == ("config_changed", own_path, own_count), log
    assert own_event != "config_changed" and count == log[0][2] + 1, log
    lab(root, "config", "runner-probe", "defer=false", "--timeout", TIMEOUT)


def test_an_unknown_tool_flag_fails_the_hook_naming_it(root: str):
    unit = probe_leader(root)
    before = len(lab_outcomes(root, unit))

    done = call_tool(root, unit, "relation-ids --bogus peers", check=False)

    assert done.returncode == 1, done
    assert "relation-ids: unrecognized arguments: --bogus" in done.stdout + done.stderr
    assert lab_outcomes(root, unit)[before] == ("call-tool", "failed")


def test_a_non_leader_cannot_write_its_application_databag(root: str):
    unit = probe_other(root)

    refused = call_tool(root, unit, "relation-set -r {peers} --app who=me", check=False)
    allowed = call_tool(root, probe_leader(root), "relation-set -r {peers} --app who=leader")

    assert refused.returncode == 1, refused
    assert "this unit is not the leader" in refused.stdout + refused.stderr
    assert allowed.returncode == 0
    app_data = tool_output(root, unit, "relation-get -r {peers} --app - runner-probe")
    assert app_data == {"who": "leader"}


def test_a_failed_hooks_relation_set_is_not_seen_by_the_peer(root: str):
    writer, reader = probe_leader(root), probe_other(root)

    failed = lab(
        root, "config", "runner-probe", "fail-after-set=x", "--timeout", "60", check=False
    )

    assert failed.returncode == 1, failed  # both units' hooks failed (retries used up)
    assert ("config-changed", "failed") in lab_outcomes(root, writer)
    assert "attempt" not in peer_view(root, reader, writer)
    assert "attempt" not in peer_view(root, writer, writer)  # nor is it kept for the writer

    lab(root, "config", "runner-probe", "fail-after-set=", "--no-wait")
    for unit in (writer, reader):
        lab(root, "resolved", unit, "--no-wait")
    lab(root, "wait", "--timeout", TIMEOUT)
    assert {u["workload-status"]["current"] for u in probe_units(root).values()} == {"active"}


def test_stored_state_survives_a_refresh(root: str):
    unit = probe_leader(root)
    before = probe_log(root, unit)[-1][2]

    lab(root, "refresh", "runner-probe", "--timeout", TIMEOUT)

    after = [entry for entry in probe_log(root, unit) if entry[2] > before]
    assert after[0] == ("hooks/upgrade-charm", "upgrade_charm", before + 1), after
