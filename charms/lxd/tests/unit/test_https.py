"""The ``https`` relation: client certificates trusted, the cluster's answer published."""

from __future__ import annotations

import dataclasses
import json
from unittest.mock import MagicMock

import pytest
from ops import testing

from charm_common import certs
from conftest import BOOTSTRAPPED, member, member_peer, peer, server_info, with_trust_store
from https import parse_projects
from lxd import (
    CertificateRefusedError,
    LXDAPIError,
    LXDUnavailableError,
    TrustedCertificate,
    certificate_fingerprint,
)


def make_certificate(name: str, sans: tuple[str, ...] = ()) -> str:
    return certs.client_certificate(name, sans)[1]


CLIENT_CERT = make_certificate("https-client-0")
CLIENT_FP = certificate_fingerprint(CLIENT_CERT)
CLUSTER_CERT = make_certificate("root@lxd0", ("lxd0", "127.0.0.1"))


def client_relation(
    units: dict[int, dict[str, str]] | None = None, app: str = "client"
) -> testing.Relation:
    if units is None:
        units = {0: {"version": "1.0", "certificate": CLIENT_CERT}}
    return testing.Relation("https", remote_app_name=app, remote_units_data=units)


def trusted(fingerprint: str = CLIENT_FP, name: str = "juju-relation-client", **kw):
    entry = {"type": "client", "restricted": False, "projects": ()}
    entry.update(kw)
    return TrustedCertificate(name=name, fingerprint=fingerprint, **entry)


@pytest.fixture
def cluster(lxd: MagicMock) -> MagicMock:
    return with_trust_store(lxd, CLUSTER_CERT)


JUJU_KEYS = {"egress-subnets", "ingress-address", "private-address"}


def unit_data(relation: testing.RelationBase) -> dict[str, str]:
    """What the charm wrote into its unit databag (without Juju's own keys)."""
    return {k: v for k, v in relation.local_unit_data.items() if k not in JUJU_KEYS}


def leader_state(*relations: testing.Relation) -> testing.State:
    return testing.State(leader=True, relations=[peer(app=BOOTSTRAPPED), *relations])


EXPECTED_ANSWER = {
    "version": "1.0",
    "certificate": CLUSTER_CERT,
    "certificate_fingerprint": certificate_fingerprint(CLUSTER_CERT),
    "addresses": "lxd-0:8443,lxd-1:8443",
}


# -- joining -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("projects", "restricted_to"),
    [(None, ()), ("", ()), ("web", ("web",)), ("web, db,,web", ("db", "web"))],
)
def test_leader_trusts_the_client_and_answers_in_the_app_databag(
    ctx, cluster, projects, restricted_to
):
    # GIVEN a client unit that published its certificate (and maybe projects)
    data = {"version": "1.0", "certificate": CLIENT_CERT}
    if projects is not None:
        data["projects"] = projects
    relation = client_relation({0: data})
    # WHEN its data reaches the clustered leader
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    # THEN the certificate is trusted under the client app's name, restricted as asked
    cluster.trust_certificate.assert_called_once_with(
        "juju-relation-client", CLIENT_CERT, "client", restricted_to
    )
    cluster.untrust_certificate.assert_not_called()
    # AND the cluster's certificate, fingerprint and every member's address are the answer
    rel = out.get_relation(relation.id)
    assert dict(rel.local_app_data) == EXPECTED_ANSWER
    assert unit_data(rel) == {}
    assert out.unit_status != testing.BlockedStatus()
    assert not str(out.unit_status.message).startswith("https")


def test_client_without_data_yet_gets_the_answer_but_nothing_is_trusted(ctx, cluster):
    relation = client_relation({0: {}})
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_not_called()
    assert dict(out.get_relation(relation.id).local_app_data) == EXPECTED_ANSWER


def test_certificate_already_trusted_as_asked_is_left_alone(ctx, cluster):
    cluster.trusted_certificates.return_value = [trusted()]
    relation = client_relation()
    ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_not_called()
    cluster.untrust_certificate.assert_not_called()


def test_changed_projects_update_the_trust_entry(ctx, cluster):
    cluster.trusted_certificates.return_value = [trusted()]
    relation = client_relation(
        {0: {"version": "1.0", "certificate": CLIENT_CERT, "projects": "a"}}
    )
    ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_called_once_with(
        "juju-relation-client", CLIENT_CERT, "client", ("a",)
    )


