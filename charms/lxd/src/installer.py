"""Installing and running LXD: one interface, two implementations (snap, distro package).

Everything after installation is the same code; what differs (paths, how the daemon is
started, how it is refreshed) comes from here. Never imports ``ops``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from typing import Protocol

import yaml

from charm_common import packages
from lxd import LXDPaths

logger = logging.getLogger(__name__)

SNAP = "/usr/bin/snap"
DPKG_QUERY = "/usr/bin/dpkg-query"
SYSTEMCTL = "/usr/bin/systemctl"
# LXD detects its storage drivers when it starts: the ceph client tools must be there
# first for the ``ceph`` driver (ceph-link's pools); the snap ships them itself.
DEB_PACKAGES = ("lxd", "lxd-client", "ceph-common")


class InstallError(Exception):
    """Installing, starting or refreshing LXD failed."""


def _run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - absolute paths, list args
            list(argv), capture_output=True, text=True, check=False, env=env, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{argv[0]} failed: {exc}") from None
    if result.returncode != 0:
        raise InstallError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()[-300:]}")
    return result.stdout


class Installer(Protocol):
    """How LXD gets onto the machine and runs there."""

    paths: LXDPaths
    uses_cohort: bool

    def create_cohort(self) -> str:
        """A cohort key pinning every unit to one revision ('' when not applicable)."""
        ...

    def install(self, channel: str, cohort: str) -> bool:
        """Install LXD if missing; return whether anything was installed."""
        ...

    def installed_version(self) -> str | None:
        """The installed LXD version (``None`` when not installed)."""
        ...

    def ensure_running(self) -> bool:
        """Start the daemon if it is not running; return whether it was started."""
        ...


class SnapInstaller:
    """LXD from the snap store: channel, one cohort for all units, refreshes held."""

    uses_cohort = True
    paths = LXDPaths(
        lxd_dir="/var/snap/lxd/common/lxd",
        lxd_binary="/snap/bin/lxd",
        ceph_dir="/var/snap/lxd/common/ceph",
        ovn_dir="/var/snap/lxd/common/ovn",
    )

    def create_cohort(self) -> str:
        """``snap create-cohort lxd``: the key every unit installs with."""
        out = yaml.safe_load(_run([SNAP, "create-cohort", "lxd"]))
        return str(out["cohorts"]["lxd"]["cohort-key"])

    def installed_version(self) -> str | None:
        """Version of the installed lxd snap."""
        try:
            out = _run([SNAP, "list", "lxd"])
        except InstallError:
            return None
        return out.splitlines()[1].split()[1]

    def install(self, channel: str, cohort: str) -> bool:
        """Install on ``cohort`` and hold refreshes (an installed snap is left alone)."""
        if self.installed_version() is not None:
            return False
        argv = [SNAP, "install", "lxd", f"--channel={channel}"]
        if cohort:
            argv.append(f"--cohort={cohort}")
        _run(argv)
        # Only the upgrade action may refresh: a surprise refresh restarts every member.
        _run([SNAP, "refresh", "--hold", "lxd"])
        return True

    def ensure_running(self) -> bool:
        """Snapd keeps the daemon running; start it if it is stopped."""
        _run([SNAP, "start", "--enable", "lxd.daemon"])
        return False


class DebInstaller:
    """LXD from the distro package (Debian 12 ships LXD 5.0)."""

    uses_cohort = False

    def __init__(self, lxd_dir: str = "/var/lib/lxd", systemd: bool | None = None):
        self.paths = LXDPaths(
            lxd_dir=lxd_dir,
            lxd_binary="/usr/bin/lxd",
            ceph_dir="/etc/ceph",
            ovn_dir="/etc/ovn",
        )
        self._systemd = os.path.isdir("/run/systemd/system") if systemd is None else systemd
        self.proc_root = "/proc"

    def create_cohort(self) -> str:
        """Packages have no cohorts: the archive pins the version."""
        return ""

    def installed_version(self) -> str | None:
        """Version of the installed ``lxd`` package."""
        try:
            out = _run([DPKG_QUERY, "-W", "-f=${Status} ${Version}", "lxd"])
        except InstallError:
            return None
        status, _, version = out.rpartition(" ")
        # "install ok installed" / "hold ok installed"; not "not-installed", "half-installed".
        return version or None if status.split()[-1:] == ["installed"] else None

    def install(self, channel: str, cohort: str) -> bool:
        """``apt-get install`` the packages (channel/cohort don't apply to packages)."""
        del channel, cohort
        try:
            return packages.install(DEB_PACKAGES)
        except packages.PackageError as exc:
            raise InstallError(str(exc)) from None

    def _pid_alive(self) -> bool:
        """Whether the pid in ``lxd.pid`` is a live ``lxd`` (not a zombie, not a reused pid)."""
        try:
            with open(os.path.join(self.paths.lxd_dir, "lxd.pid")) as f:
                pid = int(f.read().strip())
            with open(os.path.join(self.proc_root, str(pid), "stat")) as f:
                state = f.read().rpartition(")")[2].split()[0]
            with open(os.path.join(self.proc_root, str(pid), "cmdline"), "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode()
        except (OSError, ValueError, IndexError):
            return False
        return state != "Z" and argv0 == self.paths.lxd_binary

    def ensure_running(self) -> bool:
        """Start the daemon: through systemd where it runs, directly otherwise."""
        if self._systemd:
            _run([SYSTEMCTL, "start", "lxd.socket", "lxd.service"])
            return False
        if self._pid_alive():
            return False
        os.makedirs(self.paths.lxd_dir, mode=0o711, exist_ok=True)
        env = dict(os.environ, LXD_DIR=self.paths.lxd_dir)
        log = os.path.join(self.paths.lxd_dir, "lxd.log")
        # Detached: the daemon must outlive the hook that started it.
        process = subprocess.Popen(  # noqa: S603 - absolute path, list args
            [self.paths.lxd_binary, "--group", "root", "--logfile", log],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with open(os.path.join(self.paths.lxd_dir, "lxd.pid"), "w") as f:
            f.write(str(process.pid))
        _run([self.paths.lxd_binary, "waitready", "--timeout", "60"], env=env, timeout=70)
        return True


def detect_installer() -> Installer:
    """The snap where snapd runs (Ubuntu), the distro package elsewhere."""
    if os.path.exists("/run/snapd.socket"):
        return SnapInstaller()
    return DebInstaller()
