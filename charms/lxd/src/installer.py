"""Installing and running LXD: one interface, two implementations (snap, distro package).

Everything after installation is the same code; what differs (paths, how the daemon is
started, restarted and refreshed) comes from here. Never imports ``ops``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
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
# Upgrades never stop at a conffile question: keep the admin's files, take new defaults.
APT_UPGRADE_OPTIONS = (
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
)
READY_TIMEOUT = 60.0  # seconds for a started daemon to answer
READY_POLL = 2  # seconds per ``lxd waitready`` round (a daemon that died is noticed this fast)
STOP_TIMEOUT = 30.0  # seconds for a daemon to exit on SIGTERM before it is killed


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

    def refresh(self, channel: str, cohort: str) -> bool:
        """Upgrade LXD (the daemon restarts); return whether a new version was installed."""
        ...

    def restart(self) -> None:
        """Restart the daemon on the installed binary; running instances keep running."""
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

    def _listed(self) -> list[str] | None:
        """The ``snap list lxd`` row (Name Version Rev ...), ``None`` when not installed."""
        try:
            out = _run([SNAP, "list", "lxd"])
        except InstallError:
            return None
        return out.splitlines()[1].split()

    def installed_version(self) -> str | None:
        """Version of the installed lxd snap."""
        row = self._listed()
        return row[1] if row else None

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

    def refresh(self, channel: str, cohort: str) -> bool:
        """``snap refresh lxd`` to ``channel`` on ``cohort``; whether the revision changed.

        The hold set at install only stops automatic refreshes: snapd still honours a
        refresh that names the snap. Snapd restarts the daemon when the revision changes.
        """
        before = self._listed()
        argv = [SNAP, "refresh", "lxd", f"--channel={channel}"]
        if cohort:
            argv.append(f"--cohort={cohort}")
        _run(argv)
        after = self._listed()
        return (after[2] if after else None) != (before[2] if before else None)

    def restart(self) -> None:
        """``snap restart lxd.daemon`` (the snap's stop script leaves instances running)."""
        _run([SNAP, "restart", "lxd.daemon"])


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

    def _live_pid(self) -> int | None:
        """The pid in ``lxd.pid`` if it is a live ``lxd`` (not a zombie, not a reused pid)."""
        try:
            with open(os.path.join(self.paths.lxd_dir, "lxd.pid")) as f:
                pid = int(f.read().strip())
            with open(os.path.join(self.proc_root, str(pid), "stat")) as f:
                state = f.read().rpartition(")")[2].split()[0]
            with open(os.path.join(self.proc_root, str(pid), "cmdline"), "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode()
        except (OSError, ValueError, IndexError):
            return None
        return pid if state != "Z" and argv0 == self.paths.lxd_binary else None

    def _pid_alive(self) -> bool:
        """Whether the pid in ``lxd.pid`` is a live ``lxd``."""
        return self._live_pid() is not None

    def _still_running(self, pid: int) -> bool:
        """Whether the daemon ``pid`` has not fully exited yet.

        Its main thread can be a zombie while its other threads still shut down (seen
        with Go daemons): only a zombie with one thread left, or no process, is gone.
        """
        _reap(pid)
        if self._live_pid() == pid:
            return True
        try:
            with open(os.path.join(self.proc_root, str(pid), "status")) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            return status["State"].split()[0] == "Z" and int(status["Threads"]) > 1
        except (OSError, KeyError, ValueError, IndexError):
            return False

    def ensure_running(self) -> bool:
        """Start the daemon: through systemd where it runs, directly otherwise.

        A daemon started directly that exits before it answers (it could not open its
        log, its database, ...) fails at once with its exit code and its own last words
        (stderr, kept in ``lxd.stderr`` in ``LXD_DIR``) instead of after the whole wait.
        """
        if self._systemd:
            _run([SYSTEMCTL, "start", "lxd.socket", "lxd.service"])
            return False
        if self._pid_alive():
            return False
        os.makedirs(self.paths.lxd_dir, mode=0o711, exist_ok=True)
        env = dict(os.environ, LXD_DIR=self.paths.lxd_dir)
        log = os.path.join(self.paths.lxd_dir, "lxd.log")
        stderr_path = os.path.join(self.paths.lxd_dir, "lxd.stderr")
        with open(stderr_path, "wb") as stderr:
            # Detached: the daemon must outlive the hook that started it.
            process = subprocess.Popen(  # noqa: S603 - absolute path, list args
                [self.paths.lxd_binary, "--group", "root", "--logfile", log],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        with open(os.path.join(self.paths.lxd_dir, "lxd.pid"), "w") as f:
            f.write(str(process.pid))
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = process.poll()
            if code is not None:
                raise InstallError(
                    f"{self.paths.lxd_binary} exited while starting (exit code {code}): "
                    f"{_tail(stderr_path) or 'no output'}"
                )
            try:
                _run(
                    [self.paths.lxd_binary, "waitready", "--timeout", str(READY_POLL)],
                    env=env,
                    timeout=READY_POLL + 10,
                )
                return True
            except InstallError:
                if time.monotonic() >= deadline:
                    raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop a directly started daemon, leaving its instances running.

        SIGTERM, as Debian's init script and the systemd unit (``KillMode=process``) do:
        LXD then exits without stopping instances, and finds them again when it starts.
        (``lxd shutdown`` would stop every instance first: measured on 5.0.2, the
        containers restart with new pids.) SIGKILL after ``timeout`` seconds. Returns
        whether a daemon was running.

        Raises:
            InstallError: the daemon survived SIGKILL.
        """
        pid = self._live_pid()
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while self._still_running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._still_running(pid):
                return True
            logger.warning("lxd (pid %d) did not exit on %s", pid, sig.name)
        raise InstallError(f"lxd (pid {pid}) does not exit, not even on SIGKILL")

    def restart(self) -> None:
        """Restart the daemon on the installed binary; running instances keep running.

        ``systemctl restart lxd.service`` where systemd runs; otherwise :meth:`stop`, then
        :meth:`ensure_running` (which reports a daemon that cannot start, with its words).
        """
        if self._systemd:
            _run([SYSTEMCTL, "restart", "lxd.service"])
            return
        self.stop()
        self.ensure_running()

    def refresh(self, channel: str, cohort: str) -> bool:
        """Upgrade the packages to what the archive has, then restart the daemon.

        The distro package has no channel or cohort: the machine's apt sources decide (run
        ``apt-get update`` beforehand to see new versions). The daemon restarts even when
        nothing was upgraded, so that every member of a rolling upgrade really restarts
        on the installed binary. Returns whether the ``lxd`` version changed.

        Raises:
            InstallError: apt failed (its own words), or the daemon did not come back.
        """
        del channel, cohort
        before = self.installed_version()
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(
            [
                packages.APT_GET,
                "install",
                "--only-upgrade",
                "-y",
                "--no-install-recommends",
                *APT_UPGRADE_OPTIONS,
                *DEB_PACKAGES,
            ],
            env=env,
            timeout=packages.INSTALL_TIMEOUT,
        )
        after = self.installed_version()
        self.restart()
        return after != before


def _tail(path: str, limit: int = 300) -> str:
    """The last ``limit`` characters of a text file, stripped ('' when unreadable)."""
    try:
        with open(path, errors="replace") as f:
            return f.read().strip()[-limit:]
    except OSError:
        return ""


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (else a zombie lingers)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def detect_installer() -> Installer:
    """The snap where snapd runs (Ubuntu), the distro package elsewhere."""
    if os.path.exists("/run/snapd.socket"):
        return SnapInstaller()
    return DebInstaller()
