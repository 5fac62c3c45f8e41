"""Metrics, alert rules and dashboards for observability stacks.

Two endpoints, the provider side of each interface written here (no charm library can be
fetched; the formats are those of ``charms.prometheus_k8s.v0.prometheus_scrape`` and
``charms.grafana_agent.v0.cos_agent``, with ``cosl`` for Juju topology, rule files and
dashboard encoding as those libraries use it):

``metrics-endpoint`` (``prometheus_scrape``), application databag, the leader writes:
    ``scrape_metadata``  json Juju topology (model, model_uuid, application, unit, charm_name)
    ``scrape_jobs``      json list with one job: ``/1.0/metrics`` over HTTPS, one static
                         target per cluster member (its API address, or its address on the
                         dedicated metrics port when LXD has one; label ``lxd_member``)
    ``alert_rules``      json ``{"groups": [...]}`` from ``prometheus_alert_rules/``,
                         Juju topology labels injected
unit databag, every unit: ``prometheus_scrape_unit_address`` (its address on the relation's
binding) and ``prometheus_scrape_unit_name`` (as the library's provider writes them; only
wildcard targets use them, these jobs name the members' addresses).

``cos-agent`` (``cos_agent``, the agent is a subordinate), every unit's own databag:
    ``config``  json ``{"metrics_alert_rules", "log_alert_rules": {}, "dashboards": [lzma +
                base64 json], "metrics_scrape_jobs": [this unit's member only], "log_slots": []}``

LXD 5.0 serves ``/1.0/metrics`` on its API address only to a trusted certificate: the
leader generates one client certificate for the application once, keeps it with its key
in an application-owned Juju secret (``metrics-client``) and trusts it with type
``metrics`` as ``juju-metrics`` (it can read metrics and nothing else). Scrapers need it,
and the server certificate to verify, in the job's ``tls_config``.

Why the private key is in relation data: neither interface has a way to hand a scraper a
Juju secret. ``prometheus_scrape`` consumers read ``scrape_jobs`` as plain JSON from the
application databag and pass ``tls_config`` through to Prometheus as it is
(``MetricsEndpointConsumer.jobs()``; the library has no secret support), and ``cos_agent``
consumers do the same with ``metrics_scrape_jobs`` from the unit databag. So the key
travels inline (Prometheus' ``tls_config.key``, next to ``cert`` and ``ca``) in those
databags, readable by the related scraper and by anyone who can read the model's relation
data. The Juju secret stays the source of truth; what the interface forces is the copy.
The damage is bounded by LXD: a ``metrics`` certificate reads ``/1.0/metrics`` only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ops
from cosl import DashboardPath40UID, JujuTopology, LZMABase64
from cosl.rules import AlertRules

from charm_common import certs
from charm_common.relation_data import update_databag
from lxd import (
    LXD,
    CertificateRefusedError,
    LXDAPIError,
    LXDUnavailableError,
    certificate_fingerprint,
    member_name_for_unit,
)

logger = logging.getLogger(__name__)

METRICS_ENDPOINT = "metrics-endpoint"
COS_AGENT = "cos-agent"
SECRET_LABEL = "metrics-client"  # noqa: S105 - a label, not a secret
TRUST_NAME = "juju-metrics"
JOB_NAME = "lxd"
METRICS_PATH = "/1.0/metrics"
MEMBER_LABEL = "lxd_member"
CLUSTER, STANDALONE = "cluster", "standalone"
_HERE = Path(__file__).parent
RULES_DIR = _HERE / "prometheus_alert_rules"
DASHBOARDS_DIR = _HERE / "grafana_dashboards"


@dataclass(frozen=True)
class MetricsCredential:
    """The application's metrics client certificate and its key (PEM)."""

    certificate: str
    private_key: str

    @classmethod
    def generate(cls, common_name: str) -> MetricsCredential:
        """A new key and a client certificate for it."""
        key, cert = certs.client_certificate(common_name)
        return cls(cert, key)

    def content(self) -> dict[str, str]:
        """The secret's content."""
        return {"certificate": self.certificate, "private-key": self.private_key}


@dataclass(frozen=True)
class Target:
    """One scrape target: a member and the address of its API."""

    member: str
    address: str


