"""Unit tests of ``src/tuning.py`` over a fake ``/proc/sys`` tree in a temporary directory."""

from __future__ import annotations

import builtins
import logging
import os

import pytest

import tuning
from tuning import HARDENING, TUNING, apply_settings, wanted_settings

HEADER = "# Managed by the lxd charm.\n"


@pytest.fixture
def proc_sys(tmp_path):
    """A fake /proc/sys; ``proc_sys.set(key, value)`` writes one entry, ``get`` reads it."""
    root = tmp_path / "proc" / "sys"

    class Tree:
        path = str(root)

        @staticmethod
        def file(key):
            return root.joinpath(*key.split("."))

        def set(self, key, value):
            path = self.file(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{value}\n")

        def get(self, key):
            return self.file(key).read_text()

    return Tree()


@pytest.fixture
def persist(tmp_path):
    """Where the settings are persisted (its directory does not exist yet)."""
    return tmp_path / "etc" / "sysctl.d" / "60-lxd-charm.conf"


def apply(wanted, proc_sys, persist):
    return apply_settings(wanted, proc_sys=proc_sys.path, persist_to=str(persist))


@pytest.mark.parametrize(
    "tune, harden, expected",
    [
        (True, True, {**TUNING, **HARDENING}),
        (True, False, TUNING),
        (False, True, HARDENING),
        (False, False, {}),
    ],
)
def test_wanted_settings(tune, harden, expected):
    assert wanted_settings(tune, harden) == expected


def test_limits_are_raised(proc_sys, persist):
    # GIVEN a host with a low limit
    proc_sys.set("fs.aio-max-nr", 65536)

    # WHEN the tuning is applied
    changed = apply({"fs.aio-max-nr": 524288}, proc_sys, persist)

    # THEN the limit is raised, now and across reboots
    assert changed == ["fs.aio-max-nr"]
    assert proc_sys.get("fs.aio-max-nr") == "524288"
    assert persist.read_text() == HEADER + "fs.aio-max-nr = 524288\n"


def test_limits_are_never_lowered(proc_sys, persist):
    # GIVEN a host tuned higher than LXD's guide
    proc_sys.set("fs.inotify.max_user_watches", 4194304)

    # WHEN
    changed = apply({"fs.inotify.max_user_watches": 1048576}, proc_sys, persist)

    # THEN the host keeps (and persists) its higher value
    assert changed == []
    assert proc_sys.get("fs.inotify.max_user_watches") == "4194304\n"
    assert persist.read_text() == HEADER + "fs.inotify.max_user_watches = 4194304\n"


def test_hardening_is_raised_but_never_weakened(proc_sys, persist):
    # GIVEN dmesg readable by everyone, kernel pointers already hidden even from root
    proc_sys.set("kernel.dmesg_restrict", 0)
    proc_sys.set("kernel.kptr_restrict", 2)

    # WHEN
    changed = apply(HARDENING, proc_sys, persist)

    # THEN dmesg is restricted, and the stricter kptr_restrict=2 stays
    assert changed == ["kernel.dmesg_restrict"]
    assert proc_sys.get("kernel.dmesg_restrict") == "1"
    assert proc_sys.get("kernel.kptr_restrict") == "2\n"
    assert persist.read_text() == HEADER + "kernel.dmesg_restrict = 1\nkernel.kptr_restrict = 2\n"


@pytest.mark.parametrize(
    "content", [None, "", "not-a-number\n"], ids=["missing", "empty", "garbage"]
)
def test_unreadable_key_is_skipped(proc_sys, persist, caplog, content):
    # GIVEN one key the kernel does not offer (or that reads as nonsense) and one it does
    proc_sys.set("vm.max_map_count", 65530)
    if content is not None:
        proc_sys.file("kernel.keys.maxkeys").parent.mkdir(parents=True, exist_ok=True)
        proc_sys.file("kernel.keys.maxkeys").write_text(content)

    # WHEN
    with caplog.at_level(logging.WARNING, logger="tuning"):
        changed = apply(
            {"kernel.keys.maxkeys": 2000, "vm.max_map_count": 262144}, proc_sys, persist
        )

    # THEN the other key is applied, the bad one skipped with a log line and not persisted
    assert changed == ["vm.max_map_count"]
    assert persist.read_text() == HEADER + "vm.max_map_count = 262144\n"
    assert any(
        r.getMessage().startswith("sysctl kernel.keys.maxkeys not applied: ")
        for r in caplog.records
    )


@pytest.fixture
def read_only_key(monkeypatch, proc_sys):
    """Make writing ``kernel.keys.maxkeys`` fail as inside a container (reading works)."""
    target = str(proc_sys.file("kernel.keys.maxkeys"))

    def fake_open(path, mode="r", *args, **kwargs):
        if str(path) == target and "w" in mode:
            raise PermissionError(13, "Permission denied", target)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(tuning, "open", fake_open, raising=False)
    proc_sys.set("kernel.keys.maxkeys", 200)
    return target


def test_unwritable_key_is_skipped(proc_sys, persist, read_only_key, caplog):
    proc_sys.set("vm.max_map_count", 65530)

    with caplog.at_level(logging.WARNING, logger="tuning"):
        changed = apply(
            {"kernel.keys.maxkeys": 2000, "vm.max_map_count": 262144}, proc_sys, persist
        )

    assert changed == ["vm.max_map_count"]
    assert proc_sys.get("kernel.keys.maxkeys") == "200\n"
    assert any("sysctl kernel.keys.maxkeys not applied" in r.getMessage() for r in caplog.records)


def test_unwritable_key_is_not_persisted(proc_sys, persist, read_only_key):
    proc_sys.set("vm.max_map_count", 65530)

    apply({"kernel.keys.maxkeys": 2000, "vm.max_map_count": 262144}, proc_sys, persist)

    assert persist.read_text() == HEADER + "vm.max_map_count = 262144\n"


def test_persist_file_is_not_rewritten_when_unchanged(proc_sys, persist):
    # GIVEN settings already applied and persisted
    proc_sys.set("kernel.dmesg_restrict", 0)
    apply({"kernel.dmesg_restrict": 1}, proc_sys, persist)
    os.utime(persist, ns=(0, 0))

    # WHEN they are applied again
    changed = apply({"kernel.dmesg_restrict": 1}, proc_sys, persist)

    # THEN nothing changed and the file was not touched
    assert changed == []
    assert persist.stat().st_mtime_ns == 0


def test_persist_file_is_rewritten_when_different(proc_sys, persist):
    # GIVEN a persisted file that no longer matches (edited, or a setting was dropped)
    proc_sys.set("kernel.dmesg_restrict", 1)
    persist.parent.mkdir(parents=True)
    persist.write_text(HEADER + "kernel.dmesg_restrict = 1\nkernel.kptr_restrict = 1\n")

    # WHEN
    changed = apply({"kernel.dmesg_restrict": 1}, proc_sys, persist)

    # THEN the live value was already right, but the file is brought in line
    assert changed == []
    assert persist.read_text() == HEADER + "kernel.dmesg_restrict = 1\n"


def test_persist_file_removed_when_nothing_wanted(proc_sys, persist):
    # GIVEN a persisted file from earlier config
    persist.parent.mkdir(parents=True)
    persist.write_text(HEADER + "kernel.dmesg_restrict = 1\n")

    # WHEN both tuning and hardening are turned off
    changed = apply({}, proc_sys, persist)

    # THEN the file is gone
    assert changed == []
    assert not persist.exists()


def test_nothing_wanted_and_nothing_persisted(proc_sys, persist):
    assert apply({}, proc_sys, persist) == []
    assert not persist.parent.exists()


def test_full_settings_on_a_fresh_host(proc_sys, persist):
    # GIVEN a host with every key at a low value
    for key in {**TUNING, **HARDENING}:
        proc_sys.set(key, 0)

    # WHEN everything is wanted
    changed = apply(wanted_settings(True, True), proc_sys, persist)

    # THEN every key changed (sorted) and the file lists every key sorted
    assert changed == sorted({**TUNING, **HARDENING})
    lines = persist.read_text().splitlines()
    assert lines[0] == HEADER.strip()
    assert lines[1:] == [f"{k} = {v}" for k, v in sorted({**TUNING, **HARDENING}.items())]


def test_default_paths():
    # The defaults are the real kernel tree and sysctl.d (never touched by these tests).
    defaults = apply_settings.__kwdefaults__
    assert defaults == {"proc_sys": "/proc/sys", "persist_to": "/etc/sysctl.d/60-lxd-charm.conf"}
