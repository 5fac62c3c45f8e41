"""Unit tests of ``src/config.py``: the pools, rbd-features and cephfs options."""

from __future__ import annotations

import pytest

from ceph import Pool
from charm_common.typed_input import InvalidInputError, load_model
from config import CharmConfig, parse_pools


def load(**options: str) -> CharmConfig:
    return load_model(CharmConfig, {k.replace("_", "-"): v for k, v in options.items()})


def test_defaults_are_one_three_replica_pool_and_layering():
    config = load()
    assert config.pool_list == (Pool("remote", 3),)
    assert config.rbd_features == "layering"
    assert config.cephfs == ""


@pytest.mark.parametrize(
    ("value", "pools"),
    [
        ("remote:3", (Pool("remote", 3),)),
        ("remote:3:128", (Pool("remote", 3, 128),)),
        ("remote:3 fast:2", (Pool("remote", 3), Pool("fast", 2))),
        ("remote:3,fast:2:1", (Pool("remote", 3), Pool("fast", 2, 1))),
        ("  remote:1 ,\n fast:10:32768  ", (Pool("remote", 1), Pool("fast", 10, 32768))),
        ("a.b_c-D:2", (Pool("a.b_c-D", 2),)),
        ("x" * 63 + ":3", (Pool("x" * 63, 3),)),
    ],
)
def test_valid_pools(value, pools):
    assert parse_pools(value) == pools
    assert load(pools=value).pool_list == pools


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("remote", "'remote' is not NAME:REPLICAS[:PG_NUM], e.g. remote:3"),
        ("remote:3:128:1", "is not NAME:REPLICAS[:PG_NUM]"),
        ("remote:", "is not NAME:REPLICAS[:PG_NUM]"),
        ("remote:-1", "is not NAME:REPLICAS[:PG_NUM]"),
        ("remote:3:", "is not NAME:REPLICAS[:PG_NUM]"),
        (":3", "'' is not a pool name"),
        ("_x:3", "'_x' is not a pool name"),
        ("x" * 64 + ":3", "is not a pool name"),
        ("remote:0", "'remote:0': replicas must be 1..10"),
        ("remote:11", "replicas must be 1..10"),
        ("remote:3:0", "pg_num must be a power of two, 1..32768"),
        ("remote:3:100", "'remote:3:100': pg_num must be a power of two"),
        ("remote:3:65536", "pg_num must be a power of two"),
        ("remote:3 remote:2", "remote given twice"),
        ("b:1 a:1 b:2 a:3", "a, b given twice"),
        ("", "no pool given; set e.g. remote:3"),
        (" ,, ", "no pool given"),
    ],
)
def test_invalid_pools(value, message):
    with pytest.raises(ValueError) as raised:
        parse_pools(value)
    assert message in str(raised.value)
    with pytest.raises(InvalidInputError) as raised:
        load(pools=value)
    assert str(raised.value).startswith("invalid 'pools': ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("layering", "layering"),
        ("layering, exclusive-lock", "layering,exclusive-lock"),
        (" exclusive-lock layering,object-map ", "exclusive-lock,layering,object-map"),
        (
            "layering,striping,exclusive-lock,object-map,fast-diff,deep-flatten,journaling",
            "layering,striping,exclusive-lock,object-map,fast-diff,deep-flatten,journaling",
        ),
    ],
)
def test_rbd_features_are_normalised(value, normalised):
    assert load(rbd_features=value).rbd_features == normalised


@pytest.mark.parametrize(
    ("value", "unknown"),
    [("", None), ("exclusive-lock", None), ("layering,turbo", "turbo"), ("Layering", "Layering")],
)
def test_invalid_rbd_features(value, unknown):
    with pytest.raises(InvalidInputError) as raised:
        load(rbd_features=value)
    message = str(raised.value)
    assert message.startswith("invalid 'rbd-features': must list 'layering'")
    if unknown:
        assert f"(unknown: {unknown})" in message
    else:
        assert "unknown" not in message


@pytest.mark.parametrize("value", ["", "cephfs", "fs-1", "a.b_c", "x" * 63])
def test_valid_cephfs(value):
    assert load(cephfs=value).cephfs == value


@pytest.mark.parametrize("value", ["a b", "/fs", "-fs", "x" * 64, "fs:1"])
def test_invalid_cephfs(value):
    with pytest.raises(InvalidInputError, match="invalid 'cephfs': .* is not a CephFS"):
        load(cephfs=value)


def test_unknown_option_is_named():
    with pytest.raises(InvalidInputError, match="unknown option 'pool'"):
        load_model(CharmConfig, {"pool": "remote:3"})


def test_config_is_frozen():
    config = load()
    with pytest.raises(ValueError, match="frozen"):
        config.pools = "fast:2"  # type: ignore[misc]
