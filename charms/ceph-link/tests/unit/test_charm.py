"""Unit tests of the ceph-link charm (ops.testing Context/State; apt and ceph CLI mocked).

The Ceph provider is a ``ceph`` relation whose remote units answer like ceph-mon (``auth``,
``key``, ``ceph-public-address``, ``broker-rsp-ceph-link-0``) or microceph (also the
app-level ``ceph-mon-public-addresses``). Files are really written, to ``ceph_dir``.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from ops import testing

import ceph
from charm_common import packages
from conftest import APP, KEY, NEW_KEY, PROVIDER, RESPONSE_KEY, UNIT, member_info

DEFAULT_ADDRESS_KEYS = {"egress-subnets", "ingress-address", "private-address"}
KEYRING = "ceph.client.ceph-link.keyring"


# -- helpers ---------------------------------------------------------------------------


def lxd_member(
    ceph_dir: Path | str, data: dict[str, str] | None = None, local: dict[str, str] | None = None
) -> testing.SubordinateRelation:
    return testing.SubordinateRelation(
        "lxd-member",
        remote_app_name="lxd",
        remote_unit_data=member_info(ceph_dir) if data is None else data,
        local_unit_data=local or {},
    )


def ceph_rel(
    units: dict[int, dict[str, str]] | None = None,
    app: dict[str, str] | None = None,
    local: dict[str, str] | None = None,
) -> testing.Relation:
    return testing.Relation(
        "ceph",
        remote_app_name=PROVIDER,
        remote_units_data=units if units is not None else {},
        remote_app_data=app or {},
        local_unit_data=local or {},
    )


def mon(n: int, key: str = KEY, **extra: str) -> dict[str, str]:
    """A ceph-mon unit's databag: its key and public address (no answer yet)."""
    return {"auth": "cephx", "key": key, "ceph-public-address": f"10.0.0.{n + 1}", **extra}


def answer(request_id: str, code: int = 0, stderr: str | None = None) -> str:
    data: dict[str, object] = {"exit-code": code, "request-id": request_id}
    if stderr is not None:
        data["stderr"] = stderr
    return json.dumps(data)


def relation(state: testing.State, endpoint: str) -> testing.RelationBase:
    return next(r for r in state.relations if r.endpoint == endpoint)


def sent_request(ctx: testing.Context, ceph_dir: Path, config: dict | None = None) -> dict:
    """The broker request the charm sends for ``config`` (parsed ``broker_req``)."""
    state = testing.State(config=config or {}, relations=[lxd_member(ceph_dir), ceph_rel()])
    out = ctx.run(ctx.on.config_changed(), state)
    return json.loads(relation(out, "ceph").local_unit_data["broker_req"])


def answered(
    ctx: testing.Context,
    ceph_dir: Path,
    config: dict | None = None,
    units: int = 3,
    key: str = KEY,
    lxd_local: dict[str, str] | None = None,
) -> testing.State:
    """A state where every mon unit has answered the request the charm sends, exit code 0."""
    request_id = sent_request(ctx, ceph_dir, config)["request-id"]
    mons = {n: mon(n, key, **{RESPONSE_KEY: answer(request_id)}) for n in range(units)}
    return testing.State(
        config=config or {},
        relations=[lxd_member(ceph_dir, local=lxd_local), ceph_rel(mons)],
    )


def lxd_request(out: testing.State) -> dict[str, str]:
    return relation(out, "lxd-member").local_unit_data


def storage_pools(out: testing.State) -> list[dict]:
    return json.loads(lxd_request(out)["storage-pools"])


def ready(out: testing.State) -> bool:
    return json.loads(lxd_request(out)["ready"])


def files(ceph_dir: Path) -> list[str]:
    return sorted(p.name for p in ceph_dir.iterdir()) if ceph_dir.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def mon_host(ceph_dir: Path) -> str:
    line = next(x for x in (ceph_dir / "ceph.conf").read_text().splitlines() if "mon host" in x)
    return line.split(" = ", 1)[1]


# What lxd-member held after an earlier, successful run (bad input must not touch it).
PUBLISHED = {
    "server-config": "{}",
    "networks": "[]",
    "storage-pools": json.dumps(
        [
            {
                "name": "remote",
                "driver": "ceph",
                "config": {"ceph.user.name": APP},
                "member-config": {"source": "remote"},
                "description": "",
            }
        ]
    ),
    "ready": "true",
}


