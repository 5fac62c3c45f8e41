"""Unit tests of ``src/installer.py``: no package manager, snapd or daemon is touched.

``installer._run`` is replaced by :class:`FakeRun` (records argv, env, timeout; answers
canned output per argv); ``_run`` itself is tested with harmless real commands.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

import installer
from charm_common import packages
from installer import (
    DPKG_QUERY,
    SNAP,
    SYSTEMCTL,
    DebInstaller,
    InstallError,
    SnapInstaller,
)
from lxd import LXDPaths


class FakeRun:
    """Stands in for ``installer._run``: records calls, answers per argv."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, ...], Any] = {}
        self.calls: list[SimpleNamespace] = []

    def on(self, argv: list[str], answer: Any) -> None:
        """Answer ``argv`` with stdout text, or raise ``answer`` if it is an exception."""
        self.answers[tuple(argv)] = answer

    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls]

    def __call__(self, argv, env=None, timeout=900) -> str:
        self.calls.append(SimpleNamespace(argv=list(argv), env=env, timeout=timeout))
        answer = self.answers.get(tuple(argv), "")
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def run(monkeypatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(installer, "_run", fake)
    return fake


# ---------------------------------------------------------------------------- _run


def test_run_returns_stdout():
    assert installer._run([sys.executable, "-c", "print('hello')"]) == "hello\n"


def test_run_success_with_no_output():
    assert installer._run(["/bin/true"]) == ""


def test_run_passes_env():
    out = installer._run(
        [sys.executable, "-c", "import os; print(os.environ['LXD_DIR'])"],
        env={"LXD_DIR": "/var/lib/lxd"},
    )
    assert out == "/var/lib/lxd\n"


def test_run_failure_names_the_command():
    with pytest.raises(InstallError) as exc_info:
        installer._run(["/bin/false", "--some", "args", "more"])
    assert str(exc_info.value) == "/bin/false --some args failed: "


def test_run_failure_reports_the_end_of_stderr():
    # GIVEN a command that fails after a long error output ending in the real reason
    script = "import sys; sys.stderr.write('x' * 500 + 'E: real reason\\n'); sys.exit(3)"

    # WHEN / THEN the message keeps the last 300 characters of stderr (stripped)
    with pytest.raises(InstallError) as exc_info:
        installer._run([sys.executable, "-c", script])
    message = str(exc_info.value)
    assert message.startswith(f"{sys.executable} -c import sys;")
    tail = message.rsplit(" failed: ", 1)[1]
    assert tail == ("x" * 500 + "E: real reason")[-300:]


def test_run_missing_binary(tmp_path):
    missing = str(tmp_path / "no-such-binary")

    with pytest.raises(InstallError, match=f"^{missing} failed: .*No such file"):
        installer._run([missing, "install"])


def test_run_timeout():
    with pytest.raises(InstallError, match=r"^/bin/sleep failed: .*timed out after 0\.2 seconds"):
        installer._run(["/bin/sleep", "5"], timeout=0.2)


# ---------------------------------------------------------------------------- snap


def test_snap_paths():
    assert SnapInstaller.paths == LXDPaths(
        lxd_dir="/var/snap/lxd/common/lxd",
        lxd_binary="/snap/bin/lxd",
        ceph_dir="/var/snap/lxd/common/ceph",
        ovn_dir="/var/snap/lxd/common/ovn",
    )
    assert SnapInstaller.paths.socket == "/var/snap/lxd/common/lxd/unix.socket"
    assert SnapInstaller.uses_cohort is True


def test_snap_create_cohort(run):
    run.on([SNAP, "create-cohort", "lxd"], "cohorts:\n  lxd:\n    cohort-key: MSBzn1k2\n")

    assert SnapInstaller().create_cohort() == "MSBzn1k2"
    assert run.argvs() == [["/usr/bin/snap", "create-cohort", "lxd"]]


def test_snap_installed_version(run):
    run.on(
        [SNAP, "list", "lxd"],
        "Name  Version         Rev    Tracking     Publisher   Notes\n"
        "lxd   5.21.3-c5ae129  33110  5.21/stable  canonical✓  held\n",
    )

    assert SnapInstaller().installed_version() == "5.21.3-c5ae129"


def test_snap_not_installed(run):
    run.on([SNAP, "list", "lxd"], InstallError("error: no matching snaps installed"))

    assert SnapInstaller().installed_version() is None


def test_snap_install_on_the_cohort_then_hold(run):
    # GIVEN lxd is not installed
    run.on([SNAP, "list", "lxd"], InstallError("error: no matching snaps installed"))

    # WHEN it is installed from a channel on a cohort
    installed = SnapInstaller().install("5.21/stable", "MSBzn1k2")

    # THEN it is installed on that cohort, then refreshes are held
    assert installed is True
    assert run.argvs() == [
        ["/usr/bin/snap", "list", "lxd"],
        ["/usr/bin/snap", "install", "lxd", "--channel=5.21/stable", "--cohort=MSBzn1k2"],
        ["/usr/bin/snap", "refresh", "--hold", "lxd"],
    ]


def test_snap_install_without_cohort(run):
    run.on([SNAP, "list", "lxd"], InstallError("not installed"))

    assert SnapInstaller().install("latest/edge", "") is True
    assert run.argvs()[1] == ["/usr/bin/snap", "install", "lxd", "--channel=latest/edge"]


def test_snap_install_when_installed(run):
    run.on([SNAP, "list", "lxd"], "Name Version Rev\nlxd 5.21.3 33110\n")

    assert SnapInstaller().install("5.21/stable", "MSBzn1k2") is False
    assert run.argvs() == [["/usr/bin/snap", "list", "lxd"]]


def test_snap_install_failure_propagates(run):
    run.on([SNAP, "list", "lxd"], InstallError("not installed"))
    run.on(
        [SNAP, "install", "lxd", "--channel=5.21/stable"],
        InstallError("snap install lxd failed: cannot reach the store"),
    )

    with pytest.raises(InstallError, match="cannot reach the store"):
        SnapInstaller().install("5.21/stable", "")
    assert [SNAP, "refresh", "--hold", "lxd"] not in run.argvs()


def test_snap_ensure_running(run):
    assert SnapInstaller().ensure_running() is False
    assert run.argvs() == [["/usr/bin/snap", "start", "--enable", "lxd.daemon"]]


# ---------------------------------------------------------------------------- deb


def test_deb_paths(tmp_path):
    deb = DebInstaller(lxd_dir=str(tmp_path / "lxd"), systemd=True)

    assert deb.paths == LXDPaths(
        lxd_dir=str(tmp_path / "lxd"),
        lxd_binary="/usr/bin/lxd",
        ceph_dir="/etc/ceph",
        ovn_dir="/etc/ovn",
    )
    assert deb.uses_cohort is False
    assert deb.create_cohort() == ""


def test_deb_default_lxd_dir():
    assert DebInstaller(systemd=True).paths.lxd_dir == "/var/lib/lxd"


@pytest.mark.parametrize("systemd_running", [True, False])
def test_deb_detects_systemd(monkeypatch, run, systemd_running):
    # GIVEN /run/systemd/system exists (or not)
    asked = []

    def isdir(path):
        asked.append(path)
        return systemd_running

    monkeypatch.setattr(installer.os.path, "isdir", isdir)

    # WHEN the daemon is started on a host with a live pid file (so no direct start happens)
    deb = DebInstaller()
    monkeypatch.setattr(deb, "_pid_alive", lambda: True)
    deb.ensure_running()

    # THEN systemd is used exactly when it runs
    assert asked == ["/run/systemd/system"]
    expected = [[SYSTEMCTL, "start", "lxd.socket", "lxd.service"]] if systemd_running else []
    assert run.argvs() == expected


@pytest.mark.parametrize(
    "out, version",
    [
        ("install ok installed 5.0.2-5", "5.0.2-5"),
        ("hold ok installed 5.0.2-5+deb12u1", "5.0.2-5+deb12u1"),
        ("deinstall ok config-files 5.0.2-5", None),
    ],
)
def test_deb_installed_version(run, out, version):
    run.on([DPKG_QUERY, "-W", "-f=${Status} ${Version}", "lxd"], out)

    assert DebInstaller(systemd=True).installed_version() == version
    assert run.argvs() == [["/usr/bin/dpkg-query", "-W", "-f=${Status} ${Version}", "lxd"]]


def test_deb_not_known_to_dpkg(run):
    run.on(
        [DPKG_QUERY, "-W", "-f=${Status} ${Version}", "lxd"],
        InstallError("dpkg-query: no packages found matching lxd"),
    )

    assert DebInstaller(systemd=True).installed_version() is None


@pytest.mark.parametrize(
    "out",
    [
        pytest.param("purge ok not-installed ", id="purged"),
        pytest.param("unknown ok not-installed ", id="known-not-installed"),
        pytest.param("install reinstreq half-installed 5.0.2-5", id="half-installed"),
    ],
)
def test_deb_not_installed_states_are_not_installed(run, out):
    run.on([DPKG_QUERY, "-W", "-f=${Status} ${Version}", "lxd"], out)

    assert DebInstaller(systemd=True).installed_version() is None


def test_deb_install_installs_what_is_missing(monkeypatch):
    # GIVEN the shared package helper (channel and cohort do not apply to packages)
    install = MagicMock(return_value=True)
    monkeypatch.setattr("charm_common.packages.install", install)

    # WHEN LXD is installed
    installed = DebInstaller(systemd=True).install("5.21/stable", "MSBzn1k2")

    # THEN LXD, its client and the ceph tools (needed before LXD starts) are asked for
    assert installed is True
    install.assert_called_once_with(("lxd", "lxd-client", "ceph-common"))


def test_deb_install_failure_is_an_install_error(monkeypatch):
    monkeypatch.setattr(
        "charm_common.packages.install",
        MagicMock(side_effect=packages.PackageError("apt-get install lxd failed: no space")),
    )

    with pytest.raises(InstallError, match="no space"):
        DebInstaller(systemd=True).install("", "")


def test_deb_ensure_running_with_systemd(run, monkeypatch):
    def no_popen(*args, **kwargs):
        raise AssertionError("must not start lxd directly")

    monkeypatch.setattr(installer.subprocess, "Popen", no_popen)

    assert DebInstaller(systemd=True).ensure_running() is False
    assert run.argvs() == [["/usr/bin/systemctl", "start", "lxd.socket", "lxd.service"]]


@pytest.fixture
def popen(monkeypatch):
    """Record ``subprocess.Popen`` calls; the 'process' has pid 4242."""
    started: list[tuple[list[str], dict[str, Any]]] = []

    def fake(argv, **kwargs):
        started.append((argv, kwargs))
        return SimpleNamespace(pid=4242)

    monkeypatch.setattr(installer.subprocess, "Popen", fake)
    return started


def test_deb_ensure_running_starts_the_daemon_detached(tmp_path, run, popen):
    # GIVEN no systemd and no daemon (its directory does not exist yet)
    lxd_dir = tmp_path / "var" / "lib" / "lxd"
    deb = DebInstaller(lxd_dir=str(lxd_dir), systemd=False)

    # WHEN
    started = deb.ensure_running()

    # THEN lxd is started detached with its own LXD_DIR and log, its pid recorded,
    # and we waited for it to answer
    assert started is True
    [(argv, kwargs)] = popen
    assert argv == ["/usr/bin/lxd", "--group", "root", "--logfile", f"{lxd_dir}/lxd.log"]
    assert kwargs["env"]["LXD_DIR"] == str(lxd_dir)
    assert kwargs["stdin"] == kwargs["stdout"] == kwargs["stderr"] == subprocess.DEVNULL
    assert kwargs["start_new_session"] is True
    assert (lxd_dir / "lxd.pid").read_text() == "4242"
    assert stat.S_IMODE(lxd_dir.stat().st_mode) == 0o711 & ~_umask()
    [wait] = run.calls
    assert wait.argv == ["/usr/bin/lxd", "waitready", "--timeout", "60"]
    assert wait.env["LXD_DIR"] == str(lxd_dir)
    assert wait.timeout == 70


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fake_proc(root, pid: int, argv0: str, state: str = "S") -> None:
    """A /proc/<pid> with the stat state and argv[0] that _pid_alive reads."""
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "stat").write_text(f"{pid} (lxd) {state} 1 {pid} {pid} 0 -1\n")
    (root / str(pid) / "cmdline").write_bytes(argv0.encode() + b"\0--group\0root\0")


