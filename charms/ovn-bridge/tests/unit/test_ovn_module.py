"""Unit tests of ``src/ovn.py``: no daemon, package manager or systemd is touched.

``ovn._run`` is replaced by :class:`FakeRun` (records every argv, answers per command);
``_run`` itself is tested with harmless real commands. The ``cluster/status`` texts are
real output of OVN 23.03 captured in the lab (tests/functional/test_ovn_workload.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Callable
from typing import Any

import pytest

import ovn
from ovn import (
    OVN_APPCTL,
    OVN_CTL,
    OVS_CTL,
    OVS_VSCTL,
    OVSDB_TOOL,
    SYSTEMCTL,
    ChassisConfig,
    OVNError,
    OVNUnavailableError,
    RaftServer,
    TLSFiles,
)

# -- real cluster/status output (OVN 23.03.1, Debian 12) -------------------------------------

LEADER_NB = """\
fe8d
Name: OVN_Northbound
Cluster ID: 976a (976a3a88-a6ad-4950-9922-12ae32eab616)
Server ID: fe8d (fe8dd994-23cc-4e95-a480-493852fcb38b)
Address: ssl:198.18.0.10:6643
Status: cluster member
Role: leader
Term: 1
Leader: self
Vote: self

Last Election started 1728 ms ago, reason: timeout
Last Election won: 1728 ms ago
Election timer: 1000
Log: [2, 6]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: <-86d1 ->86d1 <-0f4c ->0f4c
Disconnections: 0
Servers:
    fe8d (fe8d at ssl:198.18.0.10:6643) (self) next_index=2 match_index=5
    0f4c (0f4c at ssl:198.18.0.12:6643) next_index=6 match_index=5 last msg 292 ms ago
    86d1 (86d1 at ssl:198.18.0.11:6643) next_index=6 match_index=5 last msg 292 ms ago
"""

FOLLOWER_SB = """\
06e2
Name: OVN_Southbound
Cluster ID: 17da (17da475b-913f-41f0-8896-467405f7ae2d)
Server ID: 06e2 (06e2ce31-a0ef-43dd-b9cc-6d0fa2aae289)
Address: ssl:198.18.0.11:6644
Status: cluster member
Role: follower
Term: 1
Leader: a9b6
Vote: unknown

Election timer: 1000
Log: [2, 6]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: ->0000 <-a9b6 <-d799 ->d799
Disconnections: 1
Servers:
    06e2 (06e2 at ssl:198.18.0.11:6644) (self)
    d799 (d799 at ssl:198.18.0.12:6644)
    a9b6 (a9b6 at ssl:198.18.0.10:6644) last msg 193 ms ago
"""

# A joiner whose only remote does not answer.
JOINING_NB = """\
db86
Name: OVN_Northbound
Cluster ID: not yet known
Server ID: db86 (db860d73-ca74-4004-8f77-8130e35e454b)
Address: ssl:198.18.0.10:6643
Status: joining cluster
Remotes for joining: ssl:198.18.0.99:6643
Role: follower
Term: 0
Leader: unknown
Vote: unknown

Election timer: 1000
Log: [1, 1]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: (->0000)
Disconnections: 0
Servers:
"""

# The only member asked to leave: it stays "leaving cluster" for good.
LEAVING_ALONE_NB = """\
56a4
Name: OVN_Northbound
Cluster ID: b6f5 (b6f51718-0d12-45b0-854c-9e0ffd128316)
Server ID: 56a4 (56a4c2fe-e1d1-430d-a3ab-a94cfad9b8e7)
Address: ssl:198.18.0.12:6643
Status: leaving cluster
Role: follower
Term: 1
Leader: unknown
Vote: self

Last Election started 2311 ms ago, reason: timeout
Last Election won: 2311 ms ago
Election timer: 1000
Log: [2, 4]
Entries not yet committed: 0
Entries not yet applied: 0
Connections:
Disconnections: 0
Servers:
    56a4 (56a4 at ssl:198.18.0.12:6643) (self)
"""

TLS = TLSFiles(key="/k/key", cert="/k/cert", ca_cert="/k/ca")


class FakeRun:
    """Stands in for ``ovn._run``: records argv; answers with the first matching handler."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.handlers: list[tuple[tuple[str, ...], Any]] = []

    def on(self, *prefix: str, answer: Any = "") -> None:
        """Answer argv starting with ``prefix``: text, an exception, or a callable(argv)."""
        self.handlers.insert(0, (prefix, answer))

    def __call__(self, argv, timeout=60, env=None) -> str:
        argv = list(argv)
        self.calls.append(argv)
        for prefix, answer in self.handlers:
            if tuple(argv[: len(prefix)]) == prefix:
                if isinstance(answer, BaseException):
                    raise answer
                return answer(argv) if callable(answer) else answer
        return ""

    def matching(self, *prefix: str) -> list[list[str]]:
        return [argv for argv in self.calls if tuple(argv[: len(prefix)]) == prefix]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(ovn, "_run", fake)
    return fake


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovn.time, "sleep", lambda _s: None)


# ---------------------------------------------------------------------------- _run


def test_run_returns_stdout() -> None:
    assert ovn._run(["/bin/echo", "hello"]) == "hello\n"


def test_run_raises_with_the_stderr_tail() -> None:
    with pytest.raises(OVNError, match="sh -c .* failed: boom") as raised:
        ovn._run(["/bin/sh", "-c", "echo boom >&2; exit 3"])
    assert type(raised.value) is OVNError


