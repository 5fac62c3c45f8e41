#!/usr/bin/env python3
"""Probe-consumer: log every hook; show the greeting from the secret that ``feed`` names."""

from __future__ import annotations

import ops
from probe_log import ProbeBase


class ProbeConsumerCharm(ProbeBase):
    """Logs every hook, publishes its unit name, shows the greeting shared over ``feed``."""

    def react(self, event: ops.EventBase) -> None:
        """What this charm does in every hook (after the log line and its unit name)."""
        feed = self.model.get_relation("feed")
        if feed is None or feed.app is None:
            self.unit.status = ops.ActiveStatus("no feed")
            return
        secret_id = feed.data[feed.app].get("secret-id")
        if not secret_id:
            self.unit.status = ops.ActiveStatus("no greeting yet")
            return
        refresh = isinstance(event, ops.SecretChangedEvent)
        content = self.model.get_secret(id=secret_id).get_content(refresh=refresh)
        self.unit.status = ops.ActiveStatus(f"greeting {content['greeting']}")


if __name__ == "__main__":  # pragma: nocover
    ops.main(ProbeConsumerCharm)
