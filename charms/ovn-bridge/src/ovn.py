"""The OVN workload: Open vSwitch, ovn-controller, and OVN central (NB + SB raft, ovn-northd).

Plain functions and a few classes over the Debian packages' tools (``ovs-vsctl``,
``ovn-appctl``, ``ovsdb-tool``, ``ovs-ctl``, ``ovn-ctl``); never imports ``ops``. Every
expected failure is an :class:`OVNError`; :class:`OVNUnavailableError` when a daemon does
not run or answer.

How daemons are started is decided in one place, :class:`Launcher`: through systemd units
(options in ``/etc/default/ovn-central`` / ``ovn-host``) where systemd runs, by calling
``ovs-ctl`` / ``ovn-ctl`` directly otherwise (the daemons detach and outlive the caller).
Both get the same options, built by :func:`central_db_options`, :func:`northd_options` and
:func:`controller_options`. Whether a daemon runs is always read from its pidfile.

OVN 23.03 / OVS 3.1 behaviour this module relies on (measured in the lab):

* ``ovsdb-server/add-remote`` listeners are not persistent: they are gone after every
  restart of a DB server, so :meth:`Central.ensure` checks them on every call. They are not
  put in the ``Connection`` table because that table is replicated to every raft member.
* A bridge that fails in the datapath (``datapath_type=system`` without the kernel module)
  lets ``ovs-vsctl`` exit 0; the bridge then has no ``datapath_id``.
* ``cluster/leave`` on the only member of a cluster never completes (it stays "leaving
  cluster"); a member that finished leaving answers ``cluster/status`` with "unknown
  cluster".
* The daemons re-read changed certificate files by themselves: renewing a certificate
  needs no restart.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

NB_PORT, SB_PORT, NB_RAFT_PORT, SB_RAFT_PORT = 6641, 6642, 6643, 6644

SYSTEMCTL = "/usr/bin/systemctl"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
OVN_CTL = "/usr/share/ovn/scripts/ovn-ctl"
OVS_VSCTL = "/usr/bin/ovs-vsctl"
OVN_APPCTL = "/usr/bin/ovn-appctl"
OVSDB_TOOL = "/usr/bin/ovsdb-tool"
PACKAGES = ("openvswitch-switch", "ovn-central", "ovn-host")
SYSTEMD_DIR = "/run/systemd/system"

OVS_RUNDIR = "/var/run/openvswitch"
OVS_LOG = "/var/log/openvswitch/ovs-vswitchd.log"
OVS_SYSTEM_ID_FILE = "/etc/openvswitch/system-id.conf"
OVN_RUNDIR = "/var/run/ovn"
OVN_DBDIR = "/var/lib/ovn"
OVN_SCHEMA_DIR = "/usr/share/ovn"
OVN_ETCDIR = "/etc/ovn"
#: ovn-ctl reads northd's database remotes from here when it exists; it also keeps
#: ``stop_northd`` (the systemd unit's ExecStop) from stopping the database servers.
NORTHD_DB_PARAMS = f"{OVN_ETCDIR}/ovn-northd-db-params.conf"
CENTRAL_DEFAULTS = "/etc/default/ovn-central"
HOST_DEFAULTS = "/etc/default/ovn-host"

#: Open_vSwitch external_ids key: the ovn-bridge-mappings entries this module set.
OWNED_MAPPINGS_KEY = "juju-ovn-bridge-mappings"
#: Port external_ids key marking a port this module added.
OWNED_PORT_KEY = "juju-ovn-bridge-port"

#: Seconds a command may take; starting a joining DB server waits up to 30 s for the cluster.
COMMAND_TIMEOUT = 60
START_TIMEOUT = 150
VSCTL_TIMEOUT = 30


class OVNError(Exception):
    """A command failed; the message says which and why."""


class OVNUnavailableError(OVNError):
    """A daemon is not running or not answering."""


# Phrases with which the tools say that the daemon they talk to is not there.
_UNAVAILABLE = ("cannot connect to", "database connection failed")


def _run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT, env: Any = None) -> str:
    """Run a tool (absolute path, list args); its stdout, or :class:`OVNError` with stderr."""
    try:
        result = subprocess.run(  # noqa: S603 - absolute paths, list args
            list(argv), capture_output=True, text=True, check=False, timeout=timeout, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OVNError(f"{os.path.basename(argv[0])} failed: {exc}") from None
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-400:]
        what = " ".join([os.path.basename(argv[0]), *argv[1:4]])
        error = OVNUnavailableError if any(p in tail for p in _UNAVAILABLE) else OVNError
        raise error(f"{what} failed: {tail}")
    return result.stdout


# ---------------------------------------------------------------------------- TLS files


@dataclass(frozen=True)
class TLSFiles:
    """Where the private key, certificate and CA certificate are.

    The defaults are where LXD 5.0 (Debian) reads its OVN client certificate; our own
    daemons use the same files.
    """

    key: str = "/etc/ovn/key_host"
    cert: str = "/etc/ovn/cert_host"
    ca_cert: str = "/etc/ovn/ovn-central.crt"

    @classmethod
    def in_dir(cls, directory: str) -> TLSFiles:
        """The same three file names under ``directory`` (the lxd snap: its ``common/ovn``)."""
        default = cls()
        return cls(
            key=os.path.join(directory, os.path.basename(default.key)),
            cert=os.path.join(directory, os.path.basename(default.cert)),
            ca_cert=os.path.join(directory, os.path.basename(default.ca_cert)),
        )


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_file(path: str, content: str, mode: int) -> bool:
    """Write ``content`` atomically with ``mode`` unless the file already is exactly that."""
    try:
        unchanged = _read(path) == content and (os.stat(path).st_mode & 0o777) == mode
    except FileNotFoundError:
        unchanged = False
    if unchanged:
        return False
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def write_tls_files(files: TLSFiles, key_pem: str | None, cert_pem: str, ca_pem: str) -> bool:
    """Write the certificate and CA (0644) and the key (0600), each only if it changed.

    Args:
        files: where to write.
        key_pem: the private key; ``None`` leaves the key file as it is.
        cert_pem: this unit's certificate.
        ca_pem: the CA certificate that signed every member's certificate.

    Returns:
        Whether any file was written.
    """
    changed = False
    if key_pem is not None:
        changed |= _write_file(files.key, key_pem, 0o600)
    changed |= _write_file(files.cert, cert_pem, 0o644)
    changed |= _write_file(files.ca_cert, ca_pem, 0o644)
    return changed


def read_private_key(files: TLSFiles) -> str | None:
    """The private key PEM, or ``None`` when there is none yet."""
    return _read(files.key)


def ensure_private_key(files: TLSFiles, generate: Callable[[], str]) -> str:
    """This machine's private key: the one in ``files.key``, or a new one from ``generate``.

    A new key is written (0600) before it is returned, so it never exists only in memory
    and never has to leave the machine.
    """
    key = read_private_key(files)
    if not key:
        key = generate()
        _write_file(files.key, key, 0o600)
    return key


# ---------------------------------------------------------------------------- addresses


def _host(address: str) -> str:
    """``address`` as it goes into an OVS connection method (IPv6 in brackets)."""
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]"
    except ValueError:
        pass
    return address


def connection_string(addresses: Sequence[str], port: int) -> str:
    """``ssl:A:port,ssl:B:port`` for ``addresses`` in the given order (IPv6 in brackets)."""
    return ",".join(f"ssl:{_host(a)}:{port}" for a in addresses)


# ---------------------------------------------------------------------------- daemons


@dataclass(frozen=True)
class Daemon:
    """One daemon as both launchers see it.

    Attributes:
        name: what log messages call it.
        pidfiles: the daemon's pidfiles (both launchers write the same ones).
        programs: the process names (``/proc/<pid>/comm``) behind the pidfiles, in order.
        script: ``ovs-ctl`` or ``ovn-ctl``.
        start: the script's start command; ``stop``: its stop command.
        start_flags: script options the systemd unit passes by itself.
        unit: the systemd unit.
        defaults: the ``/etc/default`` file whose ``OVN_CTL_OPTS`` the unit reads ('' none).
        prefixes: the ``OVN_CTL_OPTS`` options that belong to this daemon.
    """

    name: str
    pidfiles: tuple[str, ...]
    programs: tuple[str, ...]
    script: str
    start: str
    stop: str
    start_flags: tuple[str, ...]
    unit: str
    defaults: str = ""
    prefixes: tuple[str, ...] = ()


OPENVSWITCH = Daemon(
    name="openvswitch",
    pidfiles=(f"{OVS_RUNDIR}/ovsdb-server.pid", f"{OVS_RUNDIR}/ovs-vswitchd.pid"),
    programs=("ovsdb-server", "ovs-vswitchd"),
    script=OVS_CTL,
    start="start",
    stop="stop",
    # The system id survives restarts in system-id.conf (Switch.configure writes it).
    start_flags=("--system-id=random", "--no-record-hostname"),
    unit="openvswitch-switch",
)
NB_DB = Daemon(
    name="OVN NB database",
    pidfiles=(f"{OVN_RUNDIR}/ovnnb_db.pid",),
    programs=("ovsdb-server",),
    script=OVN_CTL,
    start="start_nb_ovsdb",
    stop="stop_nb_ovsdb",
    start_flags=(),
    unit="ovn-ovsdb-server-nb",
    defaults=CENTRAL_DEFAULTS,
    prefixes=("--db-nb-", "--ovn-nb-"),
)
SB_DB = Daemon(
    name="OVN SB database",
    pidfiles=(f"{OVN_RUNDIR}/ovnsb_db.pid",),
    programs=("ovsdb-server",),
    script=OVN_CTL,
    start="start_sb_ovsdb",
    stop="stop_sb_ovsdb",
    start_flags=(),
    unit="ovn-ovsdb-server-sb",
    defaults=CENTRAL_DEFAULTS,
    prefixes=("--db-sb-", "--ovn-sb-"),
)
NORTHD = Daemon(
    name="ovn-northd",
    pidfiles=(f"{OVN_RUNDIR}/ovn-northd.pid",),
    programs=("ovn-northd",),
    script=OVN_CTL,
    start="start_northd",
    stop="stop_northd",
    start_flags=("--ovn-manage-ovsdb=no",),
    unit="ovn-northd",
    defaults=CENTRAL_DEFAULTS,
    prefixes=("--ovn-northd-",),
)
CONTROLLER = Daemon(
    name="ovn-controller",
    pidfiles=(f"{OVN_RUNDIR}/ovn-controller.pid",),
    programs=("ovn-controller",),
    script=OVN_CTL,
    start="start_controller",
    stop="stop_controller",
    start_flags=(),
    unit="ovn-controller",
    defaults=HOST_DEFAULTS,
    prefixes=("--ovn-controller-",),
)


def _pid(pidfile: str, program: str, proc_root: str = "/proc") -> int | None:
    """The pid in ``pidfile`` when it is a live ``program`` (not a zombie, not a reused pid)."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open(os.path.join(proc_root, str(pid), "stat")) as f:
            state = f.read().rpartition(")")[2].split()[0]
        with open(os.path.join(proc_root, str(pid), "comm")) as f:
            comm = f.read().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if state != "Z" and comm == program else None


