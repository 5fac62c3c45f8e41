"""Tests of lab.bundle: bundle files read and validated before anything starts."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.applications import BundleError, Endpoint, Relation
from lab.bundle import Bundle, describe, load_bundle

REPO = Path(__file__).resolve().parents[2]
REAL_BUNDLE = REPO / "bundles" / "lxd-cluster.yaml"
LXD_CHARM = REPO / "charms" / "lxd"


def write_bundle(tmp_path: Path, data: dict[str, Any], name: str = "bundle.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def lxd_bundle(tmp_path: Path, **app: Any) -> Path:
    """A one-application bundle on the real lxd charm (absolute charm path)."""
    spec = {"charm": str(LXD_CHARM), "num_units": 3, "options": {"mode": "cluster"}}
    spec.update(app)
    return write_bundle(tmp_path, {"applications": {"lxd": spec}})


def fake_charm(root: Path, name: str, text: str) -> Path:
    """A charm directory with only a charmcraft.yaml."""
    charm = root / "charms" / name
    charm.mkdir(parents=True)
    (charm / "charmcraft.yaml").write_text(f"name: {name}\n" + textwrap.dedent(text))
    return charm


PRINCIPAL = """
    provides:
      member:
        interface: lxd-member
      metrics:
        interface: prometheus
    requires:
      logs:
        interface: loki
    peers:
      cluster:
        interface: lxd-cluster
    config:
      options:
        ratio:
          type: float
          default: 0.5
"""

SUBORDINATE = """
    subordinate: true
    requires:
      lxd:
        interface: lxd-member
        scope: container