def test_entry_lxd_refuses_to_narrow_is_removed(ctx, cluster):
    # GIVEN an unrestricted entry, and the client now asks for a project LXD does not know
    cluster.trusted_certificates.return_value = [trusted()]
    cluster.trust_certificate.side_effect = LXDAPIError("PUT", "Project not found")
    relation = client_relation(
        {0: {"version": "1.0", "certificate": CLIENT_CERT, "projects": "nope"}}
    )
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    # THEN the broader entry does not stay, and the unit says why
    cluster.untrust_certificate.assert_called_once_with(CLIENT_FP)
    assert out.unit_status == testing.BlockedStatus(
        "https: LXD refused client's certificate: Project not found"
    )


def test_certificate_the_operator_trusted_under_another_name_is_not_taken_over(ctx, cluster):
    cluster.trusted_certificates.return_value = [trusted(name="alice-laptop")]
    relation = client_relation()
    ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_not_called()
    cluster.untrust_certificate.assert_not_called()


# -- refusing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        ("not a certificate", "not a PEM certificate"),
        (CLIENT_CERT.replace("A", "B", 40), "not a PEM certificate"),
    ],
)
def test_malformed_certificate_is_refused_and_reported(ctx, cluster, certificate, reason):
    # GIVEN a client whose certificate is not one, and an entry for it from before
    cluster.trusted_certificates.return_value = [trusted()]
    relation = client_relation({0: {"version": "1.0", "certificate": certificate}})
    # WHEN the leader reads it
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    # THEN nothing is trusted (and the earlier entry leaves), and the status says who and why
    cluster.trust_certificate.assert_not_called()
    cluster.untrust_certificate.assert_called_once_with(CLIENT_FP)
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(
        f"https: client sent an invalid certificate: {reason}"
    )


def test_unknown_version_is_refused_and_reported(ctx, cluster):
    relation = client_relation({0: {"version": "2.0", "certificate": CLIENT_CERT}})
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "https: client speaks version '2.0', this charm speaks '1.0'"
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            LXDAPIError("POST /1.0/certificates", "Project not found"),
            "https: LXD refused client's certificate: Project not found",
        ),
        (
            CertificateRefusedError("it is a member's certificate"),
            "https: client's certificate refused: it is a member's certificate",
        ),
        (
            certs.InvalidCertificateError("only EC keys"),
            "https: client sent an invalid certificate: only EC keys",
        ),
    ],
)
def test_certificate_lxd_refuses_is_reported(ctx, cluster, error, message):
    cluster.trust_certificate.side_effect = error
    relation = client_relation()
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    assert out.unit_status == testing.BlockedStatus(message)


# -- leaving -----------------------------------------------------------------------------


def test_last_client_unit_departing_removes_its_trust(ctx, cluster):
    # GIVEN a trusted client whose only unit departs (Juju may still list it in this hook)
    cluster.trusted_certificates.return_value = [trusted()]
    relation = client_relation()
    ctx.run(
        ctx.on.relation_departed(relation, remote_unit=0, departing_unit=0),
        leader_state(relation),
    )
    # THEN its certificate is no longer trusted
    cluster.untrust_certificate.assert_called_once_with(CLIENT_FP)
    cluster.trust_certificate.assert_not_called()


def test_one_client_unit_departing_keeps_the_others_trusted(ctx, cluster):
    other = make_certificate("https-client-1")
    cluster.trusted_certificates.return_value = [
        trusted(),
        trusted(certificate_fingerprint(other)),
    ]
    relation = client_relation(
        {
            0: {"version": "1.0", "certificate": CLIENT_CERT},
            1: {"version": "1.0", "certificate": other},
        }
    )
    ctx.run(
        ctx.on.relation_departed(relation, remote_unit=1, departing_unit=1),
        leader_state(relation),
    )
    cluster.untrust_certificate.assert_called_once_with(certificate_fingerprint(other))


def test_relation_broken_removes_the_trust_and_leaves_other_entries(ctx, cluster):
    cluster.trusted_certificates.return_value = [
        trusted(),
        trusted("cd" * 32, name="alice-laptop"),
        trusted("ef" * 32, name="juju-metrics", type="metrics"),
    ]
    relation = client_relation()
    ctx.run(ctx.on.relation_broken(relation), leader_state(relation))
    cluster.untrust_certificate.assert_called_once_with(CLIENT_FP)


def test_this_unit_leaving_does_not_untrust_the_clients(ctx, cluster):
    # GIVEN the leader is being removed: it sees the relation depart (scenario names the
    # departing unit after the remote app, so a remote app named like ours is this unit)
    cluster.trusted_certificates.return_value = [trusted(name="juju-relation-lxd")]
    relation = client_relation(app="lxd")
    state = leader_state(relation)
    out = ctx.run(ctx.on.relation_departed(relation, remote_unit=0, departing_unit=0), state)
    # WHEN the relation then breaks for this unit, and it reconciles once more
    out = ctx.run(ctx.on.relation_broken(out.get_relation(relation.id)), out)
    ctx.run(ctx.on.update_status(), dataclasses.replace(out, relations=[peer(app=BOOTSTRAPPED)]))
    # THEN the clients, still related to the other units, keep their trust
    cluster.untrust_certificate.assert_not_called()