def server_name(certificate: str) -> str:
    """A DNS name the server certificate is for ('' when it names only IP addresses).

    Members are scraped at IP addresses, which LXD's self-signed certificates do not
    list (they name the bootstrap host and the loopback addresses), so TLS verification
    checks the certificate against this name instead.
    """
    names = []
    for san in certs.certificate_sans(certificate):
        try:
            ipaddress.ip_address(san)
        except ValueError:
            names.append(san)
    return min(names, default="")


def scrape_job(
    targets: Sequence[Target], server_certificate: str, credential: MetricsCredential
) -> dict[str, Any]:
    """The Prometheus job scraping ``targets``: HTTPS, verified, client certificate."""
    tls_config = {
        "ca": server_certificate,
        "cert": credential.certificate,
        "key": credential.private_key,
    }
    name = server_name(server_certificate)
    if name:
        tls_config["server_name"] = name
    return {
        "job_name": JOB_NAME,
        "metrics_path": METRICS_PATH,
        "scheme": "https",
        # One static config per member: the label keeps their series apart (the consumer
        # sets the same `instance` on every non-wildcard target of a job).
        "static_configs": [
            {"targets": [t.address], "labels": {MEMBER_LABEL: t.member}} for t in targets
        ],
        "tls_config": tls_config,
    }


def alert_rules(topology: JujuTopology) -> dict[str, Any]:
    """The rule files shipped with the charm, Juju topology labels injected."""
    rules = AlertRules(query_type="promql", topology=topology)
    rules.add_path(RULES_DIR, recursive=True)
    return rules.as_dict()


def dashboards(charm_name: str) -> list[str]:
    """The dashboards shipped with the charm, encoded as ``cos_agent`` carries them."""
    encoded = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        # What the cos_agent provider does: a uid from the charm and the file's path, and
        # a tag naming the charm.
        dashboard["uid"] = DashboardPath40UID.generate(
            charm_name, f"src/{DASHBOARDS_DIR.name}/{path.name}"
        )
        tags = list(dashboard.get("tags", []))
        if not any(tag.startswith("charm: ") for tag in tags):
            tags.append(f"charm: {charm_name}")
        dashboard["tags"] = tags
        encoded.append(LZMABase64.compress(json.dumps(dashboard, sort_keys=True)))
    return encoded