"""


@pytest.fixture
def charms(tmp_path: Path) -> Path:
    fake_charm(tmp_path, "principal", PRINCIPAL)
    fake_charm(tmp_path, "bridge", SUBORDINATE)
    fake_charm(
        tmp_path,
        "metrics",
        """
        requires:
          scrape:
            interface: prometheus
          logs-in:
            interface: prometheus
        provides:
          logs:
            interface: loki
        """,
    )
    return tmp_path


def bundle_of(root: Path, relations: list[Any], **apps: dict[str, Any]) -> Path:
    (root / "bundles").mkdir(exist_ok=True)
    return write_bundle(root / "bundles", {"applications": apps, "relations": relations})


def error_of(path: Path) -> str:
    with pytest.raises(BundleError) as exc:
        load_bundle(path)
    return str(exc.value)


# ---------------------------------------------------------------------------- the real bundle


def test_real_bundle_loads() -> None:
    bundle = load_bundle(REAL_BUNDLE)
    assert isinstance(bundle, Bundle)
    assert list(bundle.applications)[:2] == ["lxd", "ovn-bridge"]
    lxd = bundle.applications["lxd"]
    assert lxd.charm_dir == LXD_CHARM
    assert lxd.num_units == 3
    assert lxd.options == {"mode": "cluster"}
    assert not lxd.subordinate
    assert lxd.base == "ubuntu@24.04/stable"
    assert lxd.metadata["name"] == "lxd"
    assert lxd.config()["api-port"] == 8443
    ovn = bundle.applications["ovn-bridge"]
    assert ovn.subordinate and ovn.num_units == 0
    assert ovn.options["bridge-mappings"] == "physnet1:br-uplink"
    assert bundle.relations[0] == Relation(
        Endpoint("lxd", "lxd-member"),
        Endpoint("ovn-bridge", "lxd-member"),
        "lxd-member",
        "container",
    )
    summary = describe(bundle)
    assert f"{len(bundle.applications)} application(s), 3 unit(s)" in summary
    assert (
        "relation lxd:lxd-member - ovn-bridge:lxd-member (lxd-member, container scope)" in summary
    )
    assert "lxd: charm lxd, 3 unit(s), base ubuntu@24.04/stable, options: mode=cluster" in summary


def test_real_bundle_with_the_lab_overlay() -> None:
    overlay = REAL_BUNDLE.parent / "overlays" / "lab.yaml"
    bundle = load_bundle(REAL_BUNDLE, overlays=[overlay])
    assert bundle.applications["lxd"].options["sysctl-tuning"] is False
    assert bundle.applications["ovn-bridge"].options["datapath-type"] == "netdev"
    # Applications the overlay adds come after the bundle's, charms relative to the overlay.
    added = yaml.safe_load(overlay.read_text())["applications"]
    for name, spec in added.items():
        if "charm" in spec:
            assert (
                bundle.applications[name].charm_dir == (overlay.parent / spec["charm"]).resolve()
            )
    plain = load_bundle(REAL_BUNDLE).relations
    assert bundle.relations[: len(plain)] == plain


def test_missing_charm_path(tmp_path: Path) -> None:
    path = write_bundle(tmp_path, {"applications": {"lxd": {"charm": "./nope", "num_units": 1}}})
    message = error_of(path)
    assert message.startswith(f"{path}: applications.lxd.charm: charm directory './nope'")
    assert "does not exist" in message


def test_option_type(tmp_path: Path) -> None:
    message = error_of(lxd_bundle(tmp_path, options={"api-port": "abc"}))
    assert (
        "applications.lxd.options.api-port: expected an int (charmcraft.yaml type), "
        "got a string 'abc'" in message
    )


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    message = error_of(lxd_bundle(tmp_path, options={"api-port": True}))
    assert "applications.lxd.options.api-port: expected an int" in message


def test_values_only_the_charm_refuses_reach_the_charm(tmp_path: Path) -> None:
    # As Juju: the option's name and type, nothing more. The charm's own Blocked status is
    # what an operator sees (tests/lab/test_ovn.py test_bad_config_blocks_and_changes_nothing).
    options = {"mode": "bogus", "api-port": 9000, "metrics-port": 9000}
    bundle = load_bundle(lxd_bundle(tmp_path, options=options))
    assert bundle.applications["lxd"].options == options


def test_unknown_option(tmp_path: Path) -> None:
    message = error_of(lxd_bundle(tmp_path, options={"colour": "blue"}))
    assert (
        "applications.lxd.options.colour: unknown option 'colour' (valid: channel, mode,"
        in message
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_bundle(tmp_path, {"applications": {}, "machines": {"0": {}}})
    message = error_of(path)
    assert message == (
        f"{path}: machines: unsupported key 'machines' (supported: applications, relations, "
        "default-base, series, name, description)"
    )


def test_applications_required(tmp_path: Path) -> None:
    message = error_of(write_bundle(tmp_path, {"name": "x"}))
    assert "applications: required: a non-empty mapping of applications" in message


def test_unsupported_application_key(tmp_path: Path) -> None:
    message = error_of(lxd_bundle(tmp_path, to=["0", "1", "2"]))
    assert "applications.lxd.to: unsupported key 'to' (supported: charm, num_units," in message


def test_charm_store_name(tmp_path: Path) -> None:
    for name in ("ch:lxd", "lxd"):
        message = error_of(lxd_bundle(tmp_path, charm=name))
        assert f"applications.lxd.charm: {name!r}: only local charm paths are supported" in message


def test_num_units_required_for_principal(tmp_path: Path) -> None:
    path = write_bundle(tmp_path, {"applications": {"lxd": {"charm": str(LXD_CHARM)}}})
    assert "applications.lxd.num_units: required for a principal charm" in error_of(path)


def test_unsupported_base(tmp_path: Path) -> None:
    message = error_of(lxd_bundle(tmp_path, base="ubuntu@20.04"))
    assert "applications.lxd.base: base 'ubuntu@20.04' is not supported by the charm" in message


def test_duplicate_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("applications: {}\napplications: {}\n")
    assert "invalid YAML" in error_of(path)
    assert "duplicate key 'applications'" in error_of(path)


# ---------------------------------------------------------------------------- relations


def test_subordinate_with_num_units(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["bridge", "lxd"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        bridge={"charm": "../charms/bridge", "num_units": 2},
    )
    assert "applications.bridge.num_units: must be absent or 0 for a subordinate" in error_of(path)


def test_subordinate_relation(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["bridge", "lxd"]],
        lxd={"charm": "../charms/principal", "num_units": 2, "options": {"ratio": 1}},
        bridge={"charm": "../charms/bridge"},
    )
    bundle = load_bundle(path)
    assert list(bundle.applications) == ["lxd", "bridge"]
    assert bundle.applications["bridge"].subordinate
    assert bundle.applications["bridge"].num_units == 0
    assert bundle.applications["lxd"].options == {"ratio": 1}
    assert bundle.relations == [
        Relation(Endpoint("bridge", "lxd"), Endpoint("lxd", "member"), "lxd-member", "container")
    ]
    assert "bridge: charm bridge, subordinate of lxd" in describe(bundle)
    assert "relation bridge:lxd - lxd:member (lxd-member, container scope)" in describe(bundle)


def test_subordinate_needs_a_principal(charms: Path) -> None:
    path = bundle_of(
        charms,
        [],
        lxd={"charm": "../charms/principal", "num_units": 1},
        bridge={"charm": "../charms/bridge"},
    )
    message = error_of(path)
    assert (
        "subordinate 'bridge' must have a container-scoped relation to exactly one principal"
        in message
    )


def test_interface_mismatch(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["bridge:lxd", "lxd:metrics"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        bridge={"charm": "../charms/bridge"},
    )
    message = error_of(path)
    assert (
        "relations[0]: interfaces differ: bridge:lxd is 'lxd-member', lxd:metrics is 'prometheus'"
        in message
    )


def test_unknown_app_in_relations(charms: Path) -> None:
    path = bundle_of(
        charms, [["lxd", "ghost"]], lxd={"charm": "../charms/principal", "num_units": 1}
    )
    assert "relations[0][1]: unknown application 'ghost' (applications: lxd)" in error_of(path)


def test_unknown_endpoint(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["lxd:nope", "m"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        m={"charm": "../charms/metrics", "num_units": 1},
    )
    assert (
        "relations[0][0]: 'lxd' has no endpoint 'nope' (valid: member, metrics, logs)"
        in error_of(path)
    )


def test_peer_in_relations(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["lxd:cluster", "m"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        m={"charm": "../charms/metrics", "num_units": 1},
    )
    assert "relations[0][0]: 'lxd:cluster' is a peer endpoint" in error_of(path)


def test_ambiguous_endpoint(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["lxd", "m"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        m={"charm": "../charms/metrics", "num_units": 1},
    )
    message = error_of(path)
    assert "relations[0]: ambiguous relation: name the endpoints, one of " in message
    assert "[lxd:metrics, m:scrape]" in message and "[lxd:metrics, m:logs-in]" in message


def test_named_endpoint_resolves_other_side(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["lxd", "m:scrape"], ["m", "lxd:logs"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        m={"charm": "../charms/metrics", "num_units": 1},
    )
    assert load_bundle(path).relations == [
        Relation(Endpoint("lxd", "metrics"), Endpoint("m", "scrape"), "prometheus", "global"),
        Relation(Endpoint("m", "logs"), Endpoint("lxd", "logs"), "loki", "global"),
    ]


def test_option_on_fake_charm(charms: Path) -> None:
    path = bundle_of(
        charms, [], lxd={"charm": "../charms/principal", "num_units": 1, "options": {"ratio": "x"}}
    )
    assert "applications.lxd.options.ratio: expected a float" in error_of(path)


# ---------------------------------------------------------------------------- overlays

PROBE_CHARM = REPO / "tests" / "lab" / "charms" / "probe"

CLIENT = """
    requires:
      feed:
        interface: probe-feed
