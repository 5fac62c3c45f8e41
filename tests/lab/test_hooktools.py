"""The lab's hook tools, called as ops calls them (a process per call), on a hook context.

No machine and no charm: each test writes a context (what :mod:`lab.dispatch` writes
before a hook), links the tools into a directory, runs them with Juju's arguments, and
reads back what they recorded. Juju's rules: a non-leader cannot write its application's
databag or status; a unit reads only secrets it owns or was granted; a flag the lab does
not know fails the tool naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import dispatch, hooktools

REQUEST: dict[str, Any] = {
    "app": "lxd",
    "unit_id": 1,
    "leader": False,
    "config": {"api-port": 8443, "mode": "cluster"},
    "bindings": {"api": "198.18.0.11"},
    "endpoints": ["cluster"],
    "relations": [
        {
            "kind": "peer",
            "endpoint": "cluster",
            "id": 0,
            "interface": "lxd-cluster",
            "remote_app": "lxd",
            "local_app_data": {"mode": "cluster"},
            "local_unit_data": {},
            "remote_app_data": {"mode": "cluster"},
            "remote_units": {"0": {"member-name": "lxd-0"}},
        }
    ],
    "secrets": [
        {
            "id": "secret:granted",
            "latest": {"token": "t2"},
            "latest_revision": 2,
            "label": None,
            "tracked": {"token": "t1"},
            "tracked_revision": 1,
        }
    ],
    "model": {"name": "lab", "uuid": "u"},
    "event": {"name": "update_status"},
}


@pytest.fixture
def hook(tmp_path: Path):
    """Run a tool (``hook("relation-get", "-r", "0", ...)``) in one hook's context."""
    tools = tmp_path / "tools"
    dispatch.install_tools(str(tools))
    context = tmp_path / "context"
    with open(context, "wb") as f:
        hooktools.save_context(dispatch.context(REQUEST), f)
    env = {**os.environ, hooktools.CONTEXT_ENV: str(context), "JUJU_UNIT_NAME": "lxd/1"}

    def run(tool: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(tools / tool), *args], env=env, input=stdin, capture_output=True, text=True
        )

    def recorded() -> dict[str, Any]:
        with open(context, "rb") as f:
            return hooktools.load_context(f)

    run.recorded = recorded  # type: ignore[attr-defined]
    return run


def test_relation_data_reads_and_the_units_own_writes(hook):
    got = hook("relation-get", "-r", "cluster:0", "--format=json", "-", "lxd/0")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"member-name": "lxd-0"}
    assert hook("relation-set", "-r", "0", "address=198.18.0.11:8443").returncode == 0
    (relation,) = hook.recorded()["relations"]
    assert relation["local_unit_data"] == {"address": "198.18.0.11:8443"}


def test_a_non_leader_cannot_write_application_data_or_status(hook):
    app_write = hook("relation-set", "-r", "0", "--app", "mode=standalone")
    assert app_write.returncode == 1
    assert "not the leader" in app_write.stderr
    status = hook("status-set", "--application=True", "active", "x")
    assert status.returncode == 1 and "not the leader" in status.stderr
    (relation,) = hook.recorded()["relations"]
    assert relation["local_app_data"] == {"mode": "cluster"}


def test_an_unknown_flag_fails_the_tool_naming_it(hook):
    done = hook("config-get", "--bogus")
    assert done.returncode == 2
    assert "unrecognized arguments: --bogus" in done.stderr


def test_config_and_leadership_as_json(hook):
    assert json.loads(hook("config-get", "--format=json").stdout) == REQUEST["config"]
    assert json.loads(hook("is-leader", "--format=json").stdout) is False


def test_a_granted_secret_is_read_at_its_tracked_revision_until_refreshed(hook):
    peek = hook("secret-get", "secret:granted", "--format=json")
    assert json.loads(peek.stdout) == {"token": "t1"}
    fresh = hook("secret-get", "secret:granted", "--refresh", "--format=json")
    assert json.loads(fresh.stdout) == {"token": "t2"}
    missing = hook("secret-get", "secret:other", "--format=json")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_the_result_keeps_nothing_of_a_failed_hook(hook):
    hook("relation-set", "-r", "0", "address=x")
    failed = dispatch.result(hook.recorded(), 1, "Traceback ... boom")
    assert set(failed) == {"error", "log"} and "boom" in failed["error"]


def test_unit_state_set_as_ops_writes_it_and_read_back(hook):
    # ops' controller storage (ops.storage._JujuStorageBackend.set): a YAML map of literals
    content = yaml.dump({"StoredStateData[_stored]": "{hooks: 3}\n"}, default_style="|")
    assert hook("state-set", "--file", "-", stdin=content).returncode == 0
    assert hook("state-set", "other=1").returncode == 0
    got = hook("state-get", "StoredStateData[_stored]")
    assert yaml.safe_load(got.stdout) == {"hooks": 3}
    assert hook("state-delete", "other").returncode == 0
    assert hook.recorded()["state"] == {"StoredStateData[_stored]": "{hooks: 3}\n"}
    assert hook("state-get", "missing").stdout == ""  # ops reads "" as a missing key
    assert hook("state-get", "--strict", "missing").returncode == 1


def test_the_lab_has_one_model_and_no_storage_or_credentials(hook):
    model = hook("relation-model-get", "-r", "cluster:0", "--format=json")
    assert json.loads(model.stdout) == {"uuid": "u"}
    assert json.loads(hook("storage-list", "--format=json").stdout) == []
    denied = hook("credential-get", "--format=json")
    assert denied.returncode == 1 and "credential-get" in denied.stderr


def test_a_juju_tool_the_lab_does_not_implement_fails_naming_itself(hook):
    done = hook("leader-get")
    assert done.returncode == 1
    assert "leader-get: not a hook tool the lab implements" in done.stderr
