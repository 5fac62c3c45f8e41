"""A real charm hook as its own process inside a lab machine, against a real daemon there.

The built lxd charm's install hook, run through its ``dispatch`` by
:func:`lab.dispatch.run_hook` in machine m0 (its own network and mount namespaces), installs
nothing (the package is there), starts LXD inside the machine with the charm's installer and
bootstraps the cluster on the machine's lab address. An action with a bad parameter fails
the way Juju reports a failed action.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import build, hosts, machines
from lab.applications import endpoints
from lab.build import REPO
from lab.dispatch import run_hook
from lab.machines import Lab

from .conftest import machine_lab

PEER = {
    "kind": "peer",
    "endpoint": "cluster",
    "id": 1,
    "interface": "lxd-cluster",
    "remote_app": "lxd",
    "local_app_data": {},
    "local_unit_data": {},
    "remote_app_data": {},
    "remote_units": {},
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = machines.unavailable_reason() or hosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with machine_lab("lab-hook-", ["m0"]) as made:
        yield made


def request(lab: Lab, event: dict, **extra) -> dict:
    m0 = lab["m0"]
    charm = build.build_dir(Path(REPO, "charms", "lxd"))
    metadata = yaml.safe_load((charm / "metadata.yaml").read_text())
    return {
        "charm_dir": str(charm),
        "endpoints": sorted(endpoints(metadata)),
        "app": "lxd",
        "unit_id": 0,
        "leader": True,
        # Kernel settings are the host's: the lab leaves them alone.
        "config": {"sysctl-tuning": False, "kernel-hardening": False},
        "bindings": {"cluster": m0.address, "api": m0.address},
        "relations": [PEER],
        "event": event,
        **extra,
    }


def test_install_hook_bootstraps_lxd_inside_the_machine(lab: Lab):
    m0 = lab["m0"]

    result = run_hook(m0, request(lab, {"name": "install"}))

    assert "error" not in result, result.get("error")
    assert result["unit_status"] == ["active", "cluster member lxd-0 (1 members)"]
    app = result["relations"]["1"]["local_app_data"]
    assert app["mode"] == "cluster" and app["issuer"] == "lxd/0"
    assert result["opened_ports"] == [8443]
    # The daemon runs inside m0, on m0's lab address, with m0's private /var/lib/lxd.
    listing = m0.run(
        ["/usr/bin/lxc", "cluster", "list", "--format", "csv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing.startswith(f"lxd-0,https://{m0.address}:8443,")
    assert ",ONLINE," in listing
    assert os.path.exists(m0.host_path("/var/lib/lxd/cluster.crt"))
    assert not os.path.exists("/var/lib/lxd/cluster.crt")  # the host's own dir is untouched
    assert any("lxd" in procs_cmd for procs_cmd in _cmdlines(m0.pids()))


def _cmdlines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                lines.append(f.read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return lines


def test_failed_action_is_reported_like_juju(lab: Lab):
    result = run_hook(
        lab["m0"],
        request(
            lab, {"name": "action", "action": "remove-dead-member", "params": {"name": "lxd-9"}}
        ),
    )
    assert result["action_failed"] == (
        "invalid 'confirm': force removal cannot be undone; run again with confirm=true"
    )
    assert set(result) == {"action_failed", "log"}  # nothing of the hook is kept