def test_run_says_unavailable_when_the_daemon_is_not_there() -> None:
    argv = ["/bin/sh", "-c", "echo 'ovn-appctl: cannot connect to \"/x.ctl\"' >&2; exit 1"]
    with pytest.raises(OVNUnavailableError, match="cannot connect"):
        ovn._run(argv)


@pytest.mark.parametrize(
    ("argv", "timeout", "match"),
    [(["/nonexistent/tool"], 5, "tool failed"), (["/bin/sleep", "5"], 0.1, "timed out")],
)
def test_run_turns_os_errors_and_timeouts_into_ovn_errors(argv, timeout, match) -> None:
    with pytest.raises(OVNError, match=match):
        ovn._run(argv, timeout=timeout)


# ---------------------------------------------------------------------------- TLS files


def test_tls_files_in_dir_keeps_the_names() -> None:
    assert TLSFiles.in_dir("/var/snap/lxd/common/ovn") == TLSFiles(
        key="/var/snap/lxd/common/ovn/key_host",
        cert="/var/snap/lxd/common/ovn/cert_host",
        ca_cert="/var/snap/lxd/common/ovn/ovn-central.crt",
    )


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_tls_files_modes_and_only_on_change(tmp_path) -> None:
    files = TLSFiles.in_dir(str(tmp_path / "ovn"))
    assert ovn.write_tls_files(files, "KEY", "CERT", "CA") is True
    assert (_mode(files.key), _mode(files.cert), _mode(files.ca_cert)) == (0o600, 0o644, 0o644)
    inode = os.stat(files.cert).st_ino
    assert ovn.write_tls_files(files, "KEY", "CERT", "CA") is False
    assert os.stat(files.cert).st_ino == inode  # not rewritten
    # A renewed certificate: only that file is replaced (atomically: a new inode).
    assert ovn.write_tls_files(files, None, "CERT2", "CA") is True
    assert os.stat(files.cert).st_ino != inode
    assert ovn.read_private_key(files) == "KEY"
    assert sorted(os.listdir(tmp_path / "ovn")) == ["cert_host", "key_host", "ovn-central.crt"]


def test_write_tls_files_fixes_a_wrong_mode_and_leaves_a_missing_key_missing(tmp_path) -> None:
    files = TLSFiles.in_dir(str(tmp_path))
    ovn.write_tls_files(files, "KEY", "CERT", "CA")
    os.chmod(files.key, 0o644)
    assert ovn.write_tls_files(files, "KEY", "CERT", "CA") is True
    assert _mode(files.key) == 0o600
    other = TLSFiles.in_dir(str(tmp_path / "other"))
    ovn.write_tls_files(other, None, "CERT", "CA")
    assert ovn.read_private_key(other) is None


def test_ensure_private_key_generates_once(tmp_path) -> None:
    files = TLSFiles.in_dir(str(tmp_path))
    keys = iter(["KEY1", "KEY2"])
    assert ovn.ensure_private_key(files, lambda: next(keys)) == "KEY1"
    assert _mode(files.key) == 0o600
    assert ovn.ensure_private_key(files, lambda: next(keys)) == "KEY1"


# ---------------------------------------------------------------------------- addresses


def test_connection_string_keeps_order_and_brackets_ipv6() -> None:
    assert ovn.connection_string(["10.0.0.2", "fd00::1", "host-a"], 6641) == (
        "ssl:10.0.0.2:6641,ssl:[fd00::1]:6641,ssl:host-a:6641"
    )
    assert ovn.connection_string([], 6642) == ""


# ---------------------------------------------------------------------------- cluster/status


def test_parse_cluster_status_of_a_leader() -> None:
    status = ovn.parse_cluster_status("nb", LEADER_NB)
    assert status == ovn.RaftStatus(
        db="nb",
        cluster_id="976a3a88-a6ad-4950-9922-12ae32eab616",
        server_id="fe8d",
        address="ssl:198.18.0.10:6643",
        status="cluster member",
        role="leader",
        term=1,
        leader="self",
        servers=(
            RaftServer("fe8d", "ssl:198.18.0.10:6643"),
            RaftServer("0f4c", "ssl:198.18.0.12:6643"),
            RaftServer("86d1", "ssl:198.18.0.11:6643"),
        ),
    )
    assert status.is_member


def test_parse_cluster_status_of_a_follower() -> None:
    status = ovn.parse_cluster_status("sb", FOLLOWER_SB)
    assert (status.role, status.leader, status.server_id) == ("follower", "a9b6", "06e2")
    assert [s.sid for s in status.servers] == ["06e2", "d799", "a9b6"]
    assert status.servers[1].address == "ssl:198.18.0.12:6644"


def test_parse_cluster_status_of_a_joiner_and_of_a_lone_leaver() -> None:
    joining = ovn.parse_cluster_status("nb", JOINING_NB)
    assert (joining.status, joining.cluster_id, joining.leader) == ("joining cluster", "", "")
    assert joining.servers == () and joining.term == 0 and not joining.is_member
    leaving = ovn.parse_cluster_status("nb", LEAVING_ALONE_NB)
    assert (leaving.status, leaving.leader) == ("leaving cluster", "")
    assert leaving.servers == (RaftServer("56a4", "ssl:198.18.0.12:6643"),)


