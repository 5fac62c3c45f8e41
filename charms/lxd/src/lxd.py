"""The LXD workload: bootstrap, joins, members, evacuation, removal, trust, networks, pools.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pylxd
import pylxd.exceptions
import requests
import yaml
from cryptography.hazmat.primitives import serialization

from charm_common.certs import load_certificate
from charm_common.lxd_member import LXDObject
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
# Server keys the charm sets itself (the api binding, api-port, metrics-port).
OWNED_SERVER_KEYS = frozenset(
    {"core.https_address", "cluster.https_address", "core.metrics_address"}
)
# Member-specific keys that name what a storage pool is made of: LXD cannot change them
# once the pool is created on a member.
IMMUTABLE_MEMBER_KEYS = frozenset({"source", "zfs.pool_name", "lvm.vg_name", "lvm.thinpool_name"})
DATABASE_ROLES = frozenset({"database", "database-leader"})
# How a member says it cannot reach the cluster database right now (a leader election, a
# member being removed); it answers again once the database has a leader.
DATABASE_UNAVAILABLE = (
    "context deadline exceeded",
    "no available dqlite leader",
    "RAFT cluster is unavailable",
    # while the database leader moves (its member was just removed): seen for ~15 s
    "Failed to begin transaction",
)
MEMBER_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The objects subordinates ask for: entity (as ``member_config`` names it) -> (API
# collection, the key that names its type).
OBJECT_ENTITIES = {"network": ("networks", "type"), "storage-pool": ("storage-pools", "driver")}
# Network types LXD creates cluster-wide at once, without a definition per member first
# (LXD 5.0.2: every other network type and every storage pool driver answers "... not
# pending on any node (use --target <node> first)", with or without member-specific keys).
NETWORK_TYPES_WITHOUT_MEMBER_STAGE = frozenset({"ovn"})
CREATED, PENDING, ERRORED = "Created", "Pending", "Errored"
# How an evacuation treats each instance (the values of LXD's ``cluster.evacuate``).
EVACUATION_MODES = ("auto", "migrate", "stop")
EVACUATING = "Evacuating cluster member"  # LXD's description of an evacuation operation
EVACUATE_KEY = "cluster.evacuate"
# A fingerprint prefix this long is what ``lxc config trust list`` shows.
MIN_FINGERPRINT_PREFIX = 12
FINGERPRINT_LENGTH = 64
_FINGERPRINT_LABELS = ("sha256 fingerprint=", "sha256:", "sha256=")
# Trust entries the operator manages (``server`` entries are the members' own).
CLIENT_CERTIFICATE_TYPES = ("client", "metrics")
# ``expires_at`` of a token without expiry, as LXD's own client writes it.
NO_EXPIRY = "0001-01-01T00:00:00Z"


class LXDError(Exception):
    """An expected failure talking to LXD."""


class LXDUnavailableError(LXDError):
    """The daemon does not answer (not installed, starting, or restarting)."""


class LXDAPIError(LXDError):
    """LXD answered a request with an error; ``reason`` is LXD's own message."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what}: {reason}")
        self.reason = reason


class LXDNotFoundError(LXDAPIError):
    """The object a request names does not exist (HTTP 404)."""


class ObjectPendingError(LXDError):
    """A network or pool cannot be created cluster-wide yet: members have not defined it."""

    def __init__(self, entity: str, name: str, missing: Sequence[str]):
        super().__init__(f"{entity} {name} is not defined on {', '.join(missing)} yet")
        self.missing = tuple(missing)


class ObjectRefusedError(LXDError):
    """LXD refused to create or update a network or storage pool (the message says why)."""


class ObjectUpdateRefusedError(ObjectRefusedError):
    """LXD refused to change an object that exists: it stays usable as it is."""


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


class EvacuationRefusedError(LXDError):
    """No other member can take the instances that would move; nothing was changed."""


class HTTPSNotListeningError(LXDError):
    """The daemon does not serve its HTTPS API (``core.https_address`` is empty)."""


class CertificateRefusedError(LXDError):
    """A trust change the charm will not make (a member's certificate, an ambiguous prefix)."""


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

    @property
    def digest(self) -> str:
        """Names the token in a databag without giving it away (SHA-256 of its secret)."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:16]

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


class ObjectSpec(Protocol):
    """A network or storage pool to create (``charm_common.lxd_member.LXDObject`` is one).

    ``kind`` is a network's type or a pool's driver; ``member_config`` holds the keys whose
    value differs per member (a physical network's ``parent``, a pool's ``source``).
    """

    @property
    def name(self) -> str:
        """The object's name."""
        ...

    @property
    def kind(self) -> str:
        """Network type or storage pool driver."""
        ...

    @property
    def config(self) -> Mapping[str, str]:
        """Cluster-wide config keys."""
        ...

    @property
    def member_config(self) -> Mapping[str, str]:
        """Member-specific config keys (this member's values)."""
        ...

    @property
    def description(self) -> str:
        """Free text shown by ``lxc network list`` / ``lxc storage list``."""
        ...


@dataclass(frozen=True)
class ObjectState:
    """A network or storage pool as one ``GET`` shows it.

    Without a target, ``status`` is the object's (Pending, Created, Errored) and ``config``
    holds the cluster-wide keys only. With ``?target=<member>``, ``status`` is that
    member's (``Unknown`` when it has no definition) and ``config`` includes its
    member-specific keys. ``locations`` lists the members that have a definition.
    """

    kind: str
    status: str
    locations: tuple[str, ...] = ()
    config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Profile:
    """A profile the preseed names: the config keys and devices it must have."""

    name: str
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    description: str = ""


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


