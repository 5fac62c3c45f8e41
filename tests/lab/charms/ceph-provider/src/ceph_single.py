"""A single-node Ceph cluster (1 mon, 1 mgr, 1 OSD) and the admin side of ``ceph-client``.

Plain functions over the Debian packages' tools; never imports ``ops``. Every expected
failure is a :class:`CephError`; :class:`CephUnavailableError` when the cluster does not
answer (yet). Daemons are started directly (they daemonize; no systemd in a lab machine)
and are checked through their pidfiles.

Paths are the standard ones, except the run dir (pidfiles, admin sockets) and the logs:
``/run/ceph`` and ``/var/log/ceph`` are the host's, shared by every lab machine, while
``/etc/ceph`` and ``/var/lib/ceph`` are each machine's own.

The OSD is bluestore on a 4 GiB sparse file (``block`` in its data dir): that is the
objectstore Ceph ships for real use and it works on this host's ext4 (O_DIRECT); memstore
would lose the pools on every OSD restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

CEPH = "/usr/bin/ceph"
CEPH_AUTHTOOL = "/usr/bin/ceph-authtool"
MONMAPTOOL = "/usr/bin/monmaptool"
RBD = "/usr/bin/rbd"
PACKAGES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-common")

CONF = "/etc/ceph/ceph.conf"
ADMIN_KEYRING = "/etc/ceph/ceph.client.admin.keyring"
LIB = "/var/lib/ceph"
RUN_DIR, LOG_DIR, TMP_DIR = f"{LIB}/run", f"{LIB}/log", f"{LIB}/tmp"
OSD_BLOCK_BYTES = 4 << 30
RBD_CAPS = ("mon", "profile rbd", "osd", "profile rbd")
COMMAND_TIMEOUT = 60


class CephError(Exception):
    """A command failed or a request cannot be served; the message says why."""


class CephUnavailableError(CephError):
    """The cluster does not answer (no mon quorum) or a daemon did not come up."""


class KeyNotFoundError(CephError):
    """The cephx user does not exist."""


def _run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT, stdin: str | None = None) -> str:
    """Run a tool (absolute path, list args); its stdout, or :class:`CephError` with stderr."""
    try:
        result = subprocess.run(  # noqa: S603 - absolute paths, list args
            list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise CephUnavailableError(f"{' '.join(argv[:4])} timed out after {timeout} s") from None
    except OSError as exc:
        raise CephError(f"{os.path.basename(argv[0])} failed: {exc}") from None
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-400:]
        raise CephError(f"{' '.join(os.path.basename(a) for a in argv[:4])} failed: {tail}")
    return result.stdout


def ceph(*args: str, timeout: float = COMMAND_TIMEOUT, stdin: str | None = None) -> str:
    """``ceph ARGS`` as client.admin; a mon that does not answer is an unavailable cluster."""
    try:
        return _run([CEPH, "--connect-timeout", "15", *args], timeout=timeout, stdin=stdin)
    except CephUnavailableError:
        raise
    except CephError as exc:
        if "error connecting to the cluster" in str(exc):
            raise CephUnavailableError(str(exc)) from None
        if args[:2] == ("auth", "get") and "ENOENT" in str(exc):
            raise KeyNotFoundError(f"no cephx user {args[2]}") from None
        raise


def ceph_json(*args: str) -> Any:
    """``ceph ARGS -f json``, parsed."""
    return json.loads(ceph(*args, "-f", "json"))


# ---------------------------------------------------------------------------- bootstrap


def render_conf(fsid: str, address: str) -> str:
    """ceph.conf of a single-node cluster on ``address`` (settings measured in the lab)."""
    return f"""[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:{address}:3300,v1:{address}:6789]
public addr = {address}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail crit = 0
mon data avail warn = 0
mon cluster log file = {LOG_DIR}/$cluster.$channel.log
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = {RUN_DIR}
pid file = {RUN_DIR}/$cluster-$name.pid
log file = {LOG_DIR}/$cluster-$name.log
bluestore block size = {OSD_BLOCK_BYTES}

[mgr.x]
keyring = {LIB}/mgr/ceph-x/keyring

[osd.0]
keyring = {LIB}/osd/ceph-0/keyring
"""


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _pid_alive(name: str, program: str) -> bool:
    """Whether ``name``'s pidfile names a live ``program`` (not a zombie, not a reused pid)."""
    try:
        pid = int(_read(f"{RUN_DIR}/ceph-{name}.pid").strip())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
        comm = _read(f"/proc/{pid}/comm").strip()
    except (OSError, ValueError, IndexError):
        return False
    return state != "Z" and comm == program


def _start(kind: str, daemon_id: str) -> bool:
    """Start ``ceph-<kind> -i <id>`` unless it runs; whether it was started."""
    name, program = f"{kind}.{daemon_id}", f"ceph-{kind}"
    if _pid_alive(name, program):
        return False
    logger.info("starting %s", name)
    _run([f"/usr/bin/{program}", "--cluster", "ceph", "-i", daemon_id])
    deadline = time.monotonic() + 30
    while not _pid_alive(name, program):
        if time.monotonic() > deadline:
            raise CephUnavailableError(f"{name} did not start; see {LOG_DIR}/ceph-{name}.log")
        time.sleep(0.2)
    return True


