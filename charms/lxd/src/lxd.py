"""The LXD workload: bootstrap, join tokens, joins, members, evacuation, removal.

Plain functions and one client class over pylxd; never imports ``ops``. Every expected
failure is an :class:`LXDError` subclass so the charm can map it to a status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pylxd
import pylxd.exceptions
import requests
import yaml

from charm_common.retry import retry_transient

logger = logging.getLogger(__name__)

# Keys that differ per cluster member; a joiner must supply them in ``member_config``.
MEMBER_SPECIFIC_KEYS = frozenset(
    {
        "source",
        "size",
        "zfs.pool_name",
        "lvm.thinpool_name",
        "lvm.vg_name",
        "parent",
        "bridge.external_interfaces",
    }
)
PRESEED_KEYS = frozenset({"config", "networks", "storage_pools", "profiles", "projects"})
DATABASE_ROLES = frozenset({"database", "database-leader"})
# How a member says it cannot reach the cluster database right now (a leader election, a
# member being removed); it answers again once the database has a leader.
DATABASE_UNAVAILABLE = (
    "context deadline exceeded",
    "no available dqlite leader",
    "RAFT cluster is unavailable",
)
MEMBER_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class LXDError(Exception):
    """An expected failure talking to LXD."""


class LXDUnavailableError(LXDError):
    """The daemon does not answer (not installed, starting, or restarting)."""


class JoinTokenError(LXDError):
    """A join token is malformed, for another member, or does not match the cluster."""


class MemberNotEmptyError(LXDError):
    """A member still holds instances; removing it would lose them."""


class SoleDatabaseMemberError(LXDError):
    """A member holds the only copy of the cluster database while other members remain.

    Below three members LXD 5.0 keeps the database on one member and gives the others no
    database role; removing that member (through any member) leaves the rest with
    "RAFT cluster is unavailable" for good (measured on LXD 5.0.2).
    """


class InvalidPreseedError(LXDError):
    """The operator's preseed cannot be used."""


@dataclass(frozen=True)
class LXDPaths:
    """Where one LXD installation keeps its files (snap and distro package differ)."""

    lxd_dir: str
    lxd_binary: str
    ceph_dir: str
    ovn_dir: str

    @property
    def socket(self) -> str:
        """The daemon's unix socket."""
        return os.path.join(self.lxd_dir, "unix.socket")


@dataclass(frozen=True)
class JoinToken:
    """A single-use cluster join token, as ``lxc cluster add`` prints it (base64 JSON)."""

    server_name: str
    fingerprint: str
    addresses: tuple[str, ...]
    secret: str
    expires_at: str = ""

    def encode(self) -> str:
        """The token in LXD's own wire format."""
        body = {
            "server_name": self.server_name,
            "fingerprint": self.fingerprint,
            "addresses": list(self.addresses),
            "secret": self.secret,
            "expires_at": self.expires_at,
        }
        return base64.b64encode(json.dumps(body).encode()).decode()

    @classmethod
    def decode(cls, token: str) -> JoinToken:
        """Parse a token; raise :class:`JoinTokenError` when it is not one."""
        try:
            body = json.loads(base64.b64decode(token, validate=True))
            return cls(
                server_name=str(body["server_name"]),
                fingerprint=str(body["fingerprint"]).lower(),
                addresses=tuple(str(a) for a in body["addresses"]),
                secret=str(body["secret"]),
                expires_at=str(body.get("expires_at", "")),
            )
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise JoinTokenError(f"malformed join token: {exc}") from None


@dataclass(frozen=True)
class Member:
    """One cluster member as LXD reports it."""

    name: str
    url: str
    status: str
    roles: tuple[str, ...] = ()
    message: str = ""

    @property
    def online(self) -> bool:
        """Whether the member answers and serves instances."""
        return self.status.lower() == "online"

    @property
    def evacuated(self) -> bool:
        """Whether the member has been emptied for maintenance."""
        return self.status.lower() == "evacuated"

    @property
    def address(self) -> str:
        """``host:port`` of the member's API (from its URL)."""
        return self.url.removeprefix("https://")

    @property
    def holds_database(self) -> bool:
        """Whether the member is a voter of the cluster database."""
        return bool(DATABASE_ROLES & set(self.roles))