@dataclass(frozen=True)
class Evacuation:
    """What an evacuation or a restore did.

    Instances are named ``project/name``. ``moved`` maps each instance that changed
    member to the member it is on now; ``stopped`` lists the instances an evacuation left
    on the member (stopped: the mode, their ``cluster.evacuate``, or LXD chose so);
    ``started`` the instances a restore started in place. ``already``: the member was
    already in the requested state and nothing was done.
    """

    member: str
    moved: Mapping[str, str]
    stopped: tuple[str, ...] = ()
    already: bool = False
    started: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrustedCertificate:
    """One entry of LXD's trust store (``GET /1.0/certificates``)."""

    name: str
    type: str
    fingerprint: str
    restricted: bool
    projects: tuple[str, ...]


@dataclass(frozen=True)
class _Instance:
    """One instance as the all-projects listing shows it."""

    key: str  # project/name
    project: str
    name: str
    location: str
    status: str
    config: Mapping[str, str]
    expanded_config: Mapping[str, str]

    @property
    def evacuate_policy(self) -> str:
        """Its effective ``cluster.evacuate`` (LXD's default: ``auto``)."""
        return self.expanded_config.get(EVACUATE_KEY) or "auto"


def member_name_for_unit(unit_name: str) -> str:
    """The cluster member name for a Juju unit: ``lxd/0`` -> ``lxd-0``."""
    return unit_name.replace("/", "-")


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 fingerprint (lowercase hex, no colons) of a PEM certificate, as LXD prints it."""
    der = ssl.PEM_cert_to_DER_cert(pem)
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """A certificate's SHA-256 fingerprint, or a prefix of it, as LXD spells it.

    Accepts upper or lower case, colons or whitespace between the bytes, and an optional
    ``sha256:`` / ``SHA256 Fingerprint=`` label (``openssl x509 -fingerprint -sha256``).
    Returns lowercase hex without separators: all 64 digits, or a prefix of at least 12
    (what ``lxc config trust list`` shows) that callers resolve against the trust store
    (:meth:`LXD.untrust_certificate` refuses an ambiguous one).

    Raises:
        ValueError: not hexadecimal, shorter than 12 or longer than 64 digits.
    """
    value = text.strip()
    for label in _FINGERPRINT_LABELS:
        if value.lower().startswith(label):
            value = value[len(label) :]
            break
    digits = re.sub(r"[:\s]", "", value).lower()
    if not re.fullmatch(r"[0-9a-f]+", digits):
        raise ValueError(f"{text.strip()!r} is not a hexadecimal SHA-256 fingerprint")
    if not MIN_FINGERPRINT_PREFIX <= len(digits) <= FINGERPRINT_LENGTH:
        raise ValueError(
            f"a SHA-256 fingerprint has {FINGERPRINT_LENGTH} hex digits (or give at least "
            f"the first {MIN_FINGERPRINT_PREFIX}), not {len(digits)}"
        )
    return digits


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
        _check_preseed_entries(key, preseed.get(key, []))
    if not isinstance(preseed.get("config", {}), dict):
        raise InvalidPreseedError("'config' must be a mapping")
    owned = sorted(OWNED_SERVER_KEYS & set(preseed_server_config(preseed)))
    if owned:
        raise InvalidPreseedError(
            f"'config' sets {', '.join(owned)}, which the charm sets from the api binding, "
            "api-port and metrics-port: remove it"
        )
    return preseed


def _check_preseed_entries(key: str, entries: Any) -> None:
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "name" in e for e in entries
    ):
        raise InvalidPreseedError(f"'{key}' must be a list of mappings with a 'name'")
    for entry in entries:
        where = f"'{key}' entry {entry['name']!r}"
        _plain_values(entry.get("config"), f"{where}: 'config'")
        for device, options in _mapping(entry.get("devices"), f"{where}: 'devices'").items():
            _plain_values(options, f"{where}: device {device!r}")
        if key == "storage_pools" and not entry.get("driver"):
            raise InvalidPreseedError(f"{where} has no 'driver'")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidPreseedError(f"{where} must be a mapping")
    return value


def _plain_values(value: Any, where: str) -> dict[str, str]:
    """A preseed mapping of config keys as LXD's API takes it (every value a string)."""
    mapping = _mapping(value, where)
    if not all(isinstance(v, (str, int, float, bool)) for v in mapping.values()):
        raise InvalidPreseedError(f"{where} must map keys to plain values")
    return {str(k): _config_value(v) for k, v in mapping.items()}


def _config_value(value: str | int | float | bool) -> str:
    # YAML's true is LXD's "true" (str() would give "True").
    return str(value).lower() if isinstance(value, bool) else str(value)


def preseed_server_config(preseed: Mapping[str, Any]) -> dict[str, str]:
    """The server config keys a (parsed) preseed sets, as LXD's API takes them."""
    return _plain_values(preseed.get("config"), "'config'")


