"""The lab's model: what Juju keeps between hooks, and the hooks it queues from it, in its order.

A :class:`Model` lives under a root directory (next to its :class:`~lab.machines.Lab`) in
``model.json``, so every ``lab`` command is a fresh process that picks up where the last one
stopped. It keeps what a Juju controller keeps:

* applications (charm directory, config, leader, application status) and units (machine,
  principal for a subordinate, life, workload and agent status, opened ports, the hooks
  still to run);
* relations (peer, regular, container-scoped) with one databag per application and per unit,
  their life (``dying`` once removed, until every unit in them has run ``relation-broken``),
  and for every unit which remote units it has seen join (``relation-list``);
* Juju secrets: owner (a unit or an application), revisions, the owner's label, grants per
  relation, and per observer the revision it tracks and its own label.

It derives the next hooks the way Juju does, and queues them per unit (the runner,
:mod:`lab.runner`, fires them): ``install`` → ``relation-created`` → ``leader-elected`` →
``config-changed`` → ``start`` → ``relation-joined``/``-changed`` with every unit in scope;
a changed unit or application databag → ``relation-changed`` at the units that see it; a new
secret revision → ``secret-changed`` at the units that track it; on removal
``relation-departed`` on both sides → ``relation-broken`` → ``stop`` → ``remove``, then the
machine is wiped and, if the leader went, another unit is elected (``leader-elected``); on
``remove-relation`` every unit of both sides that took part departs every remote unit it has
seen join, then gets ``relation-broken``, and the relation is gone with its databags and
relation-scoped secret grants (a container-scoped one takes the subordinate's units on those
principals with it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lab import build
from lab import bundle as bundles
from lab.machines import Lab, Machine

STATE_FILE = "model.json"
LOCK_FILE = "model.lock"
# The model config the lab knows, with Juju's defaults (``juju model-config``).
UPDATE_STATUS_INTERVAL = "update-status-hook-interval"
MODEL_CONFIG = {UPDATE_STATUS_INTERVAL: "5m"}
INTERVAL_BOUNDS = (1.0, 3600.0)  # Juju accepts 1s to 60m for update-status-hook-interval

# Internal steps that are not hooks: entering and leaving relation scope, the unit's end.
ENTER, LEAVE, GONE = "_enter", "_leave", "_gone"


class ModelError(Exception):
    """A lab command cannot be carried out (the message says why and what to do)."""


def unit_number(unit: str) -> int:
    """``lxd/3`` -> 3."""
    return int(unit.rsplit("/", 1)[1])


def parse_duration(text: str) -> float:
    """Seconds in a duration as Juju (Go's ``time.ParseDuration``) writes it: ``1m30s``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ModelError(f"{text!r} is not a duration: write it as 30s, 5m or 1m30s")
    return sum(float(number) * units[unit] for number, unit in parts)


def make_event(name: str, **fields: Any) -> dict[str, Any]:
    """A queued event: its hook (or internal step) name and fields (relation, remote unit...)."""
    return {"name": name, **{k: v for k, v in fields.items() if v is not None}}


class Model:
    """Applications, units, relations and secrets of one lab model, persisted under ``root``."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.path = os.path.join(self.root, STATE_FILE)
        with open(self.path) as f:
            self.s: dict[str, Any] = json.load(f)
        self.lab = Lab.open(self.root)

    @property
    def seed(self) -> int:
        """What orders the hooks that start together (see :meth:`create`)."""
        return int(self.s.get("seed", 0))

    @property
    def order(self) -> str:
        """How the runner orders hooks, for messages (see :meth:`create`)."""
        if self.s.get("lockstep", True):
            return f"seed {self.seed} (lab deploy --seed {self.seed} repeats it)"
        return (
            f"machines run freely, seed {self.seed} (lab deploy --seed {self.seed} "
            "runs them in lockstep rounds that repeat an order)"
        )

    @property
    def update_status_interval(self) -> float:
        """Seconds between a unit's ``update-status`` hooks (the model's config)."""
        return parse_duration(self.model_config()[UPDATE_STATUS_INTERVAL])

    def model_config(self, values: Mapping[str, str] | None = None) -> dict[str, str]:
        """The model's config after setting ``values`` (checked as Juju checks them)."""
        config = {**MODEL_CONFIG, **self.s.get("config", {})}
        for key, value in (values or {}).items():
            if key not in MODEL_CONFIG:
                known = ", ".join(MODEL_CONFIG)
                raise ModelError(f"unknown model config key {key!r} (keys: {known})")
            low, high = INTERVAL_BOUNDS
            if not low <= parse_duration(value) <= high:
                raise ModelError(f"{key}={value}: give a duration from 1s to 60m")
            config[key] = value
        if values:
            self.s["config"] = config
            self.save()
        return config

    def expire_timers(self) -> None:
        """Every unit's ``update-status`` timer is due now, as if its interval had passed."""
        for unit in self.units.values():
            unit["timer"] = 0.0
        self.save()

    # -- persistence ---------------------------------------------------------------------

    @staticmethod
    def exists(root: str) -> bool:
        """Whether a model lives under ``root``."""
        return os.path.exists(os.path.join(root, STATE_FILE))

    @classmethod
    def create(cls, root: str, seed: int | None = None) -> Model:
        """A new, empty model (and lab) under ``root``.

        ``seed`` (else ``LAB_SEED``) makes the runner go in lockstep rounds that it orders
        (:meth:`_pick`): the same seed gives the same interleaving. Without one the machines
        run freely, and a random seed only picks which unit of a machine goes next.
        """
        if seed is None and os.environ.get("LAB_SEED"):
            seed = int(os.environ["LAB_SEED"])
        lockstep = seed is not None
        if seed is None:
            seed = random.randrange(1 << 16)  # noqa: S311
        if cls.exists(root):
            raise ModelError(f"a model already exists under {root}: 'lab destroy' it first")
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o711)  # noqa: S103 - LXD's unprivileged containers traverse it
        Lab(root)
        state = {
            # Juju's model name and uuid: fixed for the model's life (charms derive names
            # and topology labels from them).
            "model": {"name": "lab", "uuid": str(uuid.uuid4())},
            "applications": {},
            "units": {},
            "relations": {},
            "secrets": {},
            "next_relation_id": 0,
            "hooks_run": 0,
            "seed": seed,
            "lockstep": lockstep,  # rounds that a seed repeats (else: free-running)
            "rounds": 0,
            "config": dict(MODEL_CONFIG),
        }
        with open(os.path.join(root, STATE_FILE), "w") as f:
            json.dump(state, f)
        return cls(root)

    def save(self) -> None:
        """Write the model (atomically: a reader never sees half of it)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.s, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    @staticmethod
    @contextlib.contextmanager
    def locked(root: str) -> Iterator[None]:
        """Hold the model's lock: one command changes a model at a time."""
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, LOCK_FILE), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ModelError(f"another lab command is running on {root}") from None
            yield

    # -- lookups ---------------------------------------------------------------------------

    @property
    def apps(self) -> dict[str, Any]:
        """Application name -> record."""
        return self.s["applications"]

    @property
    def units(self) -> dict[str, Any]:
        """Unit name -> record."""
        return self.s["units"]

    @property
    def relations(self) -> dict[str, Any]:
        """Relation id (as a string) -> record."""
        return self.s["relations"]

    @property
    def secrets(self) -> dict[str, Any]:
        """Secret id -> record."""
        return self.s["secrets"]

    def unit(self, name: str) -> dict[str, Any]:
        """The record of unit ``name`` (:class:`ModelError` naming the units if unknown)."""
        if name not in self.units:
            raise ModelError(f"no unit {name!r} (units: {', '.join(self.units) or 'none'})")
        return self.units[name]

    def app(self, name: str) -> dict[str, Any]:
        """The record of application ``name`` (:class:`ModelError` if unknown)."""
        if name not in self.apps:
            raise ModelError(f"no application {name!r} (applications: {', '.join(self.apps)})")
        return self.apps[name]

    def machine_of(self, unit: str) -> Machine:
        """The lab machine unit ``unit`` runs on."""
        return self.lab.machine(self.unit(unit)["machine"])

    def down(self, unit: str) -> bool:
        """Whether unit ``unit``'s machine is down (no hook runs there)."""
        return self.units[unit]["machine"] in self.s.get("down", [])

    def kill_machine(self, machine: str) -> None:
        """Lose ``machine`` as Juju loses one: every process killed, no more hooks there.

        Its units' agents are ``lost``; their queued hooks wait for :meth:`start_machine`.
        """
        self.lab.machine(machine)  # it exists
        left = self.lab.kill_machine(machine)
        if left:
            raise ModelError(f"machine {machine}: processes {left} survived SIGKILL")
        if machine not in self.s.setdefault("down", []):
            self.s["down"].append(machine)
        self.save()

    def start_machine(self, machine: str) -> None:
        """Bring ``machine`` back, as after a reboot: each of its units runs ``start``."""
        if machine not in self.s.get("down", []):
            raise ModelError(f"machine {machine} is not down")
        self.s["down"].remove(machine)
        for name, unit in self.units.items():
            if unit["machine"] == machine and unit["started"]:
                self.queue(name, make_event("start"), front=True)
        self.save()

    def alive_units(self, app: str) -> list[str]:
        """Units of ``app`` that are not being removed, by number."""
        found = [n for n, u in self.units.items() if u["app"] == app and u["life"] == "alive"]
        return sorted(found, key=unit_number)

    def application(self, name: str) -> bundles.Application:
        """Application ``name`` as :mod:`lab.bundle` describes it (charm metadata included).

        Its options were checked when they were set; they are not checked again here.
        """
        record = self.app(name)
        return bundles.charm_application(name, record["charm_dir"], record["options"])

    # -- relation geometry -----------------------------------------------------------------

    def local_endpoint(self, rid: str, app: str) -> dict[str, Any]:
        """``app``'s end of relation ``rid``: ``{"app", "endpoint"}``."""
        ends = self.relations[rid]["endpoints"]
        return next(e for e in ends if e["app"] == app)

    def _remote_app(self, rid: str, app: str) -> str:
        ends = self.relations[rid]["endpoints"]
        return next((e["app"] for e in ends if e["app"] != app), app)

    def _visible(self, rid: str, a: str, b: str) -> bool:
        """Whether units ``a`` and ``b`` (different units) see each other in relation ``rid``."""
        relation = self.relations[rid]
        ua, ub = self.units[a], self.units[b]
        if self._remote_app(rid, ua["app"]) != ub["app"]:
            return False
        if relation["scope"] != "container" or len(relation["endpoints"]) == 1:
            return True
        return ua["principal"] == b or ub["principal"] == a

    def queue(self, unit: str, event: dict[str, Any], front: bool = False) -> None:
        """Queue ``event`` for ``unit`` (at the front: it runs next)."""
        queue = self.units[unit]["queue"]
        if event in queue and not event["name"].startswith("_"):
            return  # Juju coalesces a hook that is already pending
        if front:
            queue.insert(0, event)
        else:
            queue.append(event)

    # -- building the model ----------------------------------------------------------------

    def add_application(self, app: bundles.Application) -> None:
        """Record application ``app`` (no units yet), with its peer relations."""
        if app.name in self.apps:
            raise ModelError(f"application {app.name!r} already exists")
        meta = app.metadata
        endpoints = {
            name: {"role": role, "interface": spec["interface"], "scope": spec.get("scope")}
            for name, (role, spec) in bundles.endpoints(meta).items()
        }
        self.apps[app.name] = {
            "charm": meta.get("name", app.charm_dir.name),
            "charm_dir": str(app.charm_dir),
            # where hooks run from: the charm as scripts/build-charms builds it (the lab's
            # test charms too)
            "run_dir": str(build.build_dir(app.charm_dir)),
            "subordinate": app.subordinate,
            "base": app.base,  # its units' machines present it (a subordinate: its principal's)
            "options": dict(app.options),
            "config": app.config(),
            "endpoints": endpoints,
            "bindings": sorted([*endpoints, *(meta.get("extra-bindings") or {})]),
            "actions": meta.get("actions") or {},
            "leader": None,
            "next_unit": 0,
            "status": ["unknown", ""],
        }
        for name, spec in endpoints.items():
            if spec["role"] == "peers":
                self._add_relation([(app.name, name)], spec["interface"], "global")

    def _add_relation(self, ends: list[tuple[str, str]], interface: str, scope: str) -> str:
        rid = str(self.s["next_relation_id"])
        self.s["next_relation_id"] += 1
        self.relations[rid] = {
            "endpoints": [{"app": a, "endpoint": e} for a, e in ends],
            "interface": interface,
            "scope": scope,
            "app_data": {a: {} for a, _ in ends},
            "members": [],
            "life": "alive",
        }
        return rid

    def _dying(self, rid: str) -> bool:
        """Whether relation ``rid`` is being removed (models saved before it had no life)."""
        return self.relations[rid].get("life", "alive") != "alive"

    def _describe(self, rid: str) -> str:
        """``app:endpoint - app:endpoint`` (a peer relation: ``app:endpoint``)."""
        return " - ".join(f"{e['app']}:{e['endpoint']}" for e in self.relations[rid]["endpoints"])

    def relate(self, relation: bundles.Relation) -> str:
        """Add ``relation``; units already running get ``relation-created`` and join it."""
        pair = {
            (relation.a.application, relation.a.name),
            (relation.b.application, relation.b.name),
        }
        for rid, record in self.relations.items():
            if {(e["app"], e["endpoint"]) for e in record["endpoints"]} == pair:
                if self._dying(rid):
                    raise ModelError(
                        f"relation {relation.a} - {relation.b} is being removed: "
                        "'lab wait' until it is gone, then relate again"
                    )
                raise ModelError(f"relation {relation.a} - {relation.b} already exists")
        ends = [
            (relation.a.application, relation.a.name),
            (relation.b.application, relation.b.name),
        ]
        rid = self._add_relation(ends, relation.interface, relation.scope)
        for name, unit in list(self.units.items()):
            if unit["app"] in (relation.a.application, relation.b.application):
                if unit["life"] == "alive" and unit["started"]:
                    self.queue(name, make_event("relation_created", relation=rid))
                    self.queue(name, make_event(ENTER, relation=rid))
        return rid

    def _app_relations(self, app: str) -> list[str]:
        return [
            rid
            for rid, r in self.relations.items()
            if any(e["app"] == app for e in r["endpoints"])
        ]

    def add_unit(self, app: str, machine: str | None = None, principal: str | None = None) -> str:
        """A new unit of ``app``: on a new machine, or on ``machine`` (a subordinate).

        Its lifecycle hooks are queued in Juju's order; it becomes leader if the
        application has none.
        """
        record = self.app(app)
        name = f"{app}/{record['next_unit']}"
        record["next_unit"] += 1
        if machine is None:
            machine = self._new_machine(record.get("base"))
        self.units[name] = {
            "app": app,
            "machine": machine,
            "principal": principal,
            "life": "alive",
            "started": False,
            "status": ["waiting", "agent initialising"],
            "agent": "allocating",
            "error": None,
            "ports": [],
            "queue": [],
            "attempts": 0,
            "retry_at": 0.0,
            "timer": 0.0,  # when its update-status timer last started (see _fire_timers)
            "relations": [],  # relation ids the unit takes part in (relation-created ran)
            "seen": {},  # relation id -> remote units it has seen join
            "data": {},  # relation id -> its unit databag
            "address": self.lab.machine(machine).address,
        }
        self.queue(name, make_event("install"))
        joining = [rid for rid in self._app_relations(app) if not self._dying(rid)]
        for rid in joining:
            self.queue(name, make_event("relation_created", relation=rid))
        if record["leader"] is None:
            record["leader"] = name
            self.queue(name, make_event("leader_elected"))
        for step in ("config_changed", "start"):
            self.queue(name, make_event(step))
        for rid in joining:
            self.queue(name, make_event(ENTER, relation=rid))
        return name

    def _new_machine(self, base: str | None) -> str:
        """A new machine of ``base``, named by its number as Juju's are (never reused)."""
        self.save()  # the lab records the machine at once: keep the model in step
        return self.lab.create_machine(str(self.lab.next_index), base=base).name

    def deploy(self, bundle: bundles.Bundle) -> None:
        """Record every application, relation and unit of ``bundle``; hooks are queued."""
        for app in bundle.applications.values():
            self.add_application(app)
        for relation in bundle.relations:
            self.relate(relation)
        for app in bundle.applications.values():
            for _ in range(app.num_units):
                self.add_unit(app.name)
        self.save()

    def remove_unit(self, name: str) -> None:
        """Start removing unit ``name`` (a principal) and its subordinates."""
        unit = self.unit(name)
        if unit["principal"] is not None:
            raise ModelError(
                f"{name} is a subordinate: remove its principal {unit['principal']} "
                "(or the relation) instead"
            )
        if unit["life"] != "alive":
            raise ModelError(f"{name} is already being removed")
        for sub, record in self.units.items():
            if record["principal"] == name:
                self._start_leaving(sub)
        self._start_leaving(name)
        self.save()

    def _start_leaving(self, name: str) -> None:
        unit = self.units[name]
        unit["life"] = "dying"
        unit["queue"] = [e for e in unit["queue"] if e["name"] == "install"]
        for rid in unit["relations"]:
            self.queue(name, make_event(LEAVE, relation=rid))
        for rid in unit["relations"]:
            self.queue(name, make_event("relation_broken", relation=rid))
        for step in ("stop", "remove", GONE):
            self.queue(name, make_event(step))

    def find_relation(self, a: str, b: str) -> str:
        """The id of the relation ``a`` - ``b`` (``app[:endpoint]`` each).

        The pair is resolved from the charms' endpoints as ``lab relate`` resolves it, then
        looked up among the model's relations.

        Raises:
            ModelError: a peer relation (those cannot be removed), or no such relation.
            lab.bundle.BundleError: an unknown application or endpoint, no or several pairs.
        """
        sides = [side.partition(":") for side in (a, b)]
        for (app, _, endpoint), text in zip(sides, (a, b), strict=True):
            spec = (self.apps.get(app) or {}).get("endpoints", {}).get(endpoint)
            if spec and spec["role"] == "peers":
                raise ModelError(f"{text} is a peer relation: peer relations cannot be removed")
        if sides[0][0] == sides[1][0] and sides[0][0] in self.apps:
            raise ModelError(
                f"{a} - {b}: an application relates to itself only over its peer relations, "
                "which cannot be removed"
            )
        apps = {name: self.application(name) for name in self.apps}
        wanted = bundles.relation_between(apps, a, b, verb="remove-relation")
        pair = {(wanted.a.application, wanted.a.name), (wanted.b.application, wanted.b.name)}
        for rid, record in self.relations.items():
            if {(e["app"], e["endpoint"]) for e in record["endpoints"]} == pair:
                return rid
        existing = [
            self._describe(r) for r, rel in self.relations.items() if len(rel["endpoints"]) > 1
        ]
        raise ModelError(
            f"no relation {wanted.a} - {wanted.b} (relations: {', '.join(existing) or 'none'})"
        )

    def remove_relation(self, rid: str) -> None:
        """Start removing relation ``rid`` (``juju remove-relation``).

        Every living unit that took part in it (its ``relation-created`` ran) gets
        ``relation-departed`` for each remote unit it has seen join, in name order as Juju's
        uniter departs them and with ``JUJU_DEPARTING_UNIT`` that remote unit, then
        ``relation-broken``; the relation's hooks still queued are dropped (nobody joins a
        dying relation; a unit that never saw a remote unit join is not told it departs).
        Once the last unit has run ``relation-broken`` the relation is gone, with its
        databags and the secret grants scoped to it (:meth:`_forget_relation`).

        A container-scoped relation also removes the subordinate's units on the principals
        (unless another container-scoped relation ties the two applications): they leave all
        their relations, then ``stop`` and ``remove``, as a removed unit does.

        Raises:
            ModelError: a peer relation, or one already being removed.
        """
        relation = self.relations[rid]
        if len(relation["endpoints"]) == 1:
            raise ModelError(f"{self._describe(rid)} is a peer relation: it cannot be removed")
        if self._dying(rid):
            raise ModelError(f"relation {self._describe(rid)} is already being removed")
        relation["life"] = "dying"
        if relation["scope"] == "container":
            self._remove_subordinates(rid)
        apps = {e["app"] for e in relation["endpoints"]}
        for name, unit in self.units.items():
            if unit["app"] not in apps or unit["life"] != "alive":
                continue  # a dying unit already has its departed and broken hooks queued
            held = unit["queue"][:1] if unit["agent"] == "error" else []  # retried first
            rest = unit["queue"][len(held) :]
            unit["queue"] = held + [e for e in rest if e.get("relation") != rid]
            if rid in unit["relations"]:
                self.queue(name, make_event(LEAVE, relation=rid))
                self.queue(name, make_event("relation_broken", relation=rid))
        self._forget_if_done(rid)
        self.save()

    def _remove_subordinates(self, rid: str) -> None:
        """The subordinate's units on the principals of container-scoped ``rid`` go."""
        ends = [e["app"] for e in self.relations[rid]["endpoints"]]
        subs = [app for app in ends if self.apps[app]["subordinate"]]
        if len(subs) != 1:
            return  # two subordinates: neither is the other's principal
        (sub_app,) = subs
        (principal_app,) = [app for app in ends if app != sub_app]
        for other, record in self.relations.items():
            if other != rid and record["scope"] == "container" and not self._dying(other):
                if {e["app"] for e in record["endpoints"]} == set(ends):
                    return  # still tied by another container-scoped relation
        for name, unit in self.units.items():
            principal = self.units.get(unit["principal"] or "")
            if unit["app"] == sub_app and unit["life"] == "alive":
                if principal is not None and principal["app"] == principal_app:
                    self._start_leaving(name)

    def _forget_if_done(self, rid: str) -> None:
        """Forget dying relation ``rid`` once no unit takes part in it any more."""
        if rid not in self.relations or not self._dying(rid):
            return
        if not any(rid in unit["relations"] for unit in self.units.values()):
            self._forget_relation(rid)

    def _forget_relation(self, rid: str) -> None:
        """Relation ``rid`` is gone: its databags, and the secret grants scoped to it.

        A unit that no other grant lets see a secret stops observing it (no
        ``secret-changed``; the secret is no longer in its hooks).
        """
        del self.relations[rid]
        for secret in self.secrets.values():
            secret["grants"].pop(rid, None)
            granted = {n for names in secret["grants"].values() for n in names}
            for observer in list(secret["observers"]):
                if observer not in granted and observer.rsplit("/", 1)[0] not in granted:
                    del secret["observers"][observer]

    def set_config(self, app: str, values: Mapping[str, Any]) -> None:
        """Change ``app``'s options (validated like a bundle's); ``config-changed`` everywhere."""
        record = self.app(app)
        options = {**record["options"], **values}
        checked = bundles.charm_application(app, record["charm_dir"], options)
        record["options"] = dict(checked.options)
        record["config"] = checked.config()
        for name in self.alive_units(app):
            self.queue(name, make_event("config_changed"))
        self.save()

    def refresh(self, app: str) -> None:
        """Build ``app``'s charm again; ``upgrade-charm`` then ``config-changed`` on its units.

        Through dispatch a unit's charm directory gets the new build's code at its next
        hook (ops' ``.unit-state.db`` stays), as ``juju refresh`` replaces it.
        """
        record = self.app(app)
        record["run_dir"] = str(build.build_dir(Path(record["charm_dir"])))
        for name in self.alive_units(app):
            self.queue(name, make_event("upgrade_charm"))
            self.queue(name, make_event("config_changed"))
        self.save()

    def resolved(self, name: str) -> None:
        """Retry unit ``name``'s failed hook (``juju resolved``)."""
        unit = self.unit(name)
        if unit["agent"] != "error":
            raise ModelError(f"{name} is not in error")
        unit["attempts"], unit["retry_at"], unit["agent"] = 0, 0.0, "idle"
        self.save()

    # -- hook requests ---------------------------------------------------------------------

    def _relation_request(self, name: str, rid: str) -> dict[str, Any]:
        unit = self.units[name]
        relation = self.relations[rid]
        local = self.local_endpoint(rid, unit["app"])
        remote_app = self._remote_app(rid, unit["app"])
        peer = len(relation["endpoints"]) == 1
        scope = self.apps[unit["app"]]["endpoints"][local["endpoint"]]["scope"]
        kind = "peer" if peer else ("subordinate" if scope == "container" else "regular")
        return {
            "kind": kind,
            "endpoint": local["endpoint"],
            "id": int(rid),
            "interface": relation["interface"],
            "remote_app": remote_app,
            "local_app_data": relation["app_data"][unit["app"]],
            "local_unit_data": unit["data"].get(rid, {}),
            "remote_app_data": relation["app_data"][remote_app],
            "remote_units": {
                str(unit_number(v)): self.units[v]["data"].get(rid, {})
                for v in unit["seen"].get(rid, [])
                if v in self.units
            },
        }

    def _secret_request(self, name: str, sid: str) -> dict[str, Any] | None:
        """Secret ``sid`` as unit ``name`` sees it (``None``: it does not, or it is gone)."""
        secret = self.secrets.get(sid)
        if secret is None:
            return None
        unit = self.units[name]
        latest = secret["revision"]
        base = {"id": sid, "latest": secret["contents"][str(latest)], "latest_revision": latest}
        owner = "unit" if secret["owner"] == name else None
        if secret["owner"] == unit["app"]:
            owner = "app"
        if owner is not None:
            grants = {rid: names for rid, names in secret["grants"].items()}
            return {
                **base,
                "owner": owner,
                "label": secret["label"],
                "tracked": base["latest"],
                "tracked_revision": latest,
                "grants": grants,
            }
        granted = {n for names in secret["grants"].values() for n in names}
        if name not in granted and unit["app"] not in granted:
            return None
        seen = secret["observers"].get(name, {"revision": latest, "label": None})
        return {
            **base,
            "label": seen["label"],
            "tracked": secret["contents"][str(seen["revision"])],
            "tracked_revision": seen["revision"],
        }

    def request(self, name: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """What unit ``name``'s hook for ``event`` is given (see :mod:`lab.dispatch`)."""
        unit = self.units[name]
        app = self.apps[unit["app"]]
        hook_event = dict(event)
        if "departing_unit" in hook_event:
            hook_event["departing_unit_name"] = hook_event["departing_unit"]
        for key in ("remote_unit", "departing_unit"):
            if key in hook_event:
                hook_event[key] = unit_number(hook_event[key])
        if "relation" in hook_event:
            hook_event["relation_id"] = int(hook_event.pop("relation"))
        secrets = [self._secret_request(name, sid) for sid in self.secrets]
        return {
            "charm_dir": app["run_dir"],
            "app": unit["app"],
            "unit_id": unit_number(name),
            "machine": unit["machine"],
            "principal": unit["principal"],
            "leader": app["leader"] == name,
            "config": app["config"],
            "bindings": {binding: unit["address"] for binding in app["bindings"]},
            "relations": [self._relation_request(name, rid) for rid in unit["relations"]],
            "secrets": [s for s in secrets if s is not None],
            "model": self.s.get("model", {}),
            "event": hook_event,
            "ports": unit["ports"],  # Juju keeps them open until the charm closes them
            # What the hook tools (lab.hooktools) answer from.
            "endpoints": sorted(app["endpoints"]),
            "app_units": {
                n: ("active" if u["life"] == "alive" else "dying")
                for n, u in self.units.items()
                if u["app"] == unit["app"]
            },
            "status": unit["status"],
            "app_status": app["status"],
            "state": unit.get("state", {}),
        }

    # -- applying a hook's result ------------------------------------------------------------

    def _apply_relation(self, name: str, rid: str, out: Mapping[str, Any]) -> bool:
        unit = self.units[name]
        relation = self.relations[rid]
        changed = False
        # A dying relation changes nothing for the others: Juju's uniter sees it empty.
        dying = self._dying(rid)
        data = out["local_unit_data"]
        if data != unit["data"].get(rid, {}):
            unit["data"][rid] = data
            changed = True
            for other in [] if dying else list(self.units):
                if name in self.units[other]["seen"].get(rid, []):
                    self.queue(
                        other, make_event("relation_changed", relation=rid, remote_unit=name)
                    )
        app_data = out.get("local_app_data")
        if app_data is not None and app_data != relation["app_data"][unit["app"]]:
            relation["app_data"][unit["app"]] = app_data
            changed = True
            for other in [] if dying else relation["members"]:
                # A unit that has seen no remote unit join yet reads the application data
                # in the relation-changed that follows its first relation-joined (ops and
                # Scenario have no relation-changed without any remote unit).
                seen = self.units[other]["seen"].get(rid, [])
                if other != name and seen and self._visible(rid, name, other):
                    self.queue(other, make_event("relation_changed", relation=rid))
        return changed

    def _apply_owned_secret(self, name: str, out: Mapping[str, Any]) -> bool:
        unit = self.units[name]
        owner = name if out["owner"] == "unit" else unit["app"]
        sid = out["id"]
        secret = self.secrets.get(sid)
        if secret is None:
            self.secrets[sid] = {
                "owner": owner,
                "revision": 1,
                "contents": {"1": out["latest"]},
                "label": out["label"],
                "grants": out["grants"],
                "observers": {},
            }
            return True
        before = json.dumps(secret, sort_keys=True)
        if out["latest"] != secret["contents"][str(secret["revision"])]:
            secret["revision"] += 1
            secret["contents"][str(secret["revision"])] = out["latest"]
            for observer, seen in secret["observers"].items():
                if observer in self.units and seen["revision"] < secret["revision"]:
                    self.queue(observer, make_event("secret_changed", secret_id=sid))
        secret["label"], secret["grants"] = out["label"], out["grants"]
        return json.dumps(secret, sort_keys=True) != before

    def _apply_secrets(self, name: str, request: Mapping[str, Any], result: Mapping[str, Any]):
        unit = self.units[name]
        leader = self.apps[unit["app"]]["leader"] == name
        changed = False
        returned = {s["id"]: s for s in result.get("secrets", [])}
        for given in request["secrets"]:
            manages = given.get("owner") == "unit" or (given.get("owner") == "app" and leader)
            if manages and given["id"] not in returned:
                del self.secrets[given["id"]]  # the owner removed it
                changed = True
        for sid, out in returned.items():
            if out["owner"] == "unit" or (out["owner"] == "app" and leader):
                changed |= self._apply_owned_secret(name, out)
            elif out["owner"] is None and sid in self.secrets:
                secret = self.secrets[sid]
                tracked = next(
                    rev
                    for rev, content in sorted(
                        secret["contents"].items(), key=lambda kv: -int(kv[0])
                    )
                    if content == out["tracked"]
                )
                seen = {"revision": int(tracked), "label": out["label"]}
                changed |= secret["observers"].get(name) != seen
                secret["observers"][name] = seen
        return changed

    def apply(self, name: str, request: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
        """Keep what Juju keeps of a successful hook; queue the hooks it causes.

        Returns:
            Whether anything changed (databags, secrets, statuses, ports).
        """
        unit = self.units[name]
        app = self.apps[unit["app"]]
        changed = False
        for rid, out in result["relations"].items():
            if rid in self.relations:
                changed |= self._apply_relation(name, rid, out)
        changed |= self._apply_secrets(name, request, result)
        status = list(result["unit_status"])
        if status != unit["status"] or result["opened_ports"] != unit["ports"]:
            unit["status"], unit["ports"] = status, result["opened_ports"]
            changed = True
        if "state" in result:  # Juju's unit state (state-set): kept, no hook follows from it
            unit["state"] = result["state"]
        if result.get("app_status") and list(result["app_status"]) != app["status"]:
            app["status"] = list(result["app_status"])
            changed = True
        return changed

    # -- internal steps -------------------------------------------------------------------

    def _enter(self, name: str, rid: str) -> None:
        """Unit ``name`` enters relation ``rid``'s scope.

        It and every unit in scope that it sees get ``relation-joined`` and
        ``relation-changed`` for each other.
        """
        if rid not in self.relations or self._dying(rid):
            return  # removed before this unit could enter it
        relation = self.relations[rid]
        if name in relation["members"]:
            return
        for other in relation["members"]:
            if self._visible(rid, name, other):
                for a, b in ((name, other), (other, name)):
                    self.queue(a, make_event("relation_joined", relation=rid, remote_unit=b))
                    self.queue(a, make_event("relation_changed", relation=rid, remote_unit=b))
        relation["members"].append(name)
        self._add_subordinates(name, rid)

    def _add_subordinates(self, name: str, rid: str) -> None:
        """A principal entering a container-scoped relation gets its subordinate unit."""
        relation = self.relations[rid]
        unit = self.units[name]
        sub_app = self._remote_app(rid, unit["app"])
        if relation["scope"] != "container" or unit["principal"] is not None:
            return
        if not self.apps[sub_app]["subordinate"] or unit["life"] != "alive":
            return
        if not any(
            u["principal"] == name and u["app"] == sub_app and u["life"] == "alive"
            for u in self.units.values()
        ):  # one that is still going (its relation was removed) does not count
            self.add_unit(sub_app, machine=unit["machine"], principal=name)

    def _leave(self, name: str, rid: str) -> None:
        """Unit ``name`` leaves relation ``rid``'s scope: departed hooks on both sides.

        It gets ``relation-departed`` for every unit it has seen join and not seen depart
        (in scope or not); every unit in scope that has seen it gets one for it, ahead of its
        own teardown when it is dying too (its queue ends with its removal).

        From a dying relation (``remove-relation``) every unit leaves on its own: it departs
        the units it has seen in name order (Juju's uniter sorts them), and the departing
        unit is the remote one unless this unit is dying itself (as Juju's uniter decides).
        """
        relation = self.relations[rid]
        if name in relation["members"]:
            relation["members"].remove(name)
        dying = self._dying(rid)
        for other in [] if dying else relation["members"]:
            if name in self.units[other]["seen"].get(rid, []):
                event = make_event(
                    "relation_departed", relation=rid, remote_unit=name, departing_unit=name
                )
                self.queue(other, event, front=self.units[other]["life"] != "alive")
        seen = self.units[name]["seen"].get(rid, [])
        alive = self.units[name]["life"] == "alive"
        departing = [
            make_event(
                "relation_departed",
                relation=rid,
                remote_unit=other,
                departing_unit=other if dying and alive else name,
            )
            for other in (sorted(seen) if dying else seen)
        ]
        for event in reversed(departing):
            self.queue(name, event, front=True)

    def _gone(self, name: str) -> bool:
        """Unit ``name`` has run ``remove``: forget it, wipe its machine, elect a new leader.

        Returns:
            False while the unit's subordinates are still there (it waits for them).
        """
        if any(u["principal"] == name for u in self.units.values()):
            return False
        unit = self.units.pop(name)
        for relation in self.relations.values():
            if name in relation["members"]:
                relation["members"].remove(name)
        for sid in [s for s, record in self.secrets.items() if record["owner"] == name]:
            del self.secrets[sid]
        for secret in self.secrets.values():
            secret["observers"].pop(name, None)
        if not any(u["machine"] == unit["machine"] for u in self.units.values()):
            self.save()
            left = self.lab.destroy_machine(unit["machine"])
            if left:
                raise ModelError(f"machine {unit['machine']} could not be wiped: {left}")
        app = self.apps[unit["app"]]
        if app["leader"] == name:
            alive = self.alive_units(unit["app"])
            app["leader"] = alive[0] if alive else None
            if alive:
                self.queue(alive[0], make_event("leader_elected"))
        return True

    def internal(self, name: str, event: Mapping[str, Any]) -> bool:
        """Carry out an internal step; False when it has to wait."""
        if event["name"] == ENTER:
            self._enter(name, event["relation"])
        elif event["name"] == LEAVE:
            self._leave(name, event["relation"])
        else:
            return self._gone(name)
        return True

    def skip(self, name: str, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` no longer applies (a remote unit left before it could run).

        A secret event whose secret was removed (or is no longer granted) since it was
        queued is dropped too: Juju has nothing to tell the unit about it.
        """
        if "secret_id" in event:
            return self._secret_request(name, event["secret_id"]) is None
        rid = event.get("relation")
        if rid is None:
            return False
        if rid not in self.relations:
            return True
        members = self.relations[rid]["members"]
        remote = event.get("remote_unit")
        if remote is None:  # an application databag changed
            return event["name"] == "relation_changed" and name not in members
        seen = self.units[name]["seen"].get(rid, [])
        if event["name"] == "relation_joined":
            return remote not in members or remote in seen
        return remote not in seen

    def before_hook(self, name: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """What Juju changes as the hook starts (``relation-list`` and relation membership).

        Returns what :meth:`undo_before_hook` needs to take it back (the hook failed).
        """
        unit = self.units[name]
        rid = event.get("relation")
        undo = {
            "relations": list(unit["relations"]),
            "rid": rid,
            "data": json.dumps(unit["data"].get(rid)),
            "seen": json.dumps(unit["seen"].get(rid)),
        }
        if event["name"] == "relation_created" and rid not in unit["relations"]:
            unit["relations"].append(rid)
            address = unit["address"]  # what Juju puts in every unit databag
            unit["data"].setdefault(
                rid,
                {
                    "ingress-address": address,
                    "private-address": address,
                    "egress-subnets": f"{address}/32",
                },
            )
        elif event["name"] == "relation_joined":
            unit["seen"].setdefault(rid, []).append(event["remote_unit"])
        elif event["name"] == "relation_departed":
            unit["seen"][rid].remove(event["remote_unit"])
        return undo

    def undo_before_hook(self, name: str, undo: Mapping[str, Any]) -> None:
        """Take back what :meth:`before_hook` changed (only this unit's own records)."""
        unit = self.units[name]
        unit["relations"] = list(undo["relations"])
        rid = undo["rid"]
        for key in ("data", "seen"):
            value = json.loads(undo[key])
            if value is None:
                unit[key].pop(rid, None)
            else:
                unit[key][rid] = value

    def after_hook(self, name: str, event: Mapping[str, Any]) -> None:
        """What Juju changes once the hook succeeded (a broken relation goes, start starts)."""
        unit = self.units[name]
        if event["name"] == "relation_broken":
            unit["relations"].remove(event["relation"])
            unit["data"].pop(event["relation"], None)
            unit["seen"].pop(event["relation"], None)
            self._forget_if_done(event["relation"])
        elif event["name"] == "start":
            unit["started"] = True
            unit["timer"] = time.time()

    # -- status --------------------------------------------------------------------------

    def _unit_status(self, name: str) -> dict[str, Any]:
        unit = self.units[name]
        app = self.apps[unit["app"]]
        agent = {"current": unit["agent"]}
        workload = {"current": unit["status"][0], "message": unit["status"][1]}
        if unit["error"]:
            agent["message"] = unit["error"]
        if unit["life"] != "alive":
            agent["life"] = unit["life"]
        if self.down(name):  # as Juju shows a unit whose machine stopped answering
            agent = {"current": "lost", "message": "agent is not communicating with the server"}
            workload = {
                "current": "unknown",
                "message": f"agent lost, see 'juju show-status-log {name}'",
            }
        found: dict[str, Any] = {
            "workload-status": workload,
            "juju-status": agent,
            "leader": app["leader"] == name,
            "machine": unit["machine"],
            "public-address": unit["address"],
            "addresses": {binding: unit["address"] for binding in app["bindings"]},
            "open-ports": [f"{port}/tcp" for port in unit["ports"]],
        }
        subordinates = {
            sub: self._unit_status(sub)
            for sub in sorted(self.units, key=lambda n: (self.units[n]["app"], unit_number(n)))
            if self.units[sub]["principal"] == name
        }
        if subordinates:
            found["subordinates"] = subordinates
        return found

    def _app_relations_status(self, app: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for rid in self._app_relations(app):
            local = self.local_endpoint(rid, app)["endpoint"]
            found.setdefault(local, []).append(self._remote_app(rid, app))
        return found

    def status(self) -> dict[str, Any]:
        """The model as ``juju status --format json`` shapes it (the fields the lab has)."""
        apps = {}
        for name, app in self.apps.items():
            principals = sorted(
                (n for n, u in self.units.items() if u["app"] == name and not u["principal"]),
                key=unit_number,
            )
            entry: dict[str, Any] = {
                "charm": app["charm"],
                "charm-path": app["charm_dir"],
                "application-status": {"current": app["status"][0], "message": app["status"][1]},
                "relations": self._app_relations_status(name),
            }
            if app["subordinate"]:
                entry["subordinate-to"] = sorted(
                    {
                        self.units[u["principal"]]["app"]
                        for u in self.units.values()
                        if u["app"] == name and u["principal"] in self.units
                    }
                )
            else:
                entry["units"] = {unit: self._unit_status(unit) for unit in principals}
            apps[name] = entry
        machines: dict[str, Any] = {}
        for m in self.lab.machines():
            machines[m.name] = {
                "juju-status": {
                    "current": "down" if m.name in self.s.get("down", []) else "started"
                },
                "dns-name": m.address,
                "ip-addresses": [m.address],
                "network-namespace": m.netns,
            }
            if m.base is not None:
                system, _, channel = m.base.partition("@")
                machines[m.name]["base"] = {"name": system, "channel": channel}
        return {
            "model": {
                "name": "lab",
                "type": "lab",
                "hooks-run": self.s["hooks_run"],
            },
            "machines": machines,
            "applications": apps,
        }
