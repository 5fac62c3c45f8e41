#!/usr/bin/env python3
"""Runner probe: ops' own state, deferral and hook-tool failures made visible.

See charmcraft.yaml's description.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import ops

LOG = "/var/lib/juju/runner-probe.log"


class RunnerProbeCharm(ops.CharmBase):
    """Counts completed dispatches in StoredState; logs every event it handles."""

    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self._stored.set_default(hooks=0, deferred=False)
        self._stored.hooks += 1  # committed only when ops runs the dispatch to its end
        on = self.on
        framework.observe(on.install, self._on_install)
        for event in (on.start, on.upgrade_charm, on.update_status):
            framework.observe(event, self._on_event)
        framework.observe(on.peers_relation_joined, self._on_event)
        framework.observe(on.peers_relation_changed, self._on_event)
        framework.observe(on.config_changed, self._on_config_changed)
        framework.observe(on.call_tool_action, self._on_call_tool)

    def _log(self, event: ops.EventBase) -> None:
        path = os.environ.get("JUJU_DISPATCH_PATH", "")
        line = f"{self.unit.name} {path} {event.handle.kind} hooks={self._stored.hooks}\n"
        os.makedirs(os.path.dirname(LOG), exist_ok=True)
        with open(LOG, "a") as f:
            f.write(line)

    def _on_event(self, event: ops.EventBase) -> None:
        self._log(event)
        attempt = str(self.config["fail-after-set"])
        peers = self.model.get_relation("peers")
        if attempt and peers is not None:
            peers.data[self.unit]["attempt"] = attempt
            raise RuntimeError(f"failing after relation-set attempt={attempt}, as asked")
        self.unit.status = ops.ActiveStatus("ready")  # the same every hook: the model settles

    def _on_install(self, event: ops.InstallEvent) -> None:
        self.unit.open_port("tcp", 8080)  # only here: later hooks must find it still open
        self._on_event(event)

    def _on_config_changed(self, event: ops.ConfigChangedEvent) -> None:
        if self.config["defer"] and not self._stored.deferred:
            self._stored.deferred = True
            self._log(event)
            event.defer()
            return
        if not self.config["defer"]:
            self._stored.deferred = False
        self._on_event(event)

    def _on_call_tool(self, event: ops.ActionEvent) -> None:
        self._log(event)
        peers = self.model.get_relation("peers")
        rid = f"peers:{peers.id}" if peers is not None else ""
        argv = shlex.split(str(event.params["command"]).replace("{peers}", rid))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()}")
        event.set_results({"stdout": done.stdout.strip()})


if __name__ == "__main__":  # pragma: nocover
    ops.main(RunnerProbeCharm)