"""


def overlay_of(root: Path, data: dict[str, Any], name: str = "overlay.yaml") -> Path:
    """An overlay file in ``root/overlays`` (a directory other than the bundle's)."""
    (root / "overlays").mkdir(exist_ok=True)
    return write_bundle(root / "overlays", data, name)


def overlay_error(bundle: Path, *overlays: Path) -> str:
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle, overlays=overlays)
    return str(exc.value)


@pytest.fixture
def client_bundle(tmp_path: Path) -> Path:
    """A bundle one directory deeper than the overlays, with one app requiring probe-feed."""
    fake_charm(tmp_path, "client", CLIENT)
    (tmp_path / "bundles" / "deep").mkdir(parents=True)
    apps = {"client": {"charm": "../../charms/client", "num_units": 1}}
    return write_bundle(tmp_path / "bundles" / "deep", {"applications": apps})


def test_overlay_adds_an_application_and_a_relation(tmp_path: Path, client_bundle: Path) -> None:
    overlay_dir = tmp_path / "overlays"
    overlay_dir.mkdir()
    # Relative to the overlay's directory; from the bundle's (deeper) it names no directory.
    charm = os.path.relpath(PROBE_CHARM, overlay_dir)
    assert charm.startswith("../")
    assert not (client_bundle.parent / charm).resolve().is_dir()
    overlay = overlay_of(
        tmp_path,
        {
            "description": "adds a probe",
            "applications": {
                "probe": {"charm": charm, "num_units": 2, "options": {"greeting": "hi"}},
                "client": {"num_units": 3},
            },
            "relations": [["client", "probe"]],
        },
    )
    bundle = load_bundle(client_bundle, overlays=[overlay])
    assert list(bundle.applications) == ["client", "probe"]
    probe = bundle.applications["probe"]
    assert probe.charm_dir == PROBE_CHARM
    assert (probe.num_units, dict(probe.options), probe.base) == (2, {"greeting": "hi"}, None)
    assert bundle.applications["client"].num_units == 3  # merged, as before
    assert bundle.relations == [
        Relation(Endpoint("client", "feed"), Endpoint("probe", "feed"), "probe-feed", "global")
    ]
    assert "relation client:feed - probe:feed (probe-feed, global scope)" in describe(bundle)


