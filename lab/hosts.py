"""Real LXD daemons for functional tests (and a later lab): start, stop, clean up, images.

Every daemon runs from the distro package with its own ``LXD_DIR`` under one temporary
root and is started by the charm's own code path (:class:`installer.DebInstaller` without
systemd). Nothing here hard-codes a machine path: callers pass the root directory.

Teardown matters as much as start-up: a killed daemon leaves tmpfs mounts (``shmounts``,
``devlxd``) and possibly container processes behind, so :func:`cleanup_root` stops every
daemon cleanly, kills what survives, lazily unmounts everything under the root (deepest
first) and :func:`leftovers` reports what is still there.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import yaml

from installer import DebInstaller
from lab.procs import alive, mounts_under, unmount, wait_gone, with_descendants
from lxd import LXD

LXD_BINARY = "/usr/bin/lxd"
LXC_BINARY = "/usr/bin/lxc"
BUSYBOX = "/bin/busybox"  # from Debian's busybox-static: one static binary, no libraries
HTTPS_PORT = 8443


def unavailable_reason() -> str | None:
    """Why real daemons cannot run here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "real LXD daemons need root"
    if not os.access(LXD_BINARY, os.X_OK):
        return f"{LXD_BINARY} is missing (install the Debian 'lxd' and 'lxd-client' packages)"
    return None


