"""Lab machines: network and mount namespaces that behave like separate servers on one host.

A :class:`Lab` lives under one root directory (the caller chooses it) and holds machines.
Each machine is

* a network namespace ``<prefix>-<name>`` whose ``eth0`` is one end of a veth pair; the
  other end is enslaved to the lab bridge, which sits in a network namespace of its own
  (``<prefix>-net``). Machine *i* gets ``198.18.0.(10+i)/24`` (the RFC 2544 benchmark
  range, so it never clashes with a real private network). Nothing is routed to or from
  the host: the host namespace has no lab address, no lab interface and no lab route.
* a private mount namespace, kept alive without any process by a bind mount on
  ``<root>/ns/<name>.mnt``, in which every path of :data:`MACHINE_PATHS` is bind-mounted
  from ``<root>/machines/<name>/fs/<path>``: each machine has its own ``/etc/ceph``,
  ``/var/lib/lxd``, ``/run/ovn``... while the rest of the file system is the host's;
* for a machine created with a base (``ubuntu@24.04``, as Juju's machine of an application
  with that base), a generated ``/etc/os-release`` bind-mounted over the host's in
  that namespace, so that code which checks the distribution (e.g.
  charmhelpers, which refuses to import on Debian) sees the Ubuntu release of its base.

:meth:`Machine.command` wraps an argv with ``nsenter`` so that it runs inside a machine;
:meth:`Machine.spawn` starts a detached daemon there. The layout (prefix, machines) is
persisted in ``<root>/machines.json`` so that a later process can :meth:`Lab.open` it.

:meth:`Lab.destroy` kills every process of every machine, unmounts the namespaces, deletes
the network namespaces and removes the root; :meth:`Lab.leftovers` reports what survived.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.procs import (
    UMOUNT,
    alive,
    kill,
    mount_table,
    mounts_under,
    terminate,
    unmount,
    with_descendants,
)

IP = "/usr/sbin/ip"
MOUNT = "/usr/bin/mount"
UNSHARE = "/usr/bin/unshare"
NSENTER = "/usr/bin/nsenter"
TRUE = "/bin/true"

NETWORK = "198.18.0"  # RFC 2544 benchmarking range: never a real network of the host
PREFIX_LENGTH = 24
FIRST_HOST = 10
MAX_MACHINES = 254 - FIRST_HOST

STATE_FILE = "machines.json"

#: Paths every machine sees as its own (bind-mounted from ``<root>/machines/<name>/fs``).
MACHINE_PATHS: tuple[str, ...] = (
    "/var/lib/lxd",
    "/etc/ceph",
    "/var/lib/ceph",
    "/etc/ovn",
    "/var/lib/ovn",
    "/var/log/ovn",
    "/run/ovn",
    "/etc/openvswitch",
    "/var/lib/openvswitch",
    "/run/openvswitch",
    "/var/log/openvswitch",
    "/var/lib/juju",
    "/etc/sysctl.d",  # the lxd charm persists its kernel settings here
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

#: Ubuntu releases a machine can present (its base ``ubuntu@VERSION``): version -> codename.
UBUNTU_RELEASES = {"20.04": "focal", "22.04": "jammy", "24.04": "noble"}

#: The file that names the distribution; a machine with a base has its own, generated.
#: (Not ``/etc/lsb-release``: Debian has none to mount over, and charmhelpers' import
#: checks ``os-release`` only.)
OS_RELEASE = "/etc/os-release"


def unavailable_reason() -> str | None:
    """Why lab machines cannot be created here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "lab machines need root (network and mount namespaces)"
    for tool in (IP, MOUNT, UMOUNT, UNSHARE, NSENTER):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (iproute2 / util-linux)"
    probe = subprocess.run(  # noqa: S603
        [IP, "netns", "list"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"'ip netns' does not work here: {probe.stderr.strip()}"
    return None


# -- small helpers ---------------------------------------------------------------------------


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a fixed-argv tool, capturing output; raise with its stderr when ``check``."""
    result = subprocess.run(  # noqa: S603
        list(argv), capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _netns_list() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = _run([IP, "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(netns: str) -> set[int]:
    """Processes in network namespace ``netns`` (empty when it does not exist)."""
    result = _run([IP, "netns", "pids", netns], check=False)
    if result.returncode != 0:
        return set()
    return {int(word) for word in result.stdout.split() if word.isdigit()}


def _is_mount_point(path: str) -> bool:
    return any(point == path for point, _ in mount_table())


def _mnt_ns_pids(ns_file: str) -> set[int]:
    """Processes whose mount namespace is the one bound on ``ns_file`` (if it still is)."""
    if not _is_mount_point(ns_file):
        return set()
    try:
        ns = os.stat(ns_file)
    except OSError:
        return set()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/mnt")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino):
            pids.add(int(entry))
    return pids


def _process_tree(pids: set[int]) -> set[int]:
    """``pids`` with their descendants, those still alive, never this process."""
    return {pid for pid in with_descendants(pids) - {os.getpid()} if alive(pid)}


# -- the base a machine presents -------------------------------------------------------------


def machine_base(base: str) -> str:
    """``base`` (``ubuntu@24.04``, a risk such as ``/stable`` allowed) as ``ubuntu@24.04``.

    Raises:
        ValueError: not an Ubuntu release a machine can present (:data:`UBUNTU_RELEASES`).
    """
    name = base.partition("/")[0]
    system, _, version = name.partition("@")
    if system != "ubuntu" or version not in UBUNTU_RELEASES:
        known = ", ".join(f"ubuntu@{version}" for version in UBUNTU_RELEASES)
        raise ValueError(f"a lab machine cannot present base {base!r} (known: {known})")
    return name


def _quoted(value: str) -> str:
    """``value`` as a double-quoted os-release value."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def _host_distribution() -> str:
    """The host's distribution and version, e.g. ``Debian GNU/Linux 12``."""
    try:
        info = platform.freedesktop_os_release()
    except OSError:
        return "unknown distribution"
    name = info.get("NAME") or info.get("ID") or "Linux"
    version = info.get("VERSION_ID")
    return f"{name} {version}" if version else name


def os_release(base: str) -> str:
    """The ``/etc/os-release`` of a machine of ``base``: its Ubuntu release.

    A machine's userspace is still the host's: the pretty name says so.
    """
    version = machine_base(base).partition("@")[2]
    codename = UBUNTU_RELEASES[version]
    pretty = f"Ubuntu {version} (lab machine; {_host_distribution()} userspace)"
    lines = [
        f"PRETTY_NAME={_quoted(pretty)}",
        'NAME="Ubuntu"',
        f'VERSION_ID="{version}"',
        f'VERSION="{version} ({codename})"',
        f"VERSION_CODENAME={codename}",
        "ID=ubuntu",
        "ID_LIKE=debian",
        f"UBUNTU_CODENAME={codename}",
    ]
    return "\n".join(lines) + "\n"


# -- machines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """One lab machine: its name, its index on the lab network and where its state lives.

    ``base`` (e.g. ``ubuntu@24.04``) is the release it presents in ``/etc/os-release``;
    ``None``: the host's file.
    """

    root: str
    prefix: str
    name: str
    index: int
    base: str | None = None

    @property
    def address(self) -> str:
        """The machine's address on the lab network (``198.18.0.x``)."""
        return f"{NETWORK}.{FIRST_HOST + self.index}"

    @property
    def netns(self) -> str:
        """Name of the machine's network namespace (``ip netns``)."""
        return f"{self.prefix}-{self.name}"

    @property
    def netns_path(self) -> str:
        """The file that holds the network namespace."""
        return f"/run/netns/{self.netns}"

    @property
    def mount_ns(self) -> str:
        """The file that holds the machine's mount namespace."""
        return os.path.join(self.root, "ns", f"{self.name}.mnt")

    @property
    def veth(self) -> str:
        """Name of the bridge-side veth end (in the lab network namespace)."""
        return f"{self.prefix}-v{self.index}"

    @property
    def state_dir(self) -> str:
        """The machine's directory under the lab root."""
        return os.path.join(self.root, "machines", self.name)

    def host_path(self, path: str) -> str:
        """Where the machine-private ``path`` (one of :data:`MACHINE_PATHS`) lives on the host."""
        return os.path.join(self.state_dir, "fs", path.lstrip("/"))

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside this machine (its network and mount namespaces)."""
        return [
            NSENTER,
            f"--net={self.netns_path}",
            f"--mount={self.mount_ns}",
            "--wd=/",
            "--",
            *argv,
        ]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside this machine; ``kwargs`` go to :func:`subprocess.run`."""
        kwargs.setdefault("check", False)
        return subprocess.run(self.command(argv), **kwargs)  # noqa: S603

    def spawn(self, argv: Sequence[str], log_path: str, env: dict[str, str] | None = None) -> int:
        """Start ``argv`` as a detached daemon inside this machine; return its pid.

        The daemon gets a session of its own, no stdin, and stdout/stderr appended to
        ``log_path``. It outlives the calling process; :meth:`Lab.destroy` stops it.
        """
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603
                self.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        return proc.pid  # nsenter execs the program: this is the daemon's pid

    def pids(self) -> list[int]:
        """Every process in this machine: its network namespace, or its mount namespace."""
        found = _netns_pids(self.netns) | _mnt_ns_pids(self.mount_ns)
        return sorted(pid for pid in found if alive(pid))


# -- the lab ---------------------------------------------------------------------------------


class Lab:
    """Machines on one private lab network, with their state under ``root``.

    ``Lab(root)`` opens the lab described by ``<root>/machines.json`` or, when there is
    none, starts a new (empty) one there; :meth:`open` insists on an existing one.
    """

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self._state_path = os.path.join(self.root, STATE_FILE)
        self._state: dict[str, Any]
        try:
            with open(self._state_path) as f:
                self._state = json.load(f)
        except FileNotFoundError:
            os.makedirs(self.root, exist_ok=True)
            self._state = {"prefix": self._new_prefix(), "machines": []}
            self._save()
        self.prefix: str = self._state["prefix"]

    @classmethod
    def open(cls, root: str) -> Lab:
        """The existing lab under ``root`` (raises :class:`FileNotFoundError` if none)."""
        path = os.path.join(root, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no lab under {root} ({path} is missing)")
        return cls(root)

    def _new_prefix(self) -> str:
        """``lab`` + 4 hex digits, derived from the root, unused by any other lab."""
        taken = {name.split("-", 1)[0] for name in _netns_list()}
        prefix = "lab" + hashlib.sha256(self.root.encode()).hexdigest()[:4]
        while prefix in taken:
            prefix = "lab" + secrets.token_hex(2)
        return prefix

    def _save(self) -> None:
        tmp = self._state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._state, f, indent=2)
            f.write("\n")
        os.replace(tmp, self._state_path)

    @property
    def net_netns(self) -> str:
        """Name of the network namespace that holds the lab bridge."""
        return f"{self.prefix}-net"

    @property
    def bridge(self) -> str:
        """Name of the lab bridge (inside :attr:`net_netns`)."""
        return f"{self.prefix}-br"

    @property
    def ns_dir(self) -> str:
        """The private bind mount that holds the machines' mount namespace files."""
        return os.path.join(self.root, "ns")

    def machines(self) -> list[Machine]:
        """The lab's machines, in creation order."""
        return [
            Machine(self.root, self.prefix, m["name"], m["index"], m.get("base"))
            for m in self._state["machines"]
        ]

    def machine(self, name: str) -> Machine:
        """The machine called ``name`` (:class:`KeyError` if there is none)."""
        for machine in self.machines():
            if machine.name == name:
                return machine
        raise KeyError(name)

    def __getitem__(self, name: str) -> Machine:
        """The machine called ``name``."""
        return self.machine(name)

    # -- creation ------------------------------------------------------------------------

    def create_machine(self, name: str, base: str | None = None) -> Machine:
        """Create machine ``name``: its network namespace on the lab bridge, its mount namespace.

        With ``base`` (``ubuntu@24.04``; a risk such as ``/stable`` is dropped) the machine
        presents that Ubuntu release in its ``/etc/os-release``, as
        Juju's machine for an application of that base is an Ubuntu machine; without, it
        shows the host's.

        The machine is recorded before anything is created, so that :meth:`destroy` also
        cleans up after a creation that failed midway.

        Raises:
            ValueError: an invalid or existing name, a base no machine can present.
        """
        if not _NAME.match(name):
            raise ValueError(f"invalid machine name {name!r} (want [a-z0-9][a-z0-9-]*, ≤ 32)")
        if any(m.name == name for m in self.machines()):
            raise ValueError(f"machine {name!r} already exists")
        base = machine_base(base) if base is not None else None
        # Addresses are never reused within a lab, as Juju never reuses machine numbers.
        index = self.next_index
        if index >= MAX_MACHINES:
            raise ValueError(f"a lab creates at most {MAX_MACHINES} machines")
        self._state["next_index"] = index + 1
        self._state["machines"].append({"name": name, "index": index, "base": base})
        self._save()
        machine = Machine(self.root, self.prefix, name, index, base)
        self._ensure_network()
        self._create_netns(machine)
        self._ensure_ns_dir()
        self._create_mount_ns(machine)
        return machine

    def _ensure_network(self) -> None:
        """The lab network namespace with its bridge (idempotent)."""
        if self.net_netns in _netns_list():
            return
        _run([IP, "netns", "add", self.net_netns])
        _run([IP, "-n", self.net_netns, "link", "set", "lo", "up"])
        _run([IP, "-n", self.net_netns, "link", "add", self.bridge, "type", "bridge"])
        _run([IP, "-n", self.net_netns, "link", "set", self.bridge, "up"])

    def _create_netns(self, machine: Machine) -> None:
        """The machine's network namespace, with ``eth0`` on the lab bridge."""
        ns, net = machine.netns, self.net_netns
        _run([IP, "netns", "add", ns])
        _run([IP, "-n", ns, "link", "set", "lo", "up"])
        veth = [IP, "-n", net, "link", "add", machine.veth, "type", "veth"]
        _run([*veth, "peer", "name", "eth0", "netns", ns])
        _run([IP, "-n", net, "link", "set", machine.veth, "master", self.bridge, "up"])
        _run([IP, "-n", ns, "addr", "add", f"{machine.address}/{PREFIX_LENGTH}", "dev", "eth0"])
        _run([IP, "-n", ns, "link", "set", "eth0", "up"])

    def _ensure_ns_dir(self) -> None:
        """``<root>/ns`` as a private bind mount (a mount namespace file needs one)."""
        os.makedirs(self.ns_dir, exist_ok=True)
        if not _is_mount_point(self.ns_dir):
            _run([MOUNT, "--bind", self.ns_dir, self.ns_dir])
        _run([MOUNT, "--make-private", self.ns_dir])

    def _create_mount_ns(self, machine: Machine) -> None:
        """A persistent mount namespace with the machine's own :data:`MACHINE_PATHS`."""
        with open(machine.mount_ns, "a"):
            pass
        _run([UNSHARE, f"--mount={machine.mount_ns}", "--propagation", "private", TRUE])
        inside = [NSENTER, f"--mount={machine.mount_ns}", "--"]
        # The copy of the host's mount table holds other namespaces (ip netns files, other
        # machines' mount namespaces): drop them, a separate server would not see them, and
        # they would keep those namespaces alive after their owner deleted them.
        _run([*inside, UMOUNT, "-a", "-l", "-t", "nsfs"], check=False)
        _run([*inside, UMOUNT, "-l", self.ns_dir], check=False)
        for path in MACHINE_PATHS:
            source = machine.host_path(path)
            os.makedirs(source, exist_ok=True)
            os.makedirs(path, exist_ok=True)  # an empty directory on the host, if missing
            _run([*inside, MOUNT, "--bind", source, path])
        if machine.base is not None:
            self._present_base(machine, machine.base)
        self._mount_own_net_sysfs(machine)

    def _present_base(self, machine: Machine, base: str) -> None:
        """Bind-mount the base's ``os-release`` over the host's, inside the machine.

        The file is generated in the machine's state dir. On Debian ``/etc/os-release`` is
        a symlink to ``../usr/lib/os-release``: the mount lands on its target, in the
        machine's private namespace only.
        """
        source = os.path.join(machine.state_dir, "os-release")
        with open(source, "w") as f:
            f.write(os_release(base))
        os.chmod(source, 0o644)
        target = os.path.realpath(OS_RELEASE)  # as mount would: a symlink's target
        _run([NSENTER, f"--mount={machine.mount_ns}", "--", MOUNT, "--bind", source, target])

    def _mount_own_net_sysfs(self, machine: Machine) -> None:
        """Give the machine a ``/sys`` of its own, as a separate server has.

        A sysfs lists the network devices of the namespace that mounted it, so the host's
        ``/sys`` lists the host's (LXD checks a network's ``parent`` there). A fresh sysfs,
        mounted from inside the machine's network namespace, replaces it; the host's
        cgroup tree is moved on top, as the host has it. Nothing may cover part of a
        sysfs: then the kernel refuses containers their own sysfs.
        """
        parked = os.path.join(machine.state_dir, "cgroup")
        os.makedirs(parked, exist_ok=True)
        inside = [NSENTER, f"--net={machine.netns_path}", f"--mount={machine.mount_ns}", "--"]
        _run([*inside, MOUNT, "--rbind", "/sys/fs/cgroup", parked])
        _run([*inside, MOUNT, "-t", "sysfs", "sysfs", "/sys"])
        _run([*inside, MOUNT, "--move", parked, "/sys/fs/cgroup"])
        os.rmdir(parked)

    # -- teardown ------------------------------------------------------------------------

    @property
    def next_index(self) -> int:
        """The index (and so the address) the next machine gets; never one used before."""
        return int(self._state.get("next_index", len(self._state["machines"])))

    def _lab_netns(self) -> list[str]:
        """Every network namespace of this lab (by prefix), machines first."""
        ours = [n for n in _netns_list() if n.startswith(f"{self.prefix}-")]
        return sorted(ours, key=lambda n: n == self.net_netns)

    def _processes(self) -> set[int]:
        """Every process of the lab (its namespaces), with descendants, but never us."""
        found: set[int] = set()
        for netns in self._lab_netns():
            found |= _netns_pids(netns)
        for machine in self.machines():
            found |= _mnt_ns_pids(machine.mount_ns)
        return _process_tree(found)

    def kill_machine(self, name: str) -> list[int]:
        """Kill every process of machine ``name`` at once (SIGKILL), as a power cut does.

        Its namespaces, files and address stay: it can come back (its daemons are then
        started by whatever starts them on a booting machine: here, the units' hooks).

        Returns:
            The processes still alive afterwards: empty when everything went.
        """
        machine = self.machine(name)
        kill(_process_tree(set(machine.pids())))
        return sorted(_process_tree(set(machine.pids())))

    def destroy_machine(self, name: str) -> list[str]:
        """Stop everything of machine ``name`` and remove it; the rest of the lab is untouched.

        As a server that is switched off and wiped.

        Returns:
            What is left of the machine (processes, network namespace, mounts): empty when
            everything went. The machine stays recorded until nothing is left.
        """
        machine = self.machine(name)
        terminate(_process_tree(set(machine.pids())))
        left = [f"process {pid}" for pid in sorted(_process_tree(set(machine.pids())))]
        if not left:
            if _is_mount_point(machine.mount_ns):
                unmount(machine.mount_ns)
            _run([IP, "-n", self.net_netns, "link", "delete", machine.veth], check=False)
            _run([IP, "netns", "delete", machine.netns], check=False)
            left += [f"netns {machine.netns}" for n in _netns_list() if n == machine.netns]
            left += [f"mount {point}" for point in mounts_under(machine.state_dir)]
            if _is_mount_point(machine.mount_ns):
                left.append(f"mount {machine.mount_ns}")
        if not left:
            shutil.rmtree(machine.state_dir, ignore_errors=True)
            if os.path.exists(machine.mount_ns):
                os.remove(machine.mount_ns)
            self._state["machines"] = [m for m in self._state["machines"] if m["name"] != name]
            self._save()
        return left

    def destroy(self) -> list[str]:
        """Stop everything of the lab and remove its state; idempotent.

        Kills every process (SIGTERM, then SIGKILL after ~10 s), unmounts the mount
        namespaces and ``<root>/ns``, deletes the network namespaces and removes the root.
        A namespace that still has a process is kept, so that :meth:`leftovers` shows it.

        Returns:
            What is left (as :meth:`leftovers`): empty when everything went.
        """
        terminate(self._processes())
        survivors = self._processes()
        if not survivors:
            for point in mounts_under(self.root):
                unmount(point)
            for netns in self._lab_netns():
                _run([IP, "netns", "delete", netns], check=False)
            if not mounts_under(self.root):
                shutil.rmtree(self.root, ignore_errors=True)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        """What of the lab is still there, readable.

        Processes, network namespaces and mounts.
        """
        lines = []
        for pid in sorted(self._processes()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            lines.append(f"process {pid}: {cmd}")
        lines += [f"netns {netns}" for netns in self._lab_netns()]
        lines += [f"mount {point}" for point in mounts_under(self.root)]
        return lines