def test_overlay_relation_to_an_unknown_application(tmp_path: Path, client_bundle: Path) -> None:
    overlay = overlay_of(tmp_path, {"relations": [["client", "ghost"]]})
    assert overlay_error(client_bundle, overlay) == (
        f"{overlay}: relations[0][1]: unknown application 'ghost' (applications: client)"
    )


def test_overlay_repeats_a_bundle_relation(charms: Path) -> None:
    path = bundle_of(
        charms,
        [["lxd:metrics", "m:scrape"]],
        lxd={"charm": "../charms/principal", "num_units": 1},
        m={"charm": "../charms/metrics", "num_units": 1},
    )
    again = overlay_of(charms, {"relations": [["m:scrape", "lxd"]]})  # the same, other words
    assert load_bundle(path, overlays=[again, again]).relations == [
        Relation(Endpoint("lxd", "metrics"), Endpoint("m", "scrape"), "prometheus", "global")
    ]
    twice = overlay_of(charms, {"relations": [["m:logs-in", "lxd"]] * 2}, "twice.yaml")
    assert overlay_error(path, twice).startswith(
        f"{twice}: relations[1]: duplicate relation m:logs-in - lxd:metrics"
    )


def test_overlay_errors_name_the_overlay(charms: Path) -> None:
    path = bundle_of(
        charms,
        [],
        lxd={"charm": "../charms/principal", "num_units": 1, "options": {"ratio": 1}},
    )
    overlay_dir = charms / "overlays"
    cases = {
        # a key of an application the overlay adds
        "new": (
            {"applications": {"m": {"charm": "../charms/metrics", "num_units": 1, "to": [0]}}},
            "applications.m.to: unsupported key 'to' (supported: charm, num_units,",
        ),
        # a charm path the overlay sets is relative to the overlay
        "charm": (
            {"applications": {"lxd": {"charm": "./principal"}}},
            f"applications.lxd.charm: charm directory './principal' "
            f"({overlay_dir / 'principal'}) does not exist",
        ),
        # an option the overlay merges into a bundle application
        "option": (
            {"applications": {"lxd": {"options": {"ratio": "x"}}}},
            "applications.lxd.options.ratio: expected a float",
        ),
        "removal": (
            {"applications": {"lxd": None}},
            "applications.lxd: null removes an application in a Juju overlay",
        ),
        "key": ({"machines": {}}, "machines: unsupported key 'machines' (supported: "),
    }
    for name, (data, expected) in cases.items():
        overlay = overlay_of(charms, data, f"{name}.yaml")
        assert overlay_error(path, overlay).startswith(f"{overlay}: {expected}"), name
    # A valid option merges; a subordinate the overlay adds without a principal names both
    # files (the check runs on the merged bundle).
    ratio = overlay_of(charms, {"applications": {"lxd": {"options": {"ratio": 2}}}}, "ok.yaml")
    assert load_bundle(path, overlays=[ratio]).applications["lxd"].options == {"ratio": 2}
    lonely = overlay_of(charms, {"applications": {"bridge": {"charm": "../charms/bridge"}}})
    assert overlay_error(path, lonely).startswith(
        f"{path} (with {lonely}): relations: subordinate 'bridge' must have a container-scoped"
    )


def test_overlay_adds_a_subordinate_with_its_relation(charms: Path) -> None:
    path = bundle_of(charms, [], lxd={"charm": "../charms/principal", "num_units": 1})
    overlay = overlay_of(
        charms,
        {
            "applications": {"bridge": {"charm": "../charms/bridge"}},
            "relations": [["bridge", "lxd"]],
        },
    )
    bundle = load_bundle(path, overlays=[overlay])
    assert bundle.applications["bridge"].subordinate
    assert [r.scope for r in bundle.relations] == ["container"]


def test_overlay_options_merged_with_the_bundles(tmp_path: Path) -> None:
    path = lxd_bundle(tmp_path, options={"mode": "cluster"})
    ports = {"api-port": 9000, "metrics-port": 9000}  # the charm blocks on these, not the lab
    overlay = overlay_of(tmp_path, {"applications": {"lxd": {"options": ports}}})
    bundle = load_bundle(path, overlays=[overlay])
    assert bundle.applications["lxd"].options == {"mode": "cluster", **ports}


def test_base_a_machine_cannot_present(tmp_path: Path) -> None:
    message = error_of(lxd_bundle(tmp_path, base="centos@7"))
    assert (
        "applications.lxd.base: a lab machine cannot present base 'centos@7' "
        "(known: ubuntu@20.04, ubuntu@22.04, ubuntu@24.04)" in message
    )