def preseed_objects(preseed: Mapping[str, Any]) -> list[tuple[str, LXDObject]]:
    """The networks, then the storage pools, a (parsed) preseed names, as LXD objects.

    Their member-specific keys (``MEMBER_SPECIFIC_KEYS``) are this member's values; a
    network without ``type`` is a bridge, as ``lxd init`` makes it.
    """
    objects = []
    for section, entity, kind_key, default_kind in (
        ("networks", "network", "type", "bridge"),
        ("storage_pools", "storage-pool", "driver", ""),
    ):
        for entry in preseed.get(section, []):
            config = _plain_values(entry.get("config"), section)
            objects.append(
                (
                    entity,
                    LXDObject(
                        name=str(entry["name"]),
                        kind=str(entry.get(kind_key) or default_kind),
                        config={k: v for k, v in config.items() if k not in MEMBER_SPECIFIC_KEYS},
                        member_config={
                            k: v for k, v in config.items() if k in MEMBER_SPECIFIC_KEYS
                        },
                        description=str(entry.get("description", "")),
                    ),
                )
            )
    return objects


def preseed_profiles(preseed: Mapping[str, Any]) -> list[Profile]:
    """The profiles a (parsed) preseed names."""
    return [
        Profile(
            name=str(entry["name"]),
            config=_plain_values(entry.get("config"), "profiles"),
            devices={
                str(name): _plain_values(options, "profiles")
                for name, options in _mapping(entry.get("devices"), "profiles").items()
            },
            description=str(entry.get("description", "")),
        )
        for entry in preseed.get("profiles", [])
    ]


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


def member_values_from_objects(
    objects: Iterable[tuple[str, ObjectSpec]],
) -> dict[tuple[str, str, str], str]:
    """Member-specific values of requested objects, keyed (entity, name, key)."""
    return {
        (entity, obj.name, key): value
        for entity, obj in objects
        for key, value in obj.member_config.items()
    }


def needs_member_stage(entity: str, obj: ObjectSpec) -> bool:
    """Whether LXD wants ``obj`` defined on every member (``?target=``) before cluster-wide.

    True for every storage pool and every network but an ``ovn`` one without
    member-specific keys (measured on LXD 5.0.2; see ``NETWORK_TYPES_WITHOUT_MEMBER_STAGE``).
    """
    if entity == "storage-pool" or obj.member_config:
        return True
    return obj.kind not in NETWORK_TYPES_WITHOUT_MEMBER_STAGE


def _entity(entity: str) -> tuple[str, str]:
    try:
        return OBJECT_ENTITIES[entity]
    except KeyError:
        raise ValueError(f"unknown LXD entity {entity!r}") from None


