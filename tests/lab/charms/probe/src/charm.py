#!/usr/bin/env python3
"""Probe: log every hook; the leader shares ``greeting`` over ``feed`` (databag + secret)."""

from __future__ import annotations

import ops
from probe_log import ProbeBase

SECRET_LABEL = "greeting"


class ProbeCharm(ProbeBase):
    """Logs every hook and publishes its unit name and (leader) the greeting."""

    def react(self, event: ops.EventBase) -> None:
        """What this charm does in every hook (after the log line and its unit name)."""
        greeting = str(self.config["greeting"])
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
