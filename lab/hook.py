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


def charm_class(charm_dir: str) -> type:
    """The ``CharmBase`` subclass defined in ``<charm_dir>/src/charm.py``."""
    for path in (os.path.join(REPO, "common"), f"{charm_dir}/lib", f"{charm_dir}/src"):
        if path not in sys.path:
            sys.path.insert(0, path)
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


def _state(request: Mapping[str, Any]) -> Any:
    from ops import testing

    relations = [
        testing.PeerRelation(
            r["endpoint"],
            id=r["id"],
            local_app_data=r.get("local_app_data", {}),
            local_unit_data=r.get("local_unit_data", {}),
            peers_data={int(k): v for k, v in r.get("peers_data", {}).items()},
        )
        for r in request.get("relations", [])
    ]
    secrets = [
        testing.Secret(
            s["content"],
            id=s["id"],
            owner=s.get("owner"),
            label=s.get("label"),
            remote_grants={int(k): frozenset(v) for k, v in s.get("grants", {}).items()},
        )
        for s in request.get("secrets", [])
    ]
    networks = {
        testing.Network(binding, [testing.BindAddress([testing.Address(address)])])
        for binding, address in request.get("bindings", {}).items()
    }
    return testing.State(
        leader=request.get("leader", False),
        config=request.get("config", {}),
        relations=relations,
        secrets=secrets,
        networks=networks,
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
                "content": dict(s.tracked_content),
                "grants": {str(k): sorted(v) for k, v in s.remote_grants.items()},
            }
            for s in out.secrets
            if s.owner is not None
        ],
        "opened_ports": sorted(p.port for p in out.opened_ports),
        "action_results": ctx.action_results,
    }


def execute(request: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the hook ``request`` describes in this process; (exit code, result)."""
    from ops import testing

    cls = charm_class(request["charm_dir"])
    ctx = testing.Context(cls, unit_id=request["unit_id"], app_name=request["app"])
    state = _state(request)
    try:
        out = ctx.run(_event(ctx, state, request["event"]), state)
    except testing.ActionFailed as failure:
        return 1, {"action_failed": failure.message}
    except testing.errors.UncaughtCharmError as exc:
        cause = exc.__cause__ or exc
        return 1, {"error": "".join(traceback.format_exception(cause))[-4000:]}
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