@dataclass(frozen=True)
class MemberConfigKey:
    """A member-specific key a joiner must supply (``GET /1.0/cluster`` member_config)."""

    entity: str
    name: str
    key: str
    description: str = ""
    value: str = ""


@dataclass
class ServerInfo:
    """What ``GET /1.0`` says about this daemon."""

    version: str
    api_extensions: list[str]
    clustered: bool
    server_name: str
    certificate_fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)


def member_name_for_unit(unit_name: str) -> str:
    """The cluster member name for a Juju unit: ``lxd/0`` -> ``lxd-0``."""
    return unit_name.replace("/", "-")


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 fingerprint (lowercase hex, no colons) of a PEM certificate, as LXD prints it."""
    der = ssl.PEM_cert_to_DER_cert(pem)
    return hashlib.sha256(der).hexdigest()


def split_address(address: str) -> tuple[str, int]:
    """``127.0.0.2:8443`` / ``[fd00::1]:8443`` -> (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LXDError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_preseed(text: str) -> dict[str, Any]:
    """Validate the operator's preseed YAML (only the parts the charm does not own).

    Raises:
        InvalidPreseedError: the YAML is not a mapping, or has keys the charm owns or LXD
            does not know.
    """
    if not text.strip():
        return {}
    try:
        preseed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidPreseedError(f"not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(preseed, dict):
        raise InvalidPreseedError("must be a YAML mapping")
    unknown = sorted(set(preseed) - PRESEED_KEYS)
    if unknown:
        raise InvalidPreseedError(
            f"unsupported key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(PRESEED_KEYS))}"
            " (clustering is managed by the charm)"
        )
    for key in PRESEED_KEYS - {"config"}:
        entries = preseed.get(key, [])
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and "name" in e for e in entries
        ):
            raise InvalidPreseedError(f"'{key}' must be a list of mappings with a 'name'")
    if not isinstance(preseed.get("config", {}), dict):
        raise InvalidPreseedError("'config' must be a mapping")
    return preseed


def build_preseed(
    user_preseed: Mapping[str, Any],
    *,
    https_address: str,
    member_name: str | None,
    cluster_address: str | None = None,
) -> dict[str, Any]:
    """The preseed for the first member (``member_name`` set) or a standalone server.

    The operator's storage pools, networks and profiles are kept as given; without any,
    a ``default`` dir pool and a root disk in the default profile are added so instances
    can be created at once.
    """
    preseed: dict[str, Any] = json.loads(json.dumps(dict(user_preseed)))
    preseed.setdefault("config", {})["core.https_address"] = https_address
    if not preseed.get("storage_pools"):
        preseed["storage_pools"] = [{"name": "default", "driver": "dir"}]
    if not preseed.get("profiles"):
        pool = preseed["storage_pools"][0]["name"]
        preseed["profiles"] = [
            {"name": "default", "devices": {"root": {"path": "/", "pool": pool, "type": "disk"}}}
        ]
    if member_name is not None:
        preseed["cluster"] = {"server_name": member_name, "enabled": True}
        if cluster_address and cluster_address != https_address:
            preseed["config"]["cluster.https_address"] = cluster_address
    return preseed


def member_values_from_preseed(preseed: Mapping[str, Any]) -> dict[tuple[str, str, str], str]:
    """Member-specific values the operator set in the preseed, keyed (entity, name, key)."""
    values = {}
    for section, entity in (("storage_pools", "storage-pool"), ("networks", "network")):
        for entry in preseed.get(section, []):
            for key, value in (entry.get("config") or {}).items():
                if key in MEMBER_SPECIFIC_KEYS:
                    values[(entity, entry["name"], key)] = str(value)
    return values


def fill_member_config(
    keys: Sequence[MemberConfigKey], values: Mapping[tuple[str, str, str], str]
) -> list[dict[str, str]]:
    """The ``member_config`` of a join: every key the cluster asks for, with our values.

    A key with no value of ours stays empty, which LXD reads as "use the default" (a
    ``dir`` pool's ``source`` under LXD's own directory, for instance).
    """
    return [
        {
            "entity": k.entity,
            "name": k.name,
            "key": k.key,
            "value": values.get((k.entity, k.name, k.key), ""),
        }
        for k in keys
    ]


def served_certificate(address: str, timeout: float = 10.0) -> str:
    """The PEM certificate the LXD at ``address`` serves."""
    host, port = split_address(address)
    try:
        return ssl.get_server_certificate((host, port), timeout=timeout)
    except OSError as exc:
        raise LXDUnavailableError(f"cannot reach {address}: {exc}") from None


def verified_cluster_certificate(token: JoinToken, member_name: str) -> tuple[str, str]:
    """Check ``token`` against what its members serve; return (address, certificate PEM).

    The token carries the fingerprint of the cluster certificate; a member serving another
    certificate is not the cluster the token was issued for, so we refuse to join it.

    Raises:
        JoinTokenError: the token is for another member name, or no address serves the
            certificate it names.
        LXDUnavailableError: no address answered.
    """
    if token.server_name != member_name:
        raise JoinTokenError(
            f"join token is for member {token.server_name!r}, not {member_name!r}"
        )
    mismatches = []
    for address in token.addresses:
        try:
            pem = served_certificate(address)
        except LXDUnavailableError as exc:
            logger.info("join: %s", exc)
            continue
        served = certificate_fingerprint(pem)
        if served == token.fingerprint:
            return address, pem
        mismatches.append(f"{address} serves {served[:12]}")
    if mismatches:
        raise JoinTokenError(
            f"join token fingerprint {token.fingerprint[:12]} does not match the cluster "
            f"({', '.join(mismatches)}); refusing to join"
        )
    raise LXDUnavailableError(f"no cluster member answers at {', '.join(token.addresses)}")


def _api_failure(what: str, exc: pylxd.exceptions.LXDAPIException) -> LXDError:
    """The typed error for a failed call: transient database trouble is "unavailable"."""
    try:
        reason = str(exc.response.json().get("error") or exc)
    except ValueError:
        reason = str(exc)
    message = f"{what}: {reason}"
    if any(marker in message for marker in DATABASE_UNAVAILABLE):
        return LXDUnavailableError(message)
    return LXDError(message)


class LXD:
    """A client of one local LXD daemon (over its unix socket)."""

    def __init__(self, paths: LXDPaths, timeout: float = 60.0, operation_timeout: float = 900.0):
        self.paths = paths
        self._timeout = timeout
        self._operation_timeout = operation_timeout
        self._client: pylxd.Client | None = None

    @property
    def client(self) -> pylxd.Client:
        """The pylxd client, connected on first use."""
        if self._client is None:
            if not os.path.exists(self.paths.socket):
                raise LXDUnavailableError(f"no socket at {self.paths.socket}")
            try:
                self._client = pylxd.Client(endpoint=self.paths.socket, timeout=self._timeout)
            except (
                pylxd.exceptions.ClientConnectionFailed,
                pylxd.exceptions.LXDAPIException,
                requests.RequestException,
            ) as exc:
                raise LXDUnavailableError(f"LXD is not answering: {exc}") from None
        return self._client

    # -- low level ---------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; returns the response metadata, waits for async operations."""
        endpoint = self.client.api
        for part in filter(None, path.split("/")):
            endpoint = endpoint[part]
        try:
            response = getattr(endpoint, method)(**kwargs)
        except pylxd.exceptions.LXDAPIException as exc:
            raise _api_failure(f"{method.upper()} /1.0/{path}", exc) from None
        except requests.RequestException as exc:
            raise LXDUnavailableError(f"LXD is not answering: {exc}") from None
        body = response.json()
        if body.get("type") == "async":
            return self._wait_operation(body["operation"], f"{method.upper()} /1.0/{path}")
        return body.get("metadata")

    def _wait_operation(self, operation: str, what: str) -> Any:
        """Wait for an operation, in server-side waits of ``timeout`` seconds each.

        A long operation (an evacuation moving many instances) is still Running (103)
        when one wait ends; we wait again until ``operation_timeout`` has passed.
        """
        op_id = operation.rsplit("/", 1)[-1]
        deadline = time.monotonic() + self._operation_timeout
        while True:
            try:
                result = (
                    self.client.api.operations[op_id]
                    .wait.get(params={"timeout": int(self._timeout)}, timeout=self._timeout + 10)
                    .json()["metadata"]
                )
            except pylxd.exceptions.LXDAPIException as exc:
                raise _api_failure(what, exc) from None
            except requests.RequestException as exc:
                raise LXDUnavailableError(f"{what}: LXD is not answering: {exc}") from None
            if result.get("status_code") != 103 or time.monotonic() >= deadline:
                break
        if result.get("status_code") != 200:
            raise LXDError(f"{what}: {result.get('err') or result.get('status')}")
        return result.get("metadata")

    # -- state -------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> ServerInfo:
        """Wait until the daemon answers ``GET /1.0``; return what it says."""
        return retry_transient(self.server_info, retry_on=(LXDUnavailableError,), timeout=timeout)

    def server_info(self) -> ServerInfo:
        """``GET /1.0``: version, API extensions, clustering state, certificate."""
        info = self._call("get", "")
        env = info.get("environment", {})
        return ServerInfo(
            version=str(env.get("server_version", "")),
            api_extensions=list(info.get("api_extensions", [])),
            clustered=bool(env.get("server_clustered")),
            server_name=str(env.get("server_name", "")),
            certificate_fingerprint=str(env.get("certificate_fingerprint", "")),
            config=dict(info.get("config") or {}),
        )

    def is_initialized(self) -> bool:
        """Whether this daemon has been bootstrapped, joined, or set up standalone."""
        info = self.server_info()
        return info.clustered or bool(info.config.get("core.https_address"))

    def update_server_config(self, wanted: Mapping[str, str]) -> bool:
        """Set server config keys that differ from ``wanted``; return whether any changed."""
        current = self.server_info().config
        changes = {k: v for k, v in wanted.items() if str(current.get(k, "")) != v}
        if changes:
            self._call("patch", "", json={"config": changes})
        return bool(changes)

    # -- bootstrap ---------------------------------------------------------------------

    def apply_preseed(self, preseed: Mapping[str, Any]) -> None:
        """Run ``lxd init --preseed`` (creates the cluster when the preseed has ``cluster``)."""
        env = dict(os.environ, LXD_DIR=self.paths.lxd_dir)
        try:
            result = subprocess.run(  # noqa: S603 - absolute path, list args
                [self.paths.lxd_binary, "init", "--preseed"],
                input=yaml.safe_dump(dict(preseed)),
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=self._timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LXDError(f"lxd init --preseed failed: {exc}") from None
        if result.returncode != 0:
            raise LXDError(f"lxd init --preseed failed: {result.stderr.strip()}")

    def bootstrap_cluster(
        self,
        member_name: str,
        address: str,
        user_preseed: Mapping[str, Any],
        cluster_address: str | None = None,
    ) -> bool:
        """Create a new cluster on this daemon; False when it is already clustered.

        ``address`` is the HTTPS API address; ``cluster_address`` (default: the same) is
        where members talk to each other.
        """
        if self.server_info().clustered:
            return False
        self.apply_preseed(
            build_preseed(
                user_preseed,
                https_address=address,
                member_name=member_name,
                cluster_address=cluster_address,
            )
        )
        return True

    def init_standalone(self, address: str, user_preseed: Mapping[str, Any]) -> bool:
        """Set up a standalone server; False when this daemon is already set up."""
        if self.is_initialized():
            return False
        self.apply_preseed(build_preseed(user_preseed, https_address=address, member_name=None))
        return True

    # -- tokens and joins --------------------------------------------------------------

    def _token_operations(self) -> list[dict[str, Any]]:
        ops = self._call("get", "operations", params={"recursion": "1"}) or {}
        return [
            op
            for state in ops.values()
            for op in state
            if op.get("class") == "token" and op.get("status_code") == 103
        ]

    def pending_join_tokens(self) -> list[str]:
        """Member names that have an unused join token."""
        return sorted(str(op["metadata"].get("serverName")) for op in self._token_operations())

    def issue_join_token(self, member_name: str) -> JoinToken:
        """A fresh single-use token for ``member_name`` (any older one is revoked first)."""
        if not MEMBER_NAME_RE.match(member_name):
            raise LXDError(f"invalid member name {member_name!r}")
        self.revoke_join_token(member_name)
        try:
            response = self.client.api.cluster.members.post(json={"server_name": member_name})
        except pylxd.exceptions.LXDAPIException as exc:
            raise _api_failure("cannot issue a join token", exc) from None
        except requests.RequestException as exc:
            raise LXDUnavailableError(f"LXD is not answering: {exc}") from None
        meta = response.json()["metadata"]["metadata"]
        return JoinToken(
            server_name=str(meta["serverName"]),
            fingerprint=str(meta["fingerprint"]),
            addresses=tuple(meta["addresses"]),
            secret=str(meta["secret"]),
            expires_at=str(meta.get("expiresAt", "")),
        )

    def revoke_join_token(self, member_name: str) -> bool:
        """Cancel the unused tokens for ``member_name``; return whether there were any."""
        revoked = False
        for op in self._token_operations():
            if op["metadata"].get("serverName") == member_name:
                self._call("delete", f"operations/{op['id']}")
                revoked = True
        return revoked

    def member_config(self) -> list[MemberConfigKey]:
        """The member-specific keys a joiner must supply (from the live cluster)."""
        cluster = self._call("get", "cluster") or {}
        return [
            MemberConfigKey(
                entity=str(k["entity"]),
                name=str(k["name"]),
                key=str(k["key"]),
                description=str(k.get("description", "")),
            )
            for k in cluster.get("member_config") or []
        ]

    def join_cluster(
        self,
        token: JoinToken,
        member_name: str,
        server_address: str,
        member_config: Sequence[Mapping[str, str]],
    ) -> bool:
        """Join the cluster ``token`` was issued for; False when already clustered.

        The token's fingerprint is checked against the certificate its members serve before
        anything is sent (see :func:`verified_cluster_certificate`).
        """
        if self.server_info().clustered:
            return False
        cluster_address, certificate = verified_cluster_certificate(token, member_name)
        self.update_server_config({"core.https_address": server_address})
        self._call(
            "put",
            "cluster",
            json={
                "server_name": member_name,
                "enabled": True,
                "server_address": server_address,
                "cluster_address": cluster_address,
                "cluster_certificate": certificate,
                # LXD validates the whole token (not only its secret) as the password.
                "cluster_password": token.encode(),
                "member_config": list(member_config),
            },
        )
        return True

    # -- members -----------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every cluster member (empty for a standalone server)."""
        if not self.server_info().clustered:
            return []
        listing = self._call("get", "cluster/members", params={"recursion": "1"}) or []
        return [
            Member(
                name=str(m["server_name"]),
                url=str(m.get("url", "")),
                status=str(m.get("status", "")),
                roles=tuple(m.get("roles") or ()),
                message=str(m.get("message", "")),
            )
            for m in listing
        ]

    def member_instances(self, member_name: str) -> list[str]:
        """Instances (all projects) located on ``member_name``, as ``project/name``."""
        listing = (
            self._call("get", "instances", params={"recursion": "1", "all-projects": "true"}) or []
        )
        return sorted(
            f"{i.get('project', 'default')}/{i['name']}"
            for i in listing
            if i.get("location") == member_name
        )

    def instance_locations(self) -> dict[str, tuple[str, str]]:
        """``project/name`` -> (member, status) for every instance in the cluster."""
        listing = (
            self._call("get", "instances", params={"recursion": "1", "all-projects": "true"}) or []
        )
        return {
            f"{i.get('project', 'default')}/{i['name']}": (
                str(i.get("location", "")),
                str(i.get("status", "")),
            )
            for i in listing
        }

    def member_answers(self, member: Member, timeout: float = 3.0) -> bool:
        """Whether ``member``'s API accepts connections.

        Its status cannot tell: LXD 5.0 keeps reporting an evacuated member as
        "Evacuated" after its machine died (measured), never "Offline".
        """
        try:
            host, port = split_address(member.address)
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except (OSError, LXDError):
            return False

    def _member(self, member_name: str) -> Member:
        for member in self.members():
            if member.name == member_name:
                return member
        raise LXDError(f"{member_name!r} is not a cluster member")

    def evacuate_member(self, member_name: str) -> bool:
        """Move or stop every instance of ``member_name``; False when already evacuated."""
        if self._member(member_name).evacuated:
            return False
        self._call("post", f"cluster/members/{member_name}/state", json={"action": "evacuate"})
        return True

    def restore_member(self, member_name: str) -> bool:
        """Bring an evacuated member back; False when it was not evacuated."""
        if not self._member(member_name).evacuated:
            return False
        self._call("post", f"cluster/members/{member_name}/state", json={"action": "restore"})
        return True

    def remove_member(self, member_name: str, force: bool = False, evacuate: bool = False) -> None:
        """Remove ``member_name`` from the cluster and its certificate from the trust store.

        In order: refuse the only database member while others remain
        (:class:`SoleDatabaseMemberError`); evacuate it when ``evacuate`` is set; refuse a
        member that still holds instances (:class:`MemberNotEmptyError`). ``force`` skips
        all three: it is for a member whose machine is gone; LXD then drops its records.
        """
        if not force:
            self.check_database_survives(member_name)
            if evacuate and self.member_instances(member_name):
                self.evacuate_member(member_name)
            instances = self.member_instances(member_name)
            if instances:
                raise MemberNotEmptyError(
                    f"member {member_name} still holds {len(instances)} instance(s) "
                    f"({', '.join(instances[:3])}); evacuate it first"
                )
        params = {"force": "1"} if force else {}
        self._call("delete", f"cluster/members/{member_name}", params=params)
        self.forget_server_certificate(member_name)

    def check_database_survives(self, member_name: str) -> None:
        """Raise :class:`SoleDatabaseMemberError` if the cluster would lose its database.

        That is when ``member_name`` is the only member holding the database and at least
        one other member would remain.
        """
        members = self.members()
        leaving = [m for m in members if m.name == member_name]
        others = [m for m in members if m.name != member_name]
        if leaving and leaving[0].holds_database and others:
            if not any(m.holds_database for m in others):
                raise SoleDatabaseMemberError(
                    f"member {member_name} holds the only copy of the cluster database "
                    f"({len(others)} other member(s) have no database role); removing it "
                    "would leave the cluster unavailable"
                )

    def forget_server_certificate(self, member_name: str) -> bool:
        """Drop the ``server`` trust entry of a former member; return whether one existed."""
        removed = False
        for cert in self._call("get", "certificates", params={"recursion": "1"}) or []:
            if cert.get("type") == "server" and cert.get("name") == member_name:
                self._call("delete", f"certificates/{cert['fingerprint']}")
                removed = True
        return removed