def _cmdline(pid: int, proc_root: str = "/proc") -> list[str]:
    """A process's argv ('' when it is gone)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def merge_ctl_opts(
    existing: Sequence[str], prefixes: Sequence[str], ours: Sequence[str]
) -> list[str]:
    """``OVN_CTL_OPTS`` with one daemon's options replaced and every other daemon's kept.

    Several daemons read one ``/etc/default`` file (NB, SB and northd: ``ovn-central``);
    each owns the options that start with one of its ``prefixes``.
    """
    owned = tuple(prefixes)
    kept = [opt for opt in existing if not opt.startswith(owned)]
    return kept + [opt for opt in ours if opt.startswith(owned)]


def _read_ctl_opts(path: str) -> list[str]:
    """The options in a defaults file's ``OVN_CTL_OPTS=`` line (empty when none)."""
    for line in (_read(path) or "").splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name == "OVN_CTL_OPTS":
            # The shell's value (quotes removed), split on whitespace as $OVN_CTL_OPTS is.
            return " ".join(shlex.split(value)).split()
    return []


def defaults_file_text(options: Sequence[str]) -> str:
    """A ``/etc/default`` file (systemd EnvironmentFile and sh) setting ``OVN_CTL_OPTS``."""
    for opt in options:
        if any(c.isspace() or c in "\"'\\$`" for c in opt):
            raise OVNError(f"cannot pass {opt!r} through OVN_CTL_OPTS (space or quote in it)")
    return (
        "# Written by the ovn-bridge charm: options for ovn-ctl, read by the systemd units.\n"
        f'OVN_CTL_OPTS="{" ".join(options)}"\n'
    )


