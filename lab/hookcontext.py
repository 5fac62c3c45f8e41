"""What a hook is given, and what Juju keeps of it: between the model and :mod:`lab.dispatch`.

:func:`request` is the hook's context as the controller would answer the unit's hook tools
(its config, leadership, bindings, the relations it takes part in with their databags, the
secrets it owns or sees; see :mod:`lab.dispatch`). :func:`apply` keeps what Juju keeps of a
successful hook (databags, secrets, statuses, ports) and queues the hooks that follow from
it: a changed databag → ``relation-changed`` where it is seen, a new secret revision →
``secret-changed`` to the units that track an older one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lab.model import Model, make_event, unit_number
from lab.state import SecretRecord

# -- hook requests ---------------------------------------------------------------------


def _relation_request(model: Model, name: str, rid: str) -> dict[str, Any]:
    unit = model.units[name]
    relation = model.relations[rid]
    local = model.local_endpoint(rid, unit.app)
    remote_app = model.remote_app(rid, unit.app)
    peer = len(relation.endpoints) == 1
    scope = model.apps[unit.app].endpoints[local.endpoint]["scope"]
    kind = "peer" if peer else ("subordinate" if scope == "container" else "regular")
    return {
        "kind": kind,
        "endpoint": local.endpoint,
        "id": int(rid),
        "interface": relation.interface,
        "remote_app": remote_app,
        "local_app_data": relation.app_data[unit.app],
        "local_unit_data": unit.data.get(rid, {}),
        "remote_app_data": relation.app_data[remote_app],
        "remote_units": {
            str(unit_number(v)): model.units[v].data.get(rid, {})
            for v in unit.seen.get(rid, [])
            if v in model.units
        },
    }


def request(model: Model, name: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """What unit ``name``'s hook for ``event`` is given (see :mod:`lab.dispatch`)."""
    unit = model.units[name]
    app = model.apps[unit.app]
    hook_event = dict(event)
    if "departing_unit" in hook_event:
        hook_event["departing_unit_name"] = hook_event["departing_unit"]
    for key in ("remote_unit", "departing_unit"):
        if key in hook_event:
            hook_event[key] = unit_number(hook_event[key])
    if "relation" in hook_event:
        hook_event["relation_id"] = int(hook_event.pop("relation"))
    secrets = [model.secret_view(name, sid) for sid in model.secrets]
    return {
        "charm_dir": app.run_dir,
        "app": unit.app,
        "unit_id": unit_number(name),
        "machine": unit.machine,
        "principal": unit.principal,
        "leader": app.leader == name,
        "config": app.config,
        "bindings": {binding: unit.address for binding in app.bindings},
        "relations": [_relation_request(model, name, rid) for rid in unit.relations],
        "secrets": [s for s in secrets if s is not None],
        "model": model.state.model,
        "event": hook_event,
        "ports": unit.ports,  # Juju keeps them open until the charm closes them
        # What the hook tools (lab.hooktools) answer from.
        "endpoints": sorted(app.endpoints),
        "app_units": {
            n: ("active" if u.life == "alive" else "dying")
            for n, u in model.units.items()
            if u.app == unit.app
        },
        "status": unit.status,
        "app_status": app.status,
        "state": unit.state,
    }


# -- applying a hook's result --------------------------------------------------------------


def _apply_relation(model: Model, name: str, rid: str, out: Mapping[str, Any]) -> bool:
    unit = model.units[name]
    relation = model.relations[rid]
    changed = False
    # A dying relation changes nothing for the others: Juju's uniter sees it empty.
    dying = model.dying(rid)
    data = out["local_unit_data"]
    if data != unit.data.get(rid, {}):
        unit.data[rid] = data
        changed = True
        for other in [] if dying else list(model.units):
            if name in model.units[other].seen.get(rid, []):
                model.queue(other, make_event("relation_changed", relation=rid, remote_unit=name))
    app_data = out.get("local_app_data")
    if app_data is not None and app_data != relation.app_data[unit.app]:
        relation.app_data[unit.app] = app_data
        changed = True
        for other in [] if dying else relation.members:
            # A unit that has seen no remote unit join yet reads the application data
            # in the relation-changed that follows its first relation-joined (ops and
            # Scenario have no relation-changed without any remote unit).
            seen = model.units[other].seen.get(rid, [])
            if other != name and seen and model.visible(rid, name, other):
                model.queue(other, make_event("relation_changed", relation=rid))
    return changed


def _apply_owned_secret(model: Model, name: str, out: Mapping[str, Any]) -> bool:
    unit = model.units[name]
    owner = name if out["owner"] == "unit" else unit.app
    sid = out["id"]
    secret = model.secrets.get(sid)
    if secret is None:
        model.secrets[sid] = SecretRecord(
            owner=owner,
            revision=1,
            contents={"1": out["latest"]},
            label=out["label"],
            grants=out["grants"],
        )
        return True
    before = dataclasses.asdict(secret)
    if out["latest"] != secret.contents[str(secret.revision)]:
        secret.revision += 1
        secret.contents[str(secret.revision)] = out["latest"]
        for observer, seen in secret.observers.items():
            if observer in model.units and seen["revision"] < secret.revision:
                model.queue(observer, make_event("secret_changed", secret_id=sid))
    secret.label, secret.grants = out["label"], out["grants"]
    return dataclasses.asdict(secret) != before


def _apply_secrets(model: Model, name: str, request: Mapping[str, Any], result: Mapping[str, Any]):
    unit = model.units[name]
    leader = model.apps[unit.app].leader == name
    changed = False
    returned = {s["id"]: s for s in result.get("secrets", [])}
    for given in request["secrets"]:
        manages = given.get("owner") == "unit" or (given.get("owner") == "app" and leader)
        if manages and given["id"] not in returned:
            del model.secrets[given["id"]]  # the owner removed it
            changed = True
    for sid, out in returned.items():
        if out["owner"] == "unit" or (out["owner"] == "app" and leader):
            changed |= _apply_owned_secret(model, name, out)
        elif out["owner"] is None and sid in model.secrets:
            secret = model.secrets[sid]
            tracked = next(
                rev
                for rev, content in sorted(secret.contents.items(), key=lambda kv: -int(kv[0]))
                if content == out["tracked"]
            )
            seen = {"revision": int(tracked), "label": out["label"]}
            changed |= secret.observers.get(name) != seen
            secret.observers[name] = seen
    return changed


def apply(model: Model, name: str, request: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    """Keep what Juju keeps of a successful hook; queue the hooks it causes.

    Returns:
        Whether anything changed (databags, secrets, statuses, ports).
    """
    unit = model.units[name]
    app = model.apps[unit.app]
    changed = False
    for rid, out in result["relations"].items():
        if rid in model.relations:
            changed |= _apply_relation(model, name, rid, out)
    changed |= _apply_secrets(model, name, request, result)
    status = list(result["unit_status"])
    if status != unit.status or result["opened_ports"] != unit.ports:
        unit.status, unit.ports = status, result["opened_ports"]
        changed = True
    if "state" in result:  # Juju's unit state (state-set): kept, no hook follows from it
        unit.state = result["state"]
    if result.get("app_status") and list(result["app_status"]) != app.status:
        app.status = list(result["app_status"])
        changed = True
    return changed