def test_parse_cluster_status_rejects_other_text() -> None:
    with pytest.raises(OVNError, match="unexpected nb cluster/status output"):
        ovn.parse_cluster_status("nb", "unknown cluster\n")


def test_raft_status_as_dict_is_usable_as_action_results() -> None:
    result = ovn.parse_cluster_status("sb", FOLLOWER_SB).as_dict()
    assert result == {
        "db": "sb",
        "cluster-id": "17da475b-913f-41f0-8896-467405f7ae2d",
        "server-id": "06e2",
        "address": "ssl:198.18.0.11:6644",
        "status": "cluster member",
        "role": "follower",
        "term": "1",
        "leader": "a9b6",
        "servers": {
            "06e2": "ssl:198.18.0.11:6644",
            "d799": "ssl:198.18.0.12:6644",
            "a9b6": "ssl:198.18.0.10:6644",
        },
    }


# ---------------------------------------------------------------------------- bridge mappings


@pytest.mark.parametrize(
    ("current", "owned", "desired", "merged"),
    [
        # first time: nothing there
        ("", "", {"physnet1": "br-ex"}, {"physnet1": "br-ex"}),
        # LXD's entry stays, ours follows
        ("UPLINK:lxdovn1", "", {"physnet1": "br-ex"}, {"UPLINK": "lxdovn1", "physnet1": "br-ex"}),
        # ours changed bridge; theirs stays in place
        (
            "physnet1:br-ex,UPLINK:lxdovn1",
            "physnet1:br-ex",
            {"physnet1": "br-new"},
            {"UPLINK": "lxdovn1", "physnet1": "br-new"},
        ),
        # a mapping we no longer want goes; theirs stays
        ("physnet1:br-ex,UPLINK:lxdovn1", "physnet1:br-ex", {}, {"UPLINK": "lxdovn1"}),
        # an entry someone else changed after us is theirs now
        ("physnet1:br-other", "physnet1:br-ex", {}, {"physnet1": "br-other"}),
        # ours wins over theirs for the same physical network
        ("physnet1:br-theirs", "", {"physnet1": "br-ex"}, {"physnet1": "br-ex"}),
        # malformed entries are dropped
        ("junk,:x,physnet2:", "", {"a": "b"}, {"a": "b"}),
    ],
)
def test_merge_bridge_mappings(current, owned, desired, merged) -> None:
    assert ovn.merge_bridge_mappings(current, owned, desired) == merged


def test_mappings_format_round_trips() -> None:
    mappings = {"UPLINK": "lxdovn1", "physnet1": "br-ex"}
    assert ovn.format_mappings(mappings) == "UPLINK:lxdovn1,physnet1:br-ex"
    assert ovn.parse_mappings(ovn.format_mappings(mappings)) == mappings


# ---------------------------------------------------------------------------- options


def test_central_db_options_of_the_bootstrapping_member() -> None:
    assert ovn.central_db_options("10.0.0.1", None, TLS) == [
        "--db-nb-cluster-local-addr=10.0.0.1",
        "--db-nb-cluster-local-proto=ssl",
        "--db-nb-use-remote-in-db=no",
        "--ovn-nb-db-ssl-key=/k/key",
        "--ovn-nb-db-ssl-cert=/k/cert",
        "--ovn-nb-db-ssl-ca-cert=/k/ca",
        "--db-sb-cluster-local-addr=10.0.0.1",
        "--db-sb-cluster-local-proto=ssl",
        "--db-sb-use-remote-in-db=no",
        "--ovn-sb-db-ssl-key=/k/key",
        "--ovn-sb-db-ssl-cert=/k/cert",
        "--ovn-sb-db-ssl-ca-cert=/k/ca",
    ]


def test_central_db_options_of_a_joiner_name_a_remote_ipv6_in_brackets() -> None:
    options = ovn.central_db_options("fd00::2", "fd00::1", TLS)
    assert "--db-nb-cluster-local-addr=[fd00::2]" in options
    assert "--db-sb-cluster-remote-addr=[fd00::1]" in options
    assert "--db-sb-cluster-remote-proto=ssl" in options


def test_northd_and_controller_options() -> None:
    assert ovn.northd_options(TLS) == [
        "--ovn-northd-ssl-key=/k/key",
        "--ovn-northd-ssl-cert=/k/cert",
        "--ovn-northd-ssl-ca-cert=/k/ca",
    ]
    assert ovn.northd_db_params("ssl:a:6641", "ssl:a:6642") == (
        "--ovnnb-db=ssl:a:6641 --ovnsb-db=ssl:a:6642\n"
    )
    assert ovn.controller_options(TLS) == [
        "--ovn-controller-ssl-key=/k/key",
        "--ovn-controller-ssl-cert=/k/cert",
        "--ovn-controller-ssl-ca-cert=/k/ca",
    ]


def test_merge_ctl_opts_replaces_only_the_daemons_own_options() -> None:
    existing = ["--db-nb-cluster-local-addr=old", "--ovn-northd-ssl-key=/k", "--db-sb-x=1"]
    merged = ovn.merge_ctl_opts(
        existing, ovn.NB_DB.prefixes, ["--db-nb-cluster-local-addr=new", "--db-sb-x=2"]
    )
    assert merged == ["--ovn-northd-ssl-key=/k", "--db-sb-x=1", "--db-nb-cluster-local-addr=new"]


