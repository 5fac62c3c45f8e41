"""Kernel settings LXD hosts want: raised limits (tuning) and restricted reads (hardening)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

logger = logging.getLogger(__name__)

# LXD's production-setup guide: limits a busy container host runs out of.
TUNING = {
    "fs.aio-max-nr": 524288,
    "fs.inotify.max_queued_events": 1048576,
    "fs.inotify.max_user_instances": 1048576,
    "fs.inotify.max_user_watches": 1048576,
    "kernel.keys.maxbytes": 2000000,
    "kernel.keys.maxkeys": 2000,
    "net.ipv4.neigh.default.gc_thresh3": 8192,
    "net.ipv6.neigh.default.gc_thresh3": 8192,
    "vm.max_map_count": 262144,
}
# Containers share the host kernel: keep its log and pointers from unprivileged readers.
HARDENING = {"kernel.dmesg_restrict": 1, "kernel.kptr_restrict": 1}


def wanted_settings(tuning: bool, hardening: bool) -> dict[str, int]:
    """The settings the charm keeps for the given config."""
    return {**(TUNING if tuning else {}), **(HARDENING if hardening else {})}


def _path(proc_sys: str, key: str) -> str:
    return os.path.join(proc_sys, *key.split("."))


def apply_settings(
    wanted: Mapping[str, int],
    *,
    proc_sys: str = "/proc/sys",
    persist_to: str = "/etc/sysctl.d/60-lxd-charm.conf",
) -> list[str]:
    """Apply ``wanted`` now and across reboots; return the keys that changed.

    Every value is a floor: a host already tuned higher (a limit), or restricted further
    (``kptr_restrict=2``), keeps its value. Keys the kernel does not offer or does not let
    us write (inside a container, say) are skipped with a log line and not persisted.
    """
    changed, effective = [], {}
    for key, value in sorted(wanted.items()):
        path = _path(proc_sys, key)
        try:
            with open(path) as f:
                current = int(f.read().split()[0])
            target = max(current, value)
            if current != target:
                with open(path, "w") as f:
                    f.write(str(target))
                changed.append(key)
        except (OSError, ValueError, IndexError) as exc:
            logger.warning("sysctl %s not applied: %s", key, exc)
            continue
        effective[key] = target
    text = "".join(f"{k} = {v}\n" for k, v in sorted(effective.items()))
    if effective and _read(persist_to) != text:
        os.makedirs(os.path.dirname(persist_to), exist_ok=True)
        with open(persist_to, "w") as f:
            f.write(f"# Managed by the lxd charm.\n{text}")
    elif not effective and os.path.exists(persist_to):
        os.remove(persist_to)
    return changed


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().removeprefix("# Managed by the lxd charm.\n")
    except OSError:
        return ""
