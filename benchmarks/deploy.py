r"""Benchmark: the full product bundle through the charms' hooks vs. a plain script.

Run it as root from the repository root, with the host set up (``scripts/setup-host``: the
LXD, OVS/OVN and Ceph packages and the repository's ``.venv``), one deployment at a time::

    PYTHONPATH=. .venv/bin/python benchmarks/deploy.py [--units 3 5] [--plain-only]

For every N (default 3 and 5) it reaches the same end state twice on lab machines (network
and mount namespaces, :mod:`lab.machines`; N for LXD, one more for Ceph), one after the
other, and tears each down completely. The end state, checked the same way on both paths
(the commands of ``tests/lab/test_deploy.py``, ``test_ovn.py`` and ``test_ceph.py``):
``lxc cluster list`` shows N ONLINE members; ``lxc network list`` shows ``UPLINK``
(physical) and ``default`` (ovn) CREATED; ``lxc storage list`` shows the bundle's Ceph pool
(``remote``) CREATED; ``ovn-appctl ... cluster/status OVN_Northbound`` on a central machine
shows min(N, central-units) servers and a leader.

charm path
    ``python -m lab --root R deploy bundles/lxd-cluster.yaml --overlay
    bundles/overlays/lab.yaml --overlay UNITS``, where ``UNITS`` is an overlay with only
    ``num_units: N`` for ``lxd`` (the lab overlay is used in place: its charm path for the Ceph
    provider is relative to it). That is lxd with its ovn-bridge and ceph-link subordinates and
    the lab's Ceph provider. The charms are built once before (``lab.build``, what
    ``scripts/build-charms`` runs): no deploy counts a build. Measures the wall time of that
    command (it creates the machines and returns as soon as the model is idle: no hook
    queued and no unit in maintenance or waiting; with Juju's default
    ``update-status-hook-interval``, no timer falls due meanwhile), the hooks run
    (``model.hooks-run`` of ``status --format json``) and the hooks per unit: divided by
    every unit of the model, subordinates and the Ceph provider included (3N + 1). Then the
    end state (``lab exec``), ``lab destroy``.

plain path
    A fresh :class:`lab.machines.Lab` with N + 1 machines of the bundle's bases, and no charm
    and no hook: ``benchmarks/plain.py`` steps run inside the machines, each calling the
    projects' workload modules as the charms do (see that file), with what the charms' own code
    makes of the same merged bundle's options (``plain.py derive``). Independent work runs in
    parallel as a careful script would: Ceph comes up on its machine from the start, then
    writes its client files on the LXD machines; meanwhile LXD and Open vSwitch start on every
    machine at once, and then the LXD cluster forms (bootstrap, joins one at a time: a token is
    single-use and issued by the first member) while OVN central forms its raft (first member,
    then the others at once) and northd and the chassis start. Then, on every member at once,
    the OVN server config and the per-member definitions, on the first member the networks
    cluster-wide, and once Ceph is done the pool cluster-wide. Measures the wall time from
    creating the machines until the end state is verified; then :meth:`Lab.destroy`, which must
    leave nothing behind.

Printed: a table (N, charm seconds, hooks, hooks per unit, plain seconds, charm/plain, and
the peak RSS of each path), where the charm path's hooks went (by application and hook, from
the lab's hook log), one ``update-status`` round on the idle model (seconds, hook-tool calls,
whether LXD's state changed) and the plain path's phases (start and end offsets: phases of
parallel tracks overlap). Peak RSS is that of the largest single process, twice: of the
path's own Python processes (the ``lab`` command and its hooks; the ``plain.py`` steps),
sampled (:class:`PythonPeak`), and of any process the path waited for (``wait4``
``ru_maxrss``: also the tools they run, e.g. ``ceph-osd --mkfs``, the same on both paths).
Daemons (LXD, OVS, OVN, Ceph) detach and are excluded from both.

A failed charm path is reported and the plain path still runs (exit code 1);
``--plain-only`` skips the charm path. Progress goes to stderr. Temporary roots live under
``/tmp`` (mode 0711); the directory with the deploy logs is kept only when something
failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import io
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from benchmarks import plain
from lab import applications, build
from lab import bundle as bundles
from lab import runner as lab_runner
from lab.machines import Lab, Machine, unavailable_reason
from lab.model import Model
from lab.runner import HOOK_LOG

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "bundles", "lxd-cluster.yaml")
LAB_OVERLAY = os.path.join(REPO, "bundles", "overlays", "lab.yaml")
PLAIN_SCRIPT = os.path.join(REPO, "benchmarks", "plain.py")
# Application names in the bundle and the lab overlay.
LXD_APP, OVN_APP, CEPH_LINK_APP, CEPH_APP = "lxd", "ovn-bridge", "ceph-link", "ceph-provider"
REQUIRED_TOOLS = (
    "/usr/bin/lxd",
    "/usr/bin/lxc",
    "/usr/share/openvswitch/scripts/ovs-ctl",
    "/usr/share/ovn/scripts/ovn-ctl",
    "/usr/bin/ovn-appctl",
    "/usr/bin/ceph-mon",
    "/usr/bin/ceph-osd",
    "/usr/bin/ceph-mgr",
)
LXC = "/usr/bin/lxc"
OVN_APPCTL = "/usr/bin/ovn-appctl"
NB_CTL = "/var/run/ovn/ovnnb_db.ctl"
DEPLOY_TIMEOUT = 2400.0  # seconds the lab may take to settle one deployment
STEP_TIMEOUT = 600.0  # seconds one plain-path step may take
VERIFY_TIMEOUT = 120.0  # seconds the end state may take to show once the work is done
SAMPLE_INTERVAL = 0.1  # seconds between two samples of the Python processes' memory
RAFT_SERVER = re.compile(r"^\s+[0-9a-f]+ \(", re.MULTILINE)  # a server line of cluster/status


class BenchmarkError(Exception):
    """A step failed or a result is not what it must be (the message says which)."""


# -- processes -------------------------------------------------------------------------------


@dataclass
class Finished:
    """A child process that ran to its end: exit code, output, time, peak RSS (KiB)."""

    argv: list[str]
    code: int
    out: str
    err: str
    seconds: float
    max_rss_kib: int

    def check(self, what: str) -> Finished:
        """Raise :class:`BenchmarkError` with the output's tail unless the exit code is 0."""
        if self.code != 0:
            tail = (self.err.strip() or self.out.strip())[-3000:]
            raise BenchmarkError(f"{what} exited {self.code}:\n{tail}")
        return self


