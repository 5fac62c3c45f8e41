r"""Benchmark: an N-member LXD cluster through the charm's hooks vs. a plain script.

Run it as root from the repository root, with the Debian ``lxd`` and
``lxd-client`` packages and the repository's ``.venv``::

    PYTHONPATH=.:charms/lxd/src:charms/lxd/lib:common \
        .venv/bin/python benchmarks/deploy.py [--units 3 5]

For every N (default 3 and 5) it builds the same cluster twice on lab machines (network and
mount namespaces, :mod:`lab.machines`), one after the other, and tears each down completely:

charm path
    Writes an overlay with ``num_units: N`` for ``lxd`` (plus the options of
    ``bundles/overlays/lab.yaml``) and runs ``python -m lab --root R deploy
    bundles/lxd-cluster.yaml --overlay bundles/overlays/lab.yaml --overlay OVERLAY``.
    Measures the wall time of that command (deploy start until the model is idle, which
    includes creating the machines and the final ``update-status`` round that proves the
    model idle) and reads the hook count (``model.hooks-run`` of ``status --format json``).
    While it runs, a probe polls ``lxc cluster list`` inside machine 0 once a second to
    note when the cluster first had N ONLINE members ("charm online"; ±1 s). After the
    deploy, ``lab exec lxd/0 -- lxc cluster list -f csv`` must show N ONLINE members (the
    benchmark fails otherwise); then ``lab destroy``.

plain path
    Creates a :class:`lab.machines.Lab` with N machines and, without any charm or hook,
    runs the charm's own workload code inside them (a small Python snippet per step):
    ``installer.DebInstaller(systemd=False).ensure_running()`` on every machine in
    parallel, ``lxd.LXD.bootstrap_cluster`` on machine 0 (its lab address, port 8443),
    then for every other machine, one at a time, ``issue_join_token`` on machine 0 and
    ``join_cluster`` on the joiner. Measures the wall time from creating the machines
    until ``lxc cluster list`` on machine 0 shows N ONLINE members; then
    :meth:`Lab.destroy`, which must leave nothing behind.

Printed: a table (N, charm seconds, hooks, charm online seconds, plain seconds, ratio
charm/plain, peak RSS of the charm path's Python processes (the ``lab`` command and its
hooks) and of the plain path's snippets), and the plain path's phases. Peak RSS is the
largest single process (``wait4`` ``ru_maxrss``), LXD daemons excluded on both paths.
Progress goes to stderr. Temporary roots live under ``/tmp`` (mode 0711); the directory
with the deploy logs is kept only when something failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import csv
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import yaml

from lab.machines import Lab, Machine, unavailable_reason

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "bundles", "lxd-cluster.yaml")
LAB_OVERLAY = os.path.join(REPO, "bundles", "overlays", "lab.yaml")
WORKLOAD_PATHS = ("charms/lxd/src", "charms/lxd/lib", "common")
APP = "lxd"
LXD_BINARY = "/usr/bin/lxd"
LXC_BINARY = "/usr/bin/lxc"
HTTPS_PORT = 8443
DEPLOY_TIMEOUT = 1800.0  # seconds the lab may take to settle one deployment
STEP_TIMEOUT = 300.0  # seconds one plain-path step may take
PROBE_INTERVAL = 1.0

#: The plain path's workload code, run inside a machine as ``python -c SNIPPET ACTION ARGS``.
#: It is the charm's own code (installer.py, lxd.py), called as the charm calls it.
SNIPPET = """
import json, sys
from installer import DebInstaller
from lxd import LXD, JoinToken, fill_member_config

action, *args = sys.argv[1:]
installer = DebInstaller(systemd=False)
lxd = LXD(installer.paths)
if action == "start":
    installer.ensure_running()
    lxd.wait_ready(timeout=60)
elif action == "bootstrap":
    name, address = args
    if not lxd.bootstrap_cluster(name, address, {}, cluster_address=address):
        sys.exit("already clustered")