class Launcher:
    """Starts and stops daemons: the one place that decides systemd or ``*-ctl`` directly.

    Args:
        systemd: whether systemd runs the daemons; ``None`` detects it (``/run/systemd/system``).
    """

    def __init__(self, systemd: bool | None = None):
        self.systemd = os.path.isdir(SYSTEMD_DIR) if systemd is None else systemd
        self.proc_root = "/proc"

    def pids(self, daemon: Daemon) -> list[int] | None:
        """The daemon's live pids, or ``None`` when any of its processes is not running."""
        pids = []
        for pidfile, program in zip(daemon.pidfiles, daemon.programs, strict=True):
            pid = _pid(pidfile, program, self.proc_root)
            if pid is None:
                return None
            pids.append(pid)
        return pids

    def running(self, daemon: Daemon) -> bool:
        """Whether every process of the daemon runs."""
        return self.pids(daemon) is not None

    def cmdline(self, daemon: Daemon) -> list[str]:
        """The argv of the daemon's (first) process; empty when it does not run."""
        pids = self.pids(daemon)
        return _cmdline(pids[0], self.proc_root) if pids else []

    def start(self, daemon: Daemon, options: Sequence[str] = (), restart: bool = False) -> None:
        """Start the daemon with ``options`` (ovn-ctl options); ``restart`` stops it first.

        With systemd the options go into the daemon's ``/etc/default`` file (written only
        on change) and the unit is restarted; otherwise the ctl script starts it detached.
        Returns once the daemon runs.

        Raises:
            OVNError: the start command failed.
            OVNUnavailableError: the daemon did not come up.
        """
        logger.info("starting %s", daemon.name)
        if self.systemd:
            if daemon.defaults:
                merged = merge_ctl_opts(_read_ctl_opts(daemon.defaults), daemon.prefixes, options)
                _write_file(daemon.defaults, defaults_file_text(merged), 0o644)
            # restart: starts a stopped unit, and applies new options to a running one.
            _run([SYSTEMCTL, "restart", daemon.unit])
        else:
            if restart:
                self.stop(daemon)
            _run([daemon.script, *daemon.start_flags, *options, daemon.start], START_TIMEOUT)
        self.wait_running(daemon)

    def wait_running(self, daemon: Daemon, timeout: float = 30) -> None:
        """Wait until the daemon's pidfiles name live processes."""
        deadline = time.monotonic() + timeout
        while not self.running(daemon):
            if time.monotonic() > deadline:
                raise OVNUnavailableError(f"{daemon.name} did not start within {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self, daemon: Daemon) -> None:
        """Stop the daemon (nothing happens when it does not run)."""
        logger.info("stopping %s", daemon.name)
        if self.systemd:
            _run([SYSTEMCTL, "stop", daemon.unit])
        else:
            _run([daemon.script, *daemon.start_flags, daemon.stop], START_TIMEOUT)

    def clear_options(self, daemon: Daemon) -> None:
        """Drop the daemon's options from its ``/etc/default`` file (systemd only)."""
        if self.systemd and daemon.defaults and os.path.exists(daemon.defaults):
            merged = merge_ctl_opts(_read_ctl_opts(daemon.defaults), daemon.prefixes, ())
            _write_file(daemon.defaults, defaults_file_text(merged), 0o644)


# ---------------------------------------------------------------------------- options


def central_db_options(address: str, join_via: str | None, tls: TLSFiles) -> list[str]:
    """ovn-ctl options of the NB and SB raft servers.

    Args:
        address: this member's address (raft on 6643/6644 over SSL).
        join_via: a member of the cluster this one joined, ``None`` for the member that
            created it. ovn-ctl never creates or joins here (the database files exist
            before it starts); with a remote it only skips initialising the database.
        tls: key, certificate and CA for raft and the client listeners.
    """
    host = _host(address)
    options = []
    for db in ("nb", "sb"):
        options += [
            f"--db-{db}-cluster-local-addr={host}",
            f"--db-{db}-cluster-local-proto=ssl",
        ]
        if join_via:
            options += [
                f"--db-{db}-cluster-remote-addr={_host(join_via)}",
                f"--db-{db}-cluster-remote-proto=ssl",
            ]
        options += [
            # Listeners are per member (add-remote); the Connection table is replicated.
            f"--db-{db}-use-remote-in-db=no",
            f"--ovn-{db}-db-ssl-key={tls.key}",
            f"--ovn-{db}-db-ssl-cert={tls.cert}",
            f"--ovn-{db}-db-ssl-ca-cert={tls.ca_cert}",
        ]
    return options


def northd_options(tls: TLSFiles) -> list[str]:
    """ovn-ctl options of ovn-northd (its remotes are in :data:`NORTHD_DB_PARAMS`)."""
    return [
        f"--ovn-northd-ssl-key={tls.key}",
        f"--ovn-northd-ssl-cert={tls.cert}",
        f"--ovn-northd-ssl-ca-cert={tls.ca_cert}",
    ]


def northd_db_params(nb_remote: str, sb_remote: str) -> str:
    """The text of :data:`NORTHD_DB_PARAMS`: northd connects to every member of both DBs."""
    return f"--ovnnb-db={nb_remote} --ovnsb-db={sb_remote}\n"


def controller_options(tls: TLSFiles) -> list[str]:
    """ovn-ctl options of ovn-controller (the SB remote is in the Open_vSwitch table)."""
    return [
        f"--ovn-controller-ssl-key={tls.key}",
        f"--ovn-controller-ssl-cert={tls.cert}",
        f"--ovn-controller-ssl-ca-cert={tls.ca_cert}",
    ]


def _ssl_args(tls: TLSFiles) -> set[str]:
    """How the SSL files appear on an OVS/OVN daemon's command line."""
    return {f"--private-key={tls.key}", f"--certificate={tls.cert}", f"--ca-cert={tls.ca_cert}"}


# ---------------------------------------------------------------------------- the switch


@dataclass(frozen=True)
class ChassisConfig:
    """What this machine's chassis looks like.

    Attributes:
        system_id: unique per unit (the chassis name in the SB database).
        sb_remote: ``ssl:…:6642,…`` of every central member.
        encap_ip: this machine's tunnel (geneve) endpoint.
        datapath_type: ``system`` (kernel) or ``netdev`` (userspace).
        bridge_mappings: physical network -> bridge (``ovn-bridge-mappings``).
        bridge_interfaces: bridge -> interfaces to plug into it.
    """

    system_id: str
    sb_remote: str
    encap_ip: str
    datapath_type: str
    bridge_mappings: Mapping[str, str]
    bridge_interfaces: Mapping[str, Sequence[str]]


def parse_mappings(value: str) -> dict[str, str]:
    """``physnet:bridge,physnet:bridge`` as a dict (malformed entries are skipped)."""
    mappings = {}
    for entry in value.split(","):
        physnet, sep, bridge = entry.strip().partition(":")
        if sep and physnet and bridge:
            mappings[physnet] = bridge
    return mappings


def format_mappings(mappings: Mapping[str, str]) -> str:
    """A mappings dict as ``physnet:bridge,…``."""
    return ",".join(f"{physnet}:{bridge}" for physnet, bridge in mappings.items())


def merge_bridge_mappings(current: str, owned: str, desired: Mapping[str, str]) -> dict[str, str]:
    """The ``ovn-bridge-mappings`` to set, keeping the entries others (LXD) added.

    Args:
        current: the value now in the Open_vSwitch table.
        owned: the entries this module set last time (``juju-ovn-bridge-mappings``).
        desired: the entries this module wants now.

    Returns:
        Others' entries (in their order) without the ones this module set earlier and no
        longer wants, followed by ``desired``, which wins over another's entry for the
        same physical network.
    """
    previous = parse_mappings(owned)
    merged = {
        physnet: bridge
        for physnet, bridge in parse_mappings(current).items()
        if physnet not in desired and previous.get(physnet) != bridge
    }
    merged.update(desired)
    return merged


def _ovsdb_value(value: Any) -> Any:
    """An OVSDB JSON value (``["set", …]``, ``["map", …]``, ``["uuid", …]``) as Python."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "set":
            return [_ovsdb_value(v) for v in body]
        if kind == "map":
            return {_ovsdb_value(k): _ovsdb_value(v) for k, v in body}
        if kind in ("uuid", "named-uuid"):
            return body
    return value


def _as_list(value: Any) -> list[Any]:
    """A set column's value as a list (OVSDB prints a one-element set as the bare atom)."""
    return value if isinstance(value, list) else [value]


def _vsctl(*args: str) -> str:
    return _run([OVS_VSCTL, f"--timeout={VSCTL_TIMEOUT}", *args], timeout=VSCTL_TIMEOUT + 10)


def _vsctl_list(table: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of an Open_vSwitch table, the given columns only."""
    out = _vsctl("--format=json", f"--columns={','.join(columns)}", "list", table)
    data = json.loads(out)
    return [
        {name: _ovsdb_value(value) for name, value in zip(data["headings"], row, strict=True)}
        for row in data["data"]
    ]


def _last_log_error(bridge: str) -> str:
    """ovs-vswitchd's last complaint about ``bridge`` (best effort, '' when none)."""
    try:
        with open(OVS_LOG, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    needles = (f"bridge {bridge}:", f"datapath {bridge}:")
    for line in reversed(lines):
        if any(needle in line for needle in needles):
            return line.rpartition("|")[2].strip()
    return ""


class Switch:
    """Open vSwitch (ovsdb-server + ovs-vswitchd) and the chassis settings in its database.

    Args:
        systemd: whether systemd runs the daemons; ``None`` detects it.
    """

    def __init__(self, systemd: bool | None = None):
        self.launcher = Launcher(systemd)
        self.system_id_file = OVS_SYSTEM_ID_FILE

    def ensure_running(self) -> bool:
        """Start ovsdb-server and ovs-vswitchd if they do not run; whether it started them."""
        if self.launcher.running(OPENVSWITCH):
            return False
        self.launcher.start(OPENVSWITCH)
        return True

    def configure(self, chassis: ChassisConfig) -> bool:
        """Make the Open_vSwitch table and the bridges match ``chassis``.

        Sets the OVN external_ids (system-id, ovn-remote, geneve encap, datapath type),
        merges ``ovn-bridge-mappings`` (entries set by others are kept), creates the
        bridges with the datapath type, plugs the configured interfaces and unplugs the
        ones this module plugged earlier that are no longer configured. Writes only what
        differs.

        Returns:
            Whether anything changed.

        Raises:
            OVNUnavailableError: ovsdb-server does not answer.
            OVNError: a bridge or one of its interfaces failed in the datapath (the
                message names the bridge and the error), or ovs-vsctl failed.
        """
        changed = _write_file(self.system_id_file, chassis.system_id + "\n", 0o644)
        commands = self._external_ids_commands(chassis) + self._bridge_commands(chassis)
        if commands:
            logger.info("ovs-vsctl %s", " ".join(commands))
            _vsctl(*commands)
            changed = True
        self._check_bridges(chassis)
        return changed

    def _external_ids_commands(self, chassis: ChassisConfig) -> list[str]:
        rows = _vsctl_list("Open_vSwitch", ["external_ids"])
        current: dict[str, str] = rows[0]["external_ids"] if rows else {}
        mappings = merge_bridge_mappings(
            current.get("ovn-bridge-mappings", ""),
            current.get(OWNED_MAPPINGS_KEY, ""),
            chassis.bridge_mappings,
        )
        wanted = {
            "system-id": chassis.system_id,
            "ovn-remote": chassis.sb_remote,
            "ovn-encap-type": "geneve",
            "ovn-encap-ip": chassis.encap_ip,
            "ovn-bridge-datapath-type": chassis.datapath_type,
            OWNED_MAPPINGS_KEY: format_mappings(chassis.bridge_mappings),
        }
        # Compared as mappings: the same entries in another order are no change.
        if mappings != parse_mappings(current.get("ovn-bridge-mappings", "")):
            wanted["ovn-bridge-mappings"] = format_mappings(mappings)
        sets = [
            f"external_ids:{key}={json.dumps(value)}"
            for key, value in wanted.items()
            if value and current.get(key) != value
        ]
        # An empty value is no value: remove the key rather than set "".
        removes = [key for key, value in wanted.items() if not value and key in current]
        commands = ["--", "set", "Open_vSwitch", ".", *sets] if sets else []
        for key in removes:
            commands += ["--", "remove", "Open_vSwitch", ".", "external_ids", key]
        return commands

    def _bridge_commands(self, chassis: ChassisConfig) -> list[str]:
        wanted_bridges = list(
            dict.fromkeys([*chassis.bridge_mappings.values(), *chassis.bridge_interfaces])
        )
        wanted_ports = {
            (bridge, iface)
            for bridge, ifaces in chassis.bridge_interfaces.items()
            for iface in ifaces
        }
        bridges = {
            row["name"]: row for row in _vsctl_list("Bridge", ["name", "datapath_type", "ports"])
        }
        ports = {
            row["_uuid"]: row for row in _vsctl_list("Port", ["_uuid", "name", "external_ids"])
        }
        placed = {  # (bridge, port name) -> whether this module plugged it
            (bridge, ports[uuid]["name"]): OWNED_PORT_KEY in ports[uuid]["external_ids"]
            for bridge, row in bridges.items()
            for uuid in _as_list(row["ports"])
            if uuid in ports
        }
        commands = []
        for (bridge, port), ours in sorted(placed.items()):
            if ours and (bridge, port) not in wanted_ports:
                commands += ["--", "--if-exists", "del-port", bridge, port]
        for bridge in wanted_bridges:
            if bridge not in bridges:
                commands += ["--", "add-br", bridge]
            if bridges.get(bridge, {}).get("datapath_type") != chassis.datapath_type:
                commands += [
                    "--",
                    "set",
                    "Bridge",
                    bridge,
                    f"datapath_type={chassis.datapath_type}",
                ]
        for bridge, port in sorted(wanted_ports - set(placed)):
            commands += ["--", "add-port", bridge, port]
            commands += ["--", "set", "Port", port, f"external_ids:{OWNED_PORT_KEY}=true"]
        return commands

    def _check_bridges(self, chassis: ChassisConfig) -> None:
        """Raise for a configured bridge or interface that failed in the datapath."""
        wanted = {*chassis.bridge_mappings.values(), *chassis.bridge_interfaces}
        if not wanted:
            return
        bridges = {
            row["name"]: row
            for row in _vsctl_list("Bridge", ["name", "datapath_type", "datapath_id"])
        }
        errors = {
            row["name"]: _as_list(row["error"])
            for row in _vsctl_list("Interface", ["name", "error"])
        }
        for bridge in sorted(wanted):
            row = bridges.get(bridge)
            if row is None or not _as_list(row["datapath_id"]) or errors.get(bridge):
                detail = "; ".join(errors.get(bridge) or []) or _last_log_error(bridge)
                datapath = (row or {}).get("datapath_type") or "system"
                raise OVNError(
                    f"bridge {bridge} failed in the {datapath} datapath: "
                    f"{detail or 'see ' + OVS_LOG}"
                )
            for iface in chassis.bridge_interfaces.get(bridge, ()):
                if errors.get(iface):
                    raise OVNError(f"bridge {bridge}: interface {iface}: {errors[iface][0]}")

    def bridges(self) -> dict[str, str]:
        """Bridge -> datapath type (``system`` where the column is empty: OVS's default)."""
        return {
            row["name"]: row["datapath_type"] or "system"
            for row in _vsctl_list("Bridge", ["name", "datapath_type"])
        }

    def external_ids(self) -> dict[str, str]:
        """The Open_vSwitch table's external_ids (for checks)."""
        rows = _vsctl_list("Open_vSwitch", ["external_ids"])
        return dict(rows[0]["external_ids"]) if rows else {}


# ---------------------------------------------------------------------------- the controller


class Controller:
    """ovn-controller: this machine as an OVN chassis.

    Args:
        systemd: whether systemd runs the daemons; ``None`` detects it.
    """

    def __init__(self, systemd: bool | None = None):
        self.launcher = Launcher(systemd)

    def running(self) -> bool:
        """Whether ovn-controller runs."""
        return self.launcher.running(CONTROLLER)

    def ensure_running(self, tls: TLSFiles) -> bool:
        """Start ovn-controller with ``tls`` unless it already runs with those files.

        A renewed certificate in the same files needs no restart (the daemon re-reads
        them); a controller started without them (the package's default) is restarted.

        Returns:
            Whether it was (re)started.
        """
        cmdline = set(self.launcher.cmdline(CONTROLLER))
        if cmdline and _ssl_args(tls) <= cmdline:
            return False
        self.launcher.start(CONTROLLER, controller_options(tls), restart=bool(cmdline))
        return True

    def stop(self) -> None:
        """Stop ovn-controller (it removes its chassis from the SB database)."""
        self.launcher.stop(CONTROLLER)


# ---------------------------------------------------------------------------- central


@dataclass(frozen=True)
class RaftServer:
    """One server of a raft cluster as ``cluster/status`` lists it."""

    sid: str
    address: str


@dataclass(frozen=True)
class RaftStatus:
    """``cluster/status`` of one database on this member.

    ``server_id``, ``leader`` and the servers' ``sid`` are the 4-digit short ids raft
    prints (what ``cluster/kick`` takes); ``cluster_id`` is the full cluster UUID.
    """

    db: str
    cluster_id: str
    server_id: str
    address: str
    status: str
    role: str
    term: int
    leader: str
    servers: tuple[RaftServer, ...]

    @property
    def is_member(self) -> bool:
        """Whether this server is a full member of the cluster."""
        return self.status == "cluster member"

    def as_dict(self) -> dict[str, Any]:
        """For action results: keys are valid Juju action-result keys, servers a dict."""
        return {
            "db": self.db,
            "cluster-id": self.cluster_id,
            "server-id": self.server_id,
            "address": self.address,
            "status": self.status,
            "role": self.role,
            "term": str(self.term),
            "leader": self.leader,
            "servers": {server.sid: server.address for server in self.servers},
        }


_SCHEMAS = {"nb": "OVN_Northbound", "sb": "OVN_Southbound"}
_SERVER_LINE = re.compile(r"^\s+([0-9a-f]+) \(([0-9a-f]+) at ([^)\s]+)\)")


def _id(value: str, full: bool) -> str:
    """``9c55 (9c55a950-…)`` -> ``9c55`` (or the full id in brackets when ``full``).

    A joining server does not know the cluster id yet ("not yet known"): ''.
    """
    if value.startswith("not yet"):
        return ""
    short, _, rest = value.partition(" (")
    return rest.rstrip(")") if full and rest else short


def parse_cluster_status(db: str, text: str) -> RaftStatus:
    """Parse ``ovn-appctl … cluster/status`` output.

    Raises:
        OVNError: the text is not a cluster status.
    """
    fields: dict[str, str] = {}
    servers = []
    in_servers = False
    for line in text.splitlines():
        if in_servers:
            match = _SERVER_LINE.match(line)
            if match:
                servers.append(RaftServer(sid=match.group(1), address=match.group(3)))
            continue
        if line.startswith("Servers:"):
            in_servers = True
            continue
        name, sep, value = line.partition(": ")
        if sep:
            fields[name.strip()] = value.strip()
    try:
        leader = fields["Leader"]
        return RaftStatus(
            db=db,
            cluster_id=_id(fields["Cluster ID"], full=True),
            server_id=_id(fields["Server ID"], full=False),
            address=fields["Address"],
            status=fields["Status"],
            role=fields["Role"],
            term=int(fields["Term"]),
            leader="" if leader == "unknown" else leader,
            servers=tuple(servers),
        )
    except (KeyError, ValueError) as exc:
        raise OVNError(f"unexpected {db} cluster/status output ({exc}): {text[:200]!r}") from None


class Central:
    """OVN central on this machine: NB and SB ovsdb-server in raft, and ovn-northd.

    Args:
        systemd: whether systemd runs the daemons; ``None`` detects it.
    """

    def __init__(self, systemd: bool | None = None):
        self.launcher = Launcher(systemd)
        self.db_dir = OVN_DBDIR
        self.northd_params = NORTHD_DB_PARAMS
        self.leave_poll = 0.2

    # -- paths and small queries -----------------------------------------------------------

    def db_file(self, db: str) -> str:
        """The database file of ``nb`` or ``sb``."""
        return os.path.join(self.db_dir, f"ovn{db}_db.db")

    @staticmethod
    def ctl(db: str) -> str:
        """The control socket of the ``nb`` or ``sb`` server."""
        return f"{OVN_RUNDIR}/ovn{db}_db.ctl"

    def _appctl(self, db: str, *args: str) -> str:
        return _run([OVN_APPCTL, "-t", self.ctl(db), *args])

    def _clustered(self, db: str) -> bool:
        """Whether the database file exists and is a raft database."""
        path = self.db_file(db)
        if not os.path.exists(path):
            return False
        try:
            _run([OVSDB_TOOL, "db-is-clustered", path])
        except OVNError:
            return False
        return True

    def has_database(self) -> bool:
        """Whether both database files exist (as raft databases)."""
        return all(self._clustered(db) for db in _SCHEMAS)

    def running(self) -> bool:
        """Whether both database servers run."""
        return self.launcher.running(NB_DB) and self.launcher.running(SB_DB)

    def status(self, db: str) -> RaftStatus:
        """This member's raft status of ``nb`` or ``sb``.

        Raises:
            OVNUnavailableError: the server does not run or no longer serves the database.
        """
        try:
            out = self._appctl(db, "cluster/status", _SCHEMAS[db])
        except OVNError as exc:
            if "unknown cluster" in str(exc):
                raise OVNUnavailableError(f"the {db} server serves no cluster: {exc}") from None
            raise
        return parse_cluster_status(db, out)

    # -- creating / joining ---------------------------------------------------------------

    def _set_aside_standalone(self) -> bool:
        """Stop servers on standalone databases (the package's default) and move them aside."""
        standalone = [
            db for db in _SCHEMAS if os.path.exists(self.db_file(db)) and not self._clustered(db)
        ]
        for db in standalone:
            logger.warning("moving the standalone %s database aside", db)
            self.launcher.stop(NORTHD)
            self.launcher.stop(NB_DB if db == "nb" else SB_DB)
            os.replace(self.db_file(db), self.db_file(db) + ".standalone")
        return bool(standalone)

    def _create_database(
        self, db: str, address: str, peers: Sequence[str], bootstrap: bool
    ) -> None:
        port = NB_RAFT_PORT if db == "nb" else SB_RAFT_PORT
        local = f"ssl:{_host(address)}:{port}"
        if not bootstrap and not peers:
            raise OVNError(f"cannot join the {db} cluster: no peer address known")
        os.makedirs(self.db_dir, mode=0o755, exist_ok=True)
        if bootstrap:
            schema = os.path.join(OVN_SCHEMA_DIR, f"ovn-{db}.ovsschema")
            logger.info("creating the %s raft cluster on %s", db, local)
            _run([OVSDB_TOOL, "create-cluster", self.db_file(db), schema, local])
            return
        remotes = [f"ssl:{_host(peer)}:{port}" for peer in peers]
        logger.info("joining the %s raft cluster via %s", db, ", ".join(remotes))
        _run([OVSDB_TOOL, "join-cluster", self.db_file(db), _SCHEMAS[db], local, *remotes])

    def _ensure_listener(self, db: str, address: str) -> bool:
        """The server's client listener ``pssl:PORT:ADDRESS`` (and no other on that port)."""
        port = NB_PORT if db == "nb" else SB_PORT
        wanted = f"pssl:{port}:{_host(address)}"
        remotes = self._appctl(db, "ovsdb-server/list-remotes").split()
        changed = False
        for remote in remotes:
            if remote.startswith(f"pssl:{port}:") and remote != wanted:
                self._appctl(db, "ovsdb-server/remove-remote", remote)
                changed = True
        if wanted not in remotes:
            self._appctl(db, "ovsdb-server/add-remote", wanted)
            changed = True
        return changed

    def ensure(self, address: str, peers: Sequence[str], bootstrap: bool, tls: TLSFiles) -> bool:
        """Create or join the raft clusters, run both servers and their client listeners.

        Args:
            address: this unit's address.
            peers: the addresses of the other central units (``address`` is ignored there).
            bootstrap: with no database yet, create a new cluster (else join ``peers``).
            tls: key, certificate and CA of this unit.

        Returns:
            Whether anything changed.

        Raises:
            OVNError: joining without peers, or a command failed.
            OVNUnavailableError: a server did not come up.
        """
        peers = [peer for peer in peers if peer != address]  # raft refuses itself as remote
        changed = self._set_aside_standalone()
        for db in _SCHEMAS:
            if not self._clustered(db):
                self._create_database(db, address, peers, bootstrap)
                changed = True
        if not self.running():
            join_via = peers[0] if peers and not bootstrap else None
            options = central_db_options(address, join_via, tls)
            for daemon in (NB_DB, SB_DB):
                if not self.launcher.running(daemon):
                    self.launcher.start(daemon, options)
            changed = True
        for db in _SCHEMAS:
            changed |= self._ensure_listener(db, address)
        return changed

    def ensure_northd(
        self, nb_addresses: Sequence[str], sb_addresses: Sequence[str], tls: TLSFiles
    ) -> bool:
        """Run ovn-northd against every member; restart it only when its remotes changed.

        Returns:
            Whether northd was (re)started.
        """
        nb, sb = connection_string(nb_addresses, NB_PORT), connection_string(sb_addresses, SB_PORT)
        cmdline = self.launcher.cmdline(NORTHD)
        if (
            cmdline
            and _northd_matches(cmdline, nb, sb, tls)
            and os.path.exists(self.northd_params)
        ):
            return False
        _write_file(self.northd_params, northd_db_params(nb, sb), 0o644)
        self.launcher.start(NORTHD, northd_options(tls), restart=bool(cmdline))
        return True

    # -- leaving ---------------------------------------------------------------------------

    def _left(self, db: str) -> bool:
        """Whether this server left the ``db`` cluster (a server that has, drops the DB)."""
        try:
            out = self._appctl(db, "cluster/status", _SCHEMAS[db])
        except OVNError as exc:
            if "unknown cluster" in str(exc):
                return True
            raise
        return parse_cluster_status(db, out).status == "left cluster"

    def _start_leaving(self) -> list[str]:
        """Ask both clusters to let this server go; the databases it is leaving."""
        leaving = []
        for db, schema in _SCHEMAS.items():
            if self._left(db):
                continue
            status = self.status(db)
            if [s.sid for s in status.servers] == [status.server_id]:
                continue  # the last member: there is no one to leave
            logger.info("leaving the %s cluster", db)
            self._appctl(db, "cluster/leave", schema)
            leaving.append(db)
        return leaving

    def leave(self, timeout: float = 60) -> bool:
        """Leave both raft clusters, stop central here and remove the database files.

        The only member of a cluster cannot leave it (raft never completes that): its
        databases are just stopped and removed.

        Returns:
            ``False`` when central was not running here (nothing is done), else ``True``.

        Raises:
            OVNError: the cluster did not confirm the departure within ``timeout`` seconds
                (the servers keep running and the files stay).
        """
        if not self.running():
            return False
        deadline = time.monotonic() + timeout
        for db in self._start_leaving():
            while not self._left(db):
                if time.monotonic() > deadline:
                    raise OVNError(f"the {db} cluster did not confirm leaving in {timeout:.0f} s")
                time.sleep(self.leave_poll)
        self.stop()
        for daemon in (NB_DB, SB_DB):
            self.launcher.clear_options(daemon)
        for path in (self.db_file("nb"), self.db_file("sb"), self.northd_params):
            if os.path.exists(path):
                os.remove(path)
        return True

    def kick(self, db: str, server_id: str) -> None:
        """Remove ``server_id`` (a sid or its address) from the ``db`` cluster.

        Raises:
            OVNError: with the server's message (e.g. "unknown server").
        """
        self._appctl(db, "cluster/kick", _SCHEMAS[db], server_id)

    def stop(self) -> None:
        """Stop ovn-northd and both database servers."""
        for daemon in (NORTHD, NB_DB, SB_DB):
            self.launcher.stop(daemon)


def _northd_matches(cmdline: Sequence[str], nb: str, sb: str, tls: TLSFiles) -> bool:
    """Whether a running northd (its argv) uses these remotes (in any order) and files."""

    def remotes(flag: str) -> set[str]:
        return {
            remote
            for arg in cmdline
            if arg.startswith(flag)
            for remote in arg.removeprefix(flag).split(",")
        }

    return (
        remotes("--ovnnb-db=") == set(nb.split(","))
        and remotes("--ovnsb-db=") == set(sb.split(","))
        and _ssl_args(tls) <= set(cmdline)
    )