def test_defaults_file_text_refuses_what_it_cannot_quote() -> None:
    assert ovn.defaults_file_text(["--a=1", "--b=2"]).endswith('OVN_CTL_OPTS="--a=1 --b=2"\n')
    with pytest.raises(OVNError, match="space or quote"):
        ovn.defaults_file_text(["--ovn-northd-ssl-key=/my key"])


# ---------------------------------------------------------------------------- launcher


def _fake_daemon(tmp_path, daemon: ovn.Daemon) -> ovn.Daemon:
    """``daemon`` with its defaults file under ``tmp_path``."""
    return dataclasses.replace(daemon, defaults=str(tmp_path / os.path.basename(daemon.defaults)))


@pytest.fixture
def always_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovn.Launcher, "running", lambda self, daemon: True)


def test_direct_launcher_runs_the_ctl_script(run: FakeRun, always_running: None) -> None:
    launcher = ovn.Launcher(systemd=False)
    launcher.start(ovn.NORTHD, ["--ovn-northd-ssl-key=/k"])
    launcher.start(ovn.CONTROLLER, ["--ovn-controller-ssl-key=/k"], restart=True)
    launcher.start(ovn.OPENVSWITCH)
    assert run.calls == [
        [OVN_CTL, "--ovn-manage-ovsdb=no", "--ovn-northd-ssl-key=/k", "start_northd"],
        [OVN_CTL, "stop_controller"],
        [OVN_CTL, "--ovn-controller-ssl-key=/k", "start_controller"],
        [OVS_CTL, "--system-id=random", "--no-record-hostname", "start"],
    ]


def test_systemd_launcher_writes_the_defaults_file_and_restarts_the_unit(
    run: FakeRun, always_running: None, tmp_path
) -> None:
    launcher = ovn.Launcher(systemd=True)
    nb, sb, northd = (_fake_daemon(tmp_path, d) for d in (ovn.NB_DB, ovn.SB_DB, ovn.NORTHD))
    options = ovn.central_db_options("10.0.0.1", None, TLS)
    launcher.start(nb, options)
    launcher.start(sb, options)
    launcher.start(northd, ovn.northd_options(TLS))
    assert run.calls == [
        [SYSTEMCTL, "restart", "ovn-ovsdb-server-nb"],
        [SYSTEMCTL, "restart", "ovn-ovsdb-server-sb"],
        [SYSTEMCTL, "restart", "ovn-northd"],
    ]
    # One file for the three units: each daemon's options, the same ones ovn-ctl gets.
    written = ovn._read_ctl_opts(nb.defaults)
    assert written == options + ovn.northd_options(TLS)
    launcher.stop(northd)
    launcher.clear_options(nb)
    launcher.clear_options(sb)
    assert run.calls[-1] == [SYSTEMCTL, "stop", "ovn-northd"]
    assert ovn._read_ctl_opts(nb.defaults) == ovn.northd_options(TLS)


def test_systemd_launcher_for_the_controller(run: FakeRun, always_running: None, tmp_path) -> None:
    controller = _fake_daemon(tmp_path, ovn.CONTROLLER)
    ovn.Launcher(systemd=True).start(controller, ovn.controller_options(TLS), restart=True)
    assert run.calls == [[SYSTEMCTL, "restart", "ovn-controller"]]
    with open(controller.defaults) as f:
        assert f.read().splitlines()[-1] == (
            'OVN_CTL_OPTS="--ovn-controller-ssl-key=/k/key --ovn-controller-ssl-cert=/k/cert'
            ' --ovn-controller-ssl-ca-cert=/k/ca"'
        )


def test_systemd_is_detected_once_for_every_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovn.os.path, "isdir", lambda path: path == ovn.SYSTEMD_DIR)
    assert ovn.Switch().launcher.systemd and ovn.Central().launcher.systemd
    assert ovn.Controller().launcher.systemd
    monkeypatch.setattr(ovn.os.path, "isdir", lambda path: False)
    assert not ovn.Central().launcher.systemd
    assert ovn.Central(systemd=True).launcher.systemd


def test_launcher_waits_for_the_daemon_and_gives_up(
    run: FakeRun, no_sleep: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ovn.Launcher, "running", lambda self, daemon: False)
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(ovn.time, "monotonic", lambda: next(clock))
    with pytest.raises(OVNUnavailableError, match="ovn-northd did not start"):
        ovn.Launcher(systemd=False).start(ovn.NORTHD)


def _proc(tmp_path, pid: int, comm: str, state: str = "S", argv: tuple[str, ...] = ()) -> None:
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({comm}) {state} 1 2 3")
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_pids_come_from_pidfiles_of_live_processes(tmp_path) -> None:
    _proc(tmp_path, 10, "ovn-northd", argv=("ovn-northd", "--ovnnb-db=x"))
    _proc(tmp_path, 11, "ovn-northd", state="Z")
    _proc(tmp_path, 12, "bash")
    launcher = ovn.Launcher(systemd=False)
    launcher.proc_root = str(tmp_path / "proc")
    pidfile = tmp_path / "northd.pid"
    daemon = dataclasses.replace(ovn.NORTHD, pidfiles=(str(pidfile),))
    assert launcher.pids(daemon) is None  # no pidfile
    for pid, alive in ((10, True), (11, False), (12, False), (13, False)):
        pidfile.write_text(f"{pid}\n")
        assert launcher.running(daemon) is alive, pid
    pidfile.write_text("10\n")
    assert launcher.cmdline(daemon) == ["ovn-northd", "--ovnnb-db=x"]