elif action == "token":
    (name,) = args
    token = lxd.issue_join_token(name)
    config = fill_member_config(lxd.member_config(), {})
    print(json.dumps({"token": token.encode(), "member_config": config}))
elif action == "join":
    name, address = args
    data = json.loads(sys.stdin.read())
    token = JoinToken.decode(data["token"])
    if not lxd.join_cluster(token, name, address, data["member_config"]):
        sys.exit("already clustered")
else:
    sys.exit(f"unknown action {action}")
"""


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
            tail = (self.err.strip() or self.out.strip())[-2000:]
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
WORKLOAD_ENV = _env(WORKLOAD_PATHS)


def run_measured(
    argv: Sequence[str],
    env: dict[str, str],
    timeout: float,
    stdin_text: str | None = None,
    log_path: str | None = None,
) -> Finished:
    """Run ``argv`` to its end; reap it with ``wait4`` to learn its peak RSS.

    ``ru_maxrss`` from ``wait4`` covers the child and the descendants it reaped (a hook
    process of the ``lab`` command), not detached daemons nobody waits for. Output goes
    to temporary files (or ``log_path`` for stdout and stderr both).
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


def lab_command(root: str, *args: str, timeout: float = 120, log: str | None = None) -> Finished:
    """``python -m lab --root ROOT ARGS...`` (the ``bin/lab`` command)."""
    argv = [sys.executable, "-m", "lab", "--root", root, *args]
    return run_measured(argv, LAB_ENV, timeout=timeout, log_path=log)


def cluster_listing(machine: Machine, timeout: float = 20) -> str | None:
    """``lxc cluster list -f csv`` inside ``machine``; ``None`` when it fails."""
    try:
        done = machine.run(
            [LXC_BINARY, "cluster", "list", "-f", "csv"],
            env=WORKLOAD_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None


def online_count(listing: str) -> tuple[int, int]:
    """(members, ONLINE members) in an ``lxc cluster list -f csv`` listing."""
    rows = [row for row in csv.reader(io.StringIO(listing)) if row]
    return len(rows), sum(1 for row in rows if "ONLINE" in row)


def require_online(listing: str | None, n: int, where: str) -> None:
    """Raise :class:`BenchmarkError` unless ``listing`` shows exactly ``n`` ONLINE members."""
    members, online = online_count(listing or "")
    if listing is None or members != n or online != n:
        raise BenchmarkError(
            f"{where}: expected {n} ONLINE members, lxc cluster list shows {members} "
            f"member(s), {online} ONLINE:\n{listing if listing is not None else '(failed)'}"
        )


# -- temporary roots -------------------------------------------------------------------------


def make_dir(path: str) -> str:
    """Create ``path`` with mode 0711 (container roots must traverse it, not list it)."""
    os.mkdir(path)
    os.chmod(path, 0o711)  # noqa: S103 - traversable on purpose, not listable
    return path


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A 0711 directory under /tmp for the roots and logs; removed unless an error escaped."""
    base = tempfile.mkdtemp(prefix="lxd-bench-", dir="/tmp")  # noqa: S108 - asked for /tmp
    os.chmod(base, 0o711)  # noqa: S103
    try:
        yield base
    except BaseException:
        print(f"[bench] kept {base} (deploy logs)", file=sys.stderr)
        raise
    shutil.rmtree(base, ignore_errors=True)


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- charm path ------------------------------------------------------------------------------


@dataclass
class CharmResult:
    """What the charm path measured."""

    seconds: float
    hooks: int
    online_seconds: float | None
    max_rss_kib: int


class OnlineProbe:
    """Polls machine 0 of the lab under ``root`` until its cluster has ``n`` ONLINE members."""

    def __init__(self, root: str, n: int):
        self.root, self.n = root, n
        self.found_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> OnlineProbe:
        """Start polling."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop polling (waits for a poll under way)."""
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL):
            try:
                machines = Lab.open(self.root).machines()
            except (OSError, ValueError):
                continue  # no lab yet (or its state file is being written)
            listing = cluster_listing(machines[0], timeout=10) if machines else None
            if listing is not None and online_count(listing) == (self.n, self.n):
                self.found_at = time.monotonic()
                return


