"""Run one charm hook as its own process, with Juju's semantics, from a JSON request.

    python -m lab.hook REQUEST.json RESULT.json

The request says which charm and unit, and what Juju would give the hook: config,
leadership, the relations with their databags, the secrets the unit owns or was granted,
the addresses of its bindings, and the event. The hook runs the charm's real code through
ops.testing's ``Context`` (the well-kept implementation of Juju's hook semantics: status
collection, secret ownership and grants, relation data access rules), and the result
carries back what Juju would keep: the unit's and (leader) application's databags, the
secrets the unit owns and who they are granted to, statuses, opened ports, action
results. A charm error is reported (exit code 1) and nothing of that hook is kept, as
when a Juju hook fails.

:func:`run_hook` runs the process inside a lab machine (its network and mount
namespaces), so the charm's daemons and files are that machine's.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from lab.machines import Machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def charm_path(charm_dir: str) -> None:
    """Put the charm's code first on ``sys.path``, before anything imports ``ops``.

    A built charm (``venv/``) as its dispatch runs it: ``src``, then ``lib`` and ``venv``
    (its own ops, pydantic, ...); a source directory: ``src``, ``lib`` and this repository's
    ``common`` (the lab's test charms).
    """
    built = os.path.isdir(f"{charm_dir}/venv")
    shared = f"{charm_dir}/venv" if built else os.path.join(REPO, "common")
    for path in (shared, f"{charm_dir}/lib", f"{charm_dir}/src"):
        if path not in sys.path:
            sys.path.insert(0, path)


def charm_class(charm_dir: str) -> type:
    """The ``CharmBase`` subclass defined in ``<charm_dir>/src/charm.py``."""
    charm_path(charm_dir)
    import ops

    module = importlib.import_module("charm")
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, ops.CharmBase)
        and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise RuntimeError(f"{charm_dir}/src/charm.py defines {len(classes)} charm classes")
    return classes[0]


def _relation(r: Mapping[str, Any]) -> Any:
    """A ``testing`` relation from its request form (``kind``: peer, regular, subordinate)."""
    from ops import testing

    remote = {int(k): v for k, v in r.get("remote_units", {}).items()}
    common = {
        "id": r["id"],
        "interface": r.get("interface"),
        "local_app_data": r.get("local_app_data", {}),
        "local_unit_data": r.get("local_unit_data", {}),
    }
    kind = r.get("kind", "peer")
    if kind == "peer":
        return testing.PeerRelation(r["endpoint"], peers_data=remote, **common)
    if kind == "subordinate":
        ((unit_id, data),) = remote.items() or ((0, {}),)
        return testing.SubordinateRelation(
            r["endpoint"],
            remote_app_name=r["remote_app"],
            remote_app_data=r.get("remote_app_data", {}),
            remote_unit_id=unit_id,
            remote_unit_data=data,
            **common,
        )
    return testing.Relation(
        r["endpoint"],
        remote_app_name=r["remote_app"],
        remote_app_data=r.get("remote_app_data", {}),
        remote_units_data=remote,
        **common,
    )


def _secret(s: Mapping[str, Any]) -> Any:
    from ops import testing

    secret = testing.Secret(
        s["tracked"],
        latest_content=s.get("latest", s["tracked"]),
        id=s["id"],
        owner=s.get("owner"),
        label=s.get("label"),
        remote_grants={int(k): frozenset(v) for k, v in s.get("grants", {}).items()},
    )
    # Revisions are Juju's to count; ops.testing keeps them in private attributes.
    object.__setattr__(secret, "_tracked_revision", s.get("tracked_revision", 1))
    object.__setattr__(secret, "_latest_revision", s.get("latest_revision", 1))
    return secret


def _state(request: Mapping[str, Any]) -> Any:
    from ops import testing

    networks = {
        testing.Network(binding, [testing.BindAddress([testing.Address(address)])])
        for binding, address in request.get("bindings", {}).items()
    }
    # A machine model ("lxd" is what Juju calls a model of machines on the localhost cloud).
    model = {**(request.get("model") or {}), "type": "lxd"}
    return testing.State(
        model=testing.Model(**model),
        leader=request.get("leader", False),
        config=request.get("config", {}),
        relations=[_relation(r) for r in request.get("relations", [])],
        secrets=[_secret(s) for s in request.get("secrets", [])],
        networks=networks,
        # Juju keeps a unit's opened ports until its charm closes them
        opened_ports={testing.TCPPort(port) for port in request.get("ports", [])},
        planned_units=request.get("planned_units", 1),
    )


def _event(ctx: Any, state: Any, event: Mapping[str, Any]) -> Any:
    name = event["name"]
    if name.startswith("relation_"):
        relation = state.get_relation(event["relation_id"])
        kwargs = {k: event[k] for k in ("remote_unit", "departing_unit") if k in event}
        return getattr(ctx.on, name)(relation, **kwargs)
    if name == "secret_changed":
        return ctx.on.secret_changed(state.get_secret(id=event["secret_id"]))
    if name == "action":
        return ctx.on.action(event["action"], params=event.get("params", {}))
    return getattr(ctx.on, name)()


def _status(status: Any) -> list[str]:
    return [status.name, status.message]


def _result(ctx: Any, out: Any, leader: bool) -> dict[str, Any]:
    return {
        "unit_status": _status(out.unit_status),
        "app_status": _status(out.app_status) if leader else None,
        "relations": {
            str(r.id): {
                "local_app_data": dict(r.local_app_data) if leader else None,
                "local_unit_data": dict(r.local_unit_data),
            }
            for r in out.relations
        },
        "secrets": [
            {
                "id": s.id,
                "owner": s.owner,
                "label": s.label,
                "tracked": dict(s.tracked_content),
                "latest": dict(s.latest_content),
                "grants": {str(k): sorted(v) for k, v in s.remote_grants.items()},
            }
            for s in out.secrets
        ],
        "opened_ports": sorted(p.port for p in out.opened_ports),
        "action_results": ctx.action_results,
        "log": _log(ctx),
    }


def _log(ctx: Any) -> list[str]:
    """What the charm logged (``juju-log``), as ``LEVEL message`` lines."""
    return [f"{line.level} {line.message}" for line in ctx.juju_log]


def _juju_event_env(hook_event: Mapping[str, Any]) -> None:
    """Make ``JUJU_DEPARTING_UNIT`` and ``JUJU_REMOTE_UNIT`` what Juju sets for ``event``.

    ops.testing 8.9 builds ``JUJU_DEPARTING_UNIT`` from the *remote* application's name and
    treats unit 0 as "not given" (a falsy id), so the unit that leaves is misnamed whenever it
    is unit 0 or the local unit of a regular relation. And it names a remote unit (the first
    one) for a ``relation-changed`` that a remote *application* databag caused, where Juju
    leaves it empty (the charm sees ``event.unit`` None). The lab knows the event and says so.
    """
    departing = hook_event.get("departing_unit_name")
    app_changed = hook_event["name"] == "relation_changed" and "remote_unit" not in hook_event
    if not departing and not app_changed:
        return
    runtime = importlib.import_module("scenario._runtime").Runtime
    original = runtime._get_event_env

    def event_env(self: Any, state: Any, event: Any, charm_root: Any) -> dict[str, str]:
        env: dict[str, str] = original(self, state, event, charm_root)
        if departing:
            env["JUJU_DEPARTING_UNIT"] = departing
        if app_changed:
            env["JUJU_REMOTE_UNIT"] = ""  # as Juju sets it
        return env

    runtime._get_event_env = event_env


def execute(request: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the hook ``request`` describes in this process; (exit code, result)."""
    charm_path(request["charm_dir"])
    from ops import testing

    cls = charm_class(request["charm_dir"])
    ctx = testing.Context(
        cls,
        unit_id=request["unit_id"],
        app_name=request["app"],
        machine_id=request.get("machine"),
        principal_unit=request.get("principal"),
    )
    _juju_event_env(request["event"])
    state = _state(request)
    try:
        out = ctx.run(_event(ctx, state, request["event"]), state)
    except testing.ActionFailed as failure:
        return 1, {"action_failed": failure.message, "log": _log(ctx)}
    except testing.errors.UncaughtCharmError as exc:
        cause = exc.__cause__ or exc
        error = "".join(traceback.format_exception(cause))[-4000:]
        return 1, {"error": error, "log": _log(ctx)}
    return 0, _result(ctx, out, request.get("leader", False))


def run_hook(machine: Machine, request: Mapping[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``request`` as its own process inside ``machine``; the result (``error`` on failure).

    The request and result travel as files in the machine's state directory.
    """
    os.makedirs(machine.state_dir, exist_ok=True)
    request_path = os.path.join(machine.state_dir, "hook-request.json")
    result_path = os.path.join(machine.state_dir, "hook-result.json")
    with open(request_path, "w") as f:
        json.dump(request, f)
    env = {
        k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    }
    env["PYTHONPATH"] = REPO
    done = machine.run(
        [sys.executable, "-m", "lab.hook", request_path, result_path],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        with open(result_path) as f:
            result: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        result = {"error": f"hook process exited {done.returncode}: {done.stderr[-4000:]}"}
    finally:
        for path in (request_path, result_path):
            if os.path.exists(path):
                os.remove(path)
    return result


def main(argv: list[str]) -> int:
    """Entry point: ``python -m lab.hook REQUEST.json RESULT.json``."""
    request_path, result_path = argv
    with open(request_path) as f:
        request = json.load(f)
    code, result = execute(request)
    with open(result_path, "w") as f:
        json.dump(result, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
