"""Read and validate a Juju bundle for the lab, before anything is started.

The lab deploys the same bundle files ``juju deploy`` reads (e.g. ``bundles/lxd-cluster.yaml``)
on one host without a Juju controller, so it supports the subset of the format that makes
sense there and rejects everything else loudly: a key the lab would silently ignore is a
deployment that differs from what the operator wrote.

Supported:

* top level: ``applications`` (required), ``relations``, ``default-base``, ``series``,
  ``name``, ``description``;
* per application: ``charm`` (a local charm directory: ``./``, ``../`` relative to the bundle
  file, or absolute), ``num_units``, ``options``, ``base``, ``series`` and ``bindings``.
  Bindings are checked against the charm's endpoints but have no effect: the lab has one
  network (every endpoint is bound to it);
* overlays (``juju deploy --overlay``; ``applications``, ``relations``, ``description``): an
  application of the bundle is deep-merged, any other is added (a local ``charm`` path in
  an overlay is relative to the overlay file), relations are added to the bundle's.

Each application and relation is checked against its charm's ``charmcraft.yaml`` as Juju
checks it (:mod:`lab.applications`). Every problem is a :class:`BundleError` naming the
file (the bundle, or the overlay that set the key), the key path (e.g.
``applications.lxd.options.api-port``) and what is valid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.applications import (
    Application,
    Endpoint,
    Relation,
    Where,
    base_from_series,
    check_keys,
    check_subordinates,
    load_application,
    load_relations,
    parse_base,
    read_yaml,
    type_name,
    within,
)

TOP_LEVEL_KEYS = ("applications", "relations", "default-base", "series", "name", "description")
OVERLAY_KEYS = ("applications", "relations", "description")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: applications in bundle order and the relations between them."""

    path: Path
    applications: dict[str, Application]
    relations: list[Relation]


def _top_level(where: Where, data: Any) -> tuple[Mapping[str, Any], str | None]:
    if not isinstance(data, Mapping):
        raise where.error("(top level)", f"expected a mapping, got {type_name(data)}")
    check_keys(where, "", data, TOP_LEVEL_KEYS)
    apps = data.get("applications")
    if not isinstance(apps, Mapping) or not apps:
        raise where.error("applications", "required: a non-empty mapping of applications")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise where.error(key, f"expected a string, got {type_name(data[key])}")
    if "default-base" in data:
        return apps, parse_base(where, "default-base", data["default-base"])
    if "series" in data:
        return apps, base_from_series(where, "series", data["series"])
    return apps, None


def _merge(base: Any, overlay: Any, key_path: str, file: str, overlaid: dict[str, str]) -> Any:
    """``overlay`` deep-merged onto ``base`` (mappings merge; anything else replaces).

    Each key path the overlay sets is recorded in ``overlaid`` as coming from ``file``.
    """
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        merged = dict(base)
        for key, value in overlay.items():
            sub = f"{key_path}.{key}"
            if key in base:
                merged[key] = _merge(base[key], value, sub, file, overlaid)
            else:
                merged[key] = value
                overlaid[sub] = file
        return merged
    for path in [path for path in overlaid if within(path, key_path)]:
        del overlaid[path]  # replaced as a whole: what an earlier overlay set below is gone
    overlaid[key_path] = file
    return overlay


@dataclass
class _Merged:
    """The bundle's applications with the overlays applied, and every file's relations.

    Attributes:
        specs: application name -> spec (as written, overlays merged), bundle order first.
        overlaid: key path -> the overlay file that set it (see :class:`Where`).
        relations: (file, its ``relations`` value) for the bundle, then each overlay.
    """

    specs: dict[str, Any]
    overlaid: dict[str, str]
    relations: list[tuple[Where, Any]]


def _apply_overlay(merged: _Merged, overlay: str | os.PathLike[str]) -> None:
    """Merge one overlay file as ``juju deploy --overlay`` does.

    An application the bundle has is deep-merged; any other is added (a full application,
    validated later as the bundle's are); ``relations`` are added to the bundle's.
    """
    over = read_yaml(Path(overlay), str(overlay))
    ow = Where(str(overlay))
    if not isinstance(over, Mapping):
        raise ow.error("(top level)", f"expected a mapping, got {type_name(over)}")
    check_keys(ow, "", over, OVERLAY_KEYS)
    if "description" in over and not isinstance(over["description"], str):
        raise ow.error("description", f"expected a string, got {type_name(over['description'])}")
    apps = over.get("applications") or {}
    if not isinstance(apps, Mapping):
        raise ow.error("applications", f"expected a mapping, got {type_name(apps)}")
    for name, spec in apps.items():
        key_path = f"applications.{name}"
        if spec is None:
            raise ow.error(
                key_path,
                "null removes an application in a Juju overlay, which the lab does not "
                "support (expected a mapping: a new application, or keys to merge)",
            )
        if not isinstance(spec, Mapping):
            raise ow.error(key_path, f"expected a mapping, got {type_name(spec)}")
        if name in merged.specs:
            current = merged.specs[name]
            if not isinstance(current, Mapping):
                where = Where(ow.bundle, merged.overlaid)
                raise where.error(key_path, f"expected a mapping, got {type_name(current)}")
            merged.specs[name] = _merge(current, spec, key_path, ow.bundle, merged.overlaid)
        else:
            merged.specs[name] = spec
            merged.overlaid[key_path] = ow.bundle
    if over.get("relations") is not None:
        merged.relations.append((ow, over["relations"]))


