"""The model's status, as ``juju status`` gives it.

:func:`status` shapes it as ``juju status --format json`` does (the fields the lab has);
:func:`format_status` prints it as tables, as ``juju status`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lab.model import Model, unit_number


def _unit_status(model: Model, name: str) -> dict[str, Any]:
    unit = model.units[name]
    app = model.apps[unit.app]
    agent = {"current": unit.agent}
    workload = {"current": unit.status[0], "message": unit.status[1]}
    if unit.error:
        agent["message"] = unit.error
    if unit.life != "alive":
        agent["life"] = unit.life
    if model.down(name):  # as Juju shows a unit whose machine stopped answering
        agent = {"current": "lost", "message": "agent is not communicating with the server"}
        workload = {
            "current": "unknown",
            "message": f"agent lost, see 'juju show-status-log {name}'",
        }
    found: dict[str, Any] = {
        "workload-status": workload,
        "juju-status": agent,
        "leader": app.leader == name,
        "machine": unit.machine,
        "public-address": unit.address,
        "addresses": {binding: unit.address for binding in app.bindings},
        "open-ports": [f"{port}/tcp" for port in unit.ports],
    }
    subordinates = {
        sub: _unit_status(model, sub)
        for sub in sorted(model.units, key=lambda n: (model.units[n].app, unit_number(n)))
        if model.units[sub].principal == name
    }
    if subordinates:
        found["subordinates"] = subordinates
    return found


def _app_relations_status(model: Model, app: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for rid in model._app_relations(app):
        local = model.local_endpoint(rid, app).endpoint
        found.setdefault(local, []).append(model.remote_app(rid, app))
    return found


def status(model: Model) -> dict[str, Any]:
    """The model as ``juju status --format json`` shapes it (the fields the lab has)."""
    apps = {}
    for name, app in model.apps.items():
        principals = sorted(
            (n for n, u in model.units.items() if u.app == name and not u.principal),
            key=unit_number,
        )
        entry: dict[str, Any] = {
            "charm": app.charm,
            "charm-path": app.charm_dir,
            "application-status": {"current": app.status[0], "message": app.status[1]},
            "relations": _app_relations_status(model, name),
        }
        if app.subordinate:
            entry["subordinate-to"] = sorted(
                {
                    model.units[u.principal].app
                    for u in model.units.values()
                    if u.app == name and u.principal in model.units
                }
            )
        else:
            entry["units"] = {unit: _unit_status(model, unit) for unit in principals}
        apps[name] = entry
    machines: dict[str, Any] = {}
    for m in model.lab.machines():
        machines[m.name] = {
            "juju-status": {"current": "down" if m.name in model.state.down else "started"},
            "dns-name": m.address,
            "ip-addresses": [m.address],
            "network-namespace": m.netns,
        }
        if m.base is not None:
            system, _, channel = m.base.partition("@")
            machines[m.name]["base"] = {"name": system, "channel": channel}
    return {
        "model": {
            "name": "lab",
            "type": "lab",
            "hooks-run": model.state.hooks_run,
        },
        "machines": machines,
        "applications": apps,
    }


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _unit_rows(name: str, unit: dict[str, Any], indent: str = "") -> Iterator[list[str]]:
    agent = unit["juju-status"]["current"]
    message = unit["workload-status"]["message"]
    if unit["juju-status"].get("message"):
        message = unit["juju-status"]["message"]
    yield [
        indent + name + ("*" if unit["leader"] else ""),
        unit["workload-status"]["current"],
        agent + (" (dying)" if unit["juju-status"].get("life") else ""),
        unit["machine"],
        unit["public-address"],
        ",".join(unit["open-ports"]),
        message,
    ]
    for sub, record in unit.get("subordinates", {}).items():
        yield from _unit_rows(sub, record, indent + "  ")


def format_status(status: dict[str, Any]) -> str:
    """``status`` (from :func:`status`) as tables like ``juju status`` prints."""
    apps = [["App", "Charm", "Units", "Status", "Message"]]
    units = [["Unit", "Workload", "Agent", "Machine", "Address", "Ports", "Message"]]
    for name, app in status["applications"].items():
        count = len(app.get("units", {})) if "units" in app else "-"
        apps.append(
            [
                name,
                app["charm"],
                str(count),
                app["application-status"]["current"],
                app["application-status"]["message"],
            ]
        )
        for unit, record in app.get("units", {}).items():
            units.extend(_unit_rows(unit, record))
    machines = [["Machine", "State", "Address", "Base", "Network namespace"]]
    for name, machine in status["machines"].items():
        base = machine.get("base")
        machines.append(
            [
                name,
                machine["juju-status"]["current"],
                machine["dns-name"],
                f"{base['name']}@{base['channel']}" if base else "-",
                machine["network-namespace"],
            ]
        )
    model = status["model"]
    lines = _table(
        [["Model", "Type", "Hooks run"], [model["name"], model["type"], str(model["hooks-run"])]]
    )
    for block in (apps, units, machines):
        lines += ["", *_table(block)]
    return "\n".join(lines)
