"""The lab's hook runner: a hook as Juju's unit agent runs it.

:func:`run_hook` takes a *request* (what the model, :mod:`lab.model`, knows the hook is
given: the unit, its leadership and config, the relations it takes part in with their
databags, the secrets it owns or was granted, its bindings' addresses, the event) and,
inside the unit's lab machine (its network and mount namespaces):

1. keeps the unit's charm directory, ``/var/lib/juju/agents/unit-<app>-<n>/charm``, a copy
   of the built charm (:mod:`lab.build`, the layout ``charmcraft pack`` makes). The
   directory persists between hooks as on a Juju machine, so ops' own state
   (``.unit-state.db``: StoredState, deferred events) carries over; a new build replaces
   everything else in it (``upgrade-charm``);
2. writes the hook's context (:mod:`lab.hooktools`) and links Juju's hook tools into
   ``/var/lib/juju/tools/unit-<app>-<n>``, first on the hook's ``PATH``;
3. runs ``./dispatch`` with the environment Juju's unit agent sets (``JUJU_DISPATCH_PATH``,
   ``JUJU_UNIT_NAME``, ``JUJU_RELATION_ID``, ``JUJU_REMOTE_UNIT``, ``JUJU_SECRET_ID``…);
4. returns what Juju keeps of the hook (:func:`result`): the unit's and (leader)
   application's databags, the secrets the unit owns and their grants, the revision it
   tracks of the others, statuses, opened ports, action results, the log. A hook that
   exits non-zero is reported as an ``error`` and nothing of it is kept, as in Juju.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from typing import Any

from lab import hooktools
from lab.build import REPO, STAMP, link_or_copy
from lab.machines import Machine

JUJU_VERSION = "3.6.8"
KEEP = (".unit-state.db",)  # what the unit agent keeps in the charm dir across upgrades
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def agent_dir(unit: str) -> str:
    """The unit agent's directory on its machine, as Juju names it."""
    return f"/var/lib/juju/agents/unit-{unit.replace('/', '-')}"


def build_stamp(path: str) -> str | None:
    """The build hash a built charm (or a unit's copy of it) records; None if none."""
    try:
        with open(os.path.join(path, STAMP)) as f:
            return f.read().strip()
    except OSError:
        return None


def install_charm(build_dir: str, charm_dir: str) -> bool:
    """Make ``charm_dir`` (a host path) hold the charm built at ``build_dir``.

    Files are hard links to the build where the file system allows (the unit never
    rewrites them; Python's byte-code caches are new files in the unit's own
    directories). Returns whether anything was (re)installed.
    """
    wanted = build_stamp(build_dir)
    if wanted is None:
        raise FileNotFoundError(f"{build_dir} is not a built charm (no {STAMP}): build it first")
    if os.path.isdir(charm_dir) and build_stamp(charm_dir) == wanted:
        return False
    os.makedirs(charm_dir, exist_ok=True)
    for entry in os.listdir(charm_dir):
        if entry in KEEP:
            continue
        path = os.path.join(charm_dir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    for entry in os.listdir(build_dir):
        src, dst = os.path.join(build_dir, entry), os.path.join(charm_dir, entry)
        if os.path.isdir(src):
            shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)
        else:
            link_or_copy(src, dst)
    return True


def install_tools(tools_dir: str) -> None:
    """Link every hook tool the lab implements into ``tools_dir`` (a host path)."""
    os.makedirs(tools_dir, exist_ok=True)
    target = str(REPO / "lab" / "hooktool")
    for name in hooktools.NAMES:
        link = os.path.join(tools_dir, name)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)


def unit_name(request: Mapping[str, Any]) -> str:
    """The unit the request is for (``app/N``)."""
    return f"{request['app']}/{request['unit_id']}"


def _remote_name(relation: Mapping[str, Any], number: int | str) -> str:
    """A remote unit's name from its number (the request keys remote units by number)."""
    return f"{relation['remote_app']}/{number}"