def _env(pythonpath: Sequence[str]) -> dict[str, str]:
    """Our environment for a child, with ``pythonpath`` (repository-relative) as PYTHONPATH.

    The CA bundle variables go (as for a hook: requests lets them override ``verify=``,
    which breaks HTTPS to a daemon's self-signed certificate), and so do ``LXD_DIR`` and
    ``LXD_CONF`` (every machine's daemon lives in its own ``/var/lib/lxd``).
    """
    drop = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "LXD_DIR", "LXD_CONF")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(os.path.join(REPO, p) for p in pythonpath)
    return env


LAB_ENV = _env(["."])
PLAIN_ENV = _env(plain.PYTHONPATH)


def run_measured(
    argv: Sequence[str],
    env: dict[str, str],
    timeout: float,
    stdin_text: str | None = None,
    log_path: str | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Finished:
    """Run ``argv`` to its end; reap it with ``wait4`` to learn its peak RSS.

    ``ru_maxrss`` from ``wait4`` covers the child and the descendants it reaped (a hook
    process of the ``lab`` command, the tools a hook ran), not detached daemons nobody
    waits for. Output goes to temporary files (or ``log_path`` for stdout and stderr
    both). ``on_start`` gets the child's pid as soon as it runs.
    """
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if log_path:
            out = err = stack.enter_context(open(log_path, "w+b"))
        else:
            out = stack.enter_context(tempfile.TemporaryFile())
            err = stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            list(argv),
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=out,
            stderr=err,
            env=env,
        )
        if on_start is not None:
            on_start(proc.pid)
        status, usage, timed_out = _reap(proc, stdin_text, started + timeout)
        seconds = time.monotonic() - started
        out.seek(0)
        text_out = out.read().decode(errors="replace")
        err.seek(0)
        text_err = "" if err is out else err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if timed_out:
        raise BenchmarkError(f"{' '.join(argv)} took more than {timeout:.0f} s (killed)")
    return Finished(list(argv), code, text_out, text_err, seconds, usage.ru_maxrss)


def _reap(
    proc: subprocess.Popen[bytes], stdin_text: str | None, deadline: float
) -> tuple[int, resource.struct_rusage, bool]:
    """Feed ``stdin_text``, wait for ``proc`` (killed at ``deadline``); (status, usage, late)."""
    timed_out = False
    try:
        if proc.stdin is not None:
            proc.stdin.write((stdin_text or "").encode())
            proc.stdin.close()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                timed_out = True
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
    except BaseException:
        # Interrupted (Ctrl-C, an error): never leave our child running or unreaped.
        proc.kill()
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    return status, usage, timed_out


