"""OVN from the product's bundle: real OVS/OVN daemons on lab machines, driven by ``lab``.

One deployment for the module: ``bundles/lxd-cluster.yaml`` with the lab overlay → NB and
SB raft with 3 servers and one leader over SSL; LXD's own client certificate reaches the
northbound database; a container on the default OVN network gets its address from OVN's
DHCP and pings the OVN router. ``remove-unit`` of a central unit → 2 servers that still
accept writes; ``add-unit`` → 3 again, and a container on the new member (which joined
after the OVN network existed) gets an address and pings the router too. Bad config blocks
every unit, naming the options, and changes nothing.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from lab import hosts

from .operator import BUNDLE, OVERLAY, lab, model_root, status, subordinates, units

pytestmark = pytest.mark.ordered_steps

TIMEOUT = "900"
ROUTER = "10.10.0.1"  # network-ipv4-address in the bundle
CLIENT_TLS = [
    "-p",
    "/etc/ovn/key_host",
    "-c",
    "/etc/ovn/cert_host",
    "-C",
    "/etc/ovn/ovn-central.crt",
]


@pytest.fixture(scope="module")
def root():
    with model_root("lab-ovn-") as path:
        yield path


def raft(root: str, unit: str) -> dict[str, dict]:
    """The cluster-status action's results: NB and SB raft as the unit sees them."""
    return yaml.safe_load(lab(root, "run", unit, "cluster-status").stdout)


def servers(view: dict) -> list[str]:
    """Raft server addresses of one database."""
    return list(view["servers"].values())


def ovn_units(root: str) -> dict[str, dict]:
    return subordinates(root, "ovn-bridge")


def northbound_connection(root: str, unit: str) -> str:
    """The NB connection LXD uses, as ``unit``'s member shows it."""
    get = ["lxc", "config", "get", "network.ovn.northbound_connection"]
    return lab(root, "exec", unit, "--", *get).stdout.strip()


def nbctl(root: str, unit: str, *args: str, check: bool = True):
    """``ovn-nbctl`` on ``unit``'s machine with the connection and client files LXD uses."""
    connection = northbound_connection(root, unit)
    command = ["ovn-nbctl", f"--db={connection}", *CLIENT_TLS, "--timeout=30", *args]
    return lab(root, "exec", unit, "--", *command, check=check)


def central_units(root: str) -> list[str]:
    return [
        name for name, u in ovn_units(root).items() if "central" in u["workload-status"]["message"]
    ]


# -- steps -------------------------------------------------------------------------------


def test_deploy_forms_ovn_raft_and_lxd_networks(root: str):
    lab(root, "deploy", BUNDLE, "--overlay", OVERLAY, "--timeout", TIMEOUT)

    subordinates = ovn_units(root)
    assert sorted(subordinates) == ["ovn-bridge/0", "ovn-bridge/1", "ovn-bridge/2"]
    for name, unit in subordinates.items():
        assert unit["workload-status"] == {"current": "active", "message": "central + chassis"}, (
            name
        )
    nb, sb = (raft(root, "ovn-bridge/0")[db] for db in ("nb", "sb"))
    for view in (nb, sb):
        assert view["status"] == "cluster member"
        assert len(servers(view)) == 3
        assert all(s.startswith("ssl:198.18.0.") for s in servers(view)), view
    leaders = [raft(root, unit)[db]["role"] for unit in subordinates for db in ("nb", "sb")].count(
        "leader"
    )
    assert leaders == 2  # one NB leader and one SB leader
    networks = lab(root, "exec", "lxd/0", "--", "lxc", "network", "list", "-f", "csv").stdout
    found = {line.split(",")[0]: line.split(",") for line in networks.splitlines()}
    assert found["UPLINK"][1] == "physical" and found["UPLINK"][-1] == "CREATED", networks
    assert found["default"][1] == "ovn" and found["default"][-1] == "CREATED", networks


def test_lxd_client_certificate_reaches_the_northbound_database(root: str):
    listing = nbctl(root, "lxd/1", "ls-list").stdout
    assert "lxd-net" in listing  # the logical switch LXD made for the default network
    # the same request without a client certificate is refused by the server
    connection = northbound_connection(root, "lxd/1")
    assert connection.count("ssl:") == 3, connection
    bare = ["ovn-nbctl", f"--db={connection}", "--timeout=10", "ls-list"]
    assert lab(root, "exec", "lxd/1", "--", *bare, check=False).returncode != 0