def _charm_base_dir(where: Where, name: str) -> Path:
    """The directory a local ``charm`` path of application ``name`` is relative to.

    The directory of the file that set it: the bundle, or the overlay that added the
    application or changed its ``charm`` (as Juju resolves local charms of an overlay).
    """
    return Path(where.owner(f"applications.{name}.charm")).resolve().parent


def _all_relations(
    sources: Sequence[tuple[Where, Any]], apps: Mapping[str, Application]
) -> list[Relation]:
    """The relations of the bundle, then of each overlay; an overlay's repeat is dropped.

    A relation listed twice in one file is an error (as in the bundle); an overlay that
    lists a relation the bundle (or an earlier overlay) already has adds nothing, as with
    ``juju deploy --overlay``.
    """
    relations: list[Relation] = []
    seen: set[frozenset[Endpoint]] = set()
    for where, value in sources:
        for relation in load_relations(where, value, apps):
            pair = frozenset((relation.a, relation.b))
            if pair not in seen:
                seen.add(pair)
                relations.append(relation)
    return relations


def load_bundle(
    path: str | os.PathLike[str], overlays: Sequence[str | os.PathLike[str]] = ()
) -> Bundle:
    """Read and validate a bundle file; nothing is started.

    Args:
        path: the bundle file; local charm paths in it are relative to its directory.
        overlays: files applied in order as ``juju deploy --overlay`` does: an application
            of the bundle is deep-merged (e.g. options, ``num_units``), any other is added
            (its local charm path relative to the overlay's directory); ``relations`` are
            added to the bundle's (one the bundle already has is not added twice).

    Returns:
        The bundle, applications in bundle order, then those the overlays added.

    Raises:
        BundleError: the first problem, naming the file (the bundle, or the overlay that
            set the key), the key path and what is valid.
    """
    bundle_path = Path(path)
    where = Where(str(path))
    data = read_yaml(bundle_path, where.bundle)
    specs, default_base = _top_level(where, data)
    merged = _Merged(dict(specs), {}, [(where, data.get("relations"))])
    for overlay in overlays:
        _apply_overlay(merged, overlay)
    where = Where(where.bundle, merged.overlaid)
    apps = {
        name: load_application(where, name, spec, _charm_base_dir(where, name), default_base)
        for name, spec in merged.specs.items()
    }
    relations = _all_relations(merged.relations, apps)
    # Relations from overlays are named in errors about the merged ``relations``.
    for ow, _ in merged.relations[1:]:
        merged.overlaid[f"relations[{ow.bundle}]"] = ow.bundle
    check_subordinates(where, apps, relations)
    return Bundle(path=bundle_path, applications=apps, relations=relations)


def describe(bundle: Bundle) -> str:
    """A short human summary of the bundle: applications, units and relations.

    Args:
        bundle: a bundle from :func:`load_bundle`.

    Returns:
        Several lines of text, no trailing newline.
    """
    units = sum(app.num_units for app in bundle.applications.values())
    lines = [
        f"{bundle.path}: {len(bundle.applications)} application(s), {units} unit(s), "
        f"{len(bundle.relations)} relation(s)"
    ]
    for app in bundle.applications.values():
        charm = app.metadata.get("name", app.charm_dir.name)
        if app.subordinate:
            principals = [
                str(other.application)
                for rel in bundle.relations
                for mine, other in ((rel.a, rel.b), (rel.b, rel.a))
                if rel.scope == "container" and mine.application == app.name
            ]
            size = f"subordinate of {', '.join(principals)}"
        else:
            size = f"{app.num_units} unit(s)"
        options = ", ".join(f"{key}={value}" for key, value in app.options.items())
        lines.append(
            f"  {app.name}: charm {charm}, {size}, base {app.base or 'default'}"
            + (f", options: {options}" if options else "")
        )
    for rel in bundle.relations:
        lines.append(f"  relation {rel.a} - {rel.b} ({rel.interface}, {rel.scope} scope)")
    return "\n".join(lines)