# ---------------------------------------------------------------------------- switch


class FakeVsctl:
    """Answers ``ovs-vsctl --format=json --columns=… list TABLE`` from in-memory rows."""

    def __init__(self, run: FakeRun) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {
            "Open_vSwitch": [{"external_ids": ["map", []]}],
            "Bridge": [],
            "Port": [],
            "Interface": [],
        }
        self.writes: list[list[str]] = []
        run.on(OVS_VSCTL, answer=self)

    def __call__(self, argv: list[str]) -> str:
        args = argv[2:]  # after --timeout
        if args[:1] == ["--format=json"]:
            columns = args[1].removeprefix("--columns=").split(",")
            rows = self.tables[args[3]]
            return json.dumps(
                {"headings": columns, "data": [[row[c] for c in columns] for row in rows]}
            )
        self.writes.append(args)
        for i, arg in enumerate(args[:-1]):
            if arg == "add-br":  # the bridge exists afterwards (datapath checked separately)
                self.bridge(args[i + 1])
        return ""

    def bridge(self, name: str, datapath: str = "netdev", ports: tuple[str, ...] = ()) -> None:
        self.tables["Bridge"].append(
            {
                "name": name,
                "datapath_type": datapath,
                "datapath_id": "0000aabbccddeeff",
                "ports": ["set", [["uuid", f"u-{p}"] for p in (name, *ports)]],
            }
        )
        for port in (name, *ports):
            self.port(port)

    def port(self, name: str, ours: bool = False, error: str = "") -> None:
        ids = [[ovn.OWNED_PORT_KEY, "true"]] if ours else []
        self.tables["Port"].append(
            {"_uuid": ["uuid", f"u-{name}"], "name": name, "external_ids": ["map", ids]}
        )
        self.tables["Interface"].append({"name": name, "error": error or ["set", []]})

    def external_ids(self, **ids: str) -> None:
        self.tables["Open_vSwitch"] = [{"external_ids": ["map", [[k, v] for k, v in ids.items()]]}]


CHASSIS = ChassisConfig(
    system_id="m0",
    sb_remote="ssl:10.0.0.1:6642",
    encap_ip="10.0.0.1",
    datapath_type="netdev",
    bridge_mappings={"physnet1": "br-ex"},
    bridge_interfaces={"br-ex": ["eth1"]},
)
CONFIGURED_IDS = {
    "system-id": "m0",
    "ovn-remote": "ssl:10.0.0.1:6642",
    "ovn-encap-type": "geneve",
    "ovn-encap-ip": "10.0.0.1",
    "ovn-bridge-datapath-type": "netdev",
    ovn.OWNED_MAPPINGS_KEY: "physnet1:br-ex",
    "ovn-bridge-mappings": "physnet1:br-ex,UPLINK:lxdovn1",
}


@pytest.fixture
def switch(tmp_path) -> ovn.Switch:
    switch = ovn.Switch(systemd=False)
    switch.system_id_file = str(tmp_path / "system-id.conf")
    return switch


def test_configure_a_fresh_switch(run: FakeRun, switch: ovn.Switch) -> None:
    vsctl = FakeVsctl(run)
    vsctl.external_ids(**{"ovn-bridge-mappings": "UPLINK:lxdovn1"})
    vsctl.bridge("br-ex", datapath="netdev")  # as it would be afterwards, for the check
    vsctl.tables["Bridge"][0]["ports"] = ["uuid", "u-br-ex"]  # one-element set: bare atom
    assert switch.configure(CHASSIS) is True
    [write] = vsctl.writes
    assert write == [
        "--", "set", "Open_vSwitch", ".",
        'external_ids:system-id="m0"',
        'external_ids:ovn-remote="ssl:10.0.0.1:6642"',
        'external_ids:ovn-encap-type="geneve"',
        'external_ids:ovn-encap-ip="10.0.0.1"',
        'external_ids:ovn-bridge-datapath-type="netdev"',
        f'external_ids:{ovn.OWNED_MAPPINGS_KEY}="physnet1:br-ex"',
        'external_ids:ovn-bridge-mappings="UPLINK:lxdovn1,physnet1:br-ex"',
        "--", "add-port", "br-ex", "eth1",
        "--", "set", "Port", "eth1", f"external_ids:{ovn.OWNED_PORT_KEY}=true",
    ]  # fmt: skip
    with open(switch.system_id_file) as f:
        assert f.read() == "m0\n"


def test_configure_creates_missing_bridges_with_the_datapath_type(
    run: FakeRun, switch: ovn.Switch
) -> None:
    vsctl = FakeVsctl(run)
    vsctl.external_ids(**CONFIGURED_IDS)
    vsctl.bridge("br-ex", datapath="system", ports=("eth1",))
    vsctl.tables["Port"][1]["external_ids"] = ["map", [[ovn.OWNED_PORT_KEY, "true"]]]
    chassis = dataclasses.replace(CHASSIS, bridge_interfaces={"br-ex": ["eth1"], "br-data": []})
    assert switch.configure(chassis) is True
    assert vsctl.writes == [
        [
            "--", "set", "Bridge", "br-ex", "datapath_type=netdev",
            "--", "add-br", "br-data",
            "--", "set", "Bridge", "br-data", "datapath_type=netdev",
        ]
    ]  # fmt: skip