# -- the ceph-client protocol ----------------------------------------------------------


def test_broker_request_is_sent_before_the_provider_says_anything(ctx, ceph_dir):
    # microceph sends no key before it has a request: the request goes out first.
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel()])
    out = ctx.run(ctx.on.relation_created(relation(state, "ceph")), state)

    data = relation(out, "ceph").local_unit_data
    assert data["unit-name"] == UNIT
    assert data["application-name"] == APP
    request = json.loads(data["broker_req"])
    assert request["api-version"] == 1
    [op] = request["ops"]
    assert (op["op"], op["name"], op["replicas"], op["pg_num"], op["app-name"]) == (
        "create-pool",
        "remote",
        3,
        None,
        "rbd",
    )
    digest = hashlib.sha1(
        json.dumps(request["ops"], sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()
    assert request["request-id"] == digest
    assert out.unit_status == testing.WaitingStatus(
        f"waiting for {PROVIDER} to send a key and mon addresses"
    )
    assert ready(out) is False
    assert files(ceph_dir) == []


def test_one_create_pool_op_per_configured_pool(ctx, ceph_dir):
    request = sent_request(ctx, ceph_dir, {"pools": "remote:3:128, fast:2"})
    assert [
        (o["op"], o["name"], o["replicas"], o["pg_num"], o["app-name"]) for o in request["ops"]
    ] == [
        ("create-pool", "remote", 3, 128, "rbd"),
        ("create-pool", "fast", 2, None, "rbd"),
    ]


def test_same_config_same_request_id_new_pools_new_id(ctx, ceph_dir):
    first = sent_request(ctx, ceph_dir, {"pools": "remote:3"})
    again = sent_request(ctx, ceph_dir, {"pools": "remote:3"})
    assert first == again  # the provider answers a known id from its cache
    changed = sent_request(ctx, ceph_dir, {"pools": "remote:2"})
    assert changed["request-id"] != first["request-id"]
    more = sent_request(ctx, ceph_dir, {"pools": "remote:3 fast:2"})
    assert more["request-id"] not in (first["request-id"], changed["request-id"])


def test_an_unchanged_request_is_not_rewritten(ctx, ceph_dir):
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel()])
    first = relation(ctx.run(ctx.on.config_changed(), state), "ceph").local_unit_data
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(local=dict(first))])
    out = ctx.run(ctx.on.update_status(), state)
    assert relation(out, "ceph").local_unit_data == first


# -- what the provider sends -----------------------------------------------------------


def test_full_flow_answers_the_request_the_charm_sent(ctx, ceph_dir):
    config = {"pools": "remote:3 fast:2:64", "rbd-features": "layering, exclusive-lock"}
    out = ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, config))

    keyring = ceph_dir / KEYRING
    assert keyring.read_text() == f"[client.ceph-link]\n\tkey = {KEY}\n"
    assert mode(keyring) == 0o600
    conf = (ceph_dir / "ceph.conf").read_text().splitlines()
    assert conf[0] == ceph.CONF_MARKER
    assert "mon host = 10.0.0.1 10.0.0.2 10.0.0.3" in conf
    assert "auth client required = cephx" in conf
    assert mode(ceph_dir / "ceph.conf") == 0o644
    assert files(ceph_dir) == ["ceph.client.ceph-link.keyring", "ceph.conf"]  # no temp files

    pools = storage_pools(out)
    assert [(p["name"], p["driver"], p["member-config"]) for p in pools] == [
        ("remote", "ceph", {"source": "remote"}),
        ("fast", "ceph", {"source": "fast"}),
    ]
    for pool in pools:
        assert pool["config"] == {
            "ceph.user.name": APP,
            "ceph.cluster_name": "ceph",
            "ceph.rbd.features": "layering,exclusive-lock",
        }
    assert ready(out) is True
    assert out.unit_status == testing.ActiveStatus("pools remote, fast for client.ceph-link")