def lab_command(
    root: str,
    *args: str,
    timeout: float = 120,
    log: str | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Finished:
    """``python -m lab --root ROOT ARGS...`` (the ``bin/lab`` command)."""
    argv = [sys.executable, "-m", "lab", "--root", root, *args]
    return run_measured(argv, LAB_ENV, timeout=timeout, log_path=log, on_start=on_start)


class PythonPeak:
    """The largest peak RSS (``VmHWM``) of the Python processes of one path, sampled.

    Every :data:`SAMPLE_INTERVAL` seconds it reads ``/proc``: the process given to
    :meth:`watch` (``include_root``) and each of its direct children that runs this
    interpreter (a hook, a config check, a ``plain.py`` step: ``nsenter`` execs it).
    Their own memory only: not the tools they call (``ceph`` and ``ceph-osd --mkfs``, the
    largest of all, ``ovs-vsctl``, ``lxd init``) nor the daemons. A process that grows in
    its last sample interval is under-counted by that growth.
    """

    def __init__(self, pid: int | None = None, include_root: bool = True):
        self.peak_kib = 0
        self._pid = pid
        self._include_root = include_root
        self._python = os.path.realpath(sys.executable)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PythonPeak:
        """Start sampling (once :meth:`watch` named the process, if not given)."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        self._thread.join()

    def watch(self, pid: int) -> None:
        """Sample ``pid`` and its children from now on."""
        self._pid = pid

    def _loop(self) -> None:
        while True:
            stopping = self._stop.wait(SAMPLE_INTERVAL)
            if self._pid is not None:
                self._sample(self._pid)
            if stopping:
                return

    def _sample(self, root: int) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                if pid == root:
                    if not self._include_root:
                        continue
                else:
                    with open(f"/proc/{pid}/stat") as f:
                        ppid = int(f.read().rpartition(")")[2].split()[1])
                    if ppid != root or os.readlink(f"/proc/{pid}/exe") != self._python:
                        continue
                with open(f"/proc/{pid}/status") as f:
                    hwm = next((ln for ln in f if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            self.peak_kib = max(self.peak_kib, int(hwm.split()[1]))


# -- the end state ---------------------------------------------------------------------------

#: Runs a command inside a machine; its stdout, ``None`` when it failed.
Runner = Callable[[Sequence[str]], str | None]


def machine_runner(machine: Machine) -> Runner:
    """A :data:`Runner` for a lab machine (``nsenter`` into it)."""

    def run(argv: Sequence[str]) -> str | None:
        try:
            done = machine.run(list(argv), env=LAB_ENV, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return None
        return done.stdout if done.returncode == 0 else None

    return run


def unit_runner(root: str, unit: str) -> Runner:
    """A :data:`Runner` for a unit's machine (``lab exec UNIT -- ...``)."""

    def run(argv: Sequence[str]) -> str | None:
        done = lab_command(root, "exec", unit, "--", *argv, timeout=60)
        return done.out if done.code == 0 else None

    return run


def csv_rows(listing: str | None) -> dict[str, list[str]]:
    """An ``lxc ... list -f csv`` listing: first column -> the row."""
    rows = csv.reader(io.StringIO(listing or ""))
    return {row[0]: row for row in rows if row}


@dataclass(frozen=True)
class EndState:
    """What both paths must reach: N members, the OVN networks, the pools, an NB leader."""

    members: int
    central: int
    pools: tuple[str, ...]

    def problems(self, runners: Sequence[Runner]) -> list[str]:
        """What is not there yet; ``runners[0]`` is a member, the others are tried for OVN."""
        found = []
        run = runners[0]
        members = csv_rows(run([LXC, "cluster", "list", "-f", "csv"]))
        online = [name for name, row in members.items() if "ONLINE" in row]
        if len(members) != self.members or len(online) != self.members:
            found.append(f"{len(online)}/{len(members)} members ONLINE, want {self.members}")
        networks = csv_rows(run([LXC, "network", "list", "-f", "csv"]))
        for name, kind in (("UPLINK", "physical"), ("default", "ovn")):
            row = networks.get(name)
            if not row or row[1] != kind or row[-1] != "CREATED":
                found.append(f"network {name}: {row or 'missing'} (want {kind}, CREATED)")
        pools = csv_rows(run([LXC, "storage", "list", "-f", "csv"]))
        for name in self.pools:
            row = pools.get(name)
            if not row or row[1] != "ceph" or row[-1] != "CREATED":
                found.append(f"storage pool {name}: {row or 'missing'} (want ceph, CREATED)")
        found += self._raft_problems(runners)
        return found

    def _raft_problems(self, runners: Sequence[Runner]) -> list[str]:
        """The NB raft as a central machine reports it (the first whose server answers)."""
        command = [OVN_APPCTL, "-t", NB_CTL, "cluster/status", "OVN_Northbound"]
        for run in runners:
            text = run(command)
            if text is None:
                continue  # no central server on this machine
            fields = dict(
                line.split(": ", 1)
                for line in text.splitlines()
                if ": " in line and line[0] != " "
            )
            servers = RAFT_SERVER.findall(text.partition("Servers:")[2])
            if fields.get("Leader", "unknown") == "unknown" or len(servers) != self.central:
                return [
                    f"NB raft: leader {fields.get('Leader', '?')}, {len(servers)} servers "
                    f"(want a leader and {self.central})"
                ]
            return []
        return ["NB raft: no machine answers cluster/status"]

    def wait(self, runners: Sequence[Runner], where: str, timeout: float = VERIFY_TIMEOUT) -> None:
        """Return once there is no problem; :class:`BenchmarkError` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.problems(runners)
            if not problems:
                return
            if time.monotonic() >= deadline:
                raise BenchmarkError(f"{where}: end state not reached: " + "; ".join(problems))
            time.sleep(0.5)


# -- the bundle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    """The merged bundle as both paths deploy it: options, bases, the end state for N."""

    settings: plain.Settings
    lxd_base: str | None
    ceph_base: str | None
    bundle: bundles.Bundle

    @classmethod
    def load(cls) -> Product:
        """The bundle with the lab overlay; what the charms make of its options."""
        try:
            bundle = bundles.load_bundle(BUNDLE, [LAB_OVERLAY])
        except applications.BundleError as exc:
            raise BenchmarkError(str(exc)) from None
        apps = bundle.applications
        # ceph-mon names the key after the client application: its cephx user
        ceph_link = {**apps[CEPH_LINK_APP].config(), "name": CEPH_LINK_APP}
        settings = plain.Settings.from_derived(
            apps[LXD_APP].config(),
            derive_by_charm("ovn-bridge", apps[OVN_APP].config()),
            derive_by_charm("ceph-link", ceph_link),
        )
        return cls(settings, apps[LXD_APP].base, apps[CEPH_APP].base, bundle)

    def build(self) -> None:
        """Build every charm of the bundle now, so that no deploy counts a build."""
        for app in self.bundle.applications.values():
            build.build_dir(app.charm_dir)

    def end_state(self, n: int) -> EndState:
        """The end state of an N-member deployment."""
        central = min(self.settings.central_units, n)
        return EndState(n, central, tuple(pool[0] for pool in self.settings.pools))


def derive_by_charm(charm: str, options: dict[str, Any]) -> dict[str, Any]:
    """``plain.py derive CHARM``: what ``charm``'s own code makes of ``options``."""
    done = run_measured(
        [sys.executable, PLAIN_SCRIPT, "derive", charm],
        _env(plain.charm_path(charm)),
        timeout=60,
        stdin_text=json.dumps(options),
    ).check(f"plain.py derive {charm}")
    result: dict[str, Any] = json.loads(done.out)
    return result


def make_dir(path: str) -> str:
    """Create ``path`` with mode 0711 (container roots must traverse it, not list it)."""
    os.mkdir(path)
    os.chmod(path, 0o711)  # noqa: S103 - traversable on purpose, not listable
    return path


@dataclass
class Scratch:
    """The directory for the roots and logs; kept when ``keep`` (something failed)."""

    path: str
    keep: bool = False


@contextlib.contextmanager
def scratch_dir() -> Iterator[Scratch]:
    """A 0711 directory under /tmp; removed at the end unless something failed."""
    scratch = Scratch(tempfile.mkdtemp(prefix="lxd-bench-", dir="/tmp"))  # noqa: S108
    os.chmod(scratch.path, 0o711)  # noqa: S103 - traversable on purpose, not listable
    try:
        yield scratch
    except BaseException:
        scratch.keep = True
        raise
    finally:
        if scratch.keep:
            print(f"[bench] kept {scratch.path} (deploy logs)", file=sys.stderr)
        else:
            shutil.rmtree(scratch.path, ignore_errors=True)


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- charm path ------------------------------------------------------------------------------


@dataclass
class CharmResult:
    """What the charm path measured."""

    seconds: float
    hooks: int
    units: int
    max_rss_kib: int  # any process waited for (wait4), tools included
    python_rss_kib: int  # the lab command and its hooks (PythonPeak)
    where: list[list[str]]  # rows of hooks_breakdown()
    idle: list[list[str]]  # rows of idle_update_status()


def write_units_overlay(path: str, n: int) -> str:
    """An overlay with only ``num_units: n`` for ``lxd`` (no charm paths in it)."""
    with open(path, "w") as f:
        yaml.safe_dump({"applications": {LXD_APP: {"num_units": n}}}, f, sort_keys=False)
    return path


def count_units(status: dict[str, Any]) -> int:
    """Every unit of ``lab status --format json``: principals and their subordinates."""
    return sum(
        1 + len(unit.get("subordinates", {}))
        for app in status["applications"].values()
        for unit in app.get("units", {}).values()
    )


def charm_path(base: str, product: Product, n: int) -> CharmResult:
    """Deploy the bundle with N lxd units through the lab, measure, check, destroy."""
    root = make_dir(os.path.join(base, f"charm-{n}"))
    overlay = write_units_overlay(os.path.join(base, f"units-{n}.yaml"), n)
    log = os.path.join(base, f"charm-{n}-deploy.log")
    deploy_args = ["deploy", BUNDLE, "--overlay", LAB_OVERLAY, "--overlay", overlay]
    try:
        say(f"charm N={n}: lab deploy (log {log})")
        with PythonPeak() as python_peak:
            deploy = lab_command(
                root,
                *deploy_args,
                "--timeout",
                str(int(DEPLOY_TIMEOUT)),
                timeout=DEPLOY_TIMEOUT + 300,
                log=log,
                on_start=python_peak.watch,
            )
        deploy.check(f"lab deploy (N={n}, log {log})")
        status = json.loads(lab_command(root, "status", "--format", "json").check("status").out)
        hooks = int(status["model"]["hooks-run"])
        units = count_units(status)
        lxd_units = sorted(status["applications"][LXD_APP]["units"], key=_unit_number)
        say(f"charm N={n}: idle after {deploy.seconds:.1f} s, {hooks} hooks; checking")
        runners = [unit_runner(root, unit) for unit in lxd_units]
        product.end_state(n).wait(runners, f"charm path N={n}")
        where = hooks_breakdown(os.path.join(root, "logs", HOOK_LOG))
        idle = idle_update_status(root, runners)
        return CharmResult(
            deploy.seconds, hooks, units, deploy.max_rss_kib, python_peak.peak_kib, where, idle
        )
    finally:
        say(f"charm N={n}: lab destroy")
        destroyed = lab_command(root, "destroy", timeout=300)
        left = destroyed.err.strip() if destroyed.code != 0 else ""
        if left:
            print(f"[bench] lab destroy under {root} left:\n{left}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)  # kept by `lab destroy` if no lab started
        if left and sys.exc_info()[1] is None:
            raise BenchmarkError(f"lab destroy under {root} left things behind")


def hooks_breakdown(path: str) -> list[list[str]]:
    """Where the hooks went (the lab's hook log): per application and hook (and endpoint).

    Rows: application, hook[:endpoint], hooks, hook seconds (summed; hooks of different
    machines overlap), median seconds, median hook-tool calls.
    """
    groups: dict[tuple[str, str], list[tuple[float, int]]] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            app = record["unit"].split("/")[0]
            hook = record["hook"] + (f":{record['endpoint']}" if record.get("endpoint") else "")
            took = float(record["ended"] or 0) - float(record["started"] or 0)
            calls = sum((record.get("tool_calls") or {}).values())
            groups.setdefault((app, hook), []).append((took, calls))
    rows = [["app", "hook", "hooks", "hook s", "median s", "median tool calls"]]
    for (app, hook), runs in sorted(groups.items(), key=lambda g: (g[0][0], -len(g[1]))):
        rows.append(
            [
                app,
                hook,
                str(len(runs)),
                f"{sum(t for t, _ in runs):.1f}",
                f"{statistics.median(t for t, _ in runs):.2f}",
                f"{statistics.median(c for _, c in runs):.0f}",
            ]
        )
    return rows


#: What an idle hook must leave as it was, read on every LXD member.
LXD_STATE = ("/1.0", "/1.0/networks?recursion=1", "/1.0/storage-pools?recursion=1")
LXD_STATE += ("/1.0/cluster/members?recursion=1", "/1.0/certificates?recursion=1")


def idle_update_status(root: str, runners: Sequence[Runner]) -> list[list[str]]:
    """One ``update-status`` round on the idle model: seconds, tool calls, LXD writes.

    Every unit's timer is made due (``Model.expire_timers``), then ``Runner.settle`` runs
    exactly that round and returns. LXD's state (:data:`LXD_STATE` on every member) is read
    before and after; the last column says whether anything in it changed.
    """

    def state() -> dict[str, Any]:
        return {
            f"member {i} {path}": _unordered(json.loads(run(["lxc", "query", path]) or "null"))
            for i, run in enumerate(runners)
            for path in LXD_STATE
        }

    log = os.path.join(root, "logs", HOOK_LOG)
    with open(log) as f:
        seen = len(f.readlines())
    before = state()
    model = Model(root)
    model.expire_timers()
    lab_runner.Runner(model).settle(timeout=300)
    after = state()
    changed = sorted(key for key in before if before[key] != after[key])
    for key in changed:
        say(f"idle update-status changed {key}: {_changed_fields(before[key], after[key])}")
    unchanged = "yes" if not changed else f"NO ({len(changed)} reads)"
    with open(log) as f:
        runs = [json.loads(line) for line in f.readlines()[seen:]]
    rows = [["app", "hooks", "median s", "max s", "tool calls", "LXD unchanged"]]
    for app in sorted({r["unit"].split("/")[0] for r in runs}):
        mine = [r for r in runs if r["unit"].startswith(app + "/")]
        took = [r["ended"] - r["started"] for r in mine]
        calls = [sum((r.get("tool_calls") or {}).values()) for r in mine]
        rows.append(
            [
                app,
                str(len(took)),
                f"{statistics.median(took):.2f}",
                f"{max(took):.2f}",
                f"{statistics.median(calls):.0f}",
                unchanged,
            ]
        )
    return rows


def _unordered(value: Any) -> Any:
    """``value`` with its lists of names sorted, as LXD orders them at random.

    That is ``locations``, and the names ``environment.storage`` joins (``dir | ceph``).
    """
    if isinstance(value, dict):
        return {k: _unordered(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_unordered(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    if isinstance(value, str) and " | " in value:
        return " | ".join(sorted(value.split(" | ")))
    return value


def _changed_fields(before: Any, after: Any, prefix: str = "") -> str:
    """The JSON paths whose values differ between ``before`` and ``after`` (for a report)."""
    if isinstance(before, dict) and isinstance(after, dict):
        parts = [
            _changed_fields(before.get(k), after.get(k), f"{prefix}.{k}")
            for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)
        ]
        return ", ".join(parts)
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return ", ".join(
            _changed_fields(b, a, f"{prefix}[{i}]")
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            if b != a
        )
    return f"{prefix or '.'}: {before!r} -> {after!r}"[:300]


def _unit_number(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


# -- plain path ------------------------------------------------------------------------------


@dataclass
class PlainResult:
    """What the plain path measured, with its phases (name, start, end; s from the start)."""

    seconds: float = 0.0
    max_rss_kib: int = 0  # any process waited for (wait4), tools included
    python_rss_kib: int = 0  # the plain.py steps (PythonPeak)
    phases: list[tuple[str, float, float]] = field(default_factory=list)


def each(machines: Sequence[Machine], work: Callable[[int, Machine], Any]) -> list[Any]:
    """``work(i, machine)`` for every machine at once; the results in machine order."""
    if not machines:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(machines)) as pool:
        futures = [pool.submit(work, i, m) for i, m in enumerate(machines)]
        return [future.result() for future in futures]


class PlainBringUp:
    """The plain path on one lab: ``benchmarks/plain.py`` steps inside its machines."""

    def __init__(self, lab: Lab, product: Product, n: int):
        self.lab, self.product, self.n = lab, product, n
        self.settings = product.settings.as_json()
        self.result = PlainResult()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    # -- plumbing ----------------------------------------------------------------------

    def step(self, machine: Machine, name: str, **args: Any) -> dict[str, Any]:
        """Run ``plain.py NAME`` inside ``machine`` with ``args``; its JSON result."""
        argv = machine.command([sys.executable, PLAIN_SCRIPT, name])
        done = run_measured(argv, PLAIN_ENV, STEP_TIMEOUT, stdin_text=json.dumps(args))
        done.check(f"plain.py {name} on machine {machine.name}")
        with self._lock:
            self.result.max_rss_kib = max(self.result.max_rss_kib, done.max_rss_kib)
        lines = done.out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record ``name`` with its start and end (offsets from the start of the path)."""
        start = time.monotonic() - self._started
        yield
        end = time.monotonic() - self._started
        with self._lock:
            self.result.phases.append((name, start, end))

    def timed(self, name: str, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``work(*args, **kwargs)`` as phase ``name`` (for a track run in a thread)."""
        with self.phase(name):
            return work(*args, **kwargs)

    # -- the bring-up ------------------------------------------------------------------

    def run(self) -> PlainResult:
        """Machines to the verified end state; the result with its phases."""
        n, product = self.n, self.product
        with self.phase(f"machines ({n} + 1 for Ceph, serial)"):
            machines = [self.lab.create_machine(str(i), base=product.lxd_base) for i in range(n)]
            ceph_machine = self.lab.create_machine(str(n), base=product.ceph_base)
        first = machines[0]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as tracks:
            ceph = tracks.submit(self._ceph, ceph_machine, machines)
            with self.phase(f"start: LXD, OVS, OVN key + CSR ({n} parallel)"):
                csrs = each(machines, self._start)
            signed = tracks.submit(
                self.timed,
                "ovn: CA, certificates signed",
                self.step,
                first,
                "sign",
                ca_name=f"{OVN_APP} OVN CA (plain)",
                csrs={_ovn_unit(i): csr for i, csr in enumerate(csrs)},
            )
            cluster = tracks.submit(self._lxd_cluster, machines)
            central = tracks.submit(self._ovn, machines, signed)
            cluster.result()
            central_addresses = central.result()
            with self.phase(f"lxd: server config, definitions ({n} parallel)"):
                each(
                    machines,
                    lambda i, m: self.step(
                        m,
                        "member",
                        member=_member(i),
                        central=central_addresses,
                        settings=self.settings,
                    ),
                )
            with self.phase("lxd: networks cluster-wide (UPLINK, default)"):
                self.step(first, "objects", entity="network", settings=self.settings)
            ceph.result()
            with self.phase("lxd: storage pool cluster-wide"):
                self.step(first, "objects", entity="storage-pool", settings=self.settings)
        with self.phase("verify the end state"):
            runners = [machine_runner(m) for m in machines]
            product.end_state(n).wait(runners, f"plain path N={n}")
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def _ceph(self, ceph_machine: Machine, machines: Sequence[Machine]) -> None:
        """Ceph on its machine, then ceph-link's client files on every LXD machine."""
        with self.phase("ceph: cluster, pool (broker request), client key"):
            answer = self.step(
                ceph_machine, "ceph", address=ceph_machine.address, settings=self.settings
            )
        with self.phase(f"ceph: client files for LXD ({len(machines)} parallel)"):
            each(
                machines,
                lambda _, m: self.step(m, "ceph-client", ceph=answer, settings=self.settings),
            )

    def _start(self, i: int, machine: Machine) -> str:
        return self.step(machine, "start", unit=_ovn_unit(i), address=machine.address)["csr"]

    def _lxd_cluster(self, machines: Sequence[Machine]) -> None:
        """Bootstrap on the first machine, then each joiner with a fresh token."""
        first = machines[0]
        with self.phase("lxd: bootstrap"):
            self.step(
                first,
                "bootstrap",
                member=_member(0),
                address=first.address,
                settings=self.settings,
            )
        with self.phase(f"lxd: {len(machines) - 1} joins (serial)"):
            for i, joiner in enumerate(machines[1:], start=1):
                token = self.step(first, "token", member=_member(i))
                self.step(
                    joiner,
                    "join",
                    member=_member(i),
                    address=joiner.address,
                    settings=self.settings,
                    **token,
                )

    def _ovn(
        self, machines: Sequence[Machine], signed: concurrent.futures.Future[dict[str, Any]]
    ) -> list[str]:
        """OVN central raft on the first machines, then northd and the chassis everywhere.

        Returns the central members' addresses.
        """
        tls = signed.result()
        central = list(machines[: min(self.product.settings.central_units, len(machines))])
        addresses = [m.address for m in central]

        def files(i: int) -> dict[str, str]:
            return {"cert": tls["certs"][_ovn_unit(i)], "ca": tls["ca"]}

        first = central[0]
        with self.phase("ovn: central bootstrap (NB + SB raft)"):
            self.step(
                first, "central", address=first.address, peers=[], bootstrap=True, **files(0)
            )
        with self.phase(f"ovn: {len(central) - 1} central joins (parallel)"):
            each(
                central[1:],
                lambda i, m: self.step(
                    m,
                    "central",
                    address=m.address,
                    peers=[first.address],
                    bootstrap=False,
                    **files(i + 1),
                ),
            )
        with self.phase(f"ovn: northd + chassis ({len(machines)} parallel)"):
            each(
                machines,
                lambda i, m: self.step(
                    m,
                    "chassis",
                    address=m.address,
                    system_id=_ovn_unit(i).replace("/", "-"),
                    central=addresses,
                    northd=i < len(central),
                    settings=self.settings,
                    **files(i),
                ),
            )
        return addresses


def _member(i: int) -> str:
    """The LXD member name of machine ``i`` (the charm's, for unit lxd/i)."""
    return f"{LXD_APP}-{i}"


def _ovn_unit(i: int) -> str:
    """The ovn-bridge unit the charm path has on machine ``i``."""
    return f"{OVN_APP}/{i}"


def plain_path(base: str, product: Product, n: int) -> PlainResult:
    """The same end state on a fresh lab without charms; measure, destroy (nothing left)."""
    lab = Lab(make_dir(os.path.join(base, f"plain-{n}")))
    left: list[str] = []
    try:
        say(f"plain N={n}: {n} + 1 machines, LXD, OVN, Ceph, then LXD's networks and pool")
        with PythonPeak(os.getpid(), include_root=False) as python_peak:
            result = PlainBringUp(lab, product, n).run()
        result.python_rss_kib = python_peak.peak_kib
        say(f"plain N={n}: end state verified after {result.seconds:.1f} s")
    finally:
        say(f"plain N={n}: Lab.destroy()")
        left = lab.destroy()
        if left:
            print("[bench] Lab.destroy() left:", *left, sep="\n  ", file=sys.stderr)
    if left:
        raise BenchmarkError(f"Lab.destroy() under {lab.root} left {len(left)} thing(s)")
    return result


# -- report ----------------------------------------------------------------------------------


def table(rows: list[list[str]], left: int = 0) -> str:
    """Rows as columns under a rule; the first ``left`` columns left-aligned, others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    lines = [line(row) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _mib(python_kib: int, any_kib: int) -> str:
    """``python / any`` peak RSS in MiB."""
    return f"{python_kib / 1024:.0f} / {any_kib / 1024:.0f}"


def report(results: list[tuple[int, CharmResult | str | None, PlainResult]]) -> str:
    """The results table and the plain path's phases."""
    rows = [
        [
            "N",
            "charm s",
            "hooks",
            "hooks/unit",
            "plain s",
            "charm/plain",
            "charm peak RSS MiB",
            "plain peak RSS MiB",
        ]
    ]
    notes = []
    for n, charm, plain_result in results:
        plain_s = f"{plain_result.seconds:.1f}"
        plain_rss = _mib(plain_result.python_rss_kib, plain_result.max_rss_kib)
        if isinstance(charm, CharmResult):
            rows.append(
                [
                    str(n),
                    f"{charm.seconds:.1f}",
                    str(charm.hooks),
                    f"{charm.hooks / charm.units:.1f} ({charm.units} units)",
                    plain_s,
                    f"{charm.seconds / plain_result.seconds:.1f}x",
                    _mib(charm.python_rss_kib, charm.max_rss_kib),
                    plain_rss,
                ]
            )
        else:
            word = "skipped" if charm is None else "failed"
            rows.append([str(n), word, "-", "-", plain_s, "-", "-", plain_rss])
            if charm is not None:
                notes.append(f"charm path N={n} failed: {charm}")
    lines = [
        table(rows),
        "hooks/unit: over every unit of the model (lxd, ovn-bridge, ceph-link, ceph-provider)",
        "peak RSS: of the Python processes (charm: the lab command and its hooks; plain: the",
        "  steps) / of any process waited for (their tools too); daemons excluded",
        *notes,
    ]
    for n, charm, _ in results:
        if isinstance(charm, CharmResult):
            lines += ["", f"where the charm path's hooks went, N={n}:", table(charm.where, 2)]
            lines += ["", f"an idle update-status round, N={n}:", table(charm.idle, 1)]
    for n, _, plain_result in results:
        lines += ["", f"plain path phases, N={n} (s from the start; tracks overlap):"]
        phase_rows = [["phase", "from", "to", "took"]]
        for name, start, end in sorted(plain_result.phases, key=lambda p: (p[1], p[2])):
            phase_rows.append([name, f"{start:.1f}", f"{end:.1f}", f"{end - start:.1f}"])
        lines.append(table(phase_rows, left=1))
    return "\n".join(lines)


def preflight() -> None:
    """Raise :class:`BenchmarkError` when this host cannot run the benchmark."""
    reason = unavailable_reason()
    if reason:
        raise BenchmarkError(reason)
    for tool in REQUIRED_TOOLS:
        if not os.access(tool, os.X_OK):
            raise BenchmarkError(f"{tool} is missing (run scripts/setup-host)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both paths for every N; print the table. Exit code 1 when anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--units", type=int, nargs="+", default=[3, 5], metavar="N", help="LXD cluster sizes"
    )
    parser.add_argument(
        "--plain-only", action="store_true", help="skip the charm path (lab deploy)"
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.units):
        parser.error("--units must be at least 1")
    started = time.monotonic()
    results: list[tuple[int, CharmResult | str | None, PlainResult]] = []
    failed = False
    try:
        preflight()
        product = Product.load()
        if not args.plain_only:
            say("building the charms (scripts/build-charms' code; no deploy counts a build)")
            product.build()
        with scratch_dir() as scratch:
            for n in args.units:
                charm: CharmResult | str | None = None
                if not args.plain_only:
                    try:
                        charm = charm_path(scratch.path, product, n)
                    except BenchmarkError as exc:
                        print(f"ERROR {exc}", file=sys.stderr)
                        charm, failed = str(exc).splitlines()[0], True
                        scratch.keep = True  # its deploy log
                results.append((n, charm, plain_path(scratch.path, product, n)))
    except BenchmarkError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 1
    finally:
        if results:
            print(report(results))
        print(f"\ntotal run time: {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