class ObservabilityProvider(ops.Object):
    """Publishes scrape jobs, alert rules and dashboards; owns the metrics certificate.

    Args:
        charm: the lxd charm.
        lxd: the LXD client of this unit.
        mode: returns the mode the application was bootstrapped in (``cluster``,
            ``standalone``, or ``""`` before bootstrap).
    """

    def __init__(self, charm: ops.CharmBase, lxd: LXD, mode: Callable[[], str]):
        super().__init__(charm, "observability")
        self._charm = charm
        self._lxd = lxd
        self._mode = mode
        self._problems: list[str] = []
        for endpoint in (METRICS_ENDPOINT, COS_AGENT):
            events = charm.on[endpoint]
            self.framework.observe(events.relation_joined, self._on_changed)
            self.framework.observe(events.relation_changed, self._on_changed)
        self.framework.observe(charm.on.collect_unit_status, self._on_collect_unit_status)

    def _on_changed(self, _: ops.RelationEvent) -> None:
        try:
            self.reconcile()
        except LXDUnavailableError as exc:
            logger.info("metrics not published yet: %s", exc)

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        for problem in self._problems:
            event.add_status(ops.BlockedStatus(problem))

    # -- the work ----------------------------------------------------------------------

    def reconcile(self) -> None:
        """Publish on every observability relation; idempotent, writes only changes."""
        self._problems = []
        metrics = self._charm.model.relations[METRICS_ENDPOINT]
        agents = self._charm.model.relations[COS_AGENT]
        if not metrics and not agents:
            return
        mode = self._mode()
        if not self._serving(mode):
            return
        credential = self._credential(mode)
        if credential is None:
            return
        server_certificate = self._lxd.cluster_certificate()
        topology = JujuTopology.from_charm(self._charm)
        rules = alert_rules(topology)
        for relation in metrics:
            self._publish_unit_address(relation)
            if self._charm.unit.is_leader() and mode == CLUSTER:
                job = scrape_job(self._member_targets(), server_certificate, credential)
                update_databag(
                    relation.data[self._charm.app],
                    {
                        "scrape_metadata": json.dumps(topology.as_dict(), sort_keys=True),
                        "scrape_jobs": json.dumps([job], sort_keys=True),
                        "alert_rules": json.dumps(rules, sort_keys=True),
                    },
                )
        if agents:
            own = self._own_target(mode)
            jobs = [scrape_job([own], server_certificate, credential)] if own else []
            config = {
                "metrics_alert_rules": rules,
                "log_alert_rules": {},
                "dashboards": dashboards(self._charm.meta.name),
                "metrics_scrape_jobs": jobs,
                "log_slots": [],
            }
            for relation in agents:
                update_databag(
                    relation.data[self._charm.unit], {"config": json.dumps(config, sort_keys=True)}
                )

    def _serving(self, mode: str) -> bool:
        """Whether this unit's LXD serves the HTTPS API the scrapers will use."""
        info = self._lxd.server_info()
        if mode == CLUSTER:
            return info.clustered
        return mode == STANDALONE and bool(info.config.get("core.https_address"))

    def _metrics_port(self) -> str:
        """The port of LXD's dedicated metrics listener (metrics-port), '' when it has none.

        The option is the application's, so this member's ``core.metrics_address`` gives
        the port every member listens on.
        """
        address = str(self._lxd.server_info().config.get("core.metrics_address", ""))
        return address.rpartition(":")[2]

    def _member_targets(self) -> list[Target]:
        port = self._metrics_port()
        members = sorted(self._lxd.members(), key=lambda m: m.name)
        return [
            Target(m.name, f"{m.address.rpartition(':')[0]}:{port}" if port else m.address)
            for m in members
        ]

    def _own_target(self, mode: str) -> Target | None:
        if mode == STANDALONE:
            config = self._lxd.server_info().config
            address = config.get("core.metrics_address") or config.get("core.https_address", "")
            return Target(member_name_for_unit(self._charm.unit.name), str(address))
        name = member_name_for_unit(self._charm.unit.name)
        return next((t for t in self._member_targets() if t.member == name), None)

    def _publish_unit_address(self, relation: ops.Relation) -> None:
        binding = self._charm.model.get_binding(relation)
        address = binding.network.bind_address if binding else None
        if address is None:
            return
        update_databag(
            relation.data[self._charm.unit],
            {
                "prometheus_scrape_unit_address": str(address),
                "prometheus_scrape_unit_name": self._charm.unit.name,
            },
        )

    # -- the metrics certificate -------------------------------------------------------

    def _credential(self, mode: str) -> MetricsCredential | None:
        """The application's metrics credential, trusted where this unit writes trust.

        The leader creates it (and renews it when a third of its lifetime is left); the
        other units read the secret. ``None`` until the leader has created it.
        """
        try:
            secret: ops.Secret | None = self._charm.model.get_secret(label=SECRET_LABEL)
            content = secret.get_content(refresh=True) if secret else {}
        except ops.SecretNotFoundError:
            secret, content = None, {}
        if self._charm.unit.is_leader() and (
            not content or certs.needs_renewal(content["certificate"])
        ):
            credential = MetricsCredential.generate(f"{self._charm.app.name}-metrics")
            if secret is None:
                self._charm.app.add_secret(
                    credential.content(),
                    label=SECRET_LABEL,
                    description="client certificate Prometheus scrapes LXD's /1.0/metrics with",
                )
            else:
                secret.set_content(credential.content())
            logger.info("created the metrics client certificate")
            content = credential.content()
        if not content:
            return None
        credential = MetricsCredential(content["certificate"], content["private-key"])
        # The trust store is the cluster's (the leader writes it) or this server's own.
        if mode == STANDALONE or self._charm.unit.is_leader():
            self._trust(credential)
        return credential

    def _trust(self, credential: MetricsCredential) -> None:
        """Trust exactly this certificate as ``juju-metrics`` (earlier ones are removed)."""
        fingerprint = certificate_fingerprint(credential.certificate)
        current = False
        for entry in self._lxd.trusted_certificates():
            if entry.name != TRUST_NAME:
                continue
            if entry.fingerprint == fingerprint and entry.type == "metrics":
                current = True
            elif entry.fingerprint != fingerprint:
                self._lxd.untrust_certificate(entry.fingerprint)
                logger.info("no longer trusting the former metrics certificate")
        if current:
            return
        try:
            self._lxd.trust_certificate(TRUST_NAME, credential.certificate, "metrics")
        except (CertificateRefusedError, LXDAPIError) as exc:
            self._problems.append(f"metrics: LXD refused the metrics certificate: {exc}")
            return
        logger.info("trusted the metrics certificate as %s", TRUST_NAME)