def write_overlay(path: str, n: int) -> str:
    """An overlay with ``num_units: n`` for ``lxd`` and the lab overlay's options."""
    with open(LAB_OVERLAY) as f:
        overlay = copy.deepcopy(yaml.safe_load(f) or {})
    overlay.setdefault("applications", {}).setdefault(APP, {})["num_units"] = n
    with open(path, "w") as f:
        yaml.safe_dump(overlay, f, sort_keys=False)
    return path


def charm_path(base: str, n: int) -> CharmResult:
    """Deploy the bundle with N units through the lab, measure, check, destroy."""
    root = make_dir(os.path.join(base, f"charm-{n}"))
    overlay = write_overlay(os.path.join(base, f"overlay-{n}.yaml"), n)
    log = os.path.join(base, f"charm-{n}-deploy.log")
    deploy_args = ["deploy", BUNDLE, "--overlay", LAB_OVERLAY, "--overlay", overlay]
    try:
        say(f"charm N={n}: lab deploy (log {log})")
        with OnlineProbe(root, n) as probe:
            started = time.monotonic()
            deploy = lab_command(
                root,
                *deploy_args,
                "--timeout",
                str(int(DEPLOY_TIMEOUT)),
                timeout=DEPLOY_TIMEOUT + 300,
                log=log,
            )
        deploy.check(f"lab deploy (N={n}, log {log})")
        status = json.loads(lab_command(root, "status", "--format", "json").check("status").out)
        hooks = int(status["model"]["hooks-run"])
        listing = lab_command(
            root, "exec", f"{APP}/0", "--", LXC_BINARY, "cluster", "list", "-f", "csv"
        ).check("lab exec lxd/0 -- lxc cluster list")
        require_online(listing.out, n, f"charm path N={n}")
        online = None if probe.found_at is None else probe.found_at - started
        say(f"charm N={n}: idle after {deploy.seconds:.1f} s, {hooks} hooks, {n} ONLINE")
        return CharmResult(deploy.seconds, hooks, online, deploy.max_rss_kib)
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


# -- plain path ------------------------------------------------------------------------------


@dataclass
class PlainResult:
    """What the plain path measured, with its phases (name -> seconds)."""

    seconds: float = 0.0
    max_rss_kib: int = 0
    phases: dict[str, float] = field(default_factory=dict)


def snippet(
    machine: Machine, result: PlainResult, *args: str, stdin_text: str | None = None
) -> str:
    """Run :data:`SNIPPET` ``args`` inside ``machine``; its stdout (raises on failure)."""
    argv = machine.command([sys.executable, "-c", SNIPPET, *args])
    done = run_measured(argv, WORKLOAD_ENV, timeout=STEP_TIMEOUT, stdin_text=stdin_text)
    done.check(f"{args[0]} on machine {machine.name}")
    result.max_rss_kib = max(result.max_rss_kib, done.max_rss_kib)
    return done.out


def wait_online(machine: Machine, n: int, timeout: float = STEP_TIMEOUT) -> None:
    """Poll machine ``machine``'s ``lxc cluster list`` until it shows ``n`` ONLINE members."""
    deadline = time.monotonic() + timeout
    while True:
        listing = cluster_listing(machine)
        if listing is not None and online_count(listing) == (n, n):
            return
        if time.monotonic() >= deadline:
            require_online(listing, n, f"plain path N={n} after {timeout:.0f} s")
        time.sleep(0.2)