def launch_on_ovn_and_ping_the_router(root: str, name: str, member: str) -> None:
    """Container ``name`` on ``member``, on the default OVN network: a lease, then a ping."""
    lab(
        root,
        *("exec", "lxd/0", "--", "lxc", "launch", "busybox", name),
        *("--network", "default", "--target", member),
    )
    inside = ["exec", "lxd/0", "--", "lxc", "exec", name, "--"]
    lease = lab(root, *inside, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-s", "/bin/true").stderr
    match = re.search(
        r"lease of (10\.10\.0\.\d+) obtained", lease + lab(root, *inside, "true").stdout
    )
    assert match, lease
    lab(root, *inside, "ip", "addr", "add", f"{match.group(1)}/24", "dev", "eth0")
    ping = lab(root, *inside, "ping", "-c", "3", "-W", "5", ROUTER, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout


def test_container_gets_its_address_from_ovn_and_pings_the_router(root: str):
    image = hosts.build_busybox_image(os.path.join(os.path.dirname(root), "busybox.tar.gz"))
    lab(root, "exec", "lxd/0", "--", "lxc", "image", "import", image, "--alias", "busybox")

    launch_on_ovn_and_ping_the_router(root, "c1", "lxd-1")


def test_bad_config_blocks_and_changes_nothing(root: str):
    # The lab checks what Juju checks (the option exists, its type): the values reach the
    # charm, which blocks naming each option and what is valid, and changes nothing.
    show = ["exec", "lxd/0", "--", "ovs-vsctl", "get", "open", ".", "external_ids"]
    before = lab(root, *show).stdout
    good = yaml.safe_load(lab(root, "config", "ovn-bridge").stdout)
    bad = {"bridge-mappings": "physnet1", "network-ipv4-address": "10.10.0.1"}

    lab(root, "config", "ovn-bridge", *(f"{k}={v}" for k, v in bad.items()), "--timeout", TIMEOUT)

    for name, unit in ovn_units(root).items():
        status = unit["workload-status"]
        assert status["current"] == "blocked", (name, status)
        for option, named in zip(bad, ("PHYSNET:BRIDGE", "needs a prefix length"), strict=True):
            assert f"invalid '{option}'" in status["message"] and named in status["message"]
    assert lab(root, *show).stdout == before

    lab(root, "config", "ovn-bridge", *(f"{k}={good[k]}" for k in bad), "--timeout", TIMEOUT)

    assert lab(root, *show).stdout == before
    for unit in ovn_units(root).values():
        assert unit["workload-status"] == {"current": "active", "message": "central + chassis"}


def test_removing_a_central_unit_leaves_two_servers_that_accept_writes(root: str):
    # its ovn-bridge unit goes with it
    (gone,) = [s for s in units(root)["lxd/2"]["subordinates"] if s.startswith("ovn-bridge/")]
    before = sorted(ovn_units(root))

    lab(root, "remove-unit", "lxd/2", "--timeout", TIMEOUT)

    assert sorted(ovn_units(root)) == [u for u in before if u != gone]
    survivor = min(ovn_units(root))
    for db in ("nb", "sb"):
        view = raft(root, survivor)[db]
        assert len(servers(view)) == 2, view
        assert view["leader"], view
    nbctl(root, "lxd/0", "ls-add", "after-removal")
    assert "after-removal" in nbctl(root, "lxd/1", "ls-list").stdout


def test_adding_a_unit_brings_raft_back_to_three(root: str):
    lab(root, "add-unit", "lxd", "--timeout", TIMEOUT)

    assert "ovn-bridge/3" in ovn_units(root)
    assert "ovn-bridge/3" in central_units(root) and len(central_units(root)) == 3
    for db in ("nb", "sb"):
        assert len(servers(raft(root, "ovn-bridge/3")[db])) == 3
    assert status(root)["applications"]["ovn-bridge"]["application-status"]["message"] == (
        "3 central units in raft"
    )
    members = lab(root, "exec", "lxd/0", "--", "lxc", "cluster", "list", "-f", "csv").stdout
    assert members.count("ONLINE") == 3
    # the OVN network works on the member that joined after it was created
    assert "lxd-3," in members
    launch_on_ovn_and_ping_the_router(root, "c3", "lxd-3")
