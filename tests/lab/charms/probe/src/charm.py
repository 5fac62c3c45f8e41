#!/usr/bin/env python3
"""Probe: log every hook; the leader shares ``greeting`` over ``feed`` (databag + secret)."""

from __future__ import annotations

import ops
from probe_log import hook_events, log_hook

SECRET_LABEL = "greeting"


class ProbeCharm(ops.CharmBase):
    """Logs every hook and publishes its unit name and (leader) the greeting."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        for event in hook_events(self):
            framework.observe(event, self._on_hook)

    def _on_hook(self, event: ops.EventBase) -> None:
        log_hook(self.unit, event)
        greeting = str(self.config["greeting"])
        for relations in self.model.relations.values():
            for relation in relations:
                relation.data[self.unit]["unit"] = self.unit.name
        peers = self.model.get_relation("peers")
        if self.config["flap"] and peers is not None:
            count = int(peers.data[self.unit].get("flap", "0")) + 1
            peers.data[self.unit]["flap"] = str(count)
        if self.unit.is_leader():
            for relation in self.model.relations["feed"]:
                secret = self._greeting_secret(greeting)
                secret.grant(relation)
                secret_id = secret.get_info().id
                relation.data[self.app].update({"greeting": greeting, "secret-id": secret_id})
        self.unit.status = ops.ActiveStatus(f"greeting {greeting}")

    def _greeting_secret(self, greeting: str) -> ops.Secret:
        """The app's greeting secret, with ``greeting`` as its content (a new revision if not)."""
        content = {"greeting": greeting}
        try:
            secret = self.model.get_secret(label=SECRET_LABEL)
        except ops.SecretNotFoundError:
            return self.app.add_secret(content, label=SECRET_LABEL)
        if secret.get_content() != content:
            secret.set_content(content)
        return secret


if __name__ == "__main__":  # pragma: nocover
    ops.main(ProbeCharm)