def test_configure_changes_nothing_when_everything_matches(
    run: FakeRun, switch: ovn.Switch
) -> None:
    vsctl = FakeVsctl(run)
    # Same entries in another order are no change either.
    vsctl.external_ids(
        **{**CONFIGURED_IDS, "ovn-bridge-mappings": "UPLINK:lxdovn1,physnet1:br-ex"}
    )
    vsctl.bridge("br-ex", ports=("eth1",))
    switch.configure(CHASSIS)  # writes system-id.conf
    assert switch.configure(CHASSIS) is False
    assert vsctl.writes == []


def test_configure_unplugs_only_its_own_ports_and_drops_its_old_mappings(
    run: FakeRun, switch: ovn.Switch
) -> None:
    vsctl = FakeVsctl(run)
    vsctl.external_ids(**CONFIGURED_IDS)
    vsctl.bridge("br-ex", ports=("eth1", "lxd-port"))
    vsctl.tables["Port"][1]["external_ids"] = ["map", [[ovn.OWNED_PORT_KEY, "true"]]]
    chassis = dataclasses.replace(CHASSIS, bridge_mappings={}, bridge_interfaces={})
    assert switch.configure(chassis) is True
    assert vsctl.writes == [
        [
            "--", "set", "Open_vSwitch", ".", 'external_ids:ovn-bridge-mappings="UPLINK:lxdovn1"',
            "--", "remove", "Open_vSwitch", ".", "external_ids", ovn.OWNED_MAPPINGS_KEY,
            "--", "--if-exists", "del-port", "br-ex", "eth1",
        ]
    ]  # fmt: skip


