"""What Juju's unit agent does around a hook: relation scope, ``relation-list``, the unit's end.

The model queues internal steps next to the hooks (:data:`~lab.model.ENTER`,
:data:`~lab.model.LEAVE`, :data:`~lab.model.GONE`); the runner carries them out here when
they reach the head of a unit's queue (:func:`internal`), drops hooks that no longer apply
(:func:`skip`), and around each hook changes what Juju changes as it starts
(:func:`before_hook`, taken back by :func:`undo_before_hook` when it fails) and once it
succeeded (:func:`after_hook`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from lab.model import ENTER, LEAVE, Model, ModelError, make_event


def _enter(model: Model, name: str, rid: str) -> None:
    """Unit ``name`` enters relation ``rid``'s scope.

    It and every unit in scope that it sees get ``relation-joined`` and
    ``relation-changed`` for each other.
    """
    if rid not in model.relations or model.dying(rid):
        return  # removed before this unit could enter it
    relation = model.relations[rid]
    if name in relation.members:
        return
    for other in relation.members:
        if model.visible(rid, name, other):
            for a, b in ((name, other), (other, name)):
                model.queue(a, make_event("relation_joined", relation=rid, remote_unit=b))
                model.queue(a, make_event("relation_changed", relation=rid, remote_unit=b))
    relation.members.append(name)
    _add_subordinates(model, name, rid)


def _add_subordinates(model: Model, name: str, rid: str) -> None:
    """A principal entering a container-scoped relation gets its subordinate unit."""
    relation = model.relations[rid]
    unit = model.units[name]
    sub_app = model.remote_app(rid, unit.app)
    if relation.scope != "container" or unit.principal is not None:
        return
    if not model.apps[sub_app].subordinate or unit.life != "alive":
        return
    if not any(
        u.principal == name and u.app == sub_app and u.life == "alive"
        for u in model.units.values()
    ):  # one that is still going (its relation was removed) does not count
        model.add_unit(sub_app, machine=unit.machine, principal=name)


def _leave(model: Model, name: str, rid: str) -> None:
    """Unit ``name`` leaves relation ``rid``'s scope: departed hooks on both sides.

    It gets ``relation-departed`` for every unit it has seen join and not seen depart
    (in scope or not); every unit in scope that has seen it gets one for it, ahead of its
    own teardown when it is dying too (its queue ends with its removal).

    From a dying relation (``remove-relation``) every unit leaves on its own: it departs
    the units it has seen in name order (Juju's uniter sorts them), and the departing
    unit is the remote one unless this unit is dying itself (as Juju's uniter decides).
    """
    relation = model.relations[rid]
    if name in relation.members:
        relation.members.remove(name)
    dying = model.dying(rid)
    for other in [] if dying else relation.members:
        if name in model.units[other].seen.get(rid, []):
            event = make_event(
                "relation_departed", relation=rid, remote_unit=name, departing_unit=name
            )
            model.queue(other, event, front=model.units[other].life != "alive")
    seen = model.units[name].seen.get(rid, [])
    alive = model.units[name].life == "alive"
    departing = [
        make_event(
            "relation_departed",
            relation=rid,
            remote_unit=other,
            departing_unit=other if dying and alive else name,
        )
        for other in (sorted(seen) if dying else seen)
    ]
    for event in reversed(departing):
        model.queue(name, event, front=True)


def _gone(model: Model, name: str) -> bool:
    """Unit ``name`` has run ``remove``: forget it, wipe its machine, elect a new leader.

    Returns:
        False while the unit's subordinates are still there (it waits for them).
    """
    if any(u.principal == name for u in model.units.values()):
        return False
    unit = model.units.pop(name)
    for relation in model.relations.values():
        if name in relation.members:
            relation.members.remove(name)
    for sid in [s for s, record in model.secrets.items() if record.owner == name]:
        del model.secrets[sid]
    for secret in model.secrets.values():
        secret.observers.pop(name, None)
    if not any(u.machine == unit.machine for u in model.units.values()):
        model.save()
        left = model.lab.destroy_machine(unit.machine)
        if left:
            raise ModelError(f"machine {unit.machine} could not be wiped: {left}")
    app = model.apps[unit.app]
    if app.leader == name:
        alive = model.alive_units(unit.app)
        app.leader = alive[0] if alive else None
        if alive:
            model.queue(alive[0], make_event("leader_elected"))
    return True


def internal(model: Model, name: str, event: Mapping[str, Any]) -> bool:
    """Carry out an internal step; False when it has to wait."""
    if event["name"] == ENTER:
        _enter(model, name, event["relation"])
    elif event["name"] == LEAVE:
        _leave(model, name, event["relation"])
    else:
        return _gone(model, name)
    return True


def skip(model: Model, name: str, event: Mapping[str, Any]) -> bool:
    """Whether ``event`` no longer applies (a remote unit left before it could run).

    A secret event whose secret was removed (or is no longer granted) since it was
    queued is dropped too: Juju has nothing to tell the unit about it.
    """
    if "secret_id" in event:
        return model.secret_view(name, event["secret_id"]) is None
    rid = event.get("relation")
    if rid is None:
        return False
    if rid not in model.relations:
        return True
    members = model.relations[rid].members
    remote = event.get("remote_unit")
    if remote is None:  # an application databag changed
        return event["name"] == "relation_changed" and name not in members
    seen = model.units[name].seen.get(rid, [])
    if event["name"] == "relation_joined":
        return remote not in members or remote in seen
    return remote not in seen


def before_hook(model: Model, name: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """What Juju changes as the hook starts (``relation-list`` and relation membership).

    Returns what :func:`undo_before_hook` needs to take it back (the hook failed).
    """
    unit = model.units[name]
    rid: str = event.get("relation") or ""  # "": not a relation's hook
    undo = {
        "relations": list(unit.relations),
        "rid": rid,
        "data": json.dumps(unit.data.get(rid)),
        "seen": json.dumps(unit.seen.get(rid)),
    }
    if event["name"] == "relation_created" and rid not in unit.relations:
        unit.relations.append(rid)
        address = unit.address  # what Juju puts in every unit databag
        unit.data.setdefault(
            rid,
            {
                "ingress-address": address,
                "private-address": address,
                "egress-subnets": f"{address}/32",
            },
        )
    elif event["name"] == "relation_joined":
        unit.seen.setdefault(rid, []).append(event["remote_unit"])
    elif event["name"] == "relation_departed":
        unit.seen[rid].remove(event["remote_unit"])
    return undo


def undo_before_hook(model: Model, name: str, undo: Mapping[str, Any]) -> None:
    """Take back what :func:`before_hook` changed (only this unit's own records)."""
    unit = model.units[name]
    unit.relations = list(undo["relations"])
    rid = undo["rid"]
    for key in ("data", "seen"):
        value = json.loads(undo[key])
        if value is None:
            getattr(unit, key).pop(rid, None)
        else:
            getattr(unit, key)[rid] = value


def after_hook(model: Model, name: str, event: Mapping[str, Any]) -> None:
    """What Juju changes once the hook succeeded (a broken relation goes, start starts)."""
    unit = model.units[name]
    if event["name"] == "relation_broken":
        unit.relations.remove(event["relation"])
        unit.data.pop(event["relation"], None)
        unit.seen.pop(event["relation"], None)
        model.forget_if_done(event["relation"])
    elif event["name"] == "start":
        unit.started = True
        unit.timer = time.time()