def test_mons_of_every_unit_and_the_microceph_list_deduplicated(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {
        0: mon(0, **{RESPONSE_KEY: answer(request_id)}),
        1: mon(1, **{"ceph-public-address": "10.0.0.2:6789"}),
        2: mon(2, **{"ceph-public-address": "fd00::3"}),
        3: mon(3, **{"ceph-public-address": "10.0.0.1"}),  # same as unit 0
    }
    app = {"ceph-mon-public-addresses": json.dumps(["10.0.0.1", "10.0.0.9", "fd00::3", "fd00::5"])}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units, app)])
    out = ctx.run(ctx.on.relation_changed(relation(state, "ceph")), state)
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")
    hosts = mon_host(ceph_dir).split()
    assert sorted(hosts) == sorted(
        ["10.0.0.1", "10.0.0.2:6789", "10.0.0.9", "[fd00::3]", "[fd00::5]"]
    )
    assert len(hosts) == len(set(hosts))


def test_microceph_mons_from_the_app_list_only(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {0: {"auth": "cephx", "key": KEY, RESPONSE_KEY: answer(request_id)}}
    app = {"ceph-mon-public-addresses": json.dumps(["192.0.2.5", "2001:db8::5"])}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units, app)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert mon_host(ceph_dir) == "192.0.2.5 [2001:db8::5]"
    assert ready(out) is True


def test_the_key_of_the_lowest_numbered_unit_is_used(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    # numeric, not lexical order: ceph-mon/2 before ceph-mon/10
    units = {10: mon(10, NEW_KEY), 2: mon(2, KEY, **{RESPONSE_KEY: answer(request_id)})}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    ctx.run(ctx.on.config_changed(), state)
    assert KEY in (ceph_dir / KEYRING).read_text()


def test_auth_none_and_provider_rbd_features_reach_ceph_conf(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {0: mon(0, auth="none", **{"rbd-features": "1", RESPONSE_KEY: answer(request_id)})}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    ctx.run(ctx.on.config_changed(), state)
    conf = (ceph_dir / "ceph.conf").read_text().splitlines()
    assert "auth cluster required = none" in conf
    assert "rbd default features = 1" in conf


def test_without_auth_cephx_is_assumed_and_no_rbd_default_features(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {0: {"key": KEY, "ceph-public-address": "10.0.0.1", RESPONSE_KEY: answer(request_id)}}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    ctx.run(ctx.on.config_changed(), state)
    conf = (ceph_dir / "ceph.conf").read_text()
    assert "auth service required = cephx" in conf
    assert "rbd default features" not in conf


def test_key_without_mons_waits(ctx, ceph_dir):
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel({0: {"key": KEY}})])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(
        f"waiting for {PROVIDER} to send a key and mon addresses"
    )
    assert files(ceph_dir) == []
    assert ready(out) is False


def test_mons_without_key_wait(ctx, ceph_dir):
    units = {0: {"auth": "cephx", "ceph-public-address": "10.0.0.1"}}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert files(ceph_dir) == []


# -- the broker's answer ---------------------------------------------------------------


def test_the_answer_of_any_unit_counts(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {
        0: mon(0, **{RESPONSE_KEY: answer("0ld" + request_id[3:])}),
        1: mon(1, **{RESPONSE_KEY: answer(request_id)}),
    }
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")
    assert ready(out) is True


def test_a_refused_request_blocks_and_writes_nothing(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    refusal = answer(request_id, 1, "Error EINVAL: pool size 3 > max 2")
    units = {0: mon(0, **{RESPONSE_KEY: refusal})}
    state = testing.State(relations=[lxd_member(ceph_dir, local=PUBLISHED), ceph_rel(units)])
    out = ctx.run(ctx.on.relation_changed(relation(state, "ceph")), state)

    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "exit code 1" in out.unit_status.message
    assert "Error EINVAL: pool size 3 > max 2" in out.unit_status.message
    assert not (ceph_dir / KEYRING).exists()
    assert files(ceph_dir) == []
    assert ready(out) is False
    # what was asked for stays as published: only readiness changes
    assert lxd_request(out)["storage-pools"] == PUBLISHED["storage-pools"]


def test_a_refusal_without_stderr_says_so(ctx, ceph_dir):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {0: mon(0, **{RESPONSE_KEY: answer(request_id, 22)})}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "exit code 22: no reason given" in out.unit_status.message


def test_a_stale_answer_waits_and_writes_nothing(ctx, ceph_dir):
    old_id = sent_request(ctx, ceph_dir, {"pools": "remote:2"})["request-id"]
    new_id = sent_request(ctx, ceph_dir, {"pools": "remote:3"})["request-id"]
    units = {0: mon(0, **{RESPONSE_KEY: answer(old_id)}), 1: mon(1)}
    state = testing.State(
        config={"pools": "remote:3"},
        relations=[lxd_member(ceph_dir, local=PUBLISHED), ceph_rel(units)],
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(
        f"waiting for Ceph to answer broker request {new_id[:8]}"
    )
    assert files(ceph_dir) == []
    assert ready(out) is False
    assert json.loads(relation(out, "ceph").local_unit_data["broker_req"])["request-id"] == new_id


def test_a_changed_pools_option_is_not_ready_until_answered(ctx, ceph_dir):
    state = answered(ctx, ceph_dir, {"pools": "remote:3"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert ready(out) is True
    # the operator adds a pool: the old answer no longer counts
    lxd = relation(out, "lxd-member")
    state = testing.State(
        config={"pools": "remote:3 fast:2"},
        relations=[
            lxd_member(ceph_dir, local=dict(lxd.local_unit_data)),
            relation(state, "ceph"),
        ],
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert ready(out) is False
    assert [p["name"] for p in storage_pools(out)] == ["remote"]


def test_a_malformed_answer_blocks_naming_the_unit(ctx, ceph_dir):
    units = {0: mon(0), 1: mon(1, **{RESPONSE_KEY: "{not json"})}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        f"ceph data from {PROVIDER}/1: '{RESPONSE_KEY}': broker response is not JSON"
    )
    assert files(ceph_dir) == []
    assert ready(out) is False


def test_an_answer_without_an_exit_code_blocks(ctx, ceph_dir):
    units = {0: mon(0, **{RESPONSE_KEY: json.dumps({"request-id": "x"})})}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        f"ceph data from {PROVIDER}/0: '{RESPONSE_KEY}': "
        "broker response has no integer 'exit-code'"
    )


# -- the files -------------------------------------------------------------------------


def test_a_rotated_key_rewrites_the_keyring(ctx, ceph_dir):
    ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, key=KEY))
    assert KEY in (ceph_dir / KEYRING).read_text()
    out = ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, key=NEW_KEY))
    text = (ceph_dir / KEYRING).read_text()
    assert NEW_KEY in text and KEY not in text
    assert mode(ceph_dir / KEYRING) == 0o600
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")


def test_changed_mons_rewrite_ceph_conf(ctx, ceph_dir):
    ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, units=3))
    assert mon_host(ceph_dir) == "10.0.0.1 10.0.0.2 10.0.0.3"
    ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, units=2))
    assert mon_host(ceph_dir) == "10.0.0.1 10.0.0.2"