def _make_mon(fsid: str, address: str) -> None:
    """``ceph-mon --mkfs`` with new mon. and client.admin keys (once; a partial one redone)."""
    data = f"{LIB}/mon/ceph-a"
    if os.path.exists(f"{data}/done"):
        return
    shutil.rmtree(data, ignore_errors=True)
    mon_keyring, monmap = f"{TMP_DIR}/mon.keyring", f"{TMP_DIR}/monmap"
    os.makedirs(TMP_DIR, mode=0o700, exist_ok=True)
    for path in (mon_keyring, monmap):
        if os.path.exists(path):
            os.remove(path)
    authtool = [CEPH_AUTHTOOL, "--create-keyring", "--gen-key"]
    _run([*authtool, mon_keyring, "-n", "mon.", "--cap", "mon", "allow *"])
    admin_caps = [w for kind in ("mon", "osd", "mds", "mgr") for w in ("--cap", kind, "allow *")]
    _run([*authtool, ADMIN_KEYRING, "-n", "client.admin", *admin_caps])
    os.chmod(ADMIN_KEYRING, 0o600)
    _run([CEPH_AUTHTOOL, mon_keyring, "--import-keyring", ADMIN_KEYRING])
    addrs = f"[v2:{address}:3300,v1:{address}:6789]"
    _run([MONMAPTOOL, "--create", "--fsid", fsid, "--addv", "a", addrs, monmap])
    os.makedirs(data, exist_ok=True)
    _run(["/usr/bin/ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", mon_keyring])
    for path in (mon_keyring, monmap):
        os.remove(path)
    _write(f"{data}/done", "")


def _make_mgr() -> None:
    keyring = f"{LIB}/mgr/ceph-x/keyring"
    if not os.path.exists(keyring):
        os.makedirs(os.path.dirname(keyring), exist_ok=True)
        caps = ["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"]
        ceph("auth", "get-or-create", "mgr.x", *caps, "-o", keyring)


