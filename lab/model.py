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
import os
import random
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lab import applications, build
from lab import bundle as bundles
from lab.machines import Lab, Machine
from lab.state import (
    AppRecord,
    ModelState,
    RelationEnd,
    RelationRecord,
    SecretRecord,
    UnitRecord,
)

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
        self.state = ModelState.load(self.path)
        self.lab = Lab.open(self.root)

    @property
    def seed(self) -> int:
        """What orders the hooks that start together (see :meth:`create`)."""
        return self.state.seed

    @property
    def order(self) -> str:
        """How the runner orders hooks, for messages (see :meth:`create`)."""
        if self.state.lockstep:
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
        config = {**MODEL_CONFIG, **self.state.config}
        for key, value in (values or {}).items():
            if key not in MODEL_CONFIG:
                known = ", ".join(MODEL_CONFIG)
                raise ModelError(f"unknown model config key {key!r} (keys: {known})")
            low, high = INTERVAL_BOUNDS
            if not low <= parse_duration(value) <= high:
                raise ModelError(f"{key}={value}: give a duration from 1s to 60m")
            config[key] = value
        if values:
            self.state.config = config
            self.save()
        return config

    def expire_timers(self) -> None:
        """Every unit's ``update-status`` timer is due now, as if its interval had passed."""
        for unit in self.units.values():
            unit.timer = 0.0
        self.save()

    # -- persistence ---------------------------------------------------------------------

    @staticmethod
    def exists(root: str) -> bool:
        """Whether a model lives under ``root``."""
        return os.path.exists(os.path.join(root, STATE_FILE))

    @classmethod
    def create(cls, root: str, seed: int | None = None) -> Model:
        """A new, empty model (and lab) under ``root``.

        ``seed`` (else ``LAB_SEED``) makes the runner (:mod:`lab.runner`) go in lockstep
        rounds that it orders: the same seed gives the same interleaving. Without one the
        machines run freely, and a random seed only picks which unit of a machine goes next.
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
        state = ModelState(
            # Juju's model name and uuid: fixed for the model's life (charms derive names
            # and topology labels from them).
            model={"name": "lab", "uuid": str(uuid.uuid4())},
            seed=seed,
            lockstep=lockstep,
            config=dict(MODEL_CONFIG),
        )
        state.save(os.path.join(root, STATE_FILE))
        return cls(root)

    def save(self) -> None:
        """Write the model (atomically: a reader never sees half of it)."""
        self.state.save(self.path)

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
    def apps(self) -> dict[str, AppRecord]:
        """Application name -> record."""
        return self.state.applications

    @property
    def units(self) -> dict[str, UnitRecord]:
        """Unit name -> record."""
        return self.state.units

    @property
    def relations(self) -> dict[str, RelationRecord]:
        """Relation id (as a string) -> record."""
        return self.state.relations

    @property
    def secrets(self) -> dict[str, SecretRecord]:
        """Secret id -> record."""
        return self.state.secrets

    def unit(self, name: str) -> UnitRecord:
        """The record of unit ``name`` (:class:`ModelError` naming the units if unknown)."""
        if name not in self.units:
            raise ModelError(f"no unit {name!r} (units: {', '.join(self.units) or 'none'})")
        return self.units[name]

    def app(self, name: str) -> AppRecord:
        """The record of application ``name`` (:class:`ModelError` if unknown)."""
        if name not in self.apps:
            raise ModelError(f"no application {name!r} (applications: {', '.join(self.apps)})")
        return self.apps[name]

    def machine_of(self, unit: str) -> Machine:
        """The lab machine unit ``unit`` runs on."""
        return self.lab.machine(self.unit(unit).machine)

    def down(self, unit: str) -> bool:
        """Whether unit ``unit``'s machine is down (no hook runs there)."""
        return self.units[unit].machine in self.state.down

    def kill_machine(self, machine: str) -> None:
        """Lose ``machine`` as Juju loses one: every process killed, no more hooks there.

        Its units' agents are ``lost``; their queued hooks wait for :meth:`start_machine`.
        """
        self.lab.machine(machine)  # it exists
        left = self.lab.kill_machine(machine)
        if left:
            raise ModelError(f"machine {machine}: processes {left} survived SIGKILL")
        if machine not in self.state.down:
            self.state.down.append(machine)
        self.save()

    def start_machine(self, machine: str) -> None:
        """Bring ``machine`` back, as after a reboot: each of its units runs ``start``."""
        if machine not in self.state.down:
            raise ModelError(f"machine {machine} is not down")
        self.state.down.remove(machine)
        for name, unit in self.units.items():
            if unit.machine == machine and unit.started:
                self.queue(name, make_event("start"), front=True)
        self.save()

    def alive_units(self, app: str) -> list[str]:
        """Units of ``app`` that are not being removed, by number."""
        found = [n for n, u in self.units.items() if u.app == app and u.life == "alive"]
        return sorted(found, key=unit_number)

    def application(self, name: str) -> applications.Application:
        """Application ``name`` as :mod:`lab.bundle` describes it (charm metadata included).

        Its options were checked when they were set; they are not checked again here.
        """
        record = self.app(name)
        return applications.charm_application(name, record.charm_dir, record.options)

    def secret_view(self, name: str, sid: str) -> dict[str, Any] | None:
        """Secret ``sid`` as unit ``name`` sees it (``None``: it does not, or it is gone)."""
        secret = self.secrets.get(sid)
        if secret is None:
            return None
        unit = self.units[name]
        latest = secret.revision
        base = {"id": sid, "latest": secret.contents[str(latest)], "latest_revision": latest}
        owner = "unit" if secret.owner == name else None
        if secret.owner == unit.app:
            owner = "app"
        if owner is not None:
            grants = {rid: names for rid, names in secret.grants.items()}
            return {
                **base,
                "owner": owner,
                "label": secret.label,
                "tracked": base["latest"],
                "tracked_revision": latest,
                "grants": grants,
            }
        granted = {n for names in secret.grants.values() for n in names}
        if name not in granted and unit.app not in granted:
            return None
        seen = secret.observers.get(name, {"revision": latest, "label": None})
        return {
            **base,
            "label": seen["label"],
            "tracked": secret.contents[str(seen["revision"])],
            "tracked_revision": seen["revision"],
        }

    # -- relation geometry -----------------------------------------------------------------

    def local_endpoint(self, rid: str, app: str) -> RelationEnd:
        """``app``'s end of relation ``rid``: ``{"app", "endpoint"}``."""
        ends = self.relations[rid].endpoints
        return next(e for e in ends if e.app == app)

    def remote_app(self, rid: str, app: str) -> str:
        """The application at the other end of ``rid`` from ``app`` (``app`` for a peer one)."""
        ends = self.relations[rid].endpoints
        return next((e.app for e in ends if e.app != app), app)

    def visible(self, rid: str, a: str, b: str) -> bool:
        """Whether units ``a`` and ``b`` (different units) see each other in relation ``rid``."""
        relation = self.relations[rid]
        ua, ub = self.units[a], self.units[b]
        if self.remote_app(rid, ua.app) != ub.app:
            return False
        if relation.scope != "container" or len(relation.endpoints) == 1:
            return True
        return ua.principal == b or ub.principal == a

    def queue(self, unit: str, event: dict[str, Any], front: bool = False) -> None:
        """Queue ``event`` for ``unit`` (at the front: it runs next)."""
        queue = self.units[unit].queue
        if event in queue and not event["name"].startswith("_"):
            return  # Juju coalesces a hook that is already pending
        if front:
            queue.insert(0, event)
        else:
            queue.append(event)

    # -- building the model ----------------------------------------------------------------

    def add_application(self, app: applications.Application) -> None:
        """Record application ``app`` (no units yet), with its peer relations."""
        if app.name in self.apps:
            raise ModelError(f"application {app.name!r} already exists")
        meta = app.metadata
        endpoints = {
            name: {"role": role, "interface": spec["interface"], "scope": spec.get("scope")}
            for name, (role, spec) in applications.endpoints(meta).items()
        }
        self.apps[app.name] = AppRecord(
            charm=meta.get("name", app.charm_dir.name),
            charm_dir=str(app.charm_dir),
            # the charm as scripts/build-charms builds it (the lab's test charms too)
            run_dir=str(build.build_dir(app.charm_dir)),
            subordinate=app.subordinate,
            base=app.base,
            options=dict(app.options),
            config=app.config(),
            endpoints=endpoints,
            bindings=sorted([*endpoints, *(meta.get("extra-bindings") or {})]),
            actions=meta.get("actions") or {},
        )
        for name, spec in endpoints.items():
            if spec["role"] == "peers":
                self._add_relation([(app.name, name)], spec["interface"], "global")

    def _add_relation(self, ends: list[tuple[str, str]], interface: str, scope: str) -> str:
        rid = str(self.state.next_relation_id)
        self.state.next_relation_id += 1
        self.relations[rid] = RelationRecord(
            endpoints=[RelationEnd(a, e) for a, e in ends],
            interface=interface,
            scope=scope,
            app_data={a: {} for a, _ in ends},
        )
        return rid

    def dying(self, rid: str) -> bool:
        """Whether relation ``rid`` is being removed."""
        return self.relations[rid].life != "alive"

    def _describe(self, rid: str) -> str:
        """``app:endpoint - app:endpoint`` (a peer relation: ``app:endpoint``)."""
        return " - ".join(f"{e.app}:{e.endpoint}" for e in self.relations[rid].endpoints)

    def relate(self, relation: applications.Relation) -> str:
        """Add ``relation``; units already running get ``relation-created`` and join it."""
        pair = {
            (relation.a.application, relation.a.name),
            (relation.b.application, relation.b.name),
        }
        for rid, record in self.relations.items():
            if {(e.app, e.endpoint) for e in record.endpoints} == pair:
                if self.dying(rid):
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
            if unit.app in (relation.a.application, relation.b.application):
                if unit.life == "alive" and unit.started:
                    self.queue(name, make_event("relation_created", relation=rid))
                    self.queue(name, make_event(ENTER, relation=rid))
        return rid

    def _app_relations(self, app: str) -> list[str]:
        return [rid for rid, r in self.relations.items() if any(e.app == app for e in r.endpoints)]

    def add_unit(self, app: str, machine: str | None = None, principal: str | None = None) -> str:
        """A new unit of ``app``: on a new machine, or on ``machine`` (a subordinate).

        Its lifecycle hooks are queued in Juju's order; it becomes leader if the
        application has none.
        """
        record = self.app(app)
        name = f"{app}/{record.next_unit}"
        record.next_unit += 1
        if machine is None:
            machine = self._new_machine(record.base)
        self.units[name] = UnitRecord(
            app=app,
            machine=machine,
            principal=principal,
            address=self.lab.machine(machine).address,
        )
        self.queue(name, make_event("install"))
        joining = [rid for rid in self._app_relations(app) if not self.dying(rid)]
        for rid in joining:
            self.queue(name, make_event("relation_created", relation=rid))
        if record.leader is None:
            record.leader = name
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
        if unit.principal is not None:
            raise ModelError(
                f"{name} is a subordinate: remove its principal {unit.principal} "
                "(or the relation) instead"
            )
        if unit.life != "alive":
            raise ModelError(f"{name} is already being removed")
        for sub, record in self.units.items():
            if record.principal == name:
                self._start_leaving(sub)
        self._start_leaving(name)
        self.save()

    def _start_leaving(self, name: str) -> None:
        unit = self.units[name]
        unit.life = "dying"
        unit.queue = [e for e in unit.queue if e["name"] == "install"]
        for rid in unit.relations:
            self.queue(name, make_event(LEAVE, relation=rid))
        for rid in unit.relations:
            self.queue(name, make_event("relation_broken", relation=rid))
        for step in ("stop", "remove", GONE):
            self.queue(name, make_event(step))

    def find_relation(self, a: str, b: str) -> str:
        """The id of the relation ``a`` - ``b`` (``app[:endpoint]`` each).

        The pair is resolved from the charms' endpoints as ``lab relate`` resolves it, then
        looked up among the model's relations.

        Raises:
            ModelError: a peer relation (those cannot be removed), or no such relation.
            lab.applications.BundleError: an unknown application or endpoint, no or several pairs.
        """
        sides = [side.partition(":") for side in (a, b)]
        for (app, _, endpoint), text in zip(sides, (a, b), strict=True):
            spec = self.apps[app].endpoints.get(endpoint) if app in self.apps else None
            if spec and spec["role"] == "peers":
                raise ModelError(f"{text} is a peer relation: peer relations cannot be removed")
        if sides[0][0] == sides[1][0] and sides[0][0] in self.apps:
            raise ModelError(
                f"{a} - {b}: an application relates to itself only over its peer relations, "
                "which cannot be removed"
            )
        apps = {name: self.application(name) for name in self.apps}
        wanted = applications.relation_between(apps, a, b, verb="remove-relation")
        pair = {(wanted.a.application, wanted.a.name), (wanted.b.application, wanted.b.name)}
        for rid, record in self.relations.items():
            if {(e.app, e.endpoint) for e in record.endpoints} == pair:
                return rid
        existing = [
            self._describe(r) for r, rel in self.relations.items() if len(rel.endpoints) > 1
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
        if len(relation.endpoints) == 1:
            raise ModelError(f"{self._describe(rid)} is a peer relation: it cannot be removed")
        if self.dying(rid):
            raise ModelError(f"relation {self._describe(rid)} is already being removed")
        relation.life = "dying"
        if relation.scope == "container":
            self._remove_subordinates(rid)
        apps = {e.app for e in relation.endpoints}
        for name, unit in self.units.items():
            if unit.app not in apps or unit.life != "alive":
                continue  # a dying unit already has its departed and broken hooks queued
            held = unit.queue[:1] if unit.agent == "error" else []  # retried first
            rest = unit.queue[len(held) :]
            unit.queue = held + [e for e in rest if e.get("relation") != rid]
            if rid in unit.relations:
                self.queue(name, make_event(LEAVE, relation=rid))
                self.queue(name, make_event("relation_broken", relation=rid))
        self.forget_if_done(rid)
        self.save()

    def _remove_subordinates(self, rid: str) -> None:
        """The subordinate's units on the principals of container-scoped ``rid`` go."""
        ends = [e.app for e in self.relations[rid].endpoints]
        subs = [app for app in ends if self.apps[app].subordinate]
        if len(subs) != 1:
            return  # two subordinates: neither is the other's principal
        (sub_app,) = subs
        (principal_app,) = [app for app in ends if app != sub_app]
        for other, record in self.relations.items():
            if other != rid and record.scope == "container" and not self.dying(other):
                if {e.app for e in record.endpoints} == set(ends):
                    return  # still tied by another container-scoped relation
        for name, unit in self.units.items():
            principal = self.units.get(unit.principal or "")
            if unit.app == sub_app and unit.life == "alive":
                if principal is not None and principal.app == principal_app:
                    self._start_leaving(name)

    def forget_if_done(self, rid: str) -> None:
        """Forget dying relation ``rid`` once no unit takes part in it any more."""
        if rid not in self.relations or not self.dying(rid):
            return
        if not any(rid in unit.relations for unit in self.units.values()):
            self._forget_relation(rid)

    def _forget_relation(self, rid: str) -> None:
        """Relation ``rid`` is gone: its databags, and the secret grants scoped to it.

        A unit that no other grant lets see a secret stops observing it (no
        ``secret-changed``; the secret is no longer in its hooks).
        """
        del self.relations[rid]
        for secret in self.secrets.values():
            secret.grants.pop(rid, None)
            granted = {n for names in secret.grants.values() for n in names}
            for observer in list(secret.observers):
                if observer not in granted and observer.rsplit("/", 1)[0] not in granted:
                    del secret.observers[observer]

    def set_config(self, app: str, values: Mapping[str, Any]) -> None:
        """Change ``app``'s options (validated like a bundle's); ``config-changed`` everywhere."""
        record = self.app(app)
        options = {**record.options, **values}
        checked = applications.charm_application(app, record.charm_dir, options)
        record.options = dict(checked.options)
        record.config = checked.config()
        for name in self.alive_units(app):
            self.queue(name, make_event("config_changed"))
        self.save()

    def refresh(self, app: str) -> None:
        """Build ``app``'s charm again; ``upgrade-charm`` then ``config-changed`` on its units.

        Through dispatch a unit's charm directory gets the new build's code at its next
        hook (ops' ``.unit-state.db`` stays), as ``juju refresh`` replaces it.
        """
        record = self.app(app)
        record.run_dir = str(build.build_dir(Path(record.charm_dir)))
        for name in self.alive_units(app):
            self.queue(name, make_event("upgrade_charm"))
            self.queue(name, make_event("config_changed"))
        self.save()

    def resolved(self, name: str) -> None:
        """Retry unit ``name``'s failed hook (``juju resolved``)."""
        unit = self.unit(name)
        if unit.agent != "error":
            raise ModelError(f"{name} is not in error")
        unit.attempts, unit.retry_at, unit.agent = 0, 0.0, "idle"
        self.save()