def test_a_departed_mon_leaves_ceph_conf(ctx, ceph_dir):
    ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, units=3))
    remaining = answered(ctx, ceph_dir, units=2)  # ceph-mon/2 is gone from the relation
    rel = relation(remaining, "ceph")
    out = ctx.run(ctx.on.relation_departed(rel, remote_unit=1, departing_unit=2), remaining)
    assert mon_host(ceph_dir) == "10.0.0.1 10.0.0.2"
    assert ready(out) is True


def test_unchanged_files_are_not_rewritten(ctx, ceph_dir):
    state = answered(ctx, ceph_dir)
    ctx.run(ctx.on.config_changed(), state)
    inodes = {name: (ceph_dir / name).stat().st_ino for name in files(ceph_dir)}
    ctx.run(ctx.on.update_status(), state)
    assert {name: (ceph_dir / name).stat().st_ino for name in files(ceph_dir)} == inodes


def test_a_keyring_with_loose_mode_is_tightened(ctx, ceph_dir):
    ceph_dir.mkdir()
    keyring = ceph_dir / KEYRING
    keyring.write_text(f"[client.ceph-link]\n\tkey = {KEY}\n")
    keyring.chmod(0o644)
    ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir))
    assert mode(keyring) == 0o600


def test_a_foreign_ceph_conf_is_left_untouched(ctx, ceph_dir):
    # a ceph-mon on the same machine keeps its own ceph.conf (same cluster)
    ceph_dir.mkdir()
    foreign = b"[global]\nfsid = 1234\nmon host = 10.9.9.9\n"
    (ceph_dir / "ceph.conf").write_bytes(foreign)
    (ceph_dir / "ceph.conf").chmod(0o640)
    out = ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir))
    assert (ceph_dir / "ceph.conf").read_bytes() == foreign
    assert mode(ceph_dir / "ceph.conf") == 0o640
    assert KEY in (ceph_dir / KEYRING).read_text()
    assert mode(ceph_dir / KEYRING) == 0o600
    assert ready(out) is True
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")


