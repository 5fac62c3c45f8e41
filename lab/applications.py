"""A bundle's applications and relations, checked against their charms' ``charmcraft.yaml``.

What :mod:`lab.bundle` reads from a bundle file (and its overlays) about each application
is checked here against its charm, as Juju checks it: the charm directory and its
metadata, the base (``base``, ``series``, ``default-base`` against the charm's
``platforms``), every option (it exists and has the declared type: a value the charm
refuses reaches the charm, whose own Blocked status is what an operator sees), bindings,
``num_units``; and each relation's two sides are resolved to one provides/requires pair of
endpoints with a common interface (``app`` alone: the one that fits).

Every problem is a :class:`BundleError` naming the file (the bundle, or the overlay that set
the key; :class:`Where`), the key path (e.g. ``applications.lxd.options.api-port``) and what
is valid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.machines import UBUNTU_RELEASES, machine_base

APPLICATION_KEYS = ("charm", "num_units", "options", "base", "series", "bindings")
OPTION_TYPES = ("string", "int", "float", "boolean", "secret")
# Series the lab can map to a base (``series`` is Juju's older spelling of ``base``): the
# Ubuntu releases a lab machine can present.
SERIES_BASES = {codename: f"ubuntu@{version}" for version, codename in UBUNTU_RELEASES.items()}
# Juju's application name syntax (names become unit names such as ``lxd/0``).
APP_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$")
BASE_RE = re.compile(r"^(?P<os>[a-z]+)@(?P<channel>\d+(\.\d+)*)(/[a-z]+)?$")
ENDPOINT_ROLES = ("provides", "requires", "peers")


class BundleError(ValueError):
    """The bundle cannot be deployed by the lab.

    The message names the file (bundle or overlay), the key path and what would be valid.
    """


@dataclass(frozen=True)
class Application:
    """One application of the bundle.

    Attributes:
        name: the application name, e.g. ``lxd``.
        charm_dir: the charm's directory (absolute).
        num_units: units to deploy (always 0 for a subordinate: it follows its principal).
        options: the config options the bundle sets (validated; defaults not included).
        subordinate: whether the charm is a subordinate.
        base: e.g. ``ubuntu@24.04/stable`` (from ``base``, ``series`` or ``default-base``).
        metadata: the parsed ``charmcraft.yaml``.
    """

    name: str
    charm_dir: Path
    num_units: int
    options: Mapping[str, Any]
    subordinate: bool
    base: str | None
    metadata: Mapping[str, Any]

    def config(self) -> dict[str, Any]:
        """The charm's config as a unit sees it: defaults overlaid with the bundle's options."""
        merged = _defaults(self.metadata)
        merged.update(self.options)
        return merged


@dataclass(frozen=True)
class Endpoint:
    """An application's relation endpoint, e.g. ``lxd:cluster``."""

    application: str
    name: str

    def __str__(self) -> str:
        """``application:name``."""
        return f"{self.application}:{self.name}"


@dataclass(frozen=True)
class Relation:
    """A relation between two applications, in the order the bundle lists them.

    Attributes:
        a: the first endpoint.
        b: the second endpoint.
        interface: the interface both endpoints declare.
        scope: ``global`` or ``container`` (either endpoint declares ``scope: container``).
    """

    a: Endpoint
    b: Endpoint
    interface: str
    scope: str


def within(key_path: str, prefix: str) -> bool:
    """Whether ``key_path`` is ``prefix`` or lies under it (``a.b`` is under ``a``)."""
    return key_path == prefix or (key_path.startswith(prefix) and key_path[len(prefix)] in ".[ ")


@dataclass(frozen=True)
class Where:
    """Builds errors that name the file a key path comes from, and the key path.

    ``overlaid`` maps the key paths an overlay set (an application it added, an option it
    changed) to that overlay's file; every other key path is the bundle's.
    """

    bundle: str
    overlaid: Mapping[str, str] = field(default_factory=dict)

    def owner(self, key_path: str) -> str:
        """The file that set ``key_path`` (the deepest recorded key path above it)."""
        owner, depth = self.bundle, -1
        for path, file in self.overlaid.items():
            if within(key_path, path) and len(path) > depth:
                owner, depth = file, len(path)
        return owner

    def files(self, key_path: str, also: Sequence[str] = ()) -> str:
        """The owner of ``key_path``, with the overlays that set keys under it or ``also``."""
        owner = self.owner(key_path)
        others = [self.owner(path) for path in also]
        others += [file for path, file in self.overlaid.items() if within(path, key_path)]
        others = [file for file in dict.fromkeys(others) if file != owner]
        return owner + (f" (with {', '.join(others)})" if others else "")

    def error(self, key_path: str, message: str, also: Sequence[str] = ()) -> BundleError:
        """A :class:`BundleError` naming the files that set ``key_path``, and the key path."""
        return BundleError(f"{self.files(key_path, also)}: {key_path}: {message}")