# -- who writes --------------------------------------------------------------------------


def test_non_leader_member_does_not_touch_the_trust_store(ctx_unit1, cluster):
    relation = client_relation()
    state = testing.State(relations=[peer(app=BOOTSTRAPPED, peers={0: member_peer(0)}), relation])
    out = ctx_unit1.run(ctx_unit1.on.relation_changed(relation, remote_unit=0), state)
    cluster.trusted_certificates.assert_not_called()
    cluster.trust_certificate.assert_not_called()
    cluster.untrust_certificate.assert_not_called()
    rel = out.get_relation(relation.id)
    assert dict(rel.local_app_data) == {}
    assert unit_data(rel) == {}


def test_leader_that_has_not_joined_yet_waits(ctx, cluster):
    cluster.server_info.return_value = server_info(False)
    relation = client_relation()
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_not_called()
    assert dict(out.get_relation(relation.id).local_app_data) == {}


def test_nothing_happens_before_bootstrap(ctx, cluster):
    relation = client_relation()
    state = testing.State(leader=True, relations=[peer(), relation])
    ctx.run(ctx.on.relation_changed(relation, remote_unit=0), state)
    cluster.trust_certificate.assert_not_called()


@pytest.mark.parametrize("leader", [True, False])
def test_standalone_server_trusts_and_answers_for_itself(ctx_unit1, cluster, leader):
    # GIVEN standalone servers: each unit has its own trust store and certificate
    cluster.server_info.return_value = server_info(
        False, **{"core.https_address": "10.0.0.1:8443"}
    )
    relation = client_relation()
    state = testing.State(leader=leader, relations=[peer(app={"mode": "standalone"}), relation])
    # WHEN a client relates
    out = ctx_unit1.run(ctx_unit1.on.relation_changed(relation, remote_unit=0), state)
    # THEN this unit trusts it on its own server and answers in its own unit databag
    cluster.trust_certificate.assert_called_once_with(
        "juju-relation-client", CLIENT_CERT, "client", ()
    )
    rel = out.get_relation(relation.id)
    assert unit_data(rel) == {**EXPECTED_ANSWER, "addresses": "10.0.0.1:8443"}
    assert dict(rel.local_app_data) == {}


def test_standalone_server_without_https_waits(ctx, cluster):
    cluster.server_info.return_value = server_info(False)
    relation = client_relation()
    state = testing.State(leader=True, relations=[peer(app={"mode": "standalone"}), relation])
    ctx.run(ctx.on.relation_changed(relation, remote_unit=0), state)
    cluster.trust_certificate.assert_not_called()


def test_lxd_not_answering_is_left_to_the_charm_status(ctx, cluster):
    cluster.server_info.side_effect = LXDUnavailableError("no socket")
    relation = client_relation()
    ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    cluster.trust_certificate.assert_not_called()


# -- members change ----------------------------------------------------------------------


def test_addresses_follow_the_members_on_every_reconcile(ctx, cluster):
    # GIVEN a relation answered while the cluster had two members
    relation = client_relation()
    relation.local_app_data.update(EXPECTED_ANSWER)
    cluster.trusted_certificates.return_value = [trusted()]
    cluster.members.return_value = [member("lxd-0"), member("lxd-1"), member("lxd-2")]
    state = testing.State(
        leader=True,
        relations=[peer(app=BOOTSTRAPPED, peers={1: member_peer(1), 2: member_peer(2)}), relation],
    )
    # WHEN the charm reconciles after a third member joined
    out = ctx.run(ctx.on.update_status(), state)
    # THEN the clients learn the new member's address
    assert out.get_relation(relation.id).local_app_data["addresses"] == (
        "lxd-0:8443,lxd-1:8443,lxd-2:8443"
    )


def test_parse_projects():
    assert parse_projects(" a ,b,, a") == ("a", "b")
    assert parse_projects("") == ()


def test_answer_is_plain_strings(ctx, cluster):
    relation = client_relation()
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), leader_state(relation))
    data = out.get_relation(relation.id).local_app_data
    assert all(isinstance(v, str) for v in data.values())
    with pytest.raises(json.JSONDecodeError):
        json.loads(data["addresses"])  # comma-separated, as the existing clients split it