# -- bad input changes nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"pools": "remote"}, "invalid 'pools': 'remote' is not NAME:REPLICAS[:PG_NUM]"),
        ({"pools": "remote:0"}, "invalid 'pools': 'remote:0': replicas must be 1..10"),
        ({"pools": "remote:11"}, "replicas must be 1..10"),
        ({"pools": "remote:3:100"}, "pg_num must be a power of two"),
        ({"pools": "remote:3:65536"}, "pg_num must be a power of two, 1..32768"),
        ({"pools": "remote:3 fast:2 remote:2"}, "invalid 'pools': remote given twice"),
        ({"pools": ""}, "invalid 'pools': no pool given"),
        ({"pools": " , "}, "no pool given"),
        ({"pools": "-bad:3"}, "'-bad' is not a pool name"),
        ({"pools": "remote:x"}, "is not NAME:REPLICAS[:PG_NUM]"),
        ({"rbd-features": "layering,turbo"}, "invalid 'rbd-features'"),
        ({"rbd-features": "layering,turbo"}, "(unknown: turbo)"),
        ({"rbd-features": "exclusive-lock"}, "invalid 'rbd-features': must list 'layering'"),
        ({"rbd-features": ""}, "must list 'layering'"),
        ({"cephfs": "bad name"}, "invalid 'cephfs': 'bad name' is not a CephFS filesystem name"),
        ({"cephfs": "/fs"}, "invalid 'cephfs'"),
    ],
)
def test_bad_config_blocks_and_changes_nothing(ctx, ceph_dir, install, config, message):
    state = answered(ctx, ceph_dir, lxd_local=PUBLISHED)
    install.reset_mock()
    state = testing.State(config=config, relations=list(state.relations))
    out = ctx.run(ctx.on.config_changed(), state)

    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("config: ")
    assert message in out.unit_status.message
    assert set(relation(out, "ceph").local_unit_data) <= DEFAULT_ADDRESS_KEYS  # no broker_req
    assert files(ceph_dir) == []
    assert lxd_request(out) == {**relation(state, "lxd-member").local_unit_data}
    install.assert_not_called()


def test_every_bad_option_is_named(ctx, ceph_dir):
    config = {"pools": "remote", "rbd-features": "turbo", "cephfs": "a b"}
    out = ctx.run(ctx.on.config_changed(), testing.State(config=config))
    for name in ("'pools'", "'rbd-features'", "'cephfs'"):
        assert name in out.unit_status.message


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("not base64!", "not base64"),
        ("QUJD", "base64 of 3 bytes"),
        (KEY[:-4], "truncated"),
        (KEY + "AAAA", "too long"),
    ],
)
def test_a_malformed_key_blocks_and_writes_nothing(ctx, ceph_dir, key, reason):
    state = answered(ctx, ceph_dir, key=key, lxd_local=PUBLISHED)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        f"ceph data from {PROVIDER}/0: 'key': not a cephx key"
    ), reason
    assert files(ceph_dir) == []
    assert ready(out) is False


@pytest.mark.parametrize(
    "address", ["mon1.example", "10.0.0.300", "10.0.0.1:99999", "[fd00::1]:x"]
)
def test_a_bad_mon_address_blocks_naming_unit_and_key(ctx, ceph_dir, address):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {
        0: mon(0, **{RESPONSE_KEY: answer(request_id)}),
        1: mon(1, **{"ceph-public-address": address}),
    }
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith(
        f"ceph data from {PROVIDER}/1: 'ceph-public-address': mon address"
    )
    assert repr(address) in out.unit_status.message
    assert files(ceph_dir) == []
    assert ready(out) is False


@pytest.mark.parametrize("listed", ["not json", '{"a": 1}', '["10.0.0.1", 5]', '["mon1"]'])
def test_a_bad_microceph_mon_list_blocks_naming_the_app(ctx, ceph_dir, listed):
    request_id = sent_request(ctx, ceph_dir)["request-id"]
    units = {0: mon(0, **{RESPONSE_KEY: answer(request_id)})}
    app = {"ceph-mon-public-addresses": listed}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units, app)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith(f"ceph data from {PROVIDER}: ")
    assert files(ceph_dir) == []


