"""The ``lxd-member`` interface: lxd (principal) and each subordinate on the same machine.

Container-scoped, one subordinate unit per lxd unit. Everything is in unit databags.

lxd unit -> subordinate unit (:class:`MemberInfo`):
    ``member-name``, ``clustered`` (json bool), ``lxd-version``,
    ``api-extensions`` (json list), ``paths`` (json ``{"ceph": dir, "ovn": dir}``: where
    this LXD reads Ceph and OVN client files; snap and distro package differ)

subordinate unit -> lxd unit (:class:`MemberRequest`), all json, all optional:
    ``server-config``  ``{"network.ovn.northbound_connection": "ssl:…"}``
    ``networks``       ``[{"name", "type", "config", "member-config", "description"}]``
    ``storage-pools``  ``[{"name", "driver", "config", "member-config", "description"}]``
    ``ready``          json bool: the subordinate's own work (daemons, credential files)
                       is done; lxd creates nothing that depends on it before that.

``member-config`` holds the member-specific keys (a physical network's ``parent``, a
pool's ``source``): lxd creates such objects on each member first, then cluster-wide,
and hands these values to every later join. Secrets never travel here: credentials are
files the subordinate writes on the machine.

Both sides read the other's data through this module only; data from a misbehaving
peer raises :class:`InvalidMemberDataError` naming the key, and is never half-applied.
Requests of several subordinates must not overlap (:func:`check_conflicts`): one
application owns each network, storage pool and server config value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ops

from charm_common.relation_data import update_databag

ENDPOINT = "lxd-member"
# LXD object names: what `lxc network create` / `lxc storage create` accept.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Server keys the lxd charm owns (addresses, clustering): no subordinate may set them.
OWNED_SERVER_KEY_PREFIXES = ("core.", "cluster.")
# The LXD entities a request declares, as LXD's ``member_config`` names them. Networks
# are created before storage pools, each in the order requested (an OVN network needs its
# uplink network to exist first).
NETWORK = "network"
STORAGE_POOL = "storage-pool"


class InvalidMemberDataError(ValueError):
    """The other side published data this side cannot use (the message names the key)."""


class ConflictingRequestsError(ValueError):
    """Two subordinates ask for the same object or for different server config values."""


@dataclass(frozen=True)
class MemberInfo:
    """What the lxd unit says about its LXD member."""

    member_name: str
    clustered: bool
    lxd_version: str
    api_extensions: tuple[str, ...] = ()
    paths: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> dict[str, str]:
        """The databag form."""
        return {
            "member-name": self.member_name,
            "clustered": json.dumps(self.clustered),
            "lxd-version": self.lxd_version,
            "api-extensions": json.dumps(list(self.api_extensions)),
            "paths": json.dumps(dict(self.paths), sort_keys=True),
        }

    @classmethod
    def decode(cls, data: Mapping[str, str]) -> MemberInfo | None:
        """Parse a databag; ``None`` while the lxd unit has published nothing yet.

        Raises:
            InvalidMemberDataError: a key is present but unusable.
        """
        if not data.get("member-name"):
            return None
        paths = _json(data, "paths", {})
        extensions = _json(data, "api-extensions", [])
        if not isinstance(paths, dict) or not all(
            isinstance(v, str) and v.startswith("/") for v in paths.values()
        ):
            raise InvalidMemberDataError("'paths' must map names to absolute directories")
        if not isinstance(extensions, list):
            raise InvalidMemberDataError("'api-extensions' must be a json list")
        return cls(
            member_name=data["member-name"],
            clustered=_json(data, "clustered", False) is True,
            lxd_version=data.get("lxd-version", ""),
            api_extensions=tuple(str(e) for e in extensions),
            paths={str(k): str(v) for k, v in paths.items()},
        )


@dataclass(frozen=True)
class LXDObject:
    """A network or storage pool a subordinate needs (``kind`` is its type or driver)."""

    name: str
    kind: str
    config: Mapping[str, str] = field(default_factory=dict)
    member_config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def encode(self, kind_key: str) -> dict[str, Any]:
        """The json form (``kind_key`` is ``type`` for networks, ``driver`` for pools)."""
        return {
            "name": self.name,
            kind_key: self.kind,
            "config": dict(self.config),
            "member-config": dict(self.member_config),
            "description": self.description,
        }

    @classmethod
    def decode(cls, entry: Any, kind_key: str, where: str) -> LXDObject:
        """Parse one json entry of ``networks`` / ``storage-pools`` (``where`` names it)."""
        if not isinstance(entry, dict):
            raise InvalidMemberDataError(f"{where} must be an object")
        name, kind = entry.get("name"), entry.get(kind_key)
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidMemberDataError(f"{where}: invalid name {name!r}")
        if not isinstance(kind, str) or not kind:
            raise InvalidMemberDataError(f"{where} ({name}): '{kind_key}' missing")
        config = _string_map(entry.get("config", {}), f"{where} ({name}) config")
        member = _string_map(entry.get("member-config", {}), f"{where} ({name}) member-config")
        overlap = sorted(set(config) & set(member))
        if overlap:
            raise InvalidMemberDataError(
                f"{where} ({name}): {', '.join(overlap)} both cluster-wide and member-specific"
            )
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise InvalidMemberDataError(f"{where} ({name}): 'description' must be a string")
        return cls(name, kind, config, member, description)


@dataclass(frozen=True)
class MemberRequest:
    """What one subordinate needs from its LXD member."""

    app: str
    server_config: Mapping[str, str] = field(default_factory=dict)
    networks: tuple[LXDObject, ...] = ()
    storage_pools: tuple[LXDObject, ...] = ()
    ready: bool = False

    def encode(self) -> dict[str, str]:
        """The databag form (``app`` is not sent: the relation says who is asking)."""
        return {
            "server-config": json.dumps(dict(self.server_config), sort_keys=True),
            "networks": json.dumps([n.encode("type") for n in self.networks], sort_keys=True),
            "storage-pools": json.dumps(
                [p.encode("driver") for p in self.storage_pools], sort_keys=True
            ),
            "ready": json.dumps(self.ready),
        }

    @classmethod
    def decode(cls, app: str, data: Mapping[str, str]) -> MemberRequest:
        """Parse a subordinate's databag (empty: a request for nothing, not ready).

        Raises:
            InvalidMemberDataError: naming the key and what is wrong with it.
        """
        server_config = _string_map(_json(data, "server-config", {}), "'server-config'")
        owned = sorted(k for k in server_config if k.startswith(OWNED_SERVER_KEY_PREFIXES))
        if owned:
            raise InvalidMemberDataError(
                f"'server-config' sets {', '.join(owned)}, which the lxd charm owns"
            )
        objects = {}
        for key, kind_key in (("networks", "type"), ("storage-pools", "driver")):
            entries = _json(data, key, [])
            if not isinstance(entries, list):
                raise InvalidMemberDataError(f"'{key}' must be a json list")
            objects[key] = tuple(
                LXDObject.decode(e, kind_key, f"'{key}'[{i}]") for i, e in enumerate(entries)
            )
            names = [o.name for o in objects[key]]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise InvalidMemberDataError(f"'{key}' names {', '.join(twice)} twice")
        return cls(
            app=app,
            server_config=server_config,
            networks=objects["networks"],
            storage_pools=objects["storage-pools"],
            ready=_json(data, "ready", False) is True,
        )


def ready_requests(requests: Sequence[MemberRequest]) -> list[MemberRequest]:
    """The requests whose subordinate is ready: only these are applied."""
    return [r for r in requests if r.ready]


def requested_objects(requests: Sequence[MemberRequest]) -> list[tuple[str, LXDObject]]:
    """(entity, object) of every request in creation order: all networks, then all pools.

    Within each entity, requests come in the order given (by application name) and each
    request's objects in its own order.
    """
    networks = [(NETWORK, o) for r in requests for o in r.networks]
    return networks + [(STORAGE_POOL, o) for r in requests for o in r.storage_pools]


def requested_server_config(requests: Sequence[MemberRequest]) -> dict[str, str]:
    """The server config every request asks for, merged (see :func:`check_conflicts`)."""
    return {k: v for r in requests for k, v in r.server_config.items()}


def check_conflicts(requests: Sequence[MemberRequest]) -> None:
    """Refuse requests that overlap: each object and config value has one owner.

    Two applications declaring the same network or storage pool name conflict even when
    their definitions agree (whose later change would win?); the same server config key
    conflicts only when the values differ.

    Raises:
        ConflictingRequestsError: naming both applications and what they both declare.
    """
    owners: dict[tuple[str, str], str] = {}
    for request in requests:
        for entity, obj in requested_objects([request]):
            other = owners.setdefault((entity, obj.name), request.app)
            if other != request.app:
                raise ConflictingRequestsError(
                    f"{other} and {request.app} both declare {entity} {obj.name}"
                )
    values: dict[str, tuple[str, str]] = {}
    for request in requests:
        for key, value in request.server_config.items():
            other, seen = values.setdefault(key, (request.app, value))
            if seen != value:
                raise ConflictingRequestsError(
                    f"{other} and {request.app} want different values of server config {key}"
                )


def _json(data: Mapping[str, str], key: str, default: Any) -> Any:
    raw = data.get(key)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidMemberDataError(f"'{key}' is not valid json") from None


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidMemberDataError(f"{where} must map strings to strings")
    return dict(value)


# -- the two sides -----------------------------------------------------------------------


class LXDMemberProvider:
    """The lxd side: publish :class:`MemberInfo`, read every subordinate's request."""

    def __init__(self, charm: ops.CharmBase, endpoint: str = ENDPOINT):
        self._charm = charm
        self._endpoint = endpoint

    @property
    def relations(self) -> list[ops.Relation]:
        """One relation per related subordinate application."""
        return list(self._charm.model.relations.get(self._endpoint, []))

    def publish(self, info: MemberInfo) -> None:
        """Write ``info`` to every subordinate (only keys that changed)."""
        for relation in self.relations:
            update_databag(relation.data[self._charm.unit], info.encode())

    def requests(self) -> list[MemberRequest]:
        """Each related subordinate's request, ordered by application name.

        A relation whose subordinate unit has not joined yet gives an empty, not-ready
        request: lxd must wait for it rather than go ahead without it.

        Raises:
            InvalidMemberDataError: a subordinate's data is unusable (names the app).
        """
        found = []
        for relation in self.relations:
            app = relation.app.name if relation.app else "?"
            data: Mapping[str, str] = {}
            for unit in relation.units:  # container scope: at most one, on this machine
                data = relation.data[unit]
            try:
                found.append(MemberRequest.decode(app, data))
            except InvalidMemberDataError as exc:
                raise InvalidMemberDataError(f"{app}: {exc}") from None
        return sorted(found, key=lambda r: r.app)


class LXDMemberRequirer:
    """The subordinate side: read :class:`MemberInfo`, publish a :class:`MemberRequest`."""

    def __init__(self, charm: ops.CharmBase, endpoint: str = ENDPOINT):
        self._charm = charm
        self._endpoint = endpoint

    @property
    def relation(self) -> ops.Relation | None:
        """The relation with the principal (``None`` before it exists)."""
        return self._charm.model.get_relation(self._endpoint)

    def member(self) -> MemberInfo | None:
        """What the lxd unit published (``None`` until it has).

        Raises:
            InvalidMemberDataError: the lxd unit's data is unusable.
        """
        relation = self.relation
        if relation is None:
            return None
        for unit in relation.units:
            return MemberInfo.decode(relation.data[unit])
        return None

    def publish(self, request: MemberRequest) -> None:
        """Write this subordinate's request (only keys that changed)."""
        relation = self.relation
        if relation is not None:
            update_databag(relation.data[self._charm.unit], request.encode())

    def mark_not_ready(self) -> None:
        """Say the request is not ready now; what it asks for stays as published."""
        relation = self.relation
        if relation is not None:
            update_databag(relation.data[self._charm.unit], {"ready": json.dumps(False)})
