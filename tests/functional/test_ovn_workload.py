"""Workload tests of the ovn-bridge charm's ``ovn.py`` against REAL OVS 3.1 / OVN 23.03 daemons.

Three lab machines (network + mount namespaces, :mod:`lab.machines`; each has its own
``/etc/ovn``, ``/var/lib/ovn``, ``/run/ovn``, ``/etc/openvswitch``, ...). In each, a small
Python snippet calls ``ovn.py`` exactly as the charm would (:func:`call`), so the daemons
it starts belong to that machine and outlive the snippet. The tests are consecutive steps
on that shared state and run in file order; once one fails the later ones are skipped.

1. every machine gets a key, a certificate (SAN = its address) and the CA, written by
   ``write_tls_files`` (only on change, key 0600).
2. m0 bootstraps the NB and SB raft clusters, m1 and m2 join (peers = all the others):
   three servers and one leader in each cluster, everything over SSL.
3. ovn-northd runs on all three; a client with its certificate writes and reads the NB
   database over SSL.
4. Open vSwitch (netdev datapath: there is no kernel module here) is configured as a
   chassis; a foreign ``ovn-bridge-mappings`` entry survives every change; a bridge that
   fails in the datapath is reported by name.
5. ovn-controller on all three: each chassis shows up in the SB database.
6. m2 leaves: two servers remain and the databases still accept writes.
7. m2 joins again from scratch: three servers, and it has the data.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from charm_common.certs import generate_ca, generate_private_key, make_csr, sign_csr
from lab import machines
from lab.machines import Lab, Machine
from tests.lab.conftest import machine_lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNIPPET_PATH = f"{REPO}/charms/ovn-bridge/src:{REPO}/common"
TOOLS = (
    "/usr/share/openvswitch/scripts/ovs-ctl",
    "/usr/share/ovn/scripts/ovn-ctl",
    "/usr/bin/ovn-nbctl",
    "/usr/bin/ovn-sbctl",
)
CLIENT_TLS = [
    "-p",
    "/etc/ovn/key_host",
    "-c",
    "/etc/ovn/cert_host",
    "-C",
    "/etc/ovn/ovn-central.crt",
]


def _skip_reason() -> str | None:
    reason = machines.unavailable_reason()
    if reason:
        return reason
    missing = [tool for tool in TOOLS if not os.access(tool, os.X_OK)]
    if missing:
        packages = "openvswitch-switch ovn-central ovn-host"
        return f"{', '.join(missing)} missing (apt-get install {packages})"
    return None


pytestmark = [
    pytest.mark.ordered_steps,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]

# Runs inside a machine: ``args["code"]`` with ``ovn``, ``args`` in scope; prints ``result``.
RUNNER = """
import json, sys
import ovn
args = json.load(sys.stdin)
scope = {"ovn": ovn, "args": args, "result": None}
exec(args["code"], scope)
print(json.dumps(scope["result"], default=str))
"""

# Both databases' RaftStatus on this member, as plain data.
STATUS = (
    "import dataclasses\n"
    "result = {db: dataclasses.asdict(ovn.Central().status(db)) for db in ('nb', 'sb')}\n"
)


def call(machine: Machine, code: str, **args: Any) -> Any:
    """Run ``code`` (which sets ``result``) in ``machine`` with ``ovn`` imported."""
    env = dict(os.environ, PYTHONPATH=SNIPPET_PATH)
    done = machine.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps({"code": code, **args}),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, f"{machine.name}: {done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def sh(machine: Machine, *argv: str) -> str:
    """A command's stdout inside ``machine`` (it must succeed)."""
    done = machine.run(list(argv), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{machine.name}: {' '.join(argv)}: {done.stderr}"
    return done.stdout


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until ``predicate()`` is truthy; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def remote(lab: Lab, port: int, names: tuple[str, ...] = ("m0", "m1", "m2")) -> str:
    return ",".join(f"ssl:{lab[name].address}:{port}" for name in names)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with machine_lab("ovn-workload-", ["m0", "m1", "m2"]) as made:
        yield made


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return generate_ca("ovn-workload-test-ca")


# ---------------------------------------------------------------------------- 1. TLS


def test_tls_files_written_once(lab: Lab, ca: tuple[str, str]) -> None:
    ca_key, ca_cert = ca
    write = "result = ovn.write_tls_files(ovn.TLSFiles(), args['key'], args['cert'], args['ca'])"
    for machine in lab.machines():
        key = generate_private_key()
        cert = sign_csr(make_csr(key, machine.name, [machine.address]), ca_key, ca_cert)
        assert call(machine, write, key=key, cert=cert, ca=ca_cert) is True
        assert call(machine, write, key=key, cert=cert, ca=ca_cert) is False
        # The key stays on its machine: the cert alone (key None) changes nothing.
        assert call(machine, write, key=None, cert=cert, ca=ca_cert) is False
        assert call(machine, "result = ovn.read_private_key(ovn.TLSFiles())") == key
        modes = {
            name: stat.S_IMODE(os.stat(machine.host_path(f"/etc/ovn/{name}")).st_mode)
            for name in ("key_host", "cert_host", "ovn-central.crt")
        }
        assert modes == {"key_host": 0o600, "cert_host": 0o644, "ovn-central.crt": 0o644}


# ---------------------------------------------------------------------------- 2. raft

ENSURE = (
    "central = ovn.Central()\n"
    "result = central.ensure(args['address'], args['peers'], args['bootstrap'], ovn.TLSFiles())\n"
)


def test_bootstrap_and_join_form_three_member_clusters(lab: Lab) -> None:
    m0, m1, m2 = lab.machines()
    started = time.monotonic()
    assert call(m0, ENSURE, address=m0.address, peers=[], bootstrap=True) is True
    for machine in (m1, m2):
        peers = [m.address for m in lab.machines() if m.name != machine.name]
        assert call(machine, ENSURE, address=machine.address, peers=peers, bootstrap=False)

    def formed() -> bool:
        statuses = [call(m, STATUS) for m in (m0, m1, m2)]
        return all(
            len(status[db]["servers"]) == 3 and status[db]["status"] == "cluster member"
            for status in statuses
            for db in ("nb", "sb")
        )

    assert wait_for(formed), call(m0, STATUS)
    sys.stderr.write(f"\n[ovn] 3-member NB+SB raft in {time.monotonic() - started:.1f} s\n")
    statuses = {m.name: call(m, STATUS) for m in lab.machines()}
    for db in ("nb", "sb"):
        port = 6643 if db == "nb" else 6644
        seen = [statuses[name][db] for name in ("m0", "m1", "m2")]
        assert len({s["cluster_id"] for s in seen}) == 1
        assert [s["role"] for s in seen].count("leader") == 1
        leader = next(s["server_id"] for s in seen if s["role"] == "leader")
        assert all(s["leader"] in ("self", leader) for s in seen)
        assert {srv["address"] for srv in seen[0]["servers"]} == {
            f"ssl:{m.address}:{port}" for m in lab.machines()
        }
    # Running: nothing to do the second time.
    assert (
        call(m1, ENSURE, address=m1.address, peers=[m0.address, m2.address], bootstrap=False)
        is False
    )
    assert call(m0, "result = ovn.Central().has_database() and ovn.Central().running()") is True


def test_joining_without_peers_is_refused(lab: Lab) -> None:
    m2 = lab["m2"]
    code = (
        "central = ovn.Central()\n"
        "central.db_dir = '/var/lib/ovn/elsewhere'\n"
        "try:\n"
        "    central.ensure(args['address'], [], False, ovn.TLSFiles())\n"
        "except ovn.OVNError as exc:\n"
        "    result = str(exc)\n"
    )
    assert "no peer" in call(m2, code, address=m2.address)


# ---------------------------------------------------------------------------- 3. northd, NB


def test_northd_runs_and_clients_write_over_ssl(lab: Lab) -> None:
    addresses = [m.address for m in lab.machines()]
    code = "result = ovn.Central().ensure_northd(args['a'], args['a'], ovn.TLSFiles())"
    for machine in lab.machines():
        assert call(machine, code, a=addresses) is True
        assert call(machine, code, a=list(reversed(addresses))) is False
        assert call(machine, "result = ovn.Launcher().running(ovn.NORTHD)") is True
    nbctl = ["/usr/bin/ovn-nbctl", "--timeout=20", f"--db={remote(lab, 6641)}", *CLIENT_TLS]
    sh(lab["m1"], *nbctl, "ls-add", "sw-test")
    assert "sw-test" in sh(lab["m2"], *nbctl, "ls-list")


# ---------------------------------------------------------------------------- 4. switch

CONFIGURE = (
    "chassis = ovn.ChassisConfig(system_id=args['name'], sb_remote=args['sb'],"
    " encap_ip=args['address'], datapath_type=args['datapath'],"
    " bridge_mappings=args['mappings'], bridge_interfaces=args['interfaces'])\n"
    "switch = ovn.Switch()\n"
    "try:\n"
    "    result = {'changed': switch.configure(chassis)}\n"
    "except ovn.OVNError as exc:\n"
    "    result = {'error': str(exc)}\n"
    "result.update(bridges=switch.bridges(), ids=switch.external_ids())\n"
)


def configure(lab: Lab, machine: Machine, **overrides: Any) -> dict[str, Any]:
    args = {
        "name": machine.name,
        "sb": remote(lab, 6642),
        "address": machine.address,
        "datapath": "netdev",
        "mappings": {"physnet1": "br-uplink"},
        "interfaces": {"br-uplink": []},
        **overrides,
    }
    return call(machine, CONFIGURE, **args)


def test_switch_runs_and_is_configured_as_a_chassis(lab: Lab) -> None:
    for machine in lab.machines():
        assert call(machine, "result = ovn.Switch().ensure_running()") is True
        assert call(machine, "result = ovn.Switch().ensure_running()") is False
        done = configure(lab, machine)
        assert done["changed"] is True, done
        assert done["bridges"] == {"br-uplink": "netdev"}
        assert configure(lab, machine)["changed"] is False
    ids = configure(lab, lab["m1"])["ids"]
    assert {k: ids[k] for k in ("system-id", "ovn-encap-type", "ovn-encap-ip")} == {
        "system-id": "m1",
        "ovn-encap-type": "geneve",
        "ovn-encap-ip": lab["m1"].address,
    }
    assert ids["ovn-remote"] == remote(lab, 6642)
    assert ids["ovn-bridge-datapath-type"] == "netdev"
    assert ids["ovn-bridge-mappings"] == "physnet1:br-uplink"


def test_bridge_mappings_and_ports_merge_with_foreign_ones(lab: Lab) -> None:
    m0 = lab["m0"]
    vsctl = "/usr/bin/ovs-vsctl"
    # As LXD does: its own entry appended to ovn-bridge-mappings.
    sh(
        m0,
        vsctl,
        "set",
        "Open_vSwitch",
        ".",
        'external_ids:ovn-bridge-mappings="physnet1:br-uplink,UPLINK:lxdovn1"',
    )
    sh(m0, "/usr/sbin/ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0-peer")
    sh(m0, "/usr/sbin/ip", "link", "add", "up1", "type", "veth", "peer", "name", "up1-peer")
    done = configure(lab, m0, interfaces={"br-uplink": ["up0", "up1"]})
    assert done["changed"] is True, done
    assert sh(m0, vsctl, "list-ports", "br-uplink").split() == ["up0", "up1"]
    assert done["ids"]["ovn-bridge-mappings"] == "physnet1:br-uplink,UPLINK:lxdovn1"
    # A port plugged by someone else stays; one this module plugged and no longer wants goes.
    sh(m0, "/usr/sbin/ip", "link", "add", "other0", "type", "veth", "peer", "name", "other0-p")
    sh(m0, vsctl, "add-port", "br-uplink", "other0")
    done = configure(
        lab, m0, mappings={"physnet2": "br-ex"}, interfaces={"br-uplink": ["up1"], "br-ex": []}
    )
    assert done["changed"] is True, done
    assert sorted(sh(m0, vsctl, "list-ports", "br-uplink").split()) == ["other0", "up1"]
    assert done["bridges"] == {"br-uplink": "netdev", "br-ex": "netdev"}
    assert done["ids"]["ovn-bridge-mappings"] == "UPLINK:lxdovn1,physnet2:br-ex"
    # Back to the chassis the other steps expect (physnet1), the foreign entry still kept.
    done = configure(lab, m0)
    assert done["ids"]["ovn-bridge-mappings"] == "UPLINK:lxdovn1,physnet1:br-uplink"
    assert sorted(sh(m0, vsctl, "list-ports", "br-uplink").split()) == ["other0"]


def test_a_bridge_failing_in_the_datapath_is_named(lab: Lab) -> None:
    m2 = lab["m2"]
    # No openvswitch kernel module here: the system datapath fails, ovs-vsctl exits 0.
    done = configure(lab, m2, datapath="system", mappings={"physnet9": "br-sys"}, interfaces={})
    assert "br-sys" in done["error"] and "system datapath" in done["error"], done
    done = configure(lab, m2, interfaces={"br-uplink": ["nosuch0"]})
    assert "bridge br-uplink: interface nosuch0: could not open network device" in done["error"]
    done = configure(lab, m2)
    assert done["changed"] is True and "error" not in done, done
    assert done["ids"]["ovn-bridge-datapath-type"] == "netdev"
    assert done["ids"]["ovn-bridge-mappings"] == "physnet1:br-uplink"


# ---------------------------------------------------------------------------- 5. controller


def test_every_chassis_registers_in_the_sb_database(lab: Lab) -> None:
    code = "result = ovn.Controller().ensure_running(ovn.TLSFiles())"
    started = time.monotonic()
    for machine in lab.machines():
        assert call(machine, code) is True
        assert call(machine, code) is False
    sbctl = ["/usr/bin/ovn-sbctl", "--timeout=20", f"--db={remote(lab, 6642)}", *CLIENT_TLS]

    def chassis() -> set[str]:
        out = sh(lab["m0"], *sbctl, "--bare", "--columns=name", "list", "Chassis")
        return set(out.split())

    assert wait_for(lambda: chassis() == {"m0", "m1", "m2"}), chassis()
    sys.stderr.write(f"\n[ovn] 3 chassis in the SB in {time.monotonic() - started:.1f} s\n")
    show = sh(lab["m0"], *sbctl, "show")
    assert f'ip: "{lab["m1"].address}"' in show, show
    # br-int was created by ovn-controller with the configured datapath type.
    assert call(lab["m0"], "result = ovn.Switch().bridges()")["br-int"] == "netdev"


# ---------------------------------------------------------------------------- 6./7. leave, rejoin


def test_a_restarted_member_gets_its_listeners_back(lab: Lab) -> None:
    m0, m1, m2 = lab.machines()
    ctl = ["/usr/bin/ovn-appctl", "-t", "/var/run/ovn/ovnnb_db.ctl"]
    assert f"pssl:6641:{m1.address}" in sh(m1, *ctl, "ovsdb-server/list-remotes").split()
    call(m1, "ovn.Central().stop()")
    peers = [m0.address, m2.address]
    assert call(m1, ENSURE, address=m1.address, peers=peers, bootstrap=False) is True
    # Listeners added at runtime do not survive a restart: ensure() put them back.
    assert f"pssl:6641:{m1.address}" in sh(m1, *ctl, "ovsdb-server/list-remotes").split()
    assert wait_for(lambda: call(m1, STATUS)["sb"]["status"] == "cluster member")
    code = "result = ovn.Central().ensure_northd(args['a'], args['a'], ovn.TLSFiles())"
    assert call(m1, code, a=[m.address for m in lab.machines()]) is True


def test_leaving_member_leaves_two_servers_that_accept_writes(lab: Lab) -> None:
    m0, m1, m2 = lab.machines()
    started = time.monotonic()
    assert call(m2, "result = ovn.Central().leave()") is True
    sys.stderr.write(f"\n[ovn] m2 left NB+SB in {time.monotonic() - started:.1f} s\n")
    assert call(m2, "c = ovn.Central()\nresult = [c.has_database(), c.running()]") == [
        False,
        False,
    ]
    assert call(m2, "result = ovn.Launcher().running(ovn.NORTHD)") is False
    assert call(m2, "result = ovn.Central().leave()") is False
    status = call(m0, STATUS)
    for db, port in (("nb", 6643), ("sb", 6644)):
        assert {s["address"] for s in status[db]["servers"]} == {
            f"ssl:{m0.address}:{port}",
            f"ssl:{m1.address}:{port}",
        }
    nbctl = [
        "/usr/bin/ovn-nbctl",
        "--timeout=20",
        f"--db={remote(lab, 6641, ('m0', 'm1'))}",
        *CLIENT_TLS,
    ]
    sh(m0, *nbctl, "ls-add", "sw-after-leave")
    assert "sw-after-leave" in sh(m1, *nbctl, "ls-list")


def test_kicking_an_unknown_server_says_so(lab: Lab) -> None:
    code = (
        "try:\n"
        "    ovn.Central().kick('nb', 'ffff')\n"
        "except ovn.OVNError as exc:\n"
        "    result = str(exc)\n"
    )
    assert "unknown server" in call(lab["m0"], code)


def test_a_fresh_join_brings_back_three_servers(lab: Lab) -> None:
    m0, m1, m2 = lab.machines()
    peers = [m0.address, m1.address]
    assert call(m2, ENSURE, address=m2.address, peers=peers, bootstrap=False) is True

    def three() -> bool:
        status = call(m0, STATUS)
        return all(len(status[db]["servers"]) == 3 for db in ("nb", "sb")) and all(
            s["status"] == "cluster member" for s in call(m2, STATUS).values()
        )

    assert wait_for(three), call(m0, STATUS)
    # m2 has the data written while it was away (read from its own server).
    nbctl = [
        "/usr/bin/ovn-nbctl",
        "--timeout=20",
        "--no-leader-only",
        f"--db=ssl:{m2.address}:6641",
    ]
    assert "sw-after-leave" in sh(m2, *nbctl, *CLIENT_TLS, "ls-list")
    result = call(m2, "result = ovn.Central().status('sb').as_dict()")
    assert result["status"] == "cluster member" and len(result["servers"]) == 3
