#!/usr/bin/env python3
"""https-client: a lab client of the lxd charm's ``https`` relation (interface lxd-https).

Every hook reconciles: the key and certificate exist, the unit databag says what the
existing LXD charm's example client says, and the answer (cluster certificate, member
addresses) is in files a test can use, or gone with the relation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ops

from charm_common import certs
from charm_common.relation_data import update_databag

logger = logging.getLogger(__name__)

STATE_DIR = Path("/var/lib/juju/https-client")
ENDPOINT = "lxd"
VERSION = "1.0"


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` with ``mode``, only when it changed."""
    if path.exists() and path.read_text() == text:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class HttpsClientCharm(ops.CharmBase):
    """Gets its certificate trusted by LXD and keeps the answer in files."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        on = self.on
        for event in (
            on.install,
            on.start,
            on.config_changed,
            on.upgrade_charm,
            on.update_status,
            on[ENDPOINT].relation_created,
            on[ENDPOINT].relation_joined,
            on[ENDPOINT].relation_changed,
            on[ENDPOINT].relation_departed,
            on[ENDPOINT].relation_broken,
            on.metrics_relation_changed,
            on.metrics_relation_broken,
        ):
            framework.observe(event, self._reconcile)

    def _reconcile(self, _: ops.EventBase) -> None:
        self._keep_scrape_jobs()
        certificate = self._ensure_certificate()
        relation = self.model.get_relation(ENDPOINT)
        if relation is None:
            self._forget_answer()
            # Blocked, not waiting: only an operator relates it (juju integrate).
            self.unit.status = ops.BlockedStatus("not related to lxd")
            return
        projects = ",".join(
            p.strip() for p in str(self.config["projects"]).split(",") if p.strip()
        )
        update_databag(
            relation.data[self.unit],
            {"version": VERSION, "certificate": certificate, "projects": projects},
        )
        answer = self._answer(relation)
        if answer is None:
            self._forget_answer()
            self.unit.status = ops.WaitingStatus("waiting for lxd's answer")
            return
        write_file(STATE_DIR / "server.crt", answer["certificate"])
        write_file(STATE_DIR / "addresses", answer["addresses"] + "\n")
        count = len(answer["addresses"].split(","))
        self.unit.status = ops.ActiveStatus(
            f"answered by {relation.app.name}: {count} address(es)"
        )

    def _ensure_certificate(self) -> str:
        """The client certificate; the key and certificate are made once, on this machine."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = STATE_DIR / "client.key", STATE_DIR / "client.crt"
        if not (key_path.exists() and cert_path.exists()):
            name = self.unit.name.replace("/", "-")
            key, cert = certs.client_certificate(name)
            write_file(key_path, key, 0o600)
            write_file(cert_path, cert)
            logger.info("generated the client certificate")
        return cert_path.read_text()

    @staticmethod
    def _answer(relation: ops.Relation) -> dict[str, str] | None:
        """The lxd side's answer: the app databag (cluster), else a unit's (standalone)."""
        bags = [relation.data[relation.app]] if relation.app else []
        bags += [relation.data[u] for u in sorted(relation.units, key=lambda u: u.name)]
        for bag in bags:
            if bag.get("version") == VERSION and bag.get("certificate") and bag.get("addresses"):
                return {"certificate": bag["certificate"], "addresses": bag["addresses"]}
        return None

    def _keep_scrape_jobs(self) -> None:
        """What a Prometheus would get over ``metrics``: the app's ``scrape_jobs``, as is."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        relation = self.model.get_relation("metrics")
        jobs = (
            relation.data[relation.app].get("scrape_jobs", "") if relation and relation.app else ""
        )
        if jobs:
            write_file(STATE_DIR / "scrape_jobs.json", jobs, 0o600)
        else:
            (STATE_DIR / "scrape_jobs.json").unlink(missing_ok=True)

    @staticmethod
    def _forget_answer() -> None:
        for name in ("server.crt", "addresses"):
            (STATE_DIR / name).unlink(missing_ok=True)


if __name__ == "__main__":  # pragma: nocover
    ops.main(HttpsClientCharm)
