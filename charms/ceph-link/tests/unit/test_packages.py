"""Unit tests of ``common/charm_common/packages.py`` (dpkg-query and apt-get are faked)."""

from __future__ import annotations

import subprocess

import pytest

from charm_common import packages
from charm_common.packages import APT_GET, DPKG_QUERY, PackageError


class FakeRun:
    """``subprocess.run`` for dpkg-query and apt-get: records calls, answers as told."""

    def __init__(self, dpkg_stdout: str = "", dpkg_rc: int = 0, apt=None):
        self.dpkg = subprocess.CompletedProcess([], dpkg_rc, dpkg_stdout, "")
        # apt: a CompletedProcess, or an exception to raise
        self.apt = apt if apt is not None else subprocess.CompletedProcess([], 0, "", "")
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        if argv[0] == DPKG_QUERY:
            return self.dpkg
        if argv[0] == APT_GET:
            if isinstance(self.apt, BaseException):
                raise self.apt
            return self.apt
        raise AssertionError(f"unexpected command {argv}")

    def argvs(self, command: str) -> list[list[str]]:
        return [argv for argv, _ in self.calls if argv[0] == command]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(packages.subprocess, "run", fake)
    return fake


# dpkg-query -W output when one package is absent: rc 1, the others still listed.
PARTIAL = "ceph-common install ok installed\nlibrbd1 deinstall ok config-files\n"


def test_missing_parses_dpkg_query(run):
    run.dpkg = subprocess.CompletedProcess([], 1, PARTIAL, "dpkg-query: no packages found")
    assert packages.missing(["ceph-common", "librbd1", "ceph-fuse"]) == ["librbd1", "ceph-fuse"]
    [(argv, kwargs)] = run.calls
    assert argv == [
        DPKG_QUERY,
        "-W",
        "-f=${Package} ${Status}\\n",
        "ceph-common",
        "librbd1",
        "ceph-fuse",
    ]
    assert kwargs["check"] is False


def test_missing_keeps_the_order_asked(run):
    run.dpkg = subprocess.CompletedProcess([], 1, "b install ok installed\n", "")
    assert packages.missing(["c", "b", "a"]) == ["c", "a"]


def test_nothing_missing(run):
    run.dpkg = subprocess.CompletedProcess(
        [], 0, "ceph-common install ok installed\n\nlibrbd1 install ok installed\n", ""
    )
    assert packages.missing(["ceph-common", "librbd1"]) == []


@pytest.mark.parametrize(
    "status",
    [
        "install ok half-installed",
        "install ok unpacked",
        "deinstall ok config-files",
        "unknown ok not-installed",
    ],
)
def test_a_package_not_fully_installed_is_missing(run, status):
    run.dpkg = subprocess.CompletedProcess([], 0, f"ceph-common {status}\n", "")
    assert packages.missing(["ceph-common"]) == ["ceph-common"]


def test_install_does_nothing_when_everything_is_installed(run):
    run.dpkg = subprocess.CompletedProcess([], 0, "ceph-common install ok installed\n", "")
    assert packages.install(["ceph-common"]) is False
    assert run.argvs(APT_GET) == []


def test_install_installs_only_what_is_missing(run):
    run.dpkg = subprocess.CompletedProcess([], 1, PARTIAL, "")
    assert packages.install(["ceph-common", "librbd1", "ceph-fuse"]) is True
    [argv] = run.argvs(APT_GET)
    assert argv == [APT_GET, "install", "-y", "--no-install-recommends", "librbd1", "ceph-fuse"]
    kwargs = run.calls[-1][1]
    assert kwargs["env"]["DEBIAN_FRONTEND"] == "noninteractive"
    assert kwargs["timeout"] == packages.INSTALL_TIMEOUT
    assert kwargs["check"] is False


def test_install_failure_carries_apts_stderr(run):
    run.dpkg = subprocess.CompletedProcess([], 1, "", "")
    run.apt = subprocess.CompletedProcess(
        [], 100, "Reading package lists...\n", "E: Unable to locate package ceph-common\n"
    )
    with pytest.raises(PackageError) as raised:
        packages.install(["ceph-common"])
    assert str(raised.value) == (
        "apt-get install ceph-common failed: E: Unable to locate package ceph-common"
    )


def test_install_failure_without_stderr_uses_stdout(run):
    run.apt = subprocess.CompletedProcess([], 1, "dpkg was interrupted\n", "")
    with pytest.raises(PackageError, match="failed: dpkg was interrupted$"):
        packages.install(["ceph-common"])


def test_install_failure_message_is_bounded(run):
    run.apt = subprocess.CompletedProcess([], 100, "", "x" * 5000 + "LAST")
    with pytest.raises(PackageError) as raised:
        packages.install(["ceph-common"])
    assert str(raised.value).endswith("LAST")
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize(
    "exc", [subprocess.TimeoutExpired([APT_GET], 900), PermissionError(13, "Permission denied")]
)
def test_install_timeout_or_os_error(run, exc):
    run.apt = exc
    with pytest.raises(PackageError, match="^apt-get install ceph-common failed: "):
        packages.install(["ceph-common"])