# ---------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate mapping keys (PyYAML keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document at ``path`` (a duplicate key is an error); ``what`` names it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"{what}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BundleError(f"{what}: invalid YAML: {exc}") from None


def type_name(value: Any) -> str:
    """What ``value`` is, for messages: ``an int``, ``a mapping``..."""
    names = {bool: "a boolean", int: "an int", float: "a float", str: "a string"}
    names.update({list: "a list", dict: "a mapping", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def check_keys(where: Where, prefix: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Every key of ``data`` (at ``prefix``) is one of ``allowed``."""
    for key in data:
        if key not in allowed:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise where.error(path, f"unsupported key {key!r} (supported: {', '.join(allowed)})")


def require_str(where: Where, key_path: str, value: Any) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise where.error(key_path, f"expected a non-empty string, got {type_name(value)}")
    return value


# ---------------------------------------------------------------------------- bases


def base_from_series(where: Where, key_path: str, value: Any) -> str:
    """The base of a ``series`` (its Ubuntu codename)."""
    series = require_str(where, key_path, value)
    if series not in SERIES_BASES:
        known = ", ".join(f"{name} ({base})" for name, base in SERIES_BASES.items())
        raise where.error(key_path, f"unknown series {series!r} (known: {known}; or use base)")
    return SERIES_BASES[series]


def parse_base(where: Where, key_path: str, value: Any) -> str:
    """A base ``OS@VERSION[/RISK]`` that a lab machine can present."""
    base = require_str(where, key_path, value)
    if not BASE_RE.match(base):
        raise where.error(
            key_path, f"invalid base {base!r} (expected OS@VERSION[/RISK], e.g. ubuntu@24.04)"
        )
    try:
        machine_base(base)  # a unit's machine presents its base's release
    except ValueError as exc:
        raise where.error(key_path, str(exc)) from None
    return base


def _charm_bases(metadata: Mapping[str, Any]) -> list[str]:
    """``ubuntu@24.04`` etc. from ``platforms`` keys such as ``ubuntu@24.04:amd64``."""
    platforms = metadata.get("platforms")
    if not isinstance(platforms, Mapping):
        return []
    bases = [str(key).split(":", 1)[0] for key in platforms]
    return [base for base in bases if BASE_RE.match(base)]


def _application_base(
    where: Where, prefix: str, spec: Mapping[str, Any], default: str | None, meta: Any
) -> str | None:
    base: str | None
    if "base" in spec:
        key_path = f"{prefix}.base"
        base = parse_base(where, key_path, spec["base"])
    elif "series" in spec:
        key_path = f"{prefix}.series"
        base = base_from_series(where, key_path, spec["series"])
    else:
        base, key_path = default, f"{prefix}.base (from default-base)"
    supported = _charm_bases(meta)
    if base is not None and supported and base.split("/", 1)[0] not in supported:
        raise where.error(
            key_path,
            f"base {base!r} is not supported by the charm "
            f"(charmcraft.yaml platforms: {', '.join(dict.fromkeys(supported))})",
        )
    return base


# ---------------------------------------------------------------------------- charms


def _charm_dir(where: Where, key_path: str, value: Any, bundle_dir: Path) -> Path:
    charm = require_str(where, key_path, value)
    if not (charm.startswith(("./", "../")) or os.path.isabs(charm)):
        raise where.error(
            key_path,
            f"{charm!r}: only local charm paths are supported "
            f"(./ or ../ relative to the directory of {where.owner(key_path)}, or absolute), "
            "not charm store names",
        )
    path = (bundle_dir / charm).resolve()
    if not path.is_dir():
        hint = (
            " (a packed .charm: point at the charm's source directory)" if path.is_file() else ""
        )
        raise where.error(key_path, f"charm directory {charm!r} ({path}) does not exist{hint}")
    if not (path / "charmcraft.yaml").is_file():
        raise where.error(key_path, f"{path} has no charmcraft.yaml (not a charm directory)")
    return path


def _charm_options(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    config = meta.get("config") or {}
    options = config.get("options") if isinstance(config, Mapping) else None
    return options if isinstance(options, Mapping) else {}


def _defaults(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: spec["default"]
        for name, spec in _charm_options(meta).items()
        if isinstance(spec, Mapping) and spec.get("default") is not None
    }


def endpoints(meta: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Endpoint name -> (role, spec) for the charm's provides, requires and peers."""
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for role in ENDPOINT_ROLES:
        section = meta.get(role) or {}
        for name, spec in section.items():
            found[str(name)] = (role, spec)
    return found


def _check_charm_metadata(what: str, meta: Any) -> None:
    """Reject a charmcraft.yaml the lab cannot read (names the file and its key)."""
    if not isinstance(meta, Mapping):
        raise BundleError(f"{what}: expected a mapping, got {type_name(meta)}")
    for role in ENDPOINT_ROLES:
        section = meta.get(role) or {}
        if not isinstance(section, Mapping):
            raise BundleError(f"{what}: {role}: expected a mapping of endpoints")
        for name, spec in section.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("interface"), str):
                raise BundleError(f"{what}: {role}.{name}: expected a mapping with 'interface'")
            if spec.get("scope", "global") not in ("global", "container"):
                raise BundleError(f"{what}: {role}.{name}.scope: expected global or container")
    for name, spec in _charm_options(meta).items():
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind not in OPTION_TYPES:
            raise BundleError(
                f"{what}: config.options.{name}.type: expected one of {', '.join(OPTION_TYPES)}"
            )


def _load_metadata(where: Where, key_path: str, charm_dir: Path) -> dict[str, Any]:
    what = f"{where.files(key_path)}: {key_path}: {charm_dir / 'charmcraft.yaml'}"
    meta = read_yaml(charm_dir / "charmcraft.yaml", what)
    _check_charm_metadata(what, meta)
    if meta.get("subordinate") and not any(
        spec.get("scope") == "container" for spec in (meta.get("requires") or {}).values()
    ):
        raise BundleError(f"{what}: a subordinate needs a requires endpoint with scope: container")
    return dict(meta)


# ---------------------------------------------------------------------------- applications


def _value_matches(kind: str, value: Any) -> bool:
    if kind in ("string", "secret"):
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, int | float)  # float: an int is a valid float


def _options(where: Where, prefix: str, value: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    key_path = f"{prefix}.options"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.error(
            key_path, f"expected a mapping of config options, got {type_name(value)}"
        )
    declared = _charm_options(meta)
    for name, option in value.items():
        if name not in declared:
            valid = ", ".join(declared) or "none: the charm has no config options"
            raise where.error(f"{key_path}.{name}", f"unknown option {name!r} (valid: {valid})")
        kind = declared[name]["type"]
        if not _value_matches(kind, option):
            article = "an" if kind == "int" else "a"
            raise where.error(
                f"{key_path}.{name}",
                f"expected {article} {kind} (charmcraft.yaml type), got {type_name(option)} "
                f"{option!r}" + (" (quote it to make it a string)" if kind == "string" else ""),
            )
    return dict(value)


def _num_units(where: Where, prefix: str, spec: Mapping[str, Any], subordinate: bool) -> int:
    key_path = f"{prefix}.num_units"
    value = spec.get("num_units")
    if subordinate:
        if value not in (None, 0) or isinstance(value, bool):
            raise where.error(
                key_path,
                f"must be absent or 0 for a subordinate (its units follow its principal), "
                f"got {value!r}",
            )
        return 0
    if "num_units" not in spec:
        raise where.error(key_path, "required for a principal charm (an int >= 0)")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error(key_path, f"expected an int >= 0, got {type_name(value)} {value!r}")
    return value


def _bindings(where: Where, prefix: str, value: Any, meta: Mapping[str, Any]) -> None:
    key_path = f"{prefix}.bindings"
    if not isinstance(value, Mapping):
        raise where.error(key_path, f"expected a mapping of endpoint: space, got {value!r}")
    valid = [*endpoints(meta), *(meta.get("extra-bindings") or {})]
    for endpoint, space in value.items():
        if endpoint != "" and endpoint not in valid:
            raise where.error(
                f"{key_path}.{endpoint}",
                f"unknown endpoint {endpoint!r} (valid: '' (default), {', '.join(valid)})",
            )
        if not isinstance(space, str):
            raise where.error(f"{key_path}.{endpoint}", f"expected a space name, got {space!r}")


def load_application(
    where: Where, name: Any, spec: Any, bundle_dir: Path, default_base: str | None
) -> Application:
    """Application ``name`` of the bundle, checked against its charm."""
    prefix = f"applications.{name}"
    if not isinstance(name, str) or not APP_NAME_RE.match(name):
        raise where.error(
            prefix, f"invalid application name {name!r} (lower-case letters, digits and dashes)"
        )
    if not isinstance(spec, Mapping):
        raise where.error(prefix, f"expected a mapping, got {type_name(spec)}")
    check_keys(where, prefix, spec, APPLICATION_KEYS)
    if "charm" not in spec:
        raise where.error(f"{prefix}.charm", "required (a local charm directory)")
    charm_dir = _charm_dir(where, f"{prefix}.charm", spec["charm"], bundle_dir)
    meta = _load_metadata(where, f"{prefix}.charm", charm_dir)
    subordinate = bool(meta.get("subordinate", False))
    if "bindings" in spec:
        _bindings(where, prefix, spec["bindings"], meta)
    return Application(
        name=name,
        charm_dir=charm_dir,
        num_units=_num_units(where, prefix, spec, subordinate),
        options=_options(where, prefix, spec.get("options"), meta),
        subordinate=subordinate,
        base=_application_base(where, prefix, spec, default_base, meta),
        metadata=meta,
    )


# ---------------------------------------------------------------------------- relations


@dataclass(frozen=True)
class _Candidate:
    """One endpoint an entry of ``relations`` may mean."""

    endpoint: Endpoint
    role: str
    interface: str
    scope: str


def _parse_side(
    where: Where, key_path: str, value: Any, apps: Mapping[str, Application]
) -> list[_Candidate]:
    text = require_str(where, key_path, value)
    app, _, endpoint = text.partition(":")
    if app not in apps:
        raise where.error(
            key_path, f"unknown application {app!r} (applications: {', '.join(apps)})"
        )
    endpoints_of = endpoints(apps[app].metadata)
    if not endpoint:
        names = [name for name, (role, _) in endpoints_of.items() if role != "peers"]
    elif endpoint not in endpoints_of:
        valid = ", ".join(name for name, (role, _) in endpoints_of.items() if role != "peers")
        raise where.error(
            key_path, f"{app!r} has no endpoint {endpoint!r} (valid: {valid or 'none'})"
        )
    elif endpoints_of[endpoint][0] == "peers":
        raise where.error(
            key_path,
            f"{text!r} is a peer endpoint: peers relate automatically, "
            "leave them out of relations",
        )
    else:
        names = [endpoint]
    return [
        _Candidate(
            Endpoint(app, name),
            endpoints_of[name][0],
            endpoints_of[name][1]["interface"],
            endpoints_of[name][1].get("scope", "global"),
        )
        for name in names
    ]


def _describe_candidate(candidate: _Candidate) -> str:
    return f"{candidate.endpoint} ({candidate.role} {candidate.interface})"


def _explicit_mismatch(where: Where, key_path: str, a: _Candidate, b: _Candidate) -> None:
    if a.interface != b.interface:
        raise where.error(
            key_path,
            f"interfaces differ: {a.endpoint} is {a.interface!r}, {b.endpoint} is {b.interface!r}",
        )
    raise where.error(
        key_path,
        f"{a.endpoint} and {b.endpoint} both {a.role[:-1]} {a.interface!r}: "
        "one side must provide and the other require",
    )


def _pick_pair(
    where: Where, key_path: str, side_a: list[_Candidate], side_b: list[_Candidate]
) -> tuple[_Candidate, _Candidate]:
    pairs = [
        (a, b)
        for a in side_a
        for b in side_b
        if a.interface == b.interface and {a.role, b.role} == {"provides", "requires"}
    ]
    if len(pairs) == 1:
        return pairs[0]
    if len(side_a) == 1 and len(side_b) == 1:
        _explicit_mismatch(where, key_path, side_a[0], side_b[0])
    if not pairs:
        found = ", ".join(_describe_candidate(c) for c in side_a + side_b) or "no endpoints"
        raise where.error(
            key_path, f"no provides/requires endpoints with a common interface ({found})"
        )
    options = "; ".join(f"[{a.endpoint}, {b.endpoint}]" for a, b in pairs)
    raise where.error(key_path, f"ambiguous relation: name the endpoints, one of {options}")


def _load_relation(
    where: Where, index: int, entry: Any, apps: Mapping[str, Application]
) -> Relation:
    key_path = f"relations[{index}]"
    if not isinstance(entry, list) or len(entry) != 2:
        raise where.error(
            key_path, f"expected a list of two 'app[:endpoint]' strings, got {entry!r}"
        )
    side_a = _parse_side(where, f"{key_path}[0]", entry[0], apps)
    side_b = _parse_side(where, f"{key_path}[1]", entry[1], apps)
    if side_a[0].endpoint.application == side_b[0].endpoint.application:
        raise where.error(key_path, "an application cannot relate to itself (use a peer endpoint)")
    a, b = _pick_pair(where, key_path, side_a, side_b)
    scope = "container" if "container" in (a.scope, b.scope) else "global"
    if scope == "container" and not (
        apps[a.endpoint.application].subordinate or apps[b.endpoint.application].subordinate
    ):
        raise where.error(
            key_path,
            f"{a.endpoint} - {b.endpoint} is container-scoped but neither is a subordinate",
        )
    return Relation(a.endpoint, b.endpoint, a.interface, scope)


def load_relations(where: Where, value: Any, apps: Mapping[str, Application]) -> list[Relation]:
    """A file's ``relations``, each resolved to one pair of endpoints."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise where.error("relations", f"expected a list, got {type_name(value)}")
    relations: list[Relation] = []
    seen: set[frozenset[Endpoint]] = set()
    for index, entry in enumerate(value):
        relation = _load_relation(where, index, entry, apps)
        pair = frozenset((relation.a, relation.b))
        if pair in seen:
            raise where.error(
                f"relations[{index}]", f"duplicate relation {relation.a} - {relation.b}"
            )
        seen.add(pair)
        relations.append(relation)
    return relations


def check_subordinates(
    where: Where, apps: Mapping[str, Application], relations: Sequence[Relation]
) -> None:
    """Every subordinate has a container-scoped relation to one principal."""
    for app in apps.values():
        if not app.subordinate:
            continue
        principals = [
            other.application
            for relation in relations
            if relation.scope == "container"
            for mine, other in ((relation.a, relation.b), (relation.b, relation.a))
            if mine.application == app.name and not apps[other.application].subordinate
        ]
        if len(principals) != 1:
            found = ", ".join(principals) or "none"
            raise where.error(
                "relations",
                f"subordinate {app.name!r} must have a container-scoped relation to exactly "
                f"one principal (found: {found})",
                also=[f"applications.{app.name}"],
            )


def charm_application(name: str, charm_dir: str | os.PathLike[str], options: Any) -> Application:
    """The application ``name`` of the charm in ``charm_dir`` with ``options``.

    Validated as a bundle's would be (name and type), for a model that outlives its bundle
    (``lab config``, ``lab relate``).

    Raises:
        BundleError: an option the charm does not declare, or of the wrong type.
    """
    where = Where(name)
    spec = {"charm": str(charm_dir), "options": options, "num_units": 0}
    return load_application(where, name, spec, Path("/"), None)


def relation_between(
    apps: Mapping[str, Application], a: str, b: str, verb: str = "relate"
) -> Relation:
    """The relation ``a`` - ``b`` (``app[:endpoint]`` each) means among ``apps``.

    ``verb`` (the ``lab`` command asking) starts the error messages.

    Raises:
        BundleError: an unknown application or endpoint, no or several matching pairs.
    """
    return _load_relation(Where(verb), 0, [a, b], apps)


def option_value(app: Application, name: str, text: str) -> Any:
    """``text`` (from a command line) as the type option ``name`` declares.

    As ``juju config`` reads it; an undeclared option or a value of the wrong type is left
    for :func:`charm_application` to report.
    """
    spec = _charm_options(app.metadata).get(name)
    kind = spec.get("type") if isinstance(spec, Mapping) else "string"
    if kind in ("string", "secret"):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
