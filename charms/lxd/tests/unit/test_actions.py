"""Day-2 actions of the lxd charm: evacuate, restore, trust, tokens, cluster-status."""

import json
from pathlib import Path

import pydantic
import pytest
import yaml
from ops import testing

from charm_common.certs import InvalidCertificateError, generate_ca
from charm_common.typed_input import InvalidInputError, load_model
from config import (
    AddTrustedClientParams,
    EvacuateParams,
    GetClientTokenParams,
    NoParams,
    RemoveDeadMemberParams,
    RemoveTrustedClientParams,
    UpgradeParams,
)
from conftest import BOOTSTRAPPED, member, member_peer, peer, server_info
from lxd import (
    CertificateRefusedError,
    Evacuation,
    EvacuationRefusedError,
    HTTPSNotListeningError,
    LXDAPIError,
    LXDUnavailableError,
    Member,
    TrustedCertificate,
)
from upgrade import UpgradeFailure, UpgradePlan

_, CLIENT_PEM = generate_ca("alice")
FP = "0123456789abcdef" * 4
RECORD = json.dumps({"lxd-0": "lxd/0", "lxd-1": "lxd/1"})


def clustered(lxd, *members: Member) -> None:
    lxd.server_info.return_value = server_info(True, **{"core.https_address": "10.0.0.0:8443"})
    lxd.members.return_value = list(members) or [member("lxd-0"), member("lxd-1")]
    lxd.cluster_health.return_value = []


def run(ctx, action: str, state: testing.State | None = None, **params):
    return ctx.run(ctx.on.action(action, params=params), state or testing.State())


def fails(ctx, action: str, state: testing.State | None = None, **params) -> str:
    with pytest.raises(testing.ActionFailed) as failure:
        run(ctx, action, state, **params)
    return failure.value.message


# -- the declared parameters match the models ------------------------------------------

MODELS = {
    "remove-dead-member": RemoveDeadMemberParams,
    "evacuate": EvacuateParams,
    "restore": NoParams,
    "upgrade": UpgradeParams,
    "add-trusted-client": AddTrustedClientParams,
    "remove-trusted-client": RemoveTrustedClientParams,
    "get-client-token": GetClientTokenParams,
    "cluster-status": NoParams,
}


def test_every_declared_action_has_a_model_with_the_same_parameters():
    meta = yaml.safe_load((Path(__file__).parents[2] / "charmcraft.yaml").read_text())
    assert set(meta["actions"]) == set(MODELS)
    for name, spec in meta["actions"].items():
        model: type[pydantic.BaseModel] = MODELS[name]
        declared = {p.replace("-", "_") for p in spec.get("params", {})}
        assert declared == set(model.model_fields), name
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert {p.replace("-", "_") for p in spec.get("required", [])} == required, name
        assert spec["additionalProperties"] is False, name


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        (EvacuateParams, {"mode": "live"}, "invalid 'mode': Input should be 'auto', 'migrate'"),
        (NoParams, {"force": True}, "unknown option 'force'"),
        (AddTrustedClientParams, {"name": "a b", "certificate": CLIENT_PEM}, "invalid 'name'"),
        (
            GetClientTokenParams,
            {"name": "juju-metrics"},
            "invalid 'name': names starting with 'juju-' are reserved",
        ),
        (
            GetClientTokenParams,
            {"name": "bob", "projects": "ok, no/slash"},
            "invalid 'projects': no/slash: not a project name",
        ),
        (GetClientTokenParams, {"name": "bob", "projects": 7}, "invalid 'projects': expected"),
        (RemoveTrustedClientParams, {"fingerprint": "xyz"}, "invalid 'fingerprint'"),
    ],
)
def test_bad_parameters_are_named(model, params, message):
    with pytest.raises(InvalidInputError) as bad:
        load_model(model, params)
    assert str(bad.value).startswith(message)


def test_projects_in_any_separator_and_fingerprints_in_any_spelling():
    params = load_model(GetClientTokenParams, {"name": "bob", "projects": " web, db  web,"})
    assert params.projects == ("web", "db")
    assert load_model(GetClientTokenParams, {"name": "bob", "projects": ["a"]}).projects == ("a",)
    spelled = ":".join(FP.upper()[i : i + 2] for i in range(0, 64, 2))
    assert load_model(RemoveTrustedClientParams, {"fingerprint": spelled}).fingerprint == FP


# -- evacuate / restore ----------------------------------------------------------------


def test_evacuate_empties_this_member_and_says_where_everything_went(ctx, lxd):
    clustered(lxd)
    lxd.evacuate.return_value = Evacuation(
        member="lxd-0",
        moved={"default/c1": "lxd-1", "default/c2": "lxd-2", "web/c3": "lxd-1"},
        stopped=("default/db",),
    )
    run(ctx, "evacuate", mode="migrate")
    lxd.evacuate.assert_called_once_with("lxd-0", "migrate")
    assert ctx.action_results == {
        "member": "lxd-0",
        "already-evacuated": False,
        "moved": {"lxd-1": "default/c1 web/c3", "lxd-2": "default/c2"},
        "stopped": "default/db",
    }


