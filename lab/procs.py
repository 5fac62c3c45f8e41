"""Processes and mounts of the lab: liveness, process trees, termination, unmounting.

Standard library only, shared by :mod:`lab.hosts` (daemons under a directory) and
:mod:`lab.machines` (network + mount namespaces).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable

UMOUNT = "/usr/bin/umount"


def mount_table() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount in this mount namespace."""
    table = []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            # Octal escapes (\040 for space) as the kernel writes them.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
            table.append((point, fields[2]))
    return table


def mounts_under(root: str) -> list[str]:
    """Mount points at or under ``root`` in this mount namespace, deepest first."""
    prefix = root.rstrip("/") + "/"
    points = {p for p, _ in mount_table() if p == root or p.startswith(prefix)}
    return sorted(points, key=lambda p: (p.count("/"), len(p)), reverse=True)


def unmount(point: str) -> None:
    """Unmount ``point``; lazily when it is busy."""
    for argv in ([UMOUNT, point], [UMOUNT, "-l", point]):
        if subprocess.run(argv, capture_output=True, check=False).returncode == 0:  # noqa: S603
            return


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (reaping it first if it is our exited child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass  # not our child: /proc decides
    # A zombie that someone else has to reap is as good as gone, but only once all its
    # threads are: a Go daemon's main thread turns zombie while the others still run.
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    return not (status["State"].split()[0] == "Z" and int(status["Threads"]) <= 1)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; return whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def parents() -> dict[int, int]:
    """Map each pid to its parent pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        table[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    return table


def with_descendants(pids: Iterable[int]) -> set[int]:
    """``pids`` and all their descendants (container payloads, daemon helpers)."""
    found = set(pids)
    table = parents()
    changed = True
    while changed:
        changed = False
        for pid, ppid in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def terminate(pids: set[int], timeout: float = 10.0) -> None:
    """SIGTERM ``pids``, wait up to ``timeout`` seconds, SIGKILL the rest, wait again."""
    kill(_signal_and_wait(pids, signal.SIGTERM, timeout))


def kill(pids: set[int]) -> None:
    """SIGKILL ``pids`` (no chance to clean up, as a power cut) and wait up to 5 s."""
    _signal_and_wait(pids, signal.SIGKILL, 5.0)


def _signal_and_wait(pids: set[int], sig: signal.Signals, timeout: float) -> set[int]:
    """Send ``sig`` to ``pids``; the ones still alive after up to ``timeout`` seconds."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        pids = {pid for pid in pids if alive(pid)}
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.05)
