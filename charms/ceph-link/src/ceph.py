"""The Ceph client side of LXD: the broker request, the provider's answer, the files LXD reads.

Never imports ``ops``. The ``ceph-client`` wire format is the one ceph-mon and microceph
speak: the requirer's unit databag carries ``broker_req`` (built with charmhelpers'
``CephBrokerRq``), ``unit-name`` and ``application-name``; each provider unit answers with
``auth``, ``key``, ``ceph-public-address`` and ``broker-rsp-<unit>``, microceph also with the
application-level ``ceph-mon-public-addresses``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PACKAGES = ("ceph-common",)  # the ceph CLI LXD (distro package) and the cephfs check use
CEPH = "/usr/bin/ceph"
CLUSTER = "ceph"  # ceph.conf is <cluster>.conf: LXD's default ceph.cluster_name
CONF_MARKER = "# Written by the ceph-link charm: changes are overwritten."
COMMAND_TIMEOUT = 30


class CephError(Exception):
    """A ceph command failed."""


class InvalidProviderDataError(ValueError):
    """A provider unit sent data that cannot be used (the message names the key)."""


class ForeignConfigError(Exception):
    """A ceph.conf that ceph-link did not write is in place (e.g. a mon on this machine)."""


@dataclass(frozen=True)
class Pool:
    """A replicated RBD pool: the Ceph pool and the LXD storage pool of the same name."""

    name: str
    replicas: int
    pg_num: int | None = None


# ------------------------------------------------------------------------- the request


def broker_request(pools: Sequence[Pool]) -> tuple[str, str]:
    """The ``broker_req`` JSON for ``pools`` and its request-id.

    The request-id is the sha1 of the sorted ops, so the same pools give the same request
    in every hook (the provider answers a known id from its cache) and a change of the
    pools is a new request.
    """
    # charmhelpers pulls in its whole hook toolkit (and checks the platform) on import:
    # only this function needs it.
    from charmhelpers.contrib.storage.linux.ceph import CephBrokerRq  # noqa: PLC0415

    request = CephBrokerRq()
    for pool in pools:
        request.add_op_create_replicated_pool(
            name=pool.name, replica_count=pool.replicas, pg_num=pool.pg_num, app_name="rbd"
        )
    ops = json.dumps(request.ops, sort_keys=True)
    request.request_id = hashlib.sha1(ops.encode(), usedforsecurity=False).hexdigest()
    return request.request, request.request_id


def response_key(unit_name: str) -> str:
    """The provider's databag key that carries the answer to ``unit_name``'s request."""
    return "broker-rsp-" + unit_name.replace("/", "-")


@dataclass(frozen=True)
class BrokerResponse:
    """A provider's answer to one broker request."""

    request_id: str
    exit_code: int
    stderr: str = ""

    @classmethod
    def decode(cls, raw: str) -> BrokerResponse:
        """Parse ``broker-rsp-<unit>``.

        Raises:
            InvalidProviderDataError: not a JSON object with an integer ``exit-code``.
        """
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise InvalidProviderDataError("broker response is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("exit-code"), int):
            raise InvalidProviderDataError("broker response has no integer 'exit-code'")
        return cls(
            request_id=str(data.get("request-id") or ""),
            exit_code=data["exit-code"],
            stderr=str(data.get("stderr") or ""),
        )


# ------------------------------------------------------------------ the provider's data


def valid_key(key: str) -> str:
    """A cephx secret: base64 of a 12-byte header and a 16-byte AES key.

    Raises:
        InvalidProviderDataError: anything else (never put into a keyring).
    """
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 28:
        raise InvalidProviderDataError("not a cephx key")
    return key


def mon_address(value: str) -> str:
    """``10.0.0.1``, ``10.0.0.1:6789``, ``fd00::1`` or ``[fd00::1]:6789``, normalised.

    Without a port the client tries both messenger ports (3300 v2, 6789 v1).

    Raises:
        InvalidProviderDataError: not an IP address with an optional port.
    """
    text = value.strip()
    host, port = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise InvalidProviderDataError(f"mon address {value!r} is not [IPv6]:PORT")
        port = rest[1:] if rest else ""
        if rest and not port:
            raise InvalidProviderDataError(f"mon address {value!r} has an empty port")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidProviderDataError(f"mon address {value!r} is not an IP address") from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidProviderDataError(f"mon address {value!r} has an invalid port")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}" if port else host