def _differing(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """The keys of ``wanted`` whose value differs (keys it does not name are not touched)."""
    return {k: v for k, v in wanted.items() if str(current.get(k, "")) != v}


def fill_member_config(
    keys: Sequence[MemberConfigKey], values: Mapping[tuple[str, str, str], str]
) -> list[dict[str, str]]:
    """The ``member_config`` of a join: every key the cluster asks for, with our values.

    A key with no value of ours stays empty, which LXD reads as "use the default" (a
    ``dir`` pool's ``source`` under LXD's own directory, for instance). Our values for keys
    the cluster did not ask for are sent too: the keys come with the join token and miss
    an object created since it was issued, and LXD ignores entries for objects it does
    not have (measured on LXD 5.0.2).
    """
    asked = [(k.entity, k.name, k.key) for k in keys]
    unasked = sorted(set(values) - set(asked))
    return [
        {"entity": entity, "name": name, "key": key, "value": values.get((entity, name, key), "")}
        for entity, name, key in asked + unasked
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
    if any(marker in reason for marker in DATABASE_UNAVAILABLE):
        return LXDUnavailableError(f"{what}: {reason}")
    if getattr(exc.response, "status_code", None) == 404:
        return LXDNotFoundError(what, reason)
    return LXDAPIError(what, reason)


class LXD:
    """A client of one local LXD daemon (over its unix socket).

    ``keep_server_info``: a client that lives for one hook (the charm's) reads ``GET /1.0``
    once and keeps it until it changes the server itself (see :meth:`server_info`); a
    long-lived one (a test's, a script's) reads it at every call.
    """

    def __init__(
        self,
        paths: LXDPaths,
        timeout: float = 60.0,
        operation_timeout: float = 900.0,
        keep_server_info: bool = False,
    ):
        self.paths = paths
        self._timeout = timeout
        self._operation_timeout = operation_timeout
        self._client: pylxd.Client | None = None
        self._keep_info = keep_server_info
        self._info: ServerInfo | None = None  # GET /1.0, until this client changes the server

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
        if method != "get":
            self._info = None  # what GET /1.0 said may change
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
            raise LXDAPIError(what, str(result.get("err") or result.get("status")))
        return result.get("metadata")

    # -- state -------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> ServerInfo:
        """Wait until the daemon answers ``GET /1.0``; return what it says."""
        return retry_transient(
            lambda: self.server_info(refresh=True),
            retry_on=(LXDUnavailableError,),
            timeout=timeout,
        )

    def server_info(self, refresh: bool = False) -> ServerInfo:
        """``GET /1.0``: version, API extensions, clustering state, certificate.

        With ``keep_server_info``, read once and kept until this client changes the server
        (any write through it, a preseed) or ``refresh`` asks to read it again (after a
        restart, to see it answer).
        """
        if self._keep_info and self._info is not None and not refresh:
            return self._info
        info = self._call("get", "")
        env = info.get("environment", {})
        self._info = ServerInfo(
            version=str(env.get("server_version", "")),
            api_extensions=list(info.get("api_extensions", [])),
            clustered=bool(env.get("server_clustered")),
            server_name=str(env.get("server_name", "")),
            certificate_fingerprint=str(env.get("certificate_fingerprint", "")),
            config=dict(info.get("config") or {}),
        )
        return self._info

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
        self._info = None
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

    def _instances(self) -> list[_Instance]:
        """Every instance of the cluster, in all projects."""
        listing = (
            self._call("get", "instances", params={"recursion": "1", "all-projects": "true"}) or []
        )
        instances = []
        for i in listing:
            project = str(i.get("project") or "default")
            instances.append(
                _Instance(
                    key=f"{project}/{i['name']}",
                    project=project,
                    name=str(i["name"]),
                    location=str(i.get("location", "")),
                    status=str(i.get("status", "")),
                    config={str(k): str(v) for k, v in (i.get("config") or {}).items()},
                    expanded_config={
                        str(k): str(v) for k, v in (i.get("expanded_config") or {}).items()
                    },
                )
            )
        return instances

    def member_instances(self, member_name: str) -> list[str]:
        """Instances (all projects) located on ``member_name``, as ``project/name``."""
        return sorted(i.key for i in self._instances() if i.location == member_name)

    def instance_locations(self) -> dict[str, tuple[str, str]]:
        """``project/name`` -> (member, status) for every instance in the cluster."""
        return {i.key: (i.location, i.status) for i in self._instances()}

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

    def evacuate(self, member_name: str, mode: str = "auto") -> Evacuation:
        """Empty ``member_name`` for maintenance; wait until LXD is done.

        ``mode`` says what happens to each instance of the member: ``auto`` lets LXD
        decide (the instance's own ``cluster.evacuate``: migrate unless it is ``stop`` or
        has devices that cannot move), ``migrate`` moves every one, ``stop`` stops every
        one in place (a restore starts them again).

        LXD 5.0.2 has no ``mode`` in ``POST /1.0/cluster/members/<name>/state`` (that is
        the ``clustering_evacuation_mode`` API extension of later releases; 5.0.2 has
        ``clustering_evacuation`` and ``clustering_evacuation_live`` and silently ignores
        a ``mode`` field, measured): the evacuation obeys each instance's
        ``cluster.evacuate`` only. So ``migrate`` and ``stop`` set that key on the
        instances that would otherwise be treated differently, evacuate, and put each
        one's own value back (or remove the key) afterwards, also when the evacuation
        fails.

        Refused before anything changes when instances would move but no other member is
        online (not evacuated, not offline): LXD 5.0.2 would then stop them all in place
        and still report success (measured). A member without instances, and mode
        ``stop``, never need another member.

        Raises:
            ValueError: ``mode`` is not one of :data:`EVACUATION_MODES`.
            EvacuationRefusedError: no other member can take the instances.
            LXDError: ``member_name`` is not a member, or LXD failed (its message).
        """
        if mode not in EVACUATION_MODES:
            raise ValueError(f"unknown evacuation mode {mode!r}; one of {EVACUATION_MODES}")
        members = self.members()
        this = next((m for m in members if m.name == member_name), None)
        if this is None:
            raise LXDError(f"{member_name!r} is not a cluster member")
        if this.evacuated:
            return Evacuation(member=member_name, moved={}, already=True)
        before = self._instances()
        here = [i for i in before if i.location == member_name]
        if mode == "stop":
            moving = []
        elif mode == "migrate":
            moving = here
        else:
            moving = [i for i in here if i.evacuate_policy != "stop"]
        if moving and not any(m.online for m in members if m.name != member_name):
            others = ", ".join(f"{m.name} {m.status}" for m in members if m.name != member_name)
            keys = [i.key for i in moving]
            raise EvacuationRefusedError(
                f"no other cluster member is online to take {len(keys)} instance(s) of "
                f"{member_name} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}); "
                f"other members: {others or 'none'}. Restore a member first, or evacuate "
                "with mode=stop to stop the instances in place"
            )
        overrides = [i for i in here if _needs_override(i.evacuate_policy, mode)]
        self._evacuate_with_policy(member_name, mode, overrides)
        after = {i.key: i for i in self._instances()}
        moved = {
            i.key: after[i.key].location
            for i in here
            if i.key in after and after[i.key].location != member_name
        }
        stayed = tuple(i.key for i in here if i.key in after and i.key not in moved)
        return Evacuation(member=member_name, moved=moved, stopped=stayed)

    def _evacuate_with_policy(
        self, member_name: str, mode: str, overrides: Sequence[_Instance]
    ) -> None:
        """Evacuate with ``cluster.evacuate`` set to ``mode`` on ``overrides`` meanwhile."""
        applied: list[_Instance] = []
        try:
            for instance in overrides:
                self._set_evacuate_policy(instance, mode)
                applied.append(instance)
            self._call("post", f"cluster/members/{member_name}/state", json={"action": "evacuate"})
        except BaseException:
            self._reset_evacuate_policies(applied)
            raise
        failures = self._reset_evacuate_policies(applied)
        if failures:
            raise LXDError(
                f"{member_name} was evacuated, but cluster.evacuate could not be put back on "
                + "; ".join(failures)
            )

    def _set_evacuate_policy(self, instance: _Instance, value: str) -> None:
        # PATCH merges config keys; an empty value removes the key (measured on 5.0.2).
        self._call(
            "patch",
            f"instances/{instance.name}",
            params={"project": instance.project},
            json={"config": {EVACUATE_KEY: value}},
        )

    def _reset_evacuate_policies(self, instances: Sequence[_Instance]) -> list[str]:
        """Give ``instances`` their own ``cluster.evacuate`` back; what could not be reset."""
        failures = []
        for instance in instances:
            try:
                self._set_evacuate_policy(instance, instance.config.get(EVACUATE_KEY, ""))
            except LXDError as exc:
                logger.error("cannot reset %s of %s: %s", EVACUATE_KEY, instance.key, exc)
                failures.append(f"{instance.key} ({exc})")
        return failures

    def restore(self, member_name: str) -> Evacuation:
        """Bring an evacuated member back: LXD moves its instances home and starts them.

        ``moved`` names the instances that came back (all now on ``member_name``),
        ``started`` those started in place; ``already`` when it was not evacuated.
        """
        if not self._member(member_name).evacuated:
            return Evacuation(member=member_name, moved={}, already=True)
        before = {i.key: i for i in self._instances()}
        self._call("post", f"cluster/members/{member_name}/state", json={"action": "restore"})
        moved, started = {}, []
        for instance in self._instances():
            if instance.location != member_name:
                continue
            previous = before.get(instance.key)
            if previous is not None and previous.location != member_name:
                moved[instance.key] = member_name
            elif previous is not None and previous.status != "Running" == instance.status:
                started.append(instance.key)
        return Evacuation(member=member_name, moved=moved, started=tuple(sorted(started)))

    def start_instance(self, key: str) -> None:
        """Start the instance ``project/name`` (wherever it is)."""
        project, _, name = key.rpartition("/")
        self._call(
            "put",
            f"instances/{name}/state",
            params={"project": project or "default"},
            json={"action": "start", "timeout": 60},
        )

    def evacuate_member(self, member_name: str) -> bool:
        """Evacuate ``member_name`` (mode ``auto``); False when it was already evacuated.

        LXD calls a member evacuated from the start of its evacuation: one that another
        request runs (Juju runs a departing unit's hooks and the leader's at once, both
        evacuate) is waited for, so the member is empty when this returns.
        """
        if self.evacuate(member_name).already:
            self.wait_for_evacuations()
            return False
        return True

    def restore_member(self, member_name: str) -> bool:
        """Bring an evacuated member back; False when it was not evacuated."""
        return not self.restore(member_name).already

    def cluster_health(self) -> list[str]:
        """What is wrong with the cluster, one line each; ``[]`` when healthy (or standalone).

        Every member that is not online (offline, evacuated, ...) with LXD's message, and a
        cluster database without a leader. A database this member cannot reach is a
        problem too, not an error; a daemon that does not answer raises
        :class:`LXDUnavailableError`.
        """
        if not self.server_info().clustered:
            return []
        try:
            members = self.members()
        except LXDUnavailableError as exc:
            return [f"the cluster database is unavailable: {exc}"]
        problems = []
        for m in members:
            if not m.online:
                detail = f": {m.message}" if m.message else ""
                problems.append(f"member {m.name} is {m.status.upper() or 'UNKNOWN'}{detail}")
        if not any("database-leader" in m.roles for m in members):
            problems.append("no member has the database-leader role")
        return problems

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

    def wait_for_evacuations(self) -> bool:
        """Wait for the evacuations running anywhere in the cluster; whether there were any.

        LXD lists every member's operations; an evacuation's names no member, so all are
        waited for (each within the operation bound).
        """
        listing = self._call("get", "operations", params={"recursion": "1"}) or {}
        running = [
            op["id"] for op in listing.get("running") or [] if op.get("description") == EVACUATING
        ]
        for op_id in running:
            self._wait_operation(op_id, "an evacuation another request started")
        return bool(running)

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

    # -- trust ---------------------------------------------------------------------------

    def cluster_certificate(self) -> str:
        """The certificate (PEM) the HTTPS API serves: the cluster's, in a cluster."""
        info = self._call("get", "") or {}
        return str((info.get("environment") or {}).get("certificate", ""))

    def trusted_certificates(self) -> list[TrustedCertificate]:
        """The trust store: clients, metrics scrapers and the members' own certificates."""
        listing = self._call("get", "certificates", params={"recursion": "1"}) or []
        return sorted(
            (
                TrustedCertificate(
                    name=str(c.get("name", "")),
                    type=str(c.get("type", "")),
                    fingerprint=str(c["fingerprint"]),
                    restricted=bool(c.get("restricted")),
                    projects=tuple(sorted(c.get("projects") or ())),
                )
                for c in listing
            ),
            key=lambda c: (c.type, c.name, c.fingerprint),
        )

    def trust_certificate(
        self, name: str, pem: str, cert_type: str = "client", projects: Sequence[str] = ()
    ) -> str:
        """Trust the certificate ``pem`` (restricted to ``projects`` when any are given).

        Idempotent: a certificate already trusted gets the name, type and projects asked
        for when they differ. LXD 5.0.2 refuses to change a certificate's type ("The
        certificate type cannot be changed", measured), so a type change removes the entry
        and adds it again. A cluster member's own (``server``) certificate is never
        touched. Returns the fingerprint (lowercase hex).

        Raises:
            InvalidCertificateError: ``pem`` is not a PEM certificate (nothing is sent).
            CertificateRefusedError: ``cert_type`` is not ``client`` or ``metrics``, or
                ``pem`` is a cluster member's certificate.
            LXDError: LXD refused (an unknown project: its message).
        """
        if cert_type not in CLIENT_CERTIFICATE_TYPES:
            raise CertificateRefusedError(
                f"certificate type {cert_type!r}: only {' or '.join(CLIENT_CERTIFICATE_TYPES)}"
            )
        der = load_certificate(pem).public_bytes(serialization.Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        wanted = TrustedCertificate(
            name=name,
            type=cert_type,
            fingerprint=fingerprint,
            restricted=bool(projects),
            projects=tuple(sorted(set(projects))),
        )
        current = next(
            (c for c in self.trusted_certificates() if c.fingerprint == fingerprint), None
        )
        if current is not None and current.type == "server":
            raise CertificateRefusedError(
                f"{fingerprint[:12]} is the certificate of cluster member {current.name}; "
                "it is not a client's to trust"
            )
        if current == wanted:
            return fingerprint
        body = {
            "name": name,
            "type": cert_type,
            "restricted": wanted.restricted,
            "projects": list(wanted.projects),
        }
        if current is not None and current.type == cert_type:
            self._call("put", f"certificates/{fingerprint}", json=body)
            return fingerprint
        if current is not None:
            self._call("delete", f"certificates/{fingerprint}")
        self._call(
            "post", "certificates", json={**body, "certificate": base64.b64encode(der).decode()}
        )
        return fingerprint

    def untrust_certificate(self, fingerprint: str) -> bool:
        """Remove a client or metrics certificate from the trust store.

        ``fingerprint`` is any spelling :func:`normalize_fingerprint` accepts: all of it, or
        a prefix of at least 12 digits that names exactly one entry. Returns False when no
        entry matches.

        Raises:
            ValueError: not a fingerprint.
            CertificateRefusedError: the prefix matches several entries, or the entry is a
                cluster member's own certificate (remove the member instead).
        """
        wanted = normalize_fingerprint(fingerprint)
        found = [c for c in self.trusted_certificates() if c.fingerprint.startswith(wanted)]
        if not found:
            return False
        if len(found) > 1:
            names = ", ".join(f"{c.name} ({c.fingerprint[:16]})" for c in found)
            raise CertificateRefusedError(
                f"{wanted} matches {len(found)} trusted certificates ({names}); give more digits"
            )
        (certificate,) = found
        if certificate.type == "server":
            raise CertificateRefusedError(
                f"{certificate.fingerprint[:12]} is the certificate of cluster member "
                f"{certificate.name}; remove the member instead"
            )
        self._call("delete", f"certificates/{certificate.fingerprint}")
        return True

    def issue_client_token(self, name: str, projects: Sequence[str] = ()) -> str:
        """A single-use token a client redeems to get its certificate trusted.

        The client sends it as ``password`` in ``POST /1.0/certificates`` over HTTPS with
        its own certificate (``lxc remote add <name> <token>`` does that). The token lists
        only this member's address: LXD 5.0.2 fails a token redeemed at another member
        ("Bad certificate add operation data") and uses it up (measured).

        Raises:
            HTTPSNotListeningError: ``core.https_address`` is not set.
            LXDError: LXD refused (its message).
        """
        if not self.server_info().config.get("core.https_address"):
            raise HTTPSNotListeningError(
                "core.https_address is not set: this LXD does not serve its HTTPS API, so no "
                "client could redeem a token"
            )
        body = {
            "name": name,
            "type": "client",
            "token": True,
            "restricted": bool(projects),
            "projects": sorted(set(projects)),
        }
        try:
            # Not waited for: the token operation runs until the token is used.
            response = self.client.api.certificates.post(json=body)
        except pylxd.exceptions.LXDAPIException as exc:
            raise _api_failure("cannot issue a client token", exc) from None
        except requests.RequestException as exc:
            raise LXDUnavailableError(f"LXD is not answering: {exc}") from None
        meta = response.json()["metadata"]["metadata"]
        token = {
            "client_name": str(meta["request"]["name"]),
            "fingerprint": str(meta["fingerprint"]),
            "addresses": list(meta["addresses"]),
            "secret": str(meta["secret"]),
            "expires_at": str(meta.get("expiresAt") or NO_EXPIRY),
        }
        return base64.b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()

    # -- networks and storage pools ------------------------------------------------------

    def unfinished_objects(self) -> dict[str, str]:
        """Networks and storage pools not created on every member: {"network X": status}.

        ``Pending``: members have defined it, it is not created cluster-wide yet.
        ``Errored``: its creation failed on some member. A join fails while either exists:
        LXD 5.0.2 refuses every join while a network is Errored ("Joining member has no
        config for network X", whatever the joiner sends) and leaves the joiner half-joined,
        reporting itself clustered but no member; a join while UPLINK was Pending failed
        with 'Missing network "UPLINK"' and used up its token (both measured).
        """
        found = {
            f"network {n['name']}": str(n.get("status"))
            for n in self._managed_networks()
            if n.get("status") != CREATED
        }
        pools = self._call("get", "storage-pools", params={"recursion": "1"}) or []
        found.update(
            (f"storage-pool {p['name']}", str(p.get("status")))
            for p in pools
            if p.get("status") != CREATED
        )
        return found

    def ovn_networks(self) -> list[str]:
        """The cluster's OVN networks (type ``ovn``)."""
        return sorted(str(n["name"]) for n in self._managed_networks() if n.get("type") == "ovn")

    def _managed_networks(self) -> list[dict[str, Any]]:
        listing = self._call("get", "networks", params={"recursion": "1"}) or []
        return [n for n in listing if n.get("managed")]

    def object_state(self, entity: str, name: str, member: str = "") -> ObjectState | None:
        """A network or storage pool as LXD (``member``: that member) sees it.

        ``None`` when it does not exist, or is a host interface LXD does not manage.
        """
        collection, kind_key = _entity(entity)
        params = {"target": member} if member else {}
        try:
            found = self._call("get", f"{collection}/{name}", params=params) or {}
        except LXDNotFoundError:
            return None
        if found.get("managed") is False:
            return None
        return ObjectState(
            kind=str(found.get(kind_key, "")),
            status=str(found.get("status", "")),
            locations=tuple(found.get("locations") or ()),
            config={str(k): str(v) for k, v in (found.get("config") or {}).items()},
            description=str(found.get("description", "")),
        )

    def ensure_member_object(self, entity: str, obj: ObjectSpec, member: str) -> bool:
        """Define ``obj`` on ``member`` (``?target=``) with its member-specific keys only.

        The first stage of a cluster object (:func:`needs_member_stage`). A definition
        still pending gets the member keys that differ; once the member has the object
        created it is left alone. Returns whether anything changed.

        Raises:
            ObjectRefusedError: LXD refused, or the name is taken by another type.
        """
        state = self.object_state(entity, obj.name, member)
        _check_kind(entity, obj, state)
        where = f"{entity} {obj.name} (member {member})"
        if state is None or member not in state.locations:
            self._create_object(entity, obj, dict(obj.member_config), where, target=member)
            return True
        if state.status == CREATED:
            return False
        return self._update_object(entity, obj, state, obj.member_config, where, target=member)

    def ensure_cluster_object(self, entity: str, obj: ObjectSpec) -> bool:
        """Create ``obj`` cluster-wide, or update the cluster-wide keys it names.

        An object that needs a member stage is created once every current member has its
        definition. An object whose creation failed on some member (Errored) is created
        again (LXD takes no config then: it reuses what it stored). Keys the request does
        not name are never touched. Returns whether anything changed.

        Raises:
            ObjectPendingError: members have not defined it yet (names them).
            ObjectUpdateRefusedError: LXD refused to change it (it exists, usable).
            ObjectRefusedError: LXD refused to create it (its message and the name).
        """
        state = self.object_state(entity, obj.name)
        _check_kind(entity, obj, state)
        where = f"{entity} {obj.name}"
        if state is not None and state.status == CREATED:
            return self._update_object(entity, obj, state, obj.config, where)
        if state is not None and state.status == ERRORED:
            self._retry_errored_object(entity, obj, state)
        else:
            self._check_members_defined(entity, obj, state)
            self._create_object(entity, obj, dict(obj.config), where)
        # In a cluster LXD keeps the description of the first definition, not this one.
        created = self.object_state(entity, obj.name)
        if created is not None:
            self._update_object(entity, obj, created, obj.config, where)
        return True

    def ensure_standalone_object(self, entity: str, obj: ObjectSpec) -> bool:
        """Create ``obj`` on a standalone server (config and member config merged).

        An existing object gets the cluster-wide keys that differ, like a cluster object.
        Returns whether anything changed.

        Raises:
            ObjectRefusedError: LXD refused, or the name is taken by another type.
        """
        state = self.object_state(entity, obj.name)
        _check_kind(entity, obj, state)
        where = f"{entity} {obj.name}"
        if state is None:
            self._create_object(entity, obj, {**obj.config, **obj.member_config}, where)
            return True
        return self._update_object(entity, obj, state, obj.config, where)

    def check_changeable(self, entity: str, obj: ObjectSpec, member: str = "") -> None:
        """Refuse an object LXD cannot turn into ``obj`` in place; nothing is changed.

        Another type or driver, or (on ``member``, where it is created) another value of a
        key that names what a pool is made of (``IMMUTABLE_MEMBER_KEYS``) than LXD shows.

        Raises:
            ObjectRefusedError: naming the object, the key, and both values.
        """
        _check_kind(entity, obj, self.object_state(entity, obj.name))
        wanted = {k: v for k, v in obj.member_config.items() if k in IMMUTABLE_MEMBER_KEYS}
        if not wanted:
            return
        state = self.object_state(entity, obj.name, member)
        if state is None or state.status != CREATED:
            return
        for key, value in sorted(wanted.items()):
            # LXD 5.0.2 showed an empty source for ceph-link's ceph pool on one member of
            # the lab's bundle (measured): only a value it shows can differ.
            current = str(state.config.get(key, ""))
            if current and current != value:
                where = f" on {member}" if member else ""
                raise ObjectRefusedError(
                    f"{entity} {obj.name} has {key} {current!r}{where}, not {value!r}: LXD "
                    "cannot change it in place; set it back or use another name"
                )

    def ensure_profile(self, profile: Profile) -> bool:
        """Create ``profile``, or set the config keys and devices it names that differ.

        Nothing is removed: LXD's PATCH keeps the keys and devices a request does not
        name (a device it names is replaced whole). Returns whether anything changed.

        Raises:
            ObjectRefusedError: LXD refused (a device on a pool that does not exist...).
        """
        try:
            current = self._call("get", f"profiles/{profile.name}") or {}
        except LXDNotFoundError:
            current = None
        body: dict[str, Any] = {"config": dict(profile.config), "devices": dict(profile.devices)}
        if profile.description:
            body["description"] = profile.description
        try:
            if current is None:
                self._call("post", "profiles", json={"name": profile.name, **body})
                return True
            devices = current.get("devices") or {}
            body["config"] = _differing(current.get("config") or {}, profile.config)
            body["devices"] = {
                name: dict(options)
                for name, options in profile.devices.items()
                if devices.get(name) != dict(options)
            }
            if body.get("description") == current.get("description"):
                del body["description"]
            if not any(body.values()):
                return False
            self._call("patch", f"profiles/{profile.name}", json=body)
        except LXDAPIError as exc:
            raise ObjectRefusedError(f"profile {profile.name}: {exc.reason}") from None
        return True

    def _check_members_defined(
        self, entity: str, obj: ObjectSpec, state: ObjectState | None
    ) -> None:
        # Not for an OVN network: LXD adds its per-member records itself (a failed attempt
        # leaves them Pending, on the members of that time only; a new POST completes them).
        if not needs_member_stage(entity, obj):
            return
        defined = set(state.locations) if state else set()
        missing = sorted({m.name for m in self.members()} - defined)
        if missing:
            raise ObjectPendingError(entity, obj.name, missing)

    def _create_object(
        self, entity: str, obj: ObjectSpec, config: dict[str, str], where: str, target: str = ""
    ) -> None:
        collection, kind_key = _entity(entity)
        body = {"name": obj.name, kind_key: obj.kind, "config": config}
        if not target:  # LXD ignores the description of a per-member definition
            body["description"] = obj.description
        params = {"target": target} if target else {}
        try:
            self._call("post", collection, json=body, params=params)
        except LXDAPIError as exc:
            raise ObjectRefusedError(f"{where}: {exc.reason}") from None

    def _update_object(
        self,
        entity: str,
        obj: ObjectSpec,
        state: ObjectState,
        wanted: Mapping[str, str],
        where: str,
        target: str = "",
    ) -> bool:
        """PATCH the keys of ``wanted`` that differ (and the description, if the request has one).

        LXD 5.0.2 replaces the description on every PATCH (one without it clears it), so
        a cluster-wide PATCH always carries one: the request's, or the current one.
        """
        body: dict[str, Any] = {"config": _differing(state.config, wanted)}
        if not target:
            body["description"] = obj.description or state.description
            if body["description"] == state.description and not body["config"]:
                return False
        elif not body["config"]:
            return False
        collection, _ = _entity(entity)
        params = {"target": target} if target else {}
        try:
            self._call("patch", f"{collection}/{obj.name}", json=body, params=params)
        except LXDAPIError as exc:
            refused = ObjectRefusedError if target else ObjectUpdateRefusedError
            raise refused(f"{where}: {exc.reason}") from None
        return True

    def _retry_errored_object(self, entity: str, obj: ObjectSpec, state: ObjectState) -> None:
        # LXD 5.0.2 keeps the config of a failed creation, refuses a retry that carries
        # config ("already partially created") and refuses to change it ("not in created
        # state"): only a retry with the stored config, or deleting the object, can help.
        changed = sorted(_differing(state.config, obj.config))
        if changed:
            command = "network" if entity == "network" else "storage"
            raise ObjectRefusedError(
                f"{entity} {obj.name}: its creation failed with other values of "
                f"{', '.join(changed)}, which LXD cannot change now; delete it "
                f"(lxc {command} delete {obj.name}) so it is created again"
            )
        where = f"{entity} {obj.name}"
        if not needs_member_stage(entity, obj):
            # Nor does it retry an OVN network (one whose northbound database did not
            # answer yet): "Failed creating pending network for member ...: Network is not
            # in pending state" (measured). It has no member definitions to keep, so it is
            # deleted and created again; LXD refuses to delete a network in use.
            try:
                self._call("delete", f"networks/{obj.name}")
            except LXDAPIError as exc:
                raise ObjectRefusedError(f"{where}: {exc.reason}") from None
            self._create_object(entity, obj, dict(obj.config), where)
            return
        self._create_object(entity, obj, {}, where)


def _needs_override(policy: str, mode: str) -> bool:
    """Whether an instance's ``cluster.evacuate`` must be set to ``mode`` for an evacuation."""
    if mode == "stop":
        return policy != "stop"
    if mode == "migrate":
        return policy not in ("migrate", "live-migrate")
    return False


def _check_kind(entity: str, obj: ObjectSpec, state: ObjectState | None) -> None:
    if state is not None and state.kind and state.kind != obj.kind:
        raise ObjectRefusedError(
            f"{entity} {obj.name} exists with {_entity(entity)[1]} {state.kind}, "
            f"not {obj.kind}: rename one of them"
        )