def test_evacuate_defaults_to_auto_and_reports_an_evacuated_member(ctx, lxd):
    clustered(lxd)
    lxd.evacuate.return_value = Evacuation(member="lxd-0", moved={}, already=True)
    run(ctx, "evacuate")
    lxd.evacuate.assert_called_once_with("lxd-0", "auto")
    assert ctx.action_results == {"member": "lxd-0", "already-evacuated": True}


def test_evacuate_refused_changes_nothing(ctx, lxd):
    clustered(lxd)
    lxd.evacuate.side_effect = EvacuationRefusedError("no other cluster member is online")
    assert fails(ctx, "evacuate") == (
        "evacuation of lxd-0 refused, nothing changed: no other cluster member is online"
    )


def test_evacuate_reports_lxd_errors(ctx, lxd):
    clustered(lxd)
    lxd.evacuate.side_effect = LXDAPIError("POST /1.0/cluster/members/lxd-0/state", "boom")
    assert fails(ctx, "evacuate") == (
        "evacuating lxd-0 failed: POST /1.0/cluster/members/lxd-0/state: boom"
    )


def test_evacuate_a_bad_mode_fails_naming_it(ctx, lxd):
    clustered(lxd)
    assert fails(ctx, "evacuate", mode="live").startswith("invalid 'mode'")
    lxd.evacuate.assert_not_called()


@pytest.mark.parametrize("action", ["evacuate", "restore"])
def test_evacuate_and_restore_need_a_cluster_member(ctx, lxd, action):
    # the default mock daemon is standalone
    message = fails(ctx, action)
    assert message.startswith("lxd/0 is not a cluster member (standalone, or not joined yet): ")
    lxd.evacuate.assert_not_called()
    lxd.restore.assert_not_called()


def test_restore_brings_the_instances_back(ctx, lxd):
    clustered(lxd)
    lxd.restore.return_value = Evacuation(
        member="lxd-0",
        moved={"default/c2": "lxd-0", "default/c1": "lxd-0"},
        started=("default/db",),
    )
    run(ctx, "restore")
    lxd.restore.assert_called_once_with("lxd-0")
    assert ctx.action_results == {
        "member": "lxd-0",
        "already-restored": False,
        "returned": "default/c1 default/c2",
        "started": "default/db",
    }


def test_restore_of_a_member_in_service(ctx, lxd):
    clustered(lxd)
    lxd.restore.return_value = Evacuation(member="lxd-0", moved={}, already=True)
    run(ctx, "restore")
    assert ctx.action_results == {"member": "lxd-0", "already-restored": True}


def test_restore_reports_lxd_errors(ctx, lxd):
    clustered(lxd)
    lxd.restore.side_effect = LXDUnavailableError("no socket")
    assert fails(ctx, "restore") == "restoring lxd-0 failed: no socket"


# -- add-trusted-client ----------------------------------------------------------------


def member_state() -> testing.State:
    return testing.State(relations=[peer(app={**BOOTSTRAPPED, "members": RECORD})])


def test_add_trusted_client(ctx, lxd):
    clustered(lxd)
    lxd.trust_certificate.return_value = FP
    run(ctx, "add-trusted-client", member_state(), name="alice", certificate=CLIENT_PEM)
    lxd.trust_certificate.assert_called_once_with("alice", CLIENT_PEM, "client", ())
    assert ctx.action_results == {"fingerprint": FP, "name": "alice", "restricted": False}


def test_add_trusted_client_restricted_to_projects(ctx, lxd):
    clustered(lxd)
    lxd.trust_certificate.return_value = FP
    run(
        ctx,
        "add-trusted-client",
        member_state(),
        name="alice",
        certificate=CLIENT_PEM,
        projects="web,db",
    )
    lxd.trust_certificate.assert_called_once_with("alice", CLIENT_PEM, "client", ("web", "db"))
    assert ctx.action_results == {
        "fingerprint": FP,
        "name": "alice",
        "restricted": True,
        "projects": "web db",
    }


def test_add_trusted_client_malformed_pem_trusts_nothing(ctx, lxd):
    clustered(lxd)
    message = fails(
        ctx, "add-trusted-client", member_state(), name="alice", certificate="-----BEGIN nope"
    )
    assert message.startswith("invalid 'certificate': not a PEM certificate")
    lxd.trust_certificate.assert_not_called()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (InvalidCertificateError("not a PEM certificate: x"), "invalid 'certificate': "),
        (CertificateRefusedError("ab12 is the certificate of member lxd-1"), "ab12 is the "),
        (LXDAPIError("POST /1.0/certificates", "Project not found"), "trusting alice failed: "),
    ],
)
def test_add_trusted_client_reports_refusals(ctx, lxd, error, message):
    clustered(lxd)
    lxd.trust_certificate.side_effect = error
    assert fails(
        ctx, "add-trusted-client", member_state(), name="alice", certificate=CLIENT_PEM
    ).startswith(message)