def test_deb_ensure_running_when_the_daemon_runs(tmp_path, run, popen):
    # GIVEN a pid file naming a live lxd
    (tmp_path / "lxd.pid").write_text("1234\n")
    deb = DebInstaller(lxd_dir=str(tmp_path), systemd=False)
    deb.proc_root = str(tmp_path / "proc")
    fake_proc(tmp_path / "proc", 1234, "/usr/bin/lxd")

    # WHEN / THEN nothing is started
    assert deb.ensure_running() is False
    assert popen == []
    assert run.calls == []


@pytest.mark.parametrize(
    ("pid_file", "proc"),
    [
        ("1234\n", None),
        ("not a pid\n", None),
        ("1234\n", ("/usr/bin/lxd", "Z")),
        ("1234\n", ("/usr/bin/python3", "S")),
    ],
    ids=["gone", "garbage", "zombie-lxd", "pid-reused-by-another-program"],
)
def test_deb_ensure_running_with_a_stale_pid_file(tmp_path, run, popen, pid_file, proc):
    # GIVEN a pid file that does not name a live lxd
    (tmp_path / "lxd.pid").write_text(pid_file)
    deb = DebInstaller(lxd_dir=str(tmp_path), systemd=False)
    deb.proc_root = str(tmp_path / "proc")
    if proc:
        fake_proc(tmp_path / "proc", 1234, *proc)

    # WHEN / THEN the daemon is started again and the pid file replaced
    assert deb.ensure_running() is True
    assert len(popen) == 1
    assert (tmp_path / "lxd.pid").read_text() == "4242"


def test_deb_ensure_running_daemon_never_ready(tmp_path, run, popen):
    run.on(
        ["/usr/bin/lxd", "waitready", "--timeout", "60"],
        InstallError("/usr/bin/lxd waitready --timeout failed: Error: LXD still not running"),
    )

    with pytest.raises(InstallError, match="LXD still not running"):
        DebInstaller(lxd_dir=str(tmp_path), systemd=False).ensure_running()


# ---------------------------------------------------------------------------- detection


@pytest.mark.parametrize("snapd, kind", [(True, SnapInstaller), (False, DebInstaller)])
def test_detect_installer(monkeypatch, snapd, kind):
    asked = []

    def exists(path):
        asked.append(path)
        return snapd

    monkeypatch.setattr(installer.os.path, "exists", exists)
    monkeypatch.setattr(installer.os.path, "isdir", lambda path: True)

    assert type(installer.detect_installer()) is kind
    assert asked == ["/run/snapd.socket"]