def mon_addresses(unit_addresses: Iterable[str], app_addresses: str) -> list[str]:
    """Every mon: each unit's ``ceph-public-address`` and the app's JSON list (microceph).

    Raises:
        InvalidProviderDataError: an address or the list is malformed.
    """
    found = [a for a in unit_addresses if a]
    if app_addresses:
        try:
            listed = json.loads(app_addresses)
        except json.JSONDecodeError:
            listed = None
        if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
            raise InvalidProviderDataError("'ceph-mon-public-addresses' is not a JSON list")
        found += listed
    return sorted({mon_address(a) for a in found})


# -------------------------------------------------------------------- files LXD reads


def render_conf(mons: Sequence[str], auth: str, rbd_features: str = "") -> str:
    """The ceph.conf LXD's ceph client reads."""
    lines = [
        CONF_MARKER,
        "[global]",
        f"mon host = {' '.join(mons)}",
        f"auth cluster required = {auth}",
        f"auth service required = {auth}",
        f"auth client required = {auth}",
    ]
    if rbd_features:
        lines.append(f"rbd default features = {rbd_features}")
    return "\n".join(lines) + "\n"


def render_keyring(user: str, key: str) -> str:
    """The keyring of ``client.<user>``."""
    return f"[client.{user}]\n\tkey = {key}\n"


def conf_path(directory: str) -> str:
    """Where LXD's ceph client reads the cluster's config."""
    return os.path.join(directory, f"{CLUSTER}.conf")


def keyring_path(directory: str, user: str) -> str:
    """Where LXD's ceph client reads ``client.<user>``'s key."""
    return os.path.join(directory, f"{CLUSTER}.client.{user}.keyring")


def _write(path: str, content: str, mode: int) -> bool:
    """Replace ``path`` atomically with ``content`` (created with ``mode``); whether it changed."""
    try:
        with open(path) as f:
            if f.read() == content and (os.stat(path).st_mode & 0o777) == mode:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ceph-link-")
    try:
        os.fchmod(fd, mode)  # before any byte of a key is written
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def write_conf(directory: str, content: str) -> bool:
    """Write ceph.conf unless one ceph-link did not write is there; whether it changed.

    Raises:
        ForeignConfigError: the file exists without our marker (left untouched).
    """
    path = conf_path(directory)
    try:
        with open(path) as f:
            existing = f.read()
    except FileNotFoundError:
        existing = ""
    if existing and existing.splitlines()[0] != CONF_MARKER:  # empty: nothing to keep
        raise ForeignConfigError(f"{path} was not written by ceph-link; left as it is")
    return _write(path, content, 0o644)


def write_keyring(directory: str, user: str, key: str) -> bool:
    """Write ``client.<user>``'s keyring, mode 0600; whether it changed."""
    return _write(keyring_path(directory, user), render_keyring(user, key), 0o600)


# ------------------------------------------------------------------------------- cephfs


def filesystems(directory: str, user: str) -> list[str]:
    """Names of the Ceph cluster's CephFS filesystems, asked with ``client.<user>``'s key.

    Raises:
        CephError: the command failed (no quorum, key refused...).
    """
    argv = [
        CEPH,
        "--conf",
        conf_path(directory),
        "--id",
        user,
        "--keyring",
        keyring_path(directory, user),
        "--connect-timeout",
        str(COMMAND_TIMEOUT),
        "fs",
        "ls",
        "--format",
        "json",
    ]
    try:
        result = subprocess.run(  # noqa: S603 - absolute path, list args
            argv, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT + 5
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CephError(f"ceph fs ls failed: {exc}") from None
    if result.returncode != 0:
        raise CephError(f"ceph fs ls failed: {result.stderr.strip()[-300:]}")
    try:
        return sorted(str(fs["name"]) for fs in json.loads(result.stdout))
    except (json.JSONDecodeError, TypeError, KeyError):
        raise CephError(f"ceph fs ls: unexpected output {result.stdout[:100]!r}") from None