def _hook_relation(request: Mapping[str, Any]) -> Mapping[str, Any]:
    event = request["event"]
    return next(r for r in request["relations"] if r["id"] == event["relation_id"])


def hook_name(request: Mapping[str, Any]) -> str:
    """Juju's name for the request's event (``cluster-relation-changed``, an action's name)."""
    event = request["event"]
    if event["name"] == "action":
        return str(event["action"])
    name = str(event["name"]).replace("_", "-")
    if name.startswith("relation-"):
        return f"{_hook_relation(request)['endpoint']}-{name}"
    return name


def environment(request: Mapping[str, Any], charm_dir: str, tools_dir: str, context: str):
    """What Juju's unit agent puts in a hook's environment (paths inside the machine)."""
    event = request["event"]
    model = request.get("model") or {}
    unit = unit_name(request)
    env = {
        "PATH": f"{tools_dir}:{PATH}",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "JUJU_CHARM_DIR": charm_dir,
        "JUJU_UNIT_NAME": unit,
        "JUJU_MODEL_NAME": model.get("name", "lab"),
        "JUJU_MODEL_UUID": model.get("uuid", ""),
        "JUJU_VERSION": JUJU_VERSION,
        "JUJU_MACHINE_ID": str(request.get("machine") or ""),
        "JUJU_CONTEXT_ID": f"{unit}-{hook_name(request)}-{uuid.uuid4().hex[:8]}",
        "JUJU_AVAILABILITY_ZONE": "lab",
        # From the model's juju-*-proxy config: the lab model sets none.
        "JUJU_CHARM_HTTP_PROXY": "",
        "JUJU_CHARM_HTTPS_PROXY": "",
        "JUJU_CHARM_NO_PROXY": "",
        hooktools.CONTEXT_ENV: context,
    }
    if request.get("principal"):
        env["JUJU_PRINCIPAL_UNIT"] = request["principal"]
    if event["name"] == "action":
        env["JUJU_DISPATCH_PATH"] = f"actions/{event['action']}"
        env["JUJU_ACTION_NAME"] = event["action"]
        env["JUJU_ACTION_UUID"] = str(uuid.uuid4())
    else:
        env["JUJU_DISPATCH_PATH"] = f"hooks/{hook_name(request)}"
        env["JUJU_HOOK_NAME"] = hook_name(request)
    if "relation_id" in event:
        relation = _hook_relation(request)
        env["JUJU_RELATION"] = relation["endpoint"]
        env["JUJU_RELATION_ID"] = f"{relation['endpoint']}:{relation['id']}"
        env["JUJU_REMOTE_APP"] = relation["remote_app"]
        # Empty when the remote application's databag changed, as Juju sets it.
        remote = event.get("remote_unit")
        env["JUJU_REMOTE_UNIT"] = _remote_name(relation, remote) if remote is not None else ""
        if event.get("departing_unit_name"):
            env["JUJU_DEPARTING_UNIT"] = event["departing_unit_name"]
    if "secret_id" in event:
        secret = next(s for s in request["secrets"] if s["id"] == event["secret_id"])
        env["JUJU_SECRET_ID"] = secret["id"]
        env["JUJU_SECRET_LABEL"] = secret.get("label") or ""
        env["JUJU_SECRET_REVISION"] = str(secret.get("revision", ""))
    return env