def test_an_unknown_auth_blocks(ctx, ceph_dir):
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel({0: mon(0, auth="kerberos")})])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "ceph data: unknown auth 'kerberos' (cephx or none)"
    )
    assert files(ceph_dir) == []


def test_non_numeric_rbd_features_from_the_provider_block(ctx, ceph_dir):
    units = {0: mon(0, **{"rbd-features": "layering"})}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "ceph data: 'rbd-features' 'layering' is not a number"
    )
    assert files(ceph_dir) == []


# -- without the ceph relation ---------------------------------------------------------

NEEDS_CEPH = "needs the ceph relation: juju integrate ceph-link:ceph ceph-mon:client"


def test_without_ceph_lxd_need_not_wait(ctx, ceph_dir):
    out = ctx.run(ctx.on.config_changed(), testing.State(relations=[lxd_member(ceph_dir)]))
    assert out.unit_status == testing.BlockedStatus(NEEDS_CEPH)
    assert ready(out) is True
    assert storage_pools(out) == []
    assert files(ceph_dir) == []


def test_a_broken_ceph_relation_withdraws_the_pools(ctx, ceph_dir):
    state = answered(ctx, ceph_dir)
    out = ctx.run(ctx.on.config_changed(), state)
    assert storage_pools(out)
    lxd = relation(out, "lxd-member")
    state = testing.State(
        relations=[lxd_member(ceph_dir, local=dict(lxd.local_unit_data)), relation(state, "ceph")]
    )
    out = ctx.run(ctx.on.relation_broken(relation(state, "ceph")), state)
    assert out.unit_status == testing.BlockedStatus(NEEDS_CEPH)
    assert ready(out) is True
    assert storage_pools(out) == []


# -- the lxd unit ----------------------------------------------------------------------


def test_waits_for_the_lxd_unit_to_describe_its_member(ctx, ceph_dir):
    state = testing.State(relations=[lxd_member(ceph_dir, data={}), ceph_rel({0: mon(0)})])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the lxd unit to describe its member"
    )
    assert set(lxd_request(out)) <= DEFAULT_ADDRESS_KEYS
    assert files(ceph_dir) == []


def test_waits_without_the_lxd_member_relation(ctx):
    out = ctx.run(ctx.on.install(), testing.State())
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the lxd unit to describe its member"
    )


def test_an_lxd_without_a_ceph_directory_blocks(ctx, ceph_dir):
    info = member_info(ceph_dir)
    info["paths"] = json.dumps({"ovn": "/etc/ovn"})
    state = testing.State(relations=[lxd_member(ceph_dir, data=info), ceph_rel({0: mon(0)})])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "lxd unit lxd-0 names no ceph directory" in out.unit_status.message
    assert "paths" in out.unit_status.message


def test_bad_member_data_from_lxd_blocks(ctx, ceph_dir):
    info = dict(member_info(ceph_dir), paths="not json")
    out = ctx.run(ctx.on.config_changed(), testing.State(relations=[lxd_member(ceph_dir, info)]))
    assert out.unit_status == testing.BlockedStatus(
        "lxd-member data from lxd: 'paths' is not valid json"
    )


def test_snap_lxd_gets_the_files_where_it_reads_them(ctx, tmp_path):
    snap_dir = tmp_path / "var/snap/lxd/common/ceph"
    ctx.run(ctx.on.config_changed(), answered(ctx, snap_dir))
    assert files(snap_dir) == ["ceph.client.ceph-link.keyring", "ceph.conf"]


# -- cephfs ----------------------------------------------------------------------------


def test_an_existing_cephfs_becomes_a_pool(ctx, ceph_dir, filesystems):
    filesystems.return_value = ["fs0", "fs1"]
    out = ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, {"cephfs": "fs1"}))
    filesystems.assert_called_with(str(ceph_dir), APP)
    rbd, fs = storage_pools(out)
    assert rbd["name"] == "remote"
    assert (fs["name"], fs["driver"], fs["member-config"]) == ("fs1", "cephfs", {"source": "fs1"})
    assert fs["config"] == {"cephfs.user.name": APP, "cephfs.cluster_name": "ceph"}
    assert ready(out) is True
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")


