"""Bring a real 3-member LXD cluster up on this host with the lxd charm's workload code.

    python -m lab.demo up [--members N]   # start N daemons, bootstrap, join, list members
    python -m lab.demo status             # the member list of a running demo
    python -m lab.demo down               # stop every daemon, unmount, remove the state

Each member is a real LXD daemon from the distro package with its own ``LXD_DIR`` under
``.lab/demo`` in the repository, serving on 127.0.0.2, .3, ... port 8443. The steps are
the charm's own: the installer starts each daemon, the first member bootstraps, and every
other member joins with a single-use token whose fingerprint it verifies first, filling
the cluster's ``member_config`` — exactly the calls the charm's reconcile makes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from lab.hosts import LXDHost, cleanup_root, leftovers, make_hosts, remove_root, start_hosts
from lxd import LXDError, fill_member_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, ".lab", "demo")


def _hosts(count: int) -> list[LXDHost]:
    return make_hosts(ROOT, [(f"lxd-{i}", f"127.0.0.{i + 2}") for i in range(count)])


def _existing_hosts() -> list[LXDHost]:
    if not os.path.isdir(ROOT):
        return []
    names = sorted(n for n in os.listdir(ROOT) if n.startswith("lxd-"))
    return _hosts(len(names))


def form_cluster(hosts: list[LXDHost]) -> float:
    """Start, bootstrap and join ``hosts``; return the seconds it took."""
    started = time.monotonic()
    start_hosts(hosts)
    first, *others = hosts
    first.lxd.bootstrap_cluster(first.name, first.address, {})
    print(f"bootstrapped {first.name} on {first.address}")
    for host in others:
        token = first.lxd.issue_join_token(host.name)
        member_config = fill_member_config(first.lxd.member_config(), {})
        host.lxd.join_cluster(token, host.name, host.address, member_config)
        print(f"{host.name} joined from {host.address}")
    return time.monotonic() - started


def up(count: int) -> int:
    """Form the cluster (or show the one already running)."""
    hosts = _existing_hosts()
    if hosts and all(h.pid() and _answers(h) for h in hosts):
        print(f"the demo cluster is already up ({len(hosts)} members)")
        return status()
    down(quiet=True)
    elapsed = form_cluster(_hosts(count))
    print(f"\n{count}-member cluster formed in {elapsed:.1f} s\n")
    return status()


def _answers(host: LXDHost) -> bool:
    try:
        return host.lxd.server_info().clustered
    except LXDError:
        return False


def status() -> int:
    """Print ``lxc cluster list`` from the first member."""
    hosts = _existing_hosts()
    if not hosts:
        print("the demo cluster is not up: run `scripts/bring-up`")
        return 1
    print(hosts[0].lxc("cluster", "list"))
    print(f"use it: LXD_DIR={hosts[0].lxd_dir} lxc cluster list")
    print("stop it: scripts/bring-up down")
    return 0


def down(quiet: bool = False) -> int:
    """Stop every demo daemon and remove its state."""
    if not os.path.isdir(ROOT):
        return 0
    cleanup_root(ROOT, _existing_hosts())
    left = leftovers(ROOT)
    if left:
        print("could not clean up:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    remove_root(ROOT)
    if not quiet:
        print("demo cluster stopped and removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n")[0])
    parser.add_argument("verb", choices=["up", "status", "down"], nargs="?", default="up")
    parser.add_argument("--members", type=int, default=3, choices=range(1, 8))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("real LXD daemons need root")
    if args.verb == "up":
        return up(args.members)
    return status() if args.verb == "status" else down()


if __name__ == "__main__":
    sys.exit(main())