def context(request: Mapping[str, Any]) -> dict[str, Any]:
    """The hook context :mod:`lab.hooktools` reads and changes, from the request."""
    event = request["event"]
    action = None
    if event["name"] == "action":
        action = {"name": event["action"], "params": event.get("params", {}), "results": {}}
        action.update(failed=None, log=[])
    relations = []
    for r in request.get("relations", []):
        remote = {_remote_name(r, n): data for n, data in r.get("remote_units", {}).items()}
        relations.append({**r, "remote_units": remote})
    return {
        "unit": unit_name(request),
        "app": request["app"],
        "leader": bool(request.get("leader")),
        "model_uuid": (request.get("model") or {}).get("uuid", ""),
        "config": request.get("config", {}),
        "bindings": request.get("bindings", {}),
        "endpoints": request.get("endpoints", []),
        "relations": relations,
        # owner None: granted to this unit; "revision": the latest (the request's name differs)
        "secrets": [
            {**s, "owner": s.get("owner"), "revision": s.get("latest_revision", 1)}
            for s in request.get("secrets", [])
        ],
        "app_units": request.get("app_units", {unit_name(request): "active"}),
        "unit_status": list(request.get("status") or ["unknown", ""]),
        "app_status": list(request.get("app_status") or ["unknown", ""]),
        "ports": [f"{p}/tcp" for p in request.get("ports", [])],
        "state": dict(request.get("state") or {}),
        "log": [],
        "action": action,
        "version": None,
    }


def _secret_result(secret: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": secret["id"],
        "owner": secret.get("owner"),
        "label": secret.get("label"),
        "tracked": secret["tracked"],
        "tracked_revision": secret.get("tracked_revision"),
        "latest": secret["latest"],
        "grants": secret.get("grants", {}),
        "latest_revision": secret.get("revision"),
    }


def result(ctx: Mapping[str, Any], code: int, stderr: str) -> dict[str, Any]:
    """What Juju keeps of a hook that exited with ``code`` (see the module docstring)."""
    log = ctx["log"]
    if code != 0:
        # ops writes an uncaught exception to juju-log (debug-log), not to stderr, in hooks
        errors = [line for line in log if line.startswith("ERROR ")]
        detail = stderr.strip() or (errors[-1] if errors else f"dispatch exited {code}")
        return {"error": detail[-4000:], "log": log}
    action = ctx["action"]
    if action is not None and action["failed"] is not None:
        return {"action_failed": action["failed"], "log": log}
    leader = ctx["leader"]
    ports = sorted(int(p.split("/")[0]) for p in ctx["ports"] if p.endswith("/tcp"))
    return {
        "unit_status": ctx["unit_status"],
        "app_status": ctx["app_status"] if leader else None,
        "relations": {
            str(r["id"]): {
                "local_app_data": r["local_app_data"] if leader else None,
                "local_unit_data": r["local_unit_data"],
            }
            for r in ctx["relations"]
        },
        "secrets": [_secret_result(s) for s in ctx["secrets"] if not s.get("removed")],
        "opened_ports": ports,
        "action_results": action["results"] if action is not None else None,
        "action_log": action["log"] if action is not None else [],
        "version": ctx.get("version"),
        "state": ctx["state"],
        "tool_calls": ctx.get("tool_calls", {}),
        "log": log,
    }


def run_hook(machine: Machine, request: Mapping[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``request``'s hook through the built charm's ``dispatch`` inside ``machine``.

    Returns :func:`result`.
    """
    unit = unit_name(request)
    agent = agent_dir(unit)
    charm_dir, tools_dir = f"{agent}/charm", f"/var/lib/juju/tools/unit-{unit.replace('/', '-')}"
    context_path = f"{agent}/hook-context"
    install_charm(request["charm_dir"], machine.host_path(charm_dir))
    install_tools(machine.host_path(tools_dir))
    with open(machine.host_path(context_path), "wb") as f:
        hooktools.save_context(context(request), f)
    env = environment(request, charm_dir, tools_dir, context_path)
    try:
        # The working directory must be set inside the machine (its mount namespace).
        argv = ["/bin/sh", "-c", 'cd "$JUJU_CHARM_DIR" && exec ./dispatch']
        done = machine.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        code, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired:
        code, stderr = -1, f"hook timed out after {timeout:.0f} s"
    with open(machine.host_path(context_path), "rb") as f:
        ctx = hooktools.load_context(f)
    os.remove(machine.host_path(context_path))
    return result(ctx, code, stderr)
