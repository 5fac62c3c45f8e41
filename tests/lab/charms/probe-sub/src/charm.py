#!/usr/bin/env python3
"""Probe-sub: log every hook; show the greeting from the secret that ``feed`` names."""

from __future__ import annotations

import ops
from probe_log import hook_events, log_hook


class ProbeSubCharm(ops.CharmBase):
    """Logs every hook, publishes its unit name, shows the greeting shared over ``feed``."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        for event in hook_events(self):
            framework.observe(event, self._on_hook)

    def _on_hook(self, event: ops.EventBase) -> None:
        log_hook(self.unit, event)
        for relations in self.model.relations.values():
            for relation in relations:
                relation.data[self.unit]["unit"] = self.unit.name
        feed = self.model.get_relation("feed")
        secret_id = feed.data[feed.app].get("secret-id") if feed and feed.app else None
        if not secret_id:
            self.unit.status = ops.WaitingStatus("no greeting yet")
            return
        refresh = isinstance(event, ops.SecretChangedEvent)
        content = self.model.get_secret(id=secret_id).get_content(refresh=refresh)
        self.unit.status = ops.ActiveStatus(f"greeting {content['greeting']}")


if __name__ == "__main__":  # pragma: nocover
    ops.main(ProbeSubCharm)