def test_configure_names_a_bridge_without_a_datapath(
    run: FakeRun, switch: ovn.Switch, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "ovs-vswitchd.log"
    log.write_text(
        "2026-11-21T03:07:49.518Z|00048|ofproto|ERR|failed to open datapath br-ex: No such file\n"
        "2026-11-21T03:07:49.518Z|00049|bridge|ERR|failed to create bridge br-ex: No such file or"
        " directory\n"
    )
    monkeypatch.setattr(ovn, "OVS_LOG", str(log))
    vsctl = FakeVsctl(run)
    vsctl.external_ids(**CONFIGURED_IDS)
    vsctl.bridge("br-ex", datapath="system", ports=("eth1",))
    vsctl.tables["Bridge"][0]["datapath_id"] = ["set", []]
    chassis = dataclasses.replace(CHASSIS, datapath_type="system")
    with pytest.raises(OVNError) as raised:
        switch.configure(chassis)
    assert str(raised.value) == (
        "bridge br-ex failed in the system datapath: "
        "failed to create bridge br-ex: No such file or directory"
    )


def test_configure_names_an_interface_that_failed(run: FakeRun, switch: ovn.Switch) -> None:
    vsctl = FakeVsctl(run)
    vsctl.external_ids(**CONFIGURED_IDS)
    vsctl.bridge("br-ex")
    vsctl.port("eth1", ours=True, error="could not open network device eth1 (No such device)")
    vsctl.tables["Bridge"][0]["ports"] = ["set", [["uuid", "u-br-ex"], ["uuid", "u-eth1"]]]
    with pytest.raises(OVNError, match=r"^bridge br-ex: interface eth1: could not open network"):
        switch.configure(CHASSIS)


def test_switch_ensure_running_starts_only_when_needed(
    run: FakeRun, switch: ovn.Switch, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = iter([True, False, True])
    monkeypatch.setattr(ovn.Launcher, "running", lambda self, daemon: next(states))
    assert switch.ensure_running() is False
    assert switch.ensure_running() is True
    assert run.calls == [[OVS_CTL, "--system-id=random", "--no-record-hostname", "start"]]


def test_switch_bridges_reports_the_default_datapath_as_system(run: FakeRun) -> None:
    vsctl = FakeVsctl(run)
    vsctl.bridge("br-int", datapath="netdev")
    vsctl.bridge("br-old", datapath="")
    assert ovn.Switch(systemd=False).bridges() == {"br-int": "netdev", "br-old": "system"}


# ---------------------------------------------------------------------------- controller


def test_controller_restarts_only_without_its_tls_files(
    run: FakeRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmdlines = iter(
        [
            ["ovn-controller", "--private-key=/k/key", "--certificate=/k/cert", "--ca-cert=/k/ca"],
            ["ovn-controller", "unix:/var/run/openvswitch/db.sock"],  # the package's default
            [],
        ]
    )
    monkeypatch.setattr(ovn.Launcher, "cmdline", lambda self, daemon: next(cmdlines))
    monkeypatch.setattr(ovn.Launcher, "running", lambda self, daemon: True)
    controller = ovn.Controller(systemd=False)
    assert controller.ensure_running(TLS) is False
    assert controller.ensure_running(TLS) is True
    assert controller.ensure_running(TLS) is True
    start = [OVN_CTL, *ovn.controller_options(TLS), "start_controller"]
    assert run.calls == [[OVN_CTL, "stop_controller"], start, start]
    controller.stop()
    assert run.calls[-1] == [OVN_CTL, "stop_controller"]


# ---------------------------------------------------------------------------- central


@pytest.fixture
def central(tmp_path, run: FakeRun) -> ovn.Central:
    central = ovn.Central(systemd=False)
    central.db_dir = str(tmp_path / "db")
    central.northd_params = str(tmp_path / "ovn-northd-db-params.conf")
    central.leave_poll = 0
    return central


def _create_files(argv: list[str]) -> str:
    """ovsdb-tool create-cluster / join-cluster: the file appears."""
    with open(argv[2], "w") as f:
        f.write("CLUSTER")
    return ""


def _is_clustered(argv: list[str]) -> str:
    with open(argv[2]) as f:
        if f.read() != "CLUSTER":
            raise OVNError("ovsdb-tool db-is-clustered failed: not clustered")
    return ""


@pytest.fixture
def tool(run: FakeRun) -> None:
    run.on(OVSDB_TOOL, "create-cluster", answer=_create_files)
    run.on(OVSDB_TOOL, "join-cluster", answer=_create_files)
    run.on(OVSDB_TOOL, "db-is-clustered", answer=_is_clustered)


def _remotes(*listeners: str) -> Callable[[list[str]], str]:
    def answer(argv: list[str]) -> str:
        return "\n".join([*listeners, "punix:/var/run/ovn/ovnnb_db.sock"]) + "\n"

    return answer


def test_ensure_bootstraps_starts_and_listens(
    run: FakeRun, central: ovn.Central, tool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: set[str] = set()
    run.on(OVN_CTL, answer=lambda argv: started.add(argv[-1].removeprefix("start_")) or "")
    monkeypatch.setattr(
        ovn.Launcher,
        "running",
        lambda self, daemon: daemon.start.removeprefix("start_") in started,
    )
    assert central.ensure("10.0.0.1", [], True, TLS) is True
    nb_file = os.path.join(central.db_dir, "ovnnb_db.db")
    assert run.matching(OVSDB_TOOL, "create-cluster") == [
        [
            OVSDB_TOOL, "create-cluster", nb_file,
            "/usr/share/ovn/ovn-nb.ovsschema", "ssl:10.0.0.1:6643",
        ],
        [
            OVSDB_TOOL, "create-cluster", os.path.join(central.db_dir, "ovnsb_db.db"),
            "/usr/share/ovn/ovn-sb.ovsschema", "ssl:10.0.0.1:6644",
        ],
    ]  # fmt: skip
    options = ovn.central_db_options("10.0.0.1", None, TLS)
    assert run.matching(OVN_CTL) == [
        [OVN_CTL, *options, "start_nb_ovsdb"],
        [OVN_CTL, *options, "start_sb_ovsdb"],
    ]
    assert run.matching(OVN_APPCTL, "-t", central.ctl("nb"), "ovsdb-server/add-remote") == [
        [
            OVN_APPCTL,
            "-t",
            "/var/run/ovn/ovnnb_db.ctl",
            "ovsdb-server/add-remote",
            "pssl:6641:10.0.0.1",
        ]
    ]
    assert run.matching(OVN_APPCTL, "-t", central.ctl("sb"), "ovsdb-server/add-remote") == [
        [
            OVN_APPCTL,
            "-t",
            "/var/run/ovn/ovnsb_db.ctl",
            "ovsdb-server/add-remote",
            "pssl:6642:10.0.0.1",
        ]
    ]


def test_ensure_joins_via_every_peer_but_itself(
    run: FakeRun, central: ovn.Central, tool: None, always_running: None
) -> None:
    run.on(OVN_APPCTL, answer=_remotes("pssl:6641:10.0.0.3", "pssl:6642:10.0.0.3"))
    assert central.ensure("10.0.0.3", ["10.0.0.1", "10.0.0.3", "10.0.0.2"], False, TLS) is True
    assert run.matching(OVSDB_TOOL, "join-cluster") == [
        [
            OVSDB_TOOL, "join-cluster", os.path.join(central.db_dir, "ovnnb_db.db"),
            "OVN_Northbound", "ssl:10.0.0.3:6643", "ssl:10.0.0.1:6643", "ssl:10.0.0.2:6643",
        ],
        [
            OVSDB_TOOL, "join-cluster", os.path.join(central.db_dir, "ovnsb_db.db"),
            "OVN_Southbound", "ssl:10.0.0.3:6644", "ssl:10.0.0.1:6644", "ssl:10.0.0.2:6644",
        ],
    ]  # fmt: skip
    assert run.matching(OVN_CTL) == []  # already running (as the fake says)
    # Second time: files exist, servers run, listeners there: nothing to do.
    assert central.ensure("10.0.0.3", ["10.0.0.1"], False, TLS) is False


def test_ensure_refuses_to_join_without_peers(central: ovn.Central, tool: None) -> None:
    with pytest.raises(OVNError, match="cannot join the nb cluster: no peer"):
        central.ensure("10.0.0.3", ["10.0.0.3"], False, TLS)


def test_ensure_replaces_a_stale_listener_and_moves_standalone_dbs_aside(
    run: FakeRun, central: ovn.Central, tool: None, always_running: None
) -> None:
    os.makedirs(central.db_dir)
    with open(central.db_file("nb"), "w") as f:
        f.write("STANDALONE")  # what the package's postinst leaves under systemd
    run.on(OVN_APPCTL, answer=_remotes("pssl:6641:10.0.0.9"))
    assert central.ensure("10.0.0.1", [], True, TLS) is True
    assert os.path.exists(central.db_file("nb") + ".standalone")
    assert run.matching(OVN_CTL, "--ovn-manage-ovsdb=no", "stop_northd")
    assert run.matching(OVN_CTL, "stop_nb_ovsdb")
    nb_ctl = [OVN_APPCTL, "-t", central.ctl("nb")]
    assert run.matching(*nb_ctl, "ovsdb-server/remove-remote") == [
        [*nb_ctl, "ovsdb-server/remove-remote", "pssl:6641:10.0.0.9"]
    ]


def test_status_parses_and_reports_a_server_without_cluster(
    run: FakeRun, central: ovn.Central
) -> None:
    run.on(
        OVN_APPCTL, "-t", central.ctl("nb"), "cluster/status", "OVN_Northbound", answer=LEADER_NB
    )
    assert central.status("nb").role == "leader"
    run.on(OVN_APPCTL, answer=OVNError("ovn-appctl -t x failed: unknown cluster"))
    with pytest.raises(OVNUnavailableError, match="serves no cluster"):
        central.status("sb")


def test_leave_waits_for_both_clusters_then_removes_everything(
    run: FakeRun, central: ovn.Central, tool: None, always_running: None
) -> None:
    os.makedirs(central.db_dir)
    for path in (central.db_file("nb"), central.db_file("sb"), central.northd_params):
        with open(path, "w") as f:
            f.write("CLUSTER")
    answers = {
        "nb": iter([LEADER_NB, LEADER_NB, LEADER_NB.replace("cluster member", "leaving cluster")]),
        "sb": iter([FOLLOWER_SB, FOLLOWER_SB]),
    }

    def cluster_status(argv: list[str]) -> str:
        db = "nb" if "ovnnb" in argv[2] else "sb"
        try:
            return next(answers[db])
        except StopIteration:
            raise OVNError("ovn-appctl failed: unknown cluster") from None

    run.on(OVN_APPCTL, answer=cluster_status)
    run.on(OVN_APPCTL, "-t", central.ctl("nb"), "cluster/leave", answer="")
    run.on(OVN_APPCTL, "-t", central.ctl("sb"), "cluster/leave", answer="")
    assert central.leave() is True
    assert run.matching(OVN_APPCTL, "-t", central.ctl("sb"), "cluster/leave") == [
        [OVN_APPCTL, "-t", "/var/run/ovn/ovnsb_db.ctl", "cluster/leave", "OVN_Southbound"]
    ]
    assert [argv[-1] for argv in run.matching(OVN_CTL)] == [
        "stop_northd",
        "stop_nb_ovsdb",
        "stop_sb_ovsdb",
    ]
    assert os.listdir(central.db_dir) == [] and not os.path.exists(central.northd_params)


def test_the_last_member_does_not_ask_to_leave(
    run: FakeRun, central: ovn.Central, always_running: None
) -> None:
    run.on(OVN_APPCTL, answer=LEAVING_ALONE_NB.replace("leaving cluster", "cluster member"))
    assert central.leave() is True
    assert not [argv for argv in run.calls if "cluster/leave" in argv]


def test_leave_gives_up_after_the_timeout(
    run: FakeRun, central: ovn.Central, always_running: None, no_sleep: None
) -> None:
    run.on(OVN_APPCTL, answer=LEADER_NB)
    with pytest.raises(OVNError, match="the nb cluster did not confirm leaving in 0 s"):
        central.leave(timeout=0)
    assert not run.matching(OVN_CTL)  # still running, files untouched


def test_leave_does_nothing_when_not_running(
    run: FakeRun, central: ovn.Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ovn.Launcher, "running", lambda self, daemon: False)
    assert central.leave() is False
    assert run.calls == []


def test_kick_passes_the_servers_message_on(run: FakeRun, central: ovn.Central) -> None:
    run.on(OVN_APPCTL, answer=OVNError("ovn-appctl -t x cluster/kick failed: unknown server"))
    with pytest.raises(OVNError, match="unknown server"):
        central.kick("sb", "ffff")
    assert run.calls == [
        [OVN_APPCTL, "-t", "/var/run/ovn/ovnsb_db.ctl", "cluster/kick", "OVN_Southbound", "ffff"]
    ]


def test_ensure_northd_restarts_only_when_its_remotes_change(
    run: FakeRun, central: ovn.Central, always_running: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = [
        "ovn-northd", "--private-key=/k/key", "--certificate=/k/cert", "--ca-cert=/k/ca",
        "--ovnnb-db=ssl:10.0.0.2:6641,ssl:10.0.0.1:6641",
        "--ovnsb-db=ssl:10.0.0.1:6642,ssl:10.0.0.2:6642",
    ]  # fmt: skip
    monkeypatch.setattr(ovn.Launcher, "cmdline", lambda self, daemon: running)
    with open(central.northd_params, "w") as f:
        f.write("present")
    two = ["10.0.0.1", "10.0.0.2"]
    assert central.ensure_northd(two, two, TLS) is False
    assert run.calls == []
    assert central.ensure_northd([*two, "10.0.0.3"], two, TLS) is True
    assert run.calls == [
        [OVN_CTL, "--ovn-manage-ovsdb=no", "stop_northd"],
        [OVN_CTL, "--ovn-manage-ovsdb=no", *ovn.northd_options(TLS), "start_northd"],
    ]
    with open(central.northd_params) as f:
        assert f.read() == (
            "--ovnnb-db=ssl:10.0.0.1:6641,ssl:10.0.0.2:6641,ssl:10.0.0.3:6641"
            " --ovnsb-db=ssl:10.0.0.1:6642,ssl:10.0.0.2:6642\n"
        )