def test_trust_actions_refuse_a_unit_that_has_not_joined(ctx, lxd):
    # GIVEN a cluster application whose unit lxd/0 has not joined yet (standalone daemon)
    message = fails(
        ctx, "add-trusted-client", member_state(), name="alice", certificate=CLIENT_PEM
    )
    assert message == (
        "lxd/0 is not a cluster member (standalone, or not joined yet): run it on a member, "
        "e.g. juju run lxd/leader add-trusted-client"
    )
    lxd.trust_certificate.assert_not_called()


def test_trust_actions_work_on_a_standalone_server(ctx, lxd):
    lxd.trust_certificate.return_value = FP
    state = testing.State(relations=[peer(app={"mode": "standalone"})])
    run(ctx, "add-trusted-client", state, name="alice", certificate=CLIENT_PEM)
    assert ctx.action_results["fingerprint"] == FP


# -- remove-trusted-client ---------------------------------------------------------------


def trust_store(lxd, *extra: TrustedCertificate) -> None:
    lxd.trusted_certificates.return_value = [
        TrustedCertificate("alice", "client", FP, False, ()),
        TrustedCertificate("lxd-1", "server", "ee" * 32, False, ()),
        TrustedCertificate("juju-metrics", "metrics", "dd" * 32, False, ()),
        *extra,
    ]


def test_remove_trusted_client_in_any_spelling(ctx, lxd):
    clustered(lxd)
    trust_store(lxd)
    lxd.untrust_certificate.return_value = True
    spelled = "SHA256:" + ":".join(FP.upper()[i : i + 2] for i in range(0, 64, 2))
    run(ctx, "remove-trusted-client", member_state(), fingerprint=spelled)
    lxd.untrust_certificate.assert_called_once_with(FP)
    assert ctx.action_results == {"removed": FP, "name": "alice"}


def test_remove_trusted_client_by_prefix(ctx, lxd):
    clustered(lxd)
    trust_store(lxd)
    lxd.untrust_certificate.return_value = True
    run(ctx, "remove-trusted-client", member_state(), fingerprint=FP[:12])
    lxd.untrust_certificate.assert_called_once_with(FP)


@pytest.mark.parametrize(
    ("fingerprint", "message"),
    [
        ("not-hex", "invalid 'fingerprint': 'not-hex' is not a hexadecimal SHA-256 fingerprint"),
        ("ab" * 32, f"no trusted certificate {'ab' * 32}"),
        (
            "ee" * 32,
            "certificate eeeeeeeeeeee is the server certificate of cluster member lxd-1: it "
            "leaves the trust store when the member is removed (juju remove-unit)",
        ),
        (
            "dd" * 32,
            "certificate dddddddddddd (juju-metrics) is managed by the charm through a "
            "relation: remove that relation instead",
        ),
        ("0123456789ab", "0123456789ab matches 2 certificates (alice, bob): give more of it"),
    ],
)
def test_remove_trusted_client_refusals(ctx, lxd, fingerprint, message):
    clustered(lxd)
    trust_store(lxd, TrustedCertificate("bob", "client", FP[:12] + "f" * 52, False, ()))
    assert fails(ctx, "remove-trusted-client", member_state(), fingerprint=fingerprint) == (
        message
    )
    lxd.untrust_certificate.assert_not_called()


def test_remove_trusted_client_gone_meanwhile(ctx, lxd):
    clustered(lxd)
    trust_store(lxd)
    lxd.untrust_certificate.return_value = False
    assert fails(ctx, "remove-trusted-client", member_state(), fingerprint=FP) == (
        f"no trusted certificate {FP}"
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (CertificateRefusedError("ambiguous"), "ambiguous"),
        (LXDUnavailableError("no socket"), f"removing trusted certificate {FP} failed: no socket"),
    ],
)
def test_remove_trusted_client_reports_lxd_errors(ctx, lxd, error, message):
    clustered(lxd)
    trust_store(lxd)
    lxd.untrust_certificate.side_effect = error
    assert fails(ctx, "remove-trusted-client", member_state(), fingerprint=FP) == message


def test_remove_trusted_client_needs_a_member(ctx, lxd):
    assert fails(ctx, "remove-trusted-client", member_state(), fingerprint=FP).endswith(
        "juju run lxd/leader remove-trusted-client"
    )


# -- get-client-token --------------------------------------------------------------------


