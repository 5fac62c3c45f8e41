"""Unit tests of ``src/installer.py``: no package manager, snapd or daemon is touched.

``installer._run`` is replaced by :class:`FakeRun` (records argv, env, timeout; answers
canned output per argv); ``_run`` itself is tested with harmless real commands.
"""

from __future__ import annotations

import os
import shutil
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

WAITREADY = ["/usr/bin/lxd", "waitready", "--timeout", "2"]


class FakeRun:
    """Stands in for ``installer._run``: records calls, answers per argv."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, ...], Any] = {}
        self.calls: list[SimpleNamespace] = []

    def on(self, argv: list[str], *answers: Any) -> None:
        """Answer ``argv`` with stdout text, or raise an answer that is an exception.

        Several answers are given in turn; the last one repeats.
        """
        self.answers[tuple(argv)] = list(answers)

    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls]

    def __call__(self, argv, env=None, timeout=900) -> str:
        self.calls.append(SimpleNamespace(argv=list(argv), env=env, timeout=timeout))
        answers = self.answers.get(tuple(argv), [""])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
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


SNAP_LIST = [SNAP, "list", "lxd"]


def _snap_row(rev: str) -> str:
    return (
        "Name  Version         Rev    Tracking     Publisher   Notes\n"
        f"lxd   5.21.3-c5ae129  {rev}  5.21/stable  canonical✓  held\n"
    )


@pytest.mark.parametrize(("after", "refreshed"), [("33111", True), ("33110", False)])
def test_snap_refresh_on_the_cohort(run, after, refreshed):
    # GIVEN revision 33110 installed
    run.on(SNAP_LIST, _snap_row("33110"), _snap_row(after))

    # WHEN it is refreshed (held snaps still refresh when named explicitly)
    result = SnapInstaller().refresh("5.21/candidate", "MSBzn1k2")

    # THEN the named snap is refreshed to the channel on the cohort
    assert result is refreshed
    assert run.argvs() == [
        SNAP_LIST,
        [SNAP, "refresh", "lxd", "--channel=5.21/candidate", "--cohort=MSBzn1k2"],
        SNAP_LIST,
    ]


def test_snap_refresh_without_cohort(run):
    run.on(SNAP_LIST, _snap_row("1"), _snap_row("2"))

    assert SnapInstaller().refresh("latest/stable", "") is True
    assert run.argvs()[1] == [SNAP, "refresh", "lxd", "--channel=latest/stable"]


def test_snap_refresh_installs_when_missing(run):
    run.on(SNAP_LIST, InstallError("error: no matching snaps installed"), _snap_row("7"))

    assert SnapInstaller().refresh("5.21/stable", "") is True


def test_snap_refresh_failure_carries_snaps_words(run):
    run.on(SNAP_LIST, _snap_row("1"))
    run.on(
        [SNAP, "refresh", "lxd", "--channel=6/stable"],
        InstallError("/usr/bin/snap refresh lxd failed: error: cannot refresh: no such channel"),
    )

    with pytest.raises(InstallError, match="no such channel"):
        SnapInstaller().refresh("6/stable", "")


def test_snap_restart(run):
    SnapInstaller().restart()

    assert run.argvs() == [[SNAP, "restart", "lxd.daemon"]]


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


class FakeDaemon:
    """What ``subprocess.Popen`` returns for the daemon: pid 4242, alive until told."""

    pid = 4242

    def __init__(self, exits: list[int | None], stderr: bytes) -> None:
        self._exits = exits
        self._stderr = stderr

    def write_stderr(self, kwargs: dict[str, Any]) -> None:
        kwargs["stderr"].write(self._stderr)

    def poll(self) -> int | None:
        return self._exits.pop(0) if len(self._exits) > 1 else self._exits[0]


@pytest.fixture
def popen(monkeypatch):
    """Record ``subprocess.Popen`` calls; the daemon (pid 4242) runs until ``popen.exits``.

    ``popen.exits`` are the answers of its ``poll()`` in turn (``None``: still running);
    ``popen.stderr`` is what it writes to its stderr before.
    """
    state = SimpleNamespace(started=[], exits=[None], stderr=b"")

    def fake(argv, **kwargs):
        state.started.append((argv, kwargs))
        daemon = FakeDaemon(state.exits, state.stderr)
        daemon.write_stderr(kwargs)
        return daemon

    monkeypatch.setattr(installer.subprocess, "Popen", fake)
    return state


def test_deb_ensure_running_starts_the_daemon_detached(tmp_path, run, popen):
    # GIVEN no systemd and no daemon (its directory does not exist yet)
    lxd_dir = tmp_path / "var" / "lib" / "lxd"
    deb = DebInstaller(lxd_dir=str(lxd_dir), systemd=False)

    # WHEN
    started = deb.ensure_running()

    # THEN lxd is started detached with its own LXD_DIR, log and stderr file, its pid
    # recorded, and we waited for it to answer
    assert started is True
    [(argv, kwargs)] = popen.started
    assert argv == ["/usr/bin/lxd", "--group", "root", "--logfile", f"{lxd_dir}/lxd.log"]
    assert kwargs["env"]["LXD_DIR"] == str(lxd_dir)
    assert kwargs["stdin"] == subprocess.DEVNULL
    assert kwargs["stdout"] is kwargs["stderr"]
    assert kwargs["stderr"].name == f"{lxd_dir}/lxd.stderr"
    assert kwargs["stderr"].closed  # the daemon has its own copy
    assert kwargs["start_new_session"] is True
    assert (lxd_dir / "lxd.pid").read_text() == "4242"
    assert stat.S_IMODE(lxd_dir.stat().st_mode) == 0o711 & ~_umask()
    [wait] = run.calls
    assert wait.argv == WAITREADY
    assert wait.env["LXD_DIR"] == str(lxd_dir)
    assert wait.timeout == 12


def test_deb_ensure_running_waits_several_rounds(tmp_path, run, popen):
    # GIVEN a daemon that answers on the third round of waitready
    not_yet = InstallError("/usr/bin/lxd waitready --timeout failed: Error: timeout")
    run.on(WAITREADY, not_yet, not_yet, "")

    # WHEN / THEN it is waited for
    assert DebInstaller(lxd_dir=str(tmp_path), systemd=False).ensure_running() is True
    assert run.argvs() == [WAITREADY] * 3


def test_deb_ensure_running_daemon_that_exits_at_start(tmp_path, run, popen):
    # GIVEN a daemon that cannot open its log and exits while we wait for it
    run.on(WAITREADY, InstallError("/usr/bin/lxd waitready --timeout failed: Error: timeout"))
    popen.exits[:] = [None, 1]
    popen.stderr = b"Error: open /var/lib/lxd/lxd.log: is a directory\n"

    # WHEN / THEN the failure carries its exit code and own words, after one round
    with pytest.raises(InstallError) as exc_info:
        DebInstaller(lxd_dir=str(tmp_path), systemd=False).ensure_running()
    assert str(exc_info.value) == (
        "/usr/bin/lxd exited while starting (exit code 1): "
        "Error: open /var/lib/lxd/lxd.log: is a directory"
    )
    assert run.argvs() == [WAITREADY]


def test_deb_ensure_running_daemon_that_exits_silently(tmp_path, run, popen):
    popen.exits[:] = [2]

    with pytest.raises(InstallError, match=r"\(exit code 2\): no output$"):
        DebInstaller(lxd_dir=str(tmp_path), systemd=False).ensure_running()
    assert run.calls == []


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
    assert popen.started == []
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
    assert len(popen.started) == 1
    assert (tmp_path / "lxd.pid").read_text() == "4242"


def test_deb_ensure_running_daemon_never_ready(tmp_path, run, popen, monkeypatch):
    # GIVEN a daemon that keeps running but never answers (the wait is bounded)
    monkeypatch.setattr(installer, "READY_TIMEOUT", 0.0)
    run.on(
        WAITREADY,
        InstallError("/usr/bin/lxd waitready --timeout failed: Error: LXD still not running"),
    )

    with pytest.raises(InstallError, match="LXD still not running"):
        DebInstaller(lxd_dir=str(tmp_path), systemd=False).ensure_running()


# ------------------------------------------------------------------------ deb: restart, refresh


def zombie(root, pid: int, threads: int) -> None:
    """Turn the fake /proc/<pid> into a zombie with ``threads`` threads still running."""
    (root / str(pid) / "stat").write_text(f"{pid} (lxd) Z 1 {pid} {pid} 0 -1\n")
    (root / str(pid) / "status").write_text(
        f"Name:\tlxd\nState:\tZ (zombie)\nThreads:\t{threads}\n"
    )


@pytest.fixture
def daemon_proc(tmp_path, monkeypatch):
    """A directly started daemon (pid 1234 in a fake /proc); signals are recorded.

    ``daemon_proc.exits_on`` names the signals the fake daemon dies of (it turns into a
    zombie, as a real one does until its parent reaps it).
    """
    deb = DebInstaller(lxd_dir=str(tmp_path), systemd=False)
    deb.proc_root = str(tmp_path / "proc")
    (tmp_path / "lxd.pid").write_text("1234\n")
    fake_proc(tmp_path / "proc", 1234, "/usr/bin/lxd")
    state = SimpleNamespace(deb=deb, signals=[], exits_on={installer.signal.SIGTERM})

    def kill(pid, sig):
        assert pid == 1234
        state.signals.append(sig)
        if sig in state.exits_on:
            zombie(tmp_path / "proc", 1234, threads=1)

    monkeypatch.setattr(installer.os, "kill", kill)
    monkeypatch.setattr(installer.time, "sleep", lambda seconds: None)
    return state


def test_deb_stop_sends_sigterm_and_waits(daemon_proc):
    assert daemon_proc.deb.stop() is True
    assert daemon_proc.signals == [installer.signal.SIGTERM]


def test_deb_stop_waits_for_every_thread_to_exit(daemon_proc, tmp_path, monkeypatch):
    # GIVEN a daemon whose main thread turns zombie on SIGTERM while 12 threads shut down
    def kill(pid, sig):
        daemon_proc.signals.append(sig)
        zombie(tmp_path / "proc", 1234, threads=12)

    polls = []

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) == 3:  # the last threads exit
            zombie(tmp_path / "proc", 1234, threads=1)

    monkeypatch.setattr(installer.os, "kill", kill)
    monkeypatch.setattr(installer.time, "sleep", sleep)

    # WHEN / THEN stop waits for them, with SIGTERM only
    assert daemon_proc.deb.stop() is True
    assert len(polls) == 3
    assert daemon_proc.signals == [installer.signal.SIGTERM]


def test_deb_stop_kills_a_daemon_that_ignores_sigterm(daemon_proc, caplog):
    daemon_proc.exits_on = {installer.signal.SIGKILL}

    assert daemon_proc.deb.stop(timeout=0) is True
    assert daemon_proc.signals == [installer.signal.SIGTERM, installer.signal.SIGKILL]
    assert "did not exit on SIGTERM" in caplog.text


def test_deb_stop_daemon_that_cannot_be_killed(daemon_proc, monkeypatch):
    daemon_proc.exits_on = set()
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(installer.time, "monotonic", lambda: next(clock))

    with pytest.raises(
        InstallError, match=r"^lxd \(pid 1234\) does not exit, not even on SIGKILL$"
    ):
        daemon_proc.deb.stop(timeout=0)


def test_deb_stop_daemon_gone_meanwhile(daemon_proc, monkeypatch):
    def kill(pid, sig):
        raise ProcessLookupError(pid)

    monkeypatch.setattr(installer.os, "kill", kill)

    assert daemon_proc.deb.stop() is True


def test_deb_stop_daemon_reaped_at_once(daemon_proc, tmp_path, monkeypatch):
    # GIVEN a daemon that is gone (and reaped) as soon as it gets SIGTERM
    def kill(pid, sig):
        daemon_proc.signals.append(sig)
        shutil.rmtree(tmp_path / "proc" / "1234")

    monkeypatch.setattr(installer.os, "kill", kill)

    assert daemon_proc.deb.stop() is True
    assert daemon_proc.signals == [installer.signal.SIGTERM]


def test_deb_stop_when_not_running(tmp_path, monkeypatch):
    monkeypatch.setattr(installer.os, "kill", MagicMock(side_effect=AssertionError("no kill")))

    assert DebInstaller(lxd_dir=str(tmp_path), systemd=False).stop() is False


def test_deb_restart_with_systemd(run):
    DebInstaller(systemd=True).restart()

    # KillMode=process: only the daemon restarts, instances keep running.
    assert run.argvs() == [[SYSTEMCTL, "restart", "lxd.service"]]


def test_deb_restart_without_systemd_stops_then_starts(tmp_path, monkeypatch):
    deb = DebInstaller(lxd_dir=str(tmp_path), systemd=False)
    steps = []
    monkeypatch.setattr(deb, "stop", lambda: steps.append("stop") or True)
    monkeypatch.setattr(deb, "ensure_running", lambda: steps.append("start") or True)

    deb.restart()

    assert steps == ["stop", "start"]


def test_deb_restart_reports_a_daemon_that_does_not_come_back(daemon_proc, run, popen):
    # GIVEN a daemon whose restart fails (say its log path became a directory)
    popen.exits[:] = [1]
    popen.stderr = b"Error: open /var/lib/lxd/lxd.log: is a directory\n"

    # WHEN / THEN the old daemon was stopped and the failure names LXD's own words
    with pytest.raises(InstallError, match="exited while starting .*is a directory"):
        daemon_proc.deb.restart()
    assert daemon_proc.signals == [installer.signal.SIGTERM]


DPKG_LXD = [DPKG_QUERY, "-W", "-f=${Status} ${Version}", "lxd"]
APT_UPGRADE = [
    "/usr/bin/apt-get",
    "install",
    "--only-upgrade",
    "-y",
    "--no-install-recommends",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "lxd",
    "lxd-client",
    "ceph-common",
]


@pytest.mark.parametrize(
    ("after", "upgraded"), [("5.0.2-5+deb12u7", True), ("5.0.2-5+deb12u6", False)]
)
def test_deb_refresh_upgrades_then_restarts(tmp_path, run, monkeypatch, after, upgraded):
    # GIVEN lxd 5.0.2-5+deb12u6 installed
    run.on(DPKG_LXD, "install ok installed 5.0.2-5+deb12u6", f"install ok installed {after}")
    deb = DebInstaller(lxd_dir=str(tmp_path), systemd=False)
    restarted = []
    monkeypatch.setattr(deb, "restart", lambda: restarted.append(True))

    # WHEN it is refreshed (the package has no channel or cohort)
    result = deb.refresh("5.21/stable", "MSBzn1k2")

    # THEN only installed packages are upgraded, unattended, and the daemon restarts anyway
    assert result is upgraded
    assert run.argvs() == [DPKG_LXD, APT_UPGRADE, DPKG_LXD]
    apt = run.calls[1]
    assert apt.env["DEBIAN_FRONTEND"] == "noninteractive"
    assert apt.timeout == packages.INSTALL_TIMEOUT
    assert restarted == [True]


def test_deb_refresh_failure_carries_apts_words_and_does_not_restart(tmp_path, run, monkeypatch):
    run.on(DPKG_LXD, "install ok installed 5.0.2-5")
    run.on(
        APT_UPGRADE,
        InstallError(
            "/usr/bin/apt-get install --only-upgrade failed: E: Could not get lock "
            "/var/lib/dpkg/lock-frontend"
        ),
    )
    deb = DebInstaller(lxd_dir=str(tmp_path), systemd=True)
    monkeypatch.setattr(deb, "restart", MagicMock(side_effect=AssertionError("no restart")))

    with pytest.raises(InstallError, match="Could not get lock"):
        deb.refresh("", "")


def test_tail_of_an_unreadable_file(tmp_path):
    assert installer._tail(str(tmp_path / "missing")) == ""


def test_reap_a_process_that_is_not_our_child():
    installer._reap(os.getpid())  # no ChildProcessError escapes


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