def _make_osd() -> None:
    """OSD 0: ``ceph osd new``, bluestore on a sparse file (a half-made one is redone)."""
    data = f"{LIB}/osd/ceph-0"
    if os.path.exists(f"{data}/done"):
        return
    ceph("osd", "purge", "0", "--yes-i-really-mean-it")  # a half-made osd.0 (no-op when none)
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    osd_uuid, secret = str(uuid.uuid4()), gen_key()
    ceph("osd", "new", osd_uuid, "0", "-i", "-", stdin=json.dumps({"cephx_secret": secret}))
    _run(
        [CEPH_AUTHTOOL, "--create-keyring", f"{data}/keyring", "-n", "osd.0", "--add-key", secret]
    )
    with open(f"{data}/block", "wb") as f:
        f.truncate(OSD_BLOCK_BYTES)
    _run(["/usr/bin/ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], timeout=180)
    _write(f"{data}/done", "")


def bootstrapped() -> bool:
    """Whether the mon and the OSD have been made (their daemons may not run)."""
    return all(os.path.exists(f"{LIB}/{d}/done") for d in ("mon/ceph-a", "osd/ceph-0"))


def ensure_cluster(address: str) -> list[str]:
    """Bootstrap what is missing of the cluster on ``address``, start what does not run.

    Returns:
        The daemons (re)started.
    """
    for directory in (RUN_DIR, LOG_DIR):
        os.makedirs(directory, exist_ok=True)
    match = re.search(r"^fsid = (\S+)$", _read(CONF), re.MULTILINE)
    fsid = match.group(1) if match else str(uuid.uuid4())
    conf = render_conf(fsid, address)
    if _read(CONF) != conf:
        _write(CONF, conf)
    _make_mon(fsid, address)
    started = ["mon.a"] if _start("mon", "a") else []
    _make_mgr()
    started += ["mgr.x"] if _start("mgr", "x") else []
    _make_osd()
    started += ["osd.0"] if _start("osd", "0") else []
    return started


@dataclass(frozen=True)
class Health:
    """What the unit's status shows."""

    version: str
    health: str
    osds_up: int


def wait_osd_up(timeout: float = 120) -> None:
    """Wait until an OSD is up.

    Raises:
        CephUnavailableError: no OSD up within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while int(ceph_json("osd", "stat").get("num_up_osds", 0)) < 1:
        if time.monotonic() > deadline:
            raise CephUnavailableError(f"no OSD up after {timeout:.0f} s")
        time.sleep(1)


def health() -> Health:
    """Version, health status and OSDs up, for the unit's status."""
    version = re.search(r"ceph version (\d+\.\d+)", _run([CEPH, "--version"]))
    return Health(
        version=version.group(1) if version else "?",
        health=str(ceph_json("health").get("status", "HEALTH_UNKNOWN")),
        osds_up=int(ceph_json("osd", "stat").get("num_up_osds", 0)),
    )


# ---------------------------------------------------------------------------- keys


def gen_key() -> str:
    """A new random cephx secret."""
    return _run([CEPH_AUTHTOOL, "--gen-print-key"]).strip()


def fingerprint(key: str) -> str:
    """What may be shown of a key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _entity(user: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", user) or user == "admin":
        raise CephError(f"invalid cephx user {user!r} (give a client name without 'client.')")
    return f"client.{user}"


def ensure_client_key(user: str) -> str:
    """The key of ``client.<user>``, created with rbd-profile caps when it does not exist."""
    entity = _entity(user)
    try:
        return str(ceph_json("auth", "get", entity)[0]["key"])
    except KeyNotFoundError:
        logger.info("creating %s", entity)
        return ceph("auth", "get-or-create-key", entity, *RBD_CAPS).strip()


def rotate_key(user: str) -> str:
    """Give ``client.<user>`` a new key with its current caps (Ceph 16 has no ``auth rotate``).

    Raises:
        KeyNotFoundError: there is no such user.
    """
    entity = _entity(user)
    caps = ceph_json("auth", "get", entity)[0].get("caps", {})
    key = gen_key()
    os.makedirs(TMP_DIR, mode=0o700, exist_ok=True)
    keyring = f"{TMP_DIR}/rotate.keyring"
    argv = [CEPH_AUTHTOOL, "--create-keyring", keyring, "-n", entity, "--add-key", key]
    for kind, cap in sorted(caps.items()):
        argv += ["--cap", kind, cap]
    try:
        _run(argv)
        ceph("auth", "import", "-i", keyring)  # replaces the key, keeps the entity
    finally:
        if os.path.exists(keyring):
            os.remove(keyring)
    return key


# ---------------------------------------------------------------------------- broker


@dataclass(frozen=True)
class PoolRequest:
    """A ``create-pool`` op of a broker request (replicated pools only)."""

    name: str
    replicas: int
    pg_num: int | None
    app: str | None


def broker_request_id(raw: str) -> str | None:
    """The request-id of a ``broker_req``; ``None`` when it is not JSON or has none."""
    try:
        request = json.loads(raw)
        request_id = request["request-id"]
    except (ValueError, TypeError, KeyError):
        return None
    return str(request_id) if request_id else None


def _pool_request(op: dict[str, Any]) -> PoolRequest:
    if op.get("op") != "create-pool":
        raise CephError(f"unsupported broker op {op.get('op')!r}")
    if op.get("pool-type", "replicated") != "replicated":
        raise CephError(f"pool {op.get('name')!r}: only replicated pools are supported")
    name, replicas, pg_num, app = op.get("name"), op.get("replicas", 3), op.get("pg_num"), None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise CephError(f"invalid pool name {name!r}")
    if not isinstance(replicas, int) or not 1 <= replicas <= 10:
        raise CephError(f"pool {name}: invalid replicas {replicas!r}")
    if pg_num is not None and (not isinstance(pg_num, int) or pg_num < 1):
        raise CephError(f"pool {name}: invalid pg_num {pg_num!r}")
    if op.get("app-name") is not None:
        app = str(op["app-name"])
    return PoolRequest(name, replicas, pg_num, app)


def ensure_pool(pool: PoolRequest) -> None:
    """Create the replicated pool (size ``replicas``), tag its application, init rbd pools.

    With one OSD a pool of size > 1 is undersized but active: its min_size stays 1
    (``osd pool default min size``; raising the size does not raise it).
    """
    existing = {p["pool_name"]: p for p in ceph_json("osd", "pool", "ls", "detail")}
    if pool.name not in existing:
        logger.info("creating pool %s (size %d)", pool.name, pool.replicas)
        pgs = [str(pool.pg_num)] if pool.pg_num else []
        ceph("osd", "pool", "create", pool.name, *pgs)
    if existing.get(pool.name, {}).get("size") != pool.replicas:
        ceph("osd", "pool", "set", pool.name, "size", str(pool.replicas), "--yes-i-really-mean-it")
    if pool.app:
        ceph("osd", "pool", "application", "enable", pool.name, pool.app)
        if pool.app == "rbd" and pool.name not in existing:
            _run([RBD, "pool", "init", pool.name], timeout=120)


def process_broker_request(raw: str) -> dict[str, Any]:
    """Serve a ``broker_req`` as ceph-mon does; the response (``exit-code`` 0 or 1).

    Every op is checked before any runs.

    Raises:
        CephUnavailableError: the cluster did not answer (not a response: try again).
    """
    request = json.loads(raw)
    request_id = request.get("request-id")
    try:
        if request.get("api-version") != 1:
            raise CephError(f"Missing or invalid api version ({request.get('api-version')})")
        ops = request.get("ops")
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            raise CephError("'ops' is not a list of objects")
        for pool in [_pool_request(op) for op in ops]:
            ensure_pool(pool)
    except CephUnavailableError:
        raise
    except CephError as exc:
        logger.warning("broker request %s failed: %s", request_id, exc)
        return {"exit-code": 1, "stderr": str(exc), "request-id": request_id}
    return {"exit-code": 0, "request-id": request_id}
