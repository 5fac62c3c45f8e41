"""What both probe charms share.

Every hook is observed, logged to the machine's probe.log, and the unit's name published in
all its databags.
"""

from __future__ import annotations

import os

import ops

LOG = "/var/lib/juju/probe.log"


def log_hook(unit: ops.Unit, event: ops.EventBase) -> None:
    """Append ``<unit> <hook> [remote=<unit>] [departing=<unit>] [app=<app>]`` to :data:`LOG`.

    ``app`` is the remote application of a relation-broken hook (``event.relation.app``).
    """
    words = [unit.name, event.handle.kind.replace("_", "-")]
    if isinstance(event, ops.RelationEvent) and event.unit is not None:
        words.append(f"remote={event.unit.name}")
    if isinstance(event, ops.RelationDepartedEvent) and event.departing_unit is not None:
        words.append(f"departing={event.departing_unit.name}")
    if isinstance(event, ops.RelationBrokenEvent) and event.relation.app is not None:
        words.append(f"app={event.relation.app.name}")
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    with open(LOG, "a") as f:
        f.write(" ".join(words) + "\n")


def hook_events(charm: ops.CharmBase) -> list[ops.BoundEvent]:
    """Every lifecycle, relation and secret-changed event of ``charm``."""
    on = charm.on
    events = [on.install, on.leader_elected, on.config_changed, on.start, on.update_status]
    events += [on.stop, on.remove, on.secret_changed]
    for endpoint in charm.meta.relations:
        rel = on[endpoint]
        events += [rel.relation_created, rel.relation_joined, rel.relation_changed]
        events += [rel.relation_departed, rel.relation_broken]
    return events


class ProbeBase(ops.CharmBase):
    """Observes every hook: logs it, publishes the unit's name, then :meth:`react`."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        for event in hook_events(self):
            framework.observe(event, self._on_hook)

    def _on_hook(self, event: ops.EventBase) -> None:
        log_hook(self.unit, event)
        for relations in self.model.relations.values():
            for relation in relations:
                relation.data[self.unit]["unit"] = self.unit.name
        self.react(event)

    def react(self, event: ops.EventBase) -> None:
        """What the charm itself does in every hook."""