def form_cluster(lab: Lab, n: int, result: PlainResult) -> None:
    """Create N machines and form the cluster on them; the phases go into ``result``."""
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        result.phases[name] = now - mark
        mark = now

    machines = [lab.create_machine(str(i)) for i in range(n)]
    phase("machines")
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for future in [pool.submit(snippet, m, result, "start") for m in machines]:
            future.result()
    phase("start daemons (parallel)")
    first = machines[0]
    snippet(first, result, "bootstrap", "lxd-0", f"{first.address}:{HTTPS_PORT}")
    phase("bootstrap")
    for i, joiner in enumerate(machines[1:], start=1):
        token = snippet(first, result, "token", f"lxd-{i}")
        snippet(
            joiner, result, "join", f"lxd-{i}", f"{joiner.address}:{HTTPS_PORT}", stdin_text=token
        )
    phase(f"{n - 1} joins (serial)")
    wait_online(first, n)
    phase(f"until {n} ONLINE")


def plain_path(base: str, n: int) -> PlainResult:
    """Form the cluster directly on N lab machines, measure, destroy (nothing may be left)."""
    lab = Lab(make_dir(os.path.join(base, f"plain-{n}")))
    result = PlainResult()
    left: list[str] = []
    try:
        say(f"plain N={n}: machines, daemons, bootstrap, joins")
        started = time.monotonic()
        form_cluster(lab, n, result)
        result.seconds = time.monotonic() - started
        say(f"plain N={n}: {n} ONLINE after {result.seconds:.1f} s")
    finally:
        say(f"plain N={n}: Lab.destroy()")
        left = lab.destroy()
        if left:
            print("[bench] Lab.destroy() left:", *left, sep="\n  ", file=sys.stderr)
    if left:
        raise BenchmarkError(f"Lab.destroy() under {lab.root} left {len(left)} thing(s)")
    return result


# -- report ----------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    """Rows as right-aligned columns under a rule."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: list[tuple[int, CharmResult, PlainResult]]) -> str:
    """The results table and the plain path's phases."""
    rows = [
        [
            "N",
            "charm s",
            "hooks",
            "charm online s",
            "plain s",
            "charm/plain",
            "charm peak RSS MiB",
            "plain peak RSS MiB",
        ]
    ]
    for n, charm, plain in results:
        online = "?" if charm.online_seconds is None else f"{charm.online_seconds:.1f}"
        rows.append(
            [
                str(n),
                f"{charm.seconds:.1f}",
                str(charm.hooks),
                online,
                f"{plain.seconds:.1f}",
                f"{charm.seconds / plain.seconds:.1f}x",
                f"{charm.max_rss_kib / 1024:.0f}",
                f"{plain.max_rss_kib / 1024:.0f}",
            ]
        )
    lines = [table(rows), "", "plain path phases (s):"]
    for n, _, plain in results:
        phases = ", ".join(f"{name} {secs:.1f}" for name, secs in plain.phases.items())
        lines.append(f"  N={n}: {phases}")
    return "\n".join(lines)


def preflight() -> None:
    """Raise :class:`BenchmarkError` when this host cannot run the benchmark."""
    reason = unavailable_reason()
    if reason:
        raise BenchmarkError(reason)
    for tool in (LXD_BINARY, LXC_BINARY):
        if not os.access(tool, os.X_OK):
            raise BenchmarkError(f"{tool} is missing (Debian 'lxd' and 'lxd-client' packages)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both paths for every N; print the table. Exit code 1 when anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--units", type=int, nargs="+", default=[3, 5], metavar="N", help="cluster sizes"
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.units):
        parser.error("--units must be at least 1")
    started = time.monotonic()
    results = []
    try:
        preflight()
        with scratch_dir() as base:
            for n in args.units:
                results.append((n, charm_path(base, n), plain_path(base, n)))
    except BenchmarkError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 1
    finally:
        if results:
            print(report(results))
        print(f"\ntotal run time: {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