def test_get_client_token(ctx, lxd):
    clustered(lxd)
    lxd.issue_client_token.return_value = "eyJ0b2tlbiI6MX0="
    run(ctx, "get-client-token", member_state(), name="bob", projects="web")
    lxd.issue_client_token.assert_called_once_with("bob", ("web",))
    assert ctx.action_results == {
        "token": "eyJ0b2tlbiI6MX0=",
        "name": "bob",
        "restricted": True,
        "projects": "web",
    }


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            HTTPSNotListeningError("core.https_address is not set"),
            "no client token: core.https_address is not set",
        ),
        (
            LXDAPIError("cannot issue a client token", "forbidden"),
            "issuing a client token for bob failed: cannot issue a client token: forbidden",
        ),
    ],
)
def test_get_client_token_failures(ctx, lxd, error, message):
    clustered(lxd)
    lxd.issue_client_token.side_effect = error
    assert fails(ctx, "get-client-token", member_state(), name="bob") == message


def test_get_client_token_bad_name(ctx, lxd):
    clustered(lxd)
    assert fails(ctx, "get-client-token", member_state(), name="juju-relation-7").startswith(
        "invalid 'name': names starting with 'juju-' are reserved"
    )
    lxd.issue_client_token.assert_not_called()


# -- cluster-status ----------------------------------------------------------------------


def test_cluster_status_names_each_members_unit(ctx, lxd):
    clustered(
        lxd,
        Member("lxd-0", "https://10.0.0.0:8443", "Online", ("database-leader", "database")),
        Member("lxd-1", "https://10.0.0.1:8443", "Offline", (), "No heartbeat for 30s"),
        Member("lxd-9", "https://10.0.0.9:8443", "Online"),
    )
    lxd.cluster_health.return_value = ["member lxd-1 is OFFLINE: No heartbeat for 30s"]
    run(ctx, "cluster-status", member_state())
    assert ctx.action_results == {
        "members": {
            "lxd-0": {
                "unit": "lxd/0",
                "status": "Online",
                "roles": "database-leader database",
                "address": "10.0.0.0:8443",
            },
            "lxd-1": {
                "unit": "lxd/1",
                "status": "Offline",
                "roles": "none",
                "address": "10.0.0.1:8443",
                "message": "No heartbeat for 30s",
            },
            "lxd-9": {
                "unit": "none (not a unit of this application)",
                "status": "Online",
                "roles": "none",
                "address": "10.0.0.9:8443",
            },
        },
        "healthy": False,
        "problems": "member lxd-1 is OFFLINE: No heartbeat for 30s",
    }


@pytest.mark.parametrize(
    ("local", "remote", "state"),
    [
        ({"upgrade-done": "1"}, {}, "upgrading lxd/1"),
        ({"upgrade-done": "1"}, {"upgrade-done": "1"}, "complete"),
        (
            {},
            {"upgrade-failed": UpgradeFailure("1", 1, "no such channel", "refresh").to_json()},
            "stopped at lxd/1 (refresh): no such channel",
        ),
    ],
)
def test_cluster_status_shows_the_last_upgrade(ctx, lxd, local, remote, state):
    clustered(lxd)
    plan = UpgradePlan("1", "5.21/stable", ("lxd/0", "lxd/1"))
    relation = peer(
        app={**BOOTSTRAPPED, "members": RECORD, "upgrade": plan.to_json()},
        local={**member_peer(0), **local},
        peers={1: {**member_peer(1), **remote}},
    )
    run(ctx, "cluster-status", testing.State(relations=[relation]))
    upgrade = ctx.action_results["upgrade"]
    assert upgrade["state"] == state
    assert (upgrade["id"], upgrade["channel"], upgrade["attempt"]) == ("1", "5.21/stable", 1)


def test_cluster_status_healthy(ctx, lxd):
    clustered(lxd)
    run(ctx, "cluster-status", member_state())
    assert ctx.action_results["healthy"] is True
    assert "problems" not in ctx.action_results
    assert "upgrade" not in ctx.action_results


def test_cluster_status_needs_a_member(ctx, lxd):
    assert fails(ctx, "cluster-status") == (
        "lxd/0 is not a cluster member (standalone, or not joined yet): run it on a member, "
        "e.g. juju run lxd/leader cluster-status"
    )


def test_cluster_status_reports_lxd_errors(ctx, lxd):
    clustered(lxd)
    lxd.cluster_health.side_effect = LXDUnavailableError("no socket")
    assert fails(ctx, "cluster-status") == "reading the cluster failed: no socket"


def test_get_client_token_needs_a_member(ctx, lxd):
    assert fails(ctx, "get-client-token", member_state(), name="bob").endswith(
        "juju run lxd/leader get-client-token"
    )
    lxd.issue_client_token.assert_not_called()
