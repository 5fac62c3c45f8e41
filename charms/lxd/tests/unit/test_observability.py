"""metrics-endpoint and cos-agent: the metrics certificate, scrape jobs, rules, dashboards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import yaml
from cosl import LZMABase64
from ops import testing

from charm_common import certs
from conftest import BOOTSTRAPPED, member, member_peer, peer, server_info, with_trust_store
from lxd import LXDAPIError, LXDUnavailableError, TrustedCertificate, certificate_fingerprint
from observability import DASHBOARDS_DIR, RULES_DIR, MetricsCredential, server_name

MODEL = testing.Model(name="lab", uuid="00000000-0000-4000-8000-000000000000")
_key = certs.generate_private_key()
_ca_key, _ca = certs.generate_ca("cluster")
CLUSTER_CERT = certs.sign_csr(
    certs.make_csr(_key, "root@lxd0", ("lxd0", "127.0.0.1", "::1")), _ca_key, _ca
)
CREDENTIAL = MetricsCredential.generate("lxd-metrics")
CREDENTIAL_FP = certificate_fingerprint(CREDENTIAL.certificate)

# What /1.0/metrics of LXD 5.0.2 exports (measured), plus Prometheus' own `up`.
LXD_502_METRICS = {
    "up",
    "lxd_cpu_seconds_total",
    "lxd_procs_total",
    "lxd_network_receive_bytes_total",
    "lxd_network_transmit_bytes_total",
    "lxd_filesystem_avail_bytes",
    "lxd_filesystem_free_bytes",
    "lxd_filesystem_size_bytes",
    "lxd_memory_MemTotal_bytes",
    "lxd_memory_MemAvailable_bytes",
}
# Internal metrics of newer LXD that the dashboard shows (empty panels on 5.0.2).
NEWER_LXD_METRICS = {"lxd_operations_total", "lxd_warnings_total"}
PROMQL_WORDS = {
    "sum", "count", "max", "by", "on", "unless", "and", "rate", "topk", "count_over_time",
    "offset", "label_values", "lxd_member", "project", "name", "mountpoint",
    "juju_model", "juju_model_uuid", "juju_application",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that are not functions, keywords or labels."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {w for w in words - PROMQL_WORDS if not w.startswith("__")}


@pytest.fixture
def cluster(lxd: MagicMock) -> MagicMock:
    return with_trust_store(lxd, CLUSTER_CERT)


def metrics_secret(credential: MetricsCredential = CREDENTIAL) -> testing.Secret:
    return testing.Secret(credential.content(), owner="app", label="metrics-client")


def state(
    *relations, leader=True, secrets=(), app=BOOTSTRAPPED, peers=None, config=None
) -> testing.State:
    return testing.State(
        leader=leader,
        config=config or {},
        model=MODEL,
        relations=[peer(app=app, peers=peers), *relations],
        secrets=list(secrets),
    )


def prometheus() -> testing.Relation:
    return testing.Relation("metrics-endpoint", remote_app_name="prometheus")


def agent() -> testing.Relation:
    # The agent is a subordinate: its side declares the container scope.
    return testing.Relation("cos-agent", remote_app_name="grafana-agent")


def the_secret(out: testing.State) -> testing.Secret:
    (secret,) = [s for s in out.secrets if s.label == "metrics-client"]
    return secret


# -- the metrics certificate -------------------------------------------------------------


def test_leader_creates_the_metrics_certificate_once_and_trusts_it_as_metrics(ctx, cluster):
    # GIVEN a clustered leader and a new Prometheus relation
    relation = prometheus()
    # WHEN the relation joins
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state(relation))
    # THEN an application-owned secret holds a fresh certificate and its key
    secret = the_secret(out)
    assert secret.owner == "app"
    content = secret.tracked_content
    assert set(content) == {"certificate", "private-key"}
    assert certs.certificate_matches_key(content["certificate"], content["private-key"])
    # AND that certificate is trusted as juju-metrics, type metrics
    cluster.trust_certificate.assert_called_once_with(
        "juju-metrics", content["certificate"], "metrics"
    )
    # WHEN another hook runs with the secret and the trust in place
    cluster.trust_certificate.reset_mock()
    cluster.trusted_certificates.return_value = [
        TrustedCertificate(
            "juju-metrics", "metrics", certificate_fingerprint(content["certificate"]), False, ()
        )
    ]
    again = ctx.run(ctx.on.update_status(), out)
    # THEN nothing new is generated or trusted
    assert the_secret(again).tracked_content == content
    assert len(again.secrets) == 1
    cluster.trust_certificate.assert_not_called()


def test_renewal_replaces_the_certificate_and_its_trust(ctx, cluster, monkeypatch):
    monkeypatch.setattr("observability.certs.needs_renewal", lambda pem: True)
    cluster.trusted_certificates.return_value = [
        TrustedCertificate("juju-metrics", "metrics", CREDENTIAL_FP, False, ())
    ]
    relation = prometheus()
    out = ctx.run(ctx.on.update_status(), state(relation, secrets=[metrics_secret()]))
    new = the_secret(out).latest_content
    assert new is not None and new["certificate"] != CREDENTIAL.certificate
    cluster.untrust_certificate.assert_called_once_with(CREDENTIAL_FP)
    cluster.trust_certificate.assert_called_once_with(
        "juju-metrics", new["certificate"], "metrics"
    )


def test_lxd_refusing_the_metrics_certificate_is_reported(ctx, cluster):
    cluster.trust_certificate.side_effect = LXDAPIError("POST /1.0/certificates", "boom")
    relation = prometheus()
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state(relation))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("metrics: LXD refused the metrics certificate")


def test_non_leader_reads_the_secret_but_neither_creates_nor_trusts(ctx_unit1, cluster):
    relation = agent()
    out = ctx_unit1.run(
        ctx_unit1.on.relation_changed(relation),
        state(relation, leader=False, secrets=[metrics_secret()], peers={0: member_peer(0)}),
    )
    assert len(out.secrets) == 1
    cluster.trust_certificate.assert_not_called()
    cluster.trusted_certificates.assert_not_called()
    config = json.loads(out.get_relation(relation.id).local_unit_data["config"])
    (job,) = config["metrics_scrape_jobs"]
    assert job["static_configs"] == [
        {"targets": ["lxd-1:8443"], "labels": {"lxd_member": "lxd-1"}}
    ]
    assert job["tls_config"]["key"] == CREDENTIAL.private_key


def test_non_leader_publishes_nothing_before_the_leader_made_the_certificate(ctx_unit1, cluster):
    relation = agent()
    out = ctx_unit1.run(
        ctx_unit1.on.relation_changed(relation),
        state(relation, leader=False, peers={0: member_peer(0)}),
    )
    assert "config" not in out.get_relation(relation.id).local_unit_data
    assert out.secrets == frozenset()


# -- metrics-endpoint --------------------------------------------------------------------


def test_scrape_job_has_one_target_per_member_and_the_tls_fields(ctx, cluster):
    relation = prometheus()
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0),
        state(relation, secrets=[metrics_secret()]),
    )
    app = out.get_relation(relation.id).local_app_data
    (job,) = json.loads(app["scrape_jobs"])
    assert job == {
        "job_name": "lxd",
        "metrics_path": "/1.0/metrics",
        "scheme": "https",
        "static_configs": [
            {"targets": ["lxd-0:8443"], "labels": {"lxd_member": "lxd-0"}},
            {"targets": ["lxd-1:8443"], "labels": {"lxd_member": "lxd-1"}},
        ],
        "tls_config": {
            "ca": CLUSTER_CERT,
            "cert": CREDENTIAL.certificate,
            "key": CREDENTIAL.private_key,
            "server_name": "lxd0",
        },
    }
    assert json.loads(app["scrape_metadata"]) == {
        "model": "lab",
        "model_uuid": MODEL.uuid,
        "application": "lxd",
        "unit": "lxd/0",
        "charm_name": "lxd",
    }


def test_alert_rules_are_shipped_with_the_topology(ctx, cluster):
    relation = prometheus()
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0),
        state(relation, secrets=[metrics_secret()]),
    )
    rules = json.loads(out.get_relation(relation.id).local_app_data["alert_rules"])
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {"LXDMemberOffline", "LXDMemberEvacuated", "LXDDatabaseLeaderLost"}
    for rule in alerts.values():
        assert rule["labels"]["juju_model"] == "lab"
        assert rule["labels"]["juju_model_uuid"] == MODEL.uuid
        assert rule["labels"]["juju_application"] == "lxd"
    assert all(g["name"].startswith("lab_00000000_lxd") for g in rules["groups"])


def test_every_unit_publishes_its_address_only_the_leader_the_jobs(ctx_unit1, cluster):
    relation = prometheus()
    out = ctx_unit1.run(
        ctx_unit1.on.relation_changed(relation, remote_unit=0),
        state(relation, leader=False, secrets=[metrics_secret()], peers={0: member_peer(0)}),
    )
    rel = out.get_relation(relation.id)
    assert dict(rel.local_app_data) == {}
    assert rel.local_unit_data["prometheus_scrape_unit_address"] == "192.0.2.0"
    assert rel.local_unit_data["prometheus_scrape_unit_name"] == "lxd/1"


def test_no_relation_no_certificate(ctx, cluster):
    out = ctx.run(ctx.on.update_status(), state())
    assert out.secrets == frozenset()
    cluster.trust_certificate.assert_not_called()


def test_nothing_before_this_member_joined(ctx, cluster):
    cluster.server_info.return_value = server_info(False)
    relation = prometheus()
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state(relation))
    assert out.secrets == frozenset()
    assert dict(out.get_relation(relation.id).local_app_data) == {}


def test_lxd_not_answering_is_left_to_the_charm_status(ctx, cluster):
    cluster.server_info.side_effect = LXDUnavailableError("no socket")
    relation = prometheus()
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state(relation))
    assert out.secrets == frozenset()


def test_with_a_metrics_port_every_target_is_the_members_metrics_listener(ctx, cluster):
    # GIVEN metrics-port set: LXD listens for metrics on its own port
    cluster.server_info.return_value = server_info(
        True, **{"core.https_address": "10.0.0.0:8443", "core.metrics_address": "10.0.0.0:9100"}
    )
    relation, agent_relation = prometheus(), agent()
    out = ctx.run(
        ctx.on.update_status(),
        state(relation, agent_relation, secrets=[metrics_secret()], config={"metrics-port": 9100}),
    )
    # THEN Prometheus scrapes every member there, and the agent this member there
    (job,) = json.loads(out.get_relation(relation.id).local_app_data["scrape_jobs"])
    assert job["static_configs"] == [
        {"targets": ["lxd-0:9100"], "labels": {"lxd_member": "lxd-0"}},
        {"targets": ["lxd-1:9100"], "labels": {"lxd_member": "lxd-1"}},
    ]
    config = json.loads(out.get_relation(agent_relation.id).local_unit_data["config"])
    assert config["metrics_scrape_jobs"][0]["static_configs"] == [
        {"targets": ["lxd-0:9100"], "labels": {"lxd_member": "lxd-0"}}
    ]


def test_standalone_with_a_metrics_port_scrapes_its_metrics_listener(ctx_unit1, cluster):
    cluster.server_info.return_value = server_info(
        False, **{"core.https_address": "10.0.0.1:8443", "core.metrics_address": "10.0.0.1:9100"}
    )
    cluster.members.return_value = []
    agent_relation = agent()
    out = ctx_unit1.run(
        ctx_unit1.on.update_status(),
        state(
            agent_relation,
            leader=False,
            secrets=[metrics_secret()],
            app={"mode": "standalone"},
            config={"mode": "standalone", "metrics-port": 9100},
        ),
    )
    config = json.loads(out.get_relation(agent_relation.id).local_unit_data["config"])
    assert config["metrics_scrape_jobs"][0]["static_configs"] == [
        {"targets": ["10.0.0.1:9100"], "labels": {"lxd_member": "lxd-1"}}
    ]


def test_standalone_unit_trusts_its_own_server_and_scrapes_itself(ctx_unit1, cluster):
    # GIVEN standalone servers: every unit trusts the application's certificate itself
    cluster.server_info.return_value = server_info(
        False, **{"core.https_address": "10.0.0.1:8443"}
    )
    cluster.members.return_value = []
    agent_relation, prom_relation = agent(), prometheus()
    out = ctx_unit1.run(
        ctx_unit1.on.update_status(),
        state(
            agent_relation,
            prom_relation,
            leader=False,
            secrets=[metrics_secret()],
            app={"mode": "standalone"},
            config={"mode": "standalone"},
        ),
    )
    cluster.trust_certificate.assert_called_once_with(
        "juju-metrics", CREDENTIAL.certificate, "metrics"
    )
    config = json.loads(out.get_relation(agent_relation.id).local_unit_data["config"])
    assert config["metrics_scrape_jobs"][0]["static_configs"] == [
        {"targets": ["10.0.0.1:8443"], "labels": {"lxd_member": "lxd-1"}}
    ]
    # metrics-endpoint carries one tls_config per job: standalone servers (one
    # certificate each) are scraped through cos-agent, not here.
    assert dict(out.get_relation(prom_relation.id).local_app_data) == {}


# -- cos-agent ---------------------------------------------------------------------------


def test_cos_agent_databag_has_rules_dashboards_and_this_members_job(ctx, cluster):
    relation = agent()
    out = ctx.run(ctx.on.relation_changed(relation), state(relation, secrets=[metrics_secret()]))
    config = json.loads(out.get_relation(relation.id).local_unit_data["config"])
    assert set(config) == {
        "metrics_alert_rules",
        "log_alert_rules",
        "dashboards",
        "metrics_scrape_jobs",
        "log_slots",
    }
    assert config["log_alert_rules"] == {}
    assert config["log_slots"] == []
    (job,) = config["metrics_scrape_jobs"]
    assert job["static_configs"] == [
        {"targets": ["lxd-0:8443"], "labels": {"lxd_member": "lxd-0"}}
    ]
    assert job["tls_config"]["ca"] == CLUSTER_CERT
    assert job["tls_config"]["server_name"] == "lxd0"
    groups = config["metrics_alert_rules"]["groups"]
    assert {r["alert"] for g in groups for r in g["rules"]} >= {"LXDMemberOffline"}
    # AND every dashboard decodes back to the shipped JSON (uid and charm tag added)
    (encoded,) = config["dashboards"]
    dashboard = json.loads(LZMABase64.decompress(encoded))
    shipped = json.loads((DASHBOARDS_DIR / "lxd-cluster.json").read_text())
    assert dashboard["panels"] == shipped["panels"]
    assert dashboard["title"] == shipped["title"]
    assert "charm: lxd" in dashboard["tags"]
    assert len(dashboard["uid"]) == 40


def test_cos_agent_without_this_member_has_no_job(ctx, cluster):
    cluster.members.return_value = [member("lxd-1")]
    relation = agent()
    out = ctx.run(ctx.on.relation_changed(relation), state(relation, secrets=[metrics_secret()]))
    config = json.loads(out.get_relation(relation.id).local_unit_data["config"])
    assert config["metrics_scrape_jobs"] == []


# -- the shipped files -------------------------------------------------------------------

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def rule_files() -> list[Path]:
    return sorted(p for p in RULES_DIR.iterdir() if p.suffix in {".rule", ".rules"})


def test_alert_rule_files_are_prometheus_rule_files():
    assert rule_files()
    for path in rule_files():
        data = yaml.safe_load(path.read_text())
        assert set(data) == {"groups"}, path
        for group in data["groups"]:
            assert set(group) <= {"name", "interval", "rules"}
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
                assert DURATION.match(rule["for"]), rule["alert"]
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]
                assert rule["expr"].count("(") == rule["expr"].count(")")


def test_alert_rules_use_only_metrics_lxd_502_exports():
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert metric_names(rule["expr"]) <= LXD_502_METRICS, rule["alert"]


def test_dashboard_uses_only_real_metric_names():
    dashboard = json.loads((DASHBOARDS_DIR / "lxd-cluster.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${prometheusds}"
        for target in panel["targets"]:
            used |= metric_names(target["expr"].replace("$__rate_interval", "5m"))
    assert used <= LXD_502_METRICS | NEWER_LXD_METRICS
    assert used >= {"up", "lxd_procs_total", "lxd_cpu_seconds_total"} | NEWER_LXD_METRICS


def test_server_name_is_a_dns_name_of_the_certificate():
    assert server_name(CLUSTER_CERT) == "lxd0"
    ip_only = certs.sign_csr(certs.make_csr(_key, "x", ("10.0.0.1",)), _ca_key, _ca)
    assert server_name(ip_only) == ""