@dataclass
class LXDHost:
    """One LXD daemon: a member name, its HTTPS address and its own ``LXD_DIR``."""

    name: str
    ip: str
    lxd_dir: str
    lxc_conf: str
    installer: DebInstaller = field(init=False)
    lxd: LXD = field(init=False)

    def __post_init__(self) -> None:
        """Build the installer and client the charm would use for this daemon."""
        self.installer = DebInstaller(lxd_dir=self.lxd_dir, systemd=False)
        self.lxd = LXD(self.installer.paths)

    @property
    def address(self) -> str:
        """``ip:port`` the daemon serves HTTPS (and clustering) on."""
        return f"{self.ip}:{HTTPS_PORT}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for ``lxd``/``lxc`` commands aimed at this daemon."""
        return dict(os.environ, LXD_DIR=self.lxd_dir, LXD_CONF=self.lxc_conf)

    def pid(self) -> int | None:
        """The daemon's pid as the installer recorded it."""
        try:
            with open(os.path.join(self.lxd_dir, "lxd.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        """Start the daemon the way the charm does on a host without systemd."""
        os.makedirs(self.lxc_conf, exist_ok=True)
        self.installer.ensure_running()
        self.lxd.wait_ready(timeout=60)

    def lxc(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """Run ``lxc`` against this daemon; return stdout."""
        result = subprocess.run(  # noqa: S603
            [LXC_BINARY, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"lxc {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def read_server_certificate(self) -> tuple[bytes, bytes]:
        """This daemon's own ``server.crt`` and ``server.key`` (PEM bytes)."""
        with open(os.path.join(self.lxd_dir, "server.crt"), "rb") as crt:
            with open(os.path.join(self.lxd_dir, "server.key"), "rb") as key:
                return crt.read(), key.read()

    def cluster_certificate(self) -> str:
        """The cluster certificate this member serves (PEM)."""
        with open(os.path.join(self.lxd_dir, "cluster.crt")) as f:
            return f.read()


def make_root(prefix: str = "lxd-lab-") -> str:
    """A fresh temporary directory for daemons, which unprivileged containers can traverse.

    Container roots (uid 1000000 and up) need ``x`` on every ancestor of their rootfs, so
    neither a plain 0700 ``mkdtemp`` nor pytest's 0700 ``pytest-of-<user>`` basetemp will
    do (the container fails to start with "Permission denied - Could not access ...").
    """
    root = tempfile.mkdtemp(prefix=prefix)
    os.chmod(root, 0o711)  # noqa: S103 - container roots must traverse it, not list it
    parent = os.path.dirname(root)
    while parent != os.path.dirname(parent):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            shutil.rmtree(root)
            raise RuntimeError(f"{parent} is not world-traversable; point TMPDIR elsewhere")
        parent = os.path.dirname(parent)
    return root


def make_hosts(root: str, specs: Sequence[tuple[str, str]]) -> list[LXDHost]:
    """Describe one host per (member name, loopback ip), each under ``root/<name>``."""
    return [
        LXDHost(
            name=name,
            ip=ip,
            lxd_dir=os.path.join(root, name),
            lxc_conf=os.path.join(root, "lxc-conf", name),
        )
        for name, ip in specs
    ]


def address_in_use(ip: str, port: int = HTTPS_PORT) -> bool:
    """Whether something already listens on ``ip:port`` (another lab, a stale daemon)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((ip, port)) == 0


def start_hosts(hosts: Iterable[LXDHost]) -> None:
    """Start several daemons in parallel (each takes a few seconds to get ready)."""
    hosts = list(hosts)
    busy = [h.address for h in hosts if address_in_use(h.ip)]
    if busy:
        raise RuntimeError(f"address(es) already in use: {', '.join(busy)}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for future in [pool.submit(h.start) for h in hosts]:
            future.result()


@dataclass
class Lab:
    """The daemons of one deployment, by member name, and the root they live under."""

    root: str
    hosts: dict[str, LXDHost]

    def __getitem__(self, name: str) -> LXDHost:
        """The daemon of member ``name``."""
        return self.hosts[name]

    def path(self, *parts: str) -> str:
        """A path for test artefacts (images, copied certificates) under the root."""
        path = os.path.join(self.root, "artefacts", *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path


# -- teardown ------------------------------------------------------------------------------


def stop_host(host: LXDHost, timeout: float = 30) -> str:
    """``lxd shutdown`` (bounded), then SIGKILL the daemon if it is still alive.

    Returns what happened, for the teardown log.
    """
    pid = host.pid()
    if pid is None or not alive(pid):
        return f"{host.name}: not running"
    started = time.monotonic()
    try:
        result = subprocess.run(  # noqa: S603
            [LXD_BINARY, "shutdown", "--timeout", str(int(timeout))],
            env=host.env,
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
        detail = result.stderr.strip()[-200:]
    except subprocess.TimeoutExpired:
        detail = "lxd shutdown timed out"
    if wait_gone(pid, 5):
        return f"{host.name}: stopped in {time.monotonic() - started:.1f}s"
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10)
    return f"{host.name}: killed after {time.monotonic() - started:.1f}s ({detail})"


def _proc_text(pid: str, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_under(root: str) -> dict[int, str]:
    """Processes belonging to daemons under ``root``, with their descendants: pid -> cmdline.

    A process belongs when its command line or environment mentions ``root`` (the daemon,
    its ``forkstart``/``[lxc monitor]`` helpers); container payloads are found as their
    descendants.
    """
    inside = root.rstrip("/") + "/"  # never match a sibling root (a concurrent lab)
    me = os.getpid()
    roots = {
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit()
        and int(entry) != me
        and (inside in _proc_text(entry, "cmdline") or inside in _proc_text(entry, "environ"))
    }
    matched = {pid: _proc_text(str(pid), "cmdline").strip() for pid in with_descendants(roots)}
    return {pid: cmd for pid, cmd in matched.items() if alive(pid)}


def database_leaders(hosts: Iterable[LXDHost], timeout: float = 10) -> set[str]:
    """Names of the members the running daemons report as ``database-leader``."""
    leaders = set()
    for host in hosts:
        pid = host.pid()
        if pid is None or not alive(pid):
            continue
        try:
            out = host.lxc("query", "/1.0/cluster/members?recursion=1", timeout=timeout)
            members = json.loads(out)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            continue  # not clustered, or not answering: nothing to learn here
        leaders |= {m["server_name"] for m in members if "database-leader" in m.get("roles", [])}
    return leaders


def cleanup_root(root: str, hosts: Iterable[LXDHost], timeout: float = 30) -> list[str]:
    """Stop every daemon, kill survivors, unmount everything under ``root``.

    Returns one line per daemon saying how it stopped.
    """
    hosts = list(hosts)
    # Stop instances first, while every member still answers: a member stopping instances
    # during its own shutdown needs the cluster database, and waits out the whole timeout
    # when the database leader has already gone down in parallel.
    for host in hosts:
        pid = host.pid()
        if pid is not None and alive(pid):
            try:
                host.lxc("stop", "--all", "--force", timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                pass
    # Database leaders last: a member shutting down hands its database role over, which
    # stalls (~10 s) when the leader is going down at the same time.
    leaders = database_leaders(hosts)
    report = []
    for batch in (
        [h for h in hosts if h.name not in leaders],
        [h for h in hosts if h.name in leaders],
    ):
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(batch))) as pool:
            report += list(pool.map(lambda h: stop_host(h, timeout), batch))
    for pid in processes_under(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(processes_under(root)):
        wait_gone(pid, 5)
    for point in mounts_under(root):
        unmount(point)
    return report


def leftovers(root: str) -> list[str]:
    """What :func:`cleanup_root` could not remove (processes, mounts) as readable lines."""
    return [f"process {pid}: {cmd}" for pid, cmd in processes_under(root).items()] + [
        f"mount {point}" for point in mounts_under(root)
    ]


def remove_root(root: str) -> None:
    """Delete ``root`` once nothing is mounted under it (never crosses a mount)."""
    if not mounts_under(root):
        shutil.rmtree(root, ignore_errors=True)


# -- images ----------------------------------------------------------------------------------

BUSYBOX_INITTAB = "::respawn:/bin/sleep 3600\n"


def build_busybox_image(path: str, busybox: str = BUSYBOX) -> str:
    """Write a unified LXD image tarball at ``path`` whose rootfs is Debian's static busybox.

    ``/sbin/init`` is busybox init, which only respawns ``sleep 3600`` (no network, no
    tty), so a container of it stays RUNNING with nothing to download.
    """
    applets = subprocess.run(  # noqa: S603
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    metadata = {
        "architecture": "x86_64",
        "creation_date": int(time.time()),
        "properties": {
            "os": "busybox",
            "release": "static",
            "architecture": "x86_64",
            "description": "busybox-static test image",
        },
    }

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))

    def add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        tar.addfile(info)

    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        add_file(tar, "metadata.yaml", yaml.safe_dump(metadata).encode())
        add_dir(tar, "rootfs")
        for d in ("bin", "sbin", "dev", "proc", "sys", "etc", "root", "run", "var"):
            add_dir(tar, f"rootfs/{d}")
        add_dir(tar, "rootfs/tmp", 0o1777)
        with open(busybox, "rb") as f:
            add_file(tar, "rootfs/bin/busybox", f.read(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            add_link(tar, f"rootfs/bin/{applet}", "busybox")
        add_link(tar, "rootfs/sbin/init", "/bin/busybox")
        add_file(tar, "rootfs/etc/inittab", BUSYBOX_INITTAB.encode())
        add_file(tar, "rootfs/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add_file(tar, "rootfs/etc/group", b"root:x:0:\n")
    return path


def import_image(host: LXDHost, tarball: str, alias: str = "busybox") -> None:
    """Import ``tarball`` under ``alias`` (once per cluster: images are cluster-wide)."""
    host.lxc("image", "import", tarball, "--alias", alias, timeout=180)
