"""Driving the ``lab`` command as an operator would, for the lab tests of the product."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from lab import hosts, machines
from lab.build import REPO

BUNDLE = os.path.join(REPO, "bundles", "lxd-cluster.yaml")
OVERLAY = os.path.join(REPO, "bundles", "overlays", "lab.yaml")


def lab(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``lab --root ROOT ARGS`` as an operator would; fail with its output if ``check``."""
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run(  # noqa: S603 - this interpreter, the lab command
        [sys.executable, "-m", "lab", "--root", root, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"lab {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def status(root: str) -> dict:
    return json.loads(lab(root, "status", "--format", "json").stdout)


def units(root: str, app: str = "lxd") -> dict[str, dict]:
    """A principal application's units as ``lab status`` shows them."""
    return status(root)["applications"][app]["units"]


def subordinates(root: str, app: str) -> dict[str, dict]:
    """The units of subordinate application ``app``, from the lxd units they sit on."""
    found = {}
    for unit in units(root).values():
        found.update(
            {n: u for n, u in unit.get("subordinates", {}).items() if n.startswith(app + "/")}
        )
    return found


def leader(root: str) -> str:
    (name,) = [name for name, unit in units(root).items() if unit["leader"]]
    return name


def members(root: str, unit: str) -> dict[str, str]:
    """Member name -> state, as ``lxc cluster list`` shows it inside ``unit``'s machine."""
    listing = lab(root, "exec", unit, "--", "lxc", "cluster", "list", "-f", "csv").stdout
    return {line.split(",")[0]: line.split(",")[-2] for line in listing.splitlines()}


def instances(root: str, unit: str) -> dict[str, tuple[str, str]]:
    """Instance name -> (member, state) inside ``unit``'s machine."""
    listing = lab(root, "exec", unit, "--", "lxc", "list", "-c", "nLs", "-f", "csv").stdout
    return {
        n: (where, state) for n, where, state in (ln.split(",") for ln in listing.splitlines())
    }


# Run inside a machine (the lab network is not routed to the host): the HTTPS status a
# client certificate gets from a member.
_HTTPS_STATUS = """
import sys, warnings, requests
warnings.simplefilter("ignore")
url, cert, key = sys.argv[1:]
print(requests.get(url, cert=(cert, key), verify=False, timeout=30).status_code)
"""


def https_status(root: str, unit: str, address: str, cert: str, key: str) -> int:
    url = f"https://{address}:8443/1.0/instances"
    code = [sys.executable, "-c", _HTTPS_STATUS, url, cert, key]
    out = lab(root, "exec", unit, "--", *code).stdout
    return int(out.strip())


def netns_names() -> set[str]:
    out = subprocess.run(["/usr/sbin/ip", "netns", "list"], capture_output=True, text=True)  # noqa: S603
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@contextlib.contextmanager
def model_root(prefix: str) -> Iterator[str]:
    """A fresh lab root (not created yet); destroyed with everything in it afterwards."""
    reason = machines.unavailable_reason() or hosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    parent = tempfile.mkdtemp(prefix=prefix)
    os.chmod(parent, 0o711)  # noqa: S103 - LXD's unprivileged containers traverse it
    path = os.path.join(parent, "model")
    try:
        yield path
    finally:
        keep = os.environ.get("LAB_KEEP_LOGS")  # a directory to copy the units' logs to
        if keep and os.path.isdir(os.path.join(path, "logs")):
            shutil.copytree(
                os.path.join(path, "logs"),
                os.path.join(keep, prefix.strip("-")),
                dirs_exist_ok=True,
            )
        lab(path, "destroy", check=False)
        shutil.rmtree(parent, ignore_errors=True)