@pytest.mark.parametrize(("found", "listed"), [(["other"], "(other)"), ([], "(none)")])
def test_a_missing_cephfs_blocks_but_rbd_pools_are_ready(
    ctx, ceph_dir, filesystems, found, listed
):
    filesystems.return_value = found
    out = ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, {"cephfs": "fs1"}))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("cephfs: no filesystem 'fs1'")
    assert listed in out.unit_status.message
    assert [p["name"] for p in storage_pools(out)] == ["remote"]
    assert ready(out) is True


def test_when_ceph_cannot_list_filesystems_rbd_pools_are_ready(ctx, ceph_dir, filesystems):
    filesystems.side_effect = ceph.CephError("ceph fs ls failed: no quorum")
    out = ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir, {"cephfs": "fs1"}))
    assert out.unit_status == testing.WaitingStatus(
        "cannot list CephFS filesystems: ceph fs ls failed: no quorum"
    )
    assert [p["name"] for p in storage_pools(out)] == ["remote"]
    assert ready(out) is True


def test_without_cephfs_ceph_is_not_asked(ctx, ceph_dir, filesystems):
    ctx.run(ctx.on.config_changed(), answered(ctx, ceph_dir))
    filesystems.assert_not_called()


# -- packages --------------------------------------------------------------------------


def test_ceph_common_is_installed(ctx, ceph_dir, install):
    ctx.run(ctx.on.install(), answered(ctx, ceph_dir))
    install.assert_called_with(("ceph-common",))


def test_a_failed_install_blocks(ctx, ceph_dir, install):
    install.side_effect = packages.PackageError("apt-get install ceph-common failed: E: no mirror")
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel({0: mon(0)})])
    out = ctx.run(ctx.on.install(), state)
    assert out.unit_status == testing.BlockedStatus(
        "installing ceph-common: apt-get install ceph-common failed: E: no mirror"
    )
    assert "broker_req" not in relation(out, "ceph").local_unit_data
    assert files(ceph_dir) == []


# -- every hook ------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["install", "start", "upgrade_charm", "update_status"])
def test_every_event_converges(ctx, ceph_dir, event):
    out = ctx.run(getattr(ctx.on, event)(), answered(ctx, ceph_dir))
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")
    assert files(ceph_dir) == ["ceph.client.ceph-link.keyring", "ceph.conf"]
    assert ready(out) is True


@pytest.mark.parametrize("endpoint", ["ceph", "lxd-member"])
@pytest.mark.parametrize("hook", ["relation_created", "relation_joined", "relation_changed"])
def test_every_relation_event_converges(ctx, ceph_dir, endpoint, hook):
    state = answered(ctx, ceph_dir)
    out = ctx.run(getattr(ctx.on, hook)(relation(state, endpoint)), state)
    assert out.unit_status == testing.ActiveStatus("pools remote for client.ceph-link")
    assert ready(out) is True


# -- found in review -------------------------------------------------------------------


def test_leader_elected_does_not_claim_active_without_ceph(ctx, ceph_dir):
    state = testing.State(leader=True, relations=[lxd_member(ceph_dir)])
    out = ctx.run(ctx.on.leader_elected(), state)
    assert out.unit_status == testing.BlockedStatus(NEEDS_CEPH)


def test_a_cephfs_named_like_an_rbd_pool_is_a_config_error(ctx, ceph_dir, filesystems):
    filesystems.return_value = ["remote"]
    state = testing.State(
        config={"pools": "remote:3", "cephfs": "remote"},
        relations=[lxd_member(ceph_dir), ceph_rel({0: mon(0)})],
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("config: ")
    assert "also in pools" in out.unit_status.message
    assert "storage-pools" not in lxd_request(out)
    assert files(ceph_dir) == []


@pytest.mark.parametrize(
    ("unit_data", "app_data", "key"),
    [
        ({"ceph-public-address": "mon1.example"}, {}, "'ceph-public-address'"),
        ({}, {"ceph-mon-public-addresses": '["mon1.example"]'}, "'ceph-mon-public-addresses'"),
    ],
)
def test_a_bad_mon_address_names_the_key(ctx, ceph_dir, unit_data, app_data, key):
    units = {0: mon(0, **unit_data)}
    state = testing.State(relations=[lxd_member(ceph_dir), ceph_rel(units, app_data)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert key in out.unit_status.message
