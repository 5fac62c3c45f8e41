"""Unit tests of ``src/config.py`` through ``charm_common.typed_input.load_model``."""

from __future__ import annotations

import pydantic
import pytest

from charm_common.typed_input import InvalidInputError, load_model
from config import CharmConfig, RemoveDeadMemberParams

CHARMCRAFT_DEFAULTS = {
    "channel": "5.21/stable",
    "mode": "cluster",
    "preseed": "",
    "api-port": 8443,
    "metrics-port": 0,
    "sysctl-tuning": True,
    "kernel-hardening": True,
}


def test_defaults():
    # WHEN no option is set
    config = load_model(CharmConfig, {})

    # THEN every option has the default charmcraft.yaml declares
    assert config == CharmConfig(
        channel="5.21/stable",
        mode="cluster",
        preseed="",
        api_port=8443,
        metrics_port=0,
        sysctl_tuning=True,
        kernel_hardening=True,
    )
    assert config.preseed_data == {}


def test_charmcraft_defaults_load():
    # GIVEN the config exactly as Juju passes it (dash-separated keys)
    config = load_model(CharmConfig, CHARMCRAFT_DEFAULTS)

    assert config == load_model(CharmConfig, {})


def test_valid_values():
    config = load_model(
        CharmConfig,
        {
            "channel": "latest/edge/fix-1",
            "mode": "standalone",
            "api-port": 9443,
            "metrics-port": 9100,
            "sysctl-tuning": False,
            "kernel-hardening": False,
            "preseed": "storage_pools: [{name: local, driver: zfs}]\n",
        },
    )

    assert (config.channel, config.mode, config.api_port, config.metrics_port) == (
        "latest/edge/fix-1",
        "standalone",
        9443,
        9100,
    )
    assert (config.sysctl_tuning, config.kernel_hardening) == (False, False)
    assert config.preseed_data == {"storage_pools": [{"name": "local", "driver": "zfs"}]}


@pytest.mark.parametrize("channel", ["5.21", "5.0/stable", "latest", "5.21/candidate"])
def test_valid_channels(channel):
    assert load_model(CharmConfig, {"channel": channel}).channel == channel


@pytest.mark.parametrize("channel", ["5.21/stabel", "5.21/unstable"])
def test_channel_with_an_unknown_risk_is_refused(channel):
    with pytest.raises(InvalidInputError, match="^invalid 'channel': "):
        load_model(CharmConfig, {"channel": channel})


def test_config_is_frozen():
    config = load_model(CharmConfig, {})

    with pytest.raises(pydantic.ValidationError):
        config.mode = "standalone"  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"channel": "5.21/stable/"},
            "invalid 'channel': expected TRACK[/RISK[/BRANCH]], e.g. 5.21/stable",
        ),
        ({"channel": "5/stable"}, "invalid 'channel': expected TRACK[/RISK[/BRANCH]]"),
        ({"channel": "stable"}, "invalid 'channel': expected TRACK[/RISK[/BRANCH]]"),
        ({"mode": "ha"}, "invalid 'mode': Input should be 'cluster' or 'standalone'"),
        ({"api-port": 0}, "invalid 'api-port': Input should be greater than or equal to 1"),
        ({"api-port": 65536}, "invalid 'api-port': Input should be less than or equal to 65535"),
        ({"api-port": "https"}, "invalid 'api-port': Input should be a valid integer"),
        ({"metrics-port": -1}, "invalid 'metrics-port': Input should be greater than or equal"),
        ({"sysctl-tuning": "maybe"}, "invalid 'sysctl-tuning': Input should be a valid boolean"),
        ({"bogus": 1}, "unknown option 'bogus'"),
        ({"metrics-port": 8443}, "metrics-port must differ from api-port (or be 0)"),
        (
            {"api-port": 9000, "metrics-port": 9000},
            "metrics-port must differ from api-port (or be 0)",
        ),
        (
            {"preseed": "cluster:\n  enabled: true\n"},
            "invalid 'preseed': unsupported key(s) cluster; allowed:",
        ),
        ({"preseed": "- a\n"}, "invalid 'preseed': must be a YAML mapping"),
    ],
)
def test_invalid_config_names_the_option(data, message):
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(CharmConfig, data)
    assert str(exc_info.value).startswith(message)


def test_port_clash_message_is_not_prefixed():
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(CharmConfig, {"metrics-port": 8443})
    assert str(exc_info.value) == "metrics-port must differ from api-port (or be 0)"


def test_every_invalid_option_is_reported():
    # GIVEN two bad values and an unknown option
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(CharmConfig, {"mode": "ha", "api-port": 0, "bogus-opt": 1})

    # THEN all of them are named, separated by "; "
    parts = str(exc_info.value).split("; ")
    assert parts == [
        "invalid 'mode': Input should be 'cluster' or 'standalone'",
        "invalid 'api-port': Input should be greater than or equal to 1",
        "unknown option 'bogus-opt'",
    ]


def test_invalid_input_error_is_a_value_error():
    assert issubclass(InvalidInputError, ValueError)


# ---------------------------------------------------------------------------- action params


def test_remove_dead_member_params():
    params = load_model(RemoveDeadMemberParams, {"name": "lxd-3", "confirm": True})

    assert params == RemoveDeadMemberParams(name="lxd-3", confirm=True)


def test_remove_dead_member_needs_confirmation():
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(RemoveDeadMemberParams, {"name": "lxd-3", "confirm": False})
    assert str(exc_info.value) == (
        "invalid 'confirm': force removal cannot be undone; run again with confirm=true"
    )


def test_remove_dead_member_without_confirm_is_refused():
    # GIVEN params without 'confirm' (its default, false, must be validated too)
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(RemoveDeadMemberParams, {"name": "lxd-3"})
    assert str(exc_info.value) == (
        "invalid 'confirm': force removal cannot be undone; run again with confirm=true"
    )


@pytest.mark.parametrize("name", ["LXD-3", "lxd_3", "-lxd", "lxd-", "a" * 64, ""])
def test_remove_dead_member_bad_name(name):
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(RemoveDeadMemberParams, {"name": name, "confirm": True})
    assert str(exc_info.value).startswith("invalid 'name': String should match pattern ")


def test_remove_dead_member_name_required():
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(RemoveDeadMemberParams, {"confirm": True})
    assert str(exc_info.value) == "invalid 'name': Field required"


def test_remove_dead_member_unknown_param():
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(RemoveDeadMemberParams, {"name": "lxd-3", "confirm": True, "force": True})
    assert str(exc_info.value) == "unknown option 'force'"
