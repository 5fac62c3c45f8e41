"""What the lab's model keeps between commands, typed: :class:`ModelState` and its records.

One JSON file (``model.json`` under the model's root) holds the whole state; every ``lab``
command is a new process that loads it (:meth:`ModelState.load`) and writes it back
atomically (:meth:`ModelState.save`: a reader never sees half of it). The records are
dataclasses whose fields are the file's keys, so the file reads as the code does.

Relation ids are strings (JSON object keys); statuses are ``[status, message]``; a queued
event is a dict (its hook or internal step ``name``, and the fields that hook takes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
Databag = dict[str, str]


@dataclass
class AppRecord:
    """An application: its charm, options, endpoints, leader and status."""

    charm: str  # the charm's name (metadata)
    charm_dir: str  # its source in the repository
    run_dir: str  # where hooks run from: the build of charm_dir (lab.build)
    subordinate: bool
    base: str | None  # its units' machines present it (a subordinate: its principal's)
    options: dict[str, Any]  # as set (bundle, lab config)
    config: dict[str, Any]  # what config-get answers: options over the charm's defaults
    endpoints: dict[str, dict[str, Any]]  # name -> {"role", "interface", "scope"}
    bindings: list[str]  # every endpoint and extra binding
    actions: dict[str, Any]
    leader: str | None = None
    next_unit: int = 0
    status: list[str] = field(default_factory=lambda: ["unknown", ""])


@dataclass
class UnitRecord:
    """A unit: where it runs, its life and statuses, its relations and the hooks to run."""

    app: str
    machine: str
    principal: str | None  # a subordinate's principal unit
    address: str  # its machine's (every binding's) address
    life: str = "alive"  # "dying" once removed
    started: bool = False  # its start hook ran: its update-status timer runs
    status: list[str] = field(default_factory=lambda: ["waiting", "agent initialising"])
    agent: str = "allocating"  # allocating, executing, idle, error
    error: str | None = None  # the failed hook, as juju status shows it
    error_detail: str = ""  # its traceback
    ports: list[int] = field(default_factory=list)
    queue: list[Event] = field(default_factory=list)
    attempts: int = 0  # of the failed hook at the head of the queue
    retry_at: float = 0.0  # when it is retried (epoch seconds)
    timer: float = 0.0  # when its update-status timer last started
    relations: list[str] = field(default_factory=list)  # ids: its relation-created ran
    seen: dict[str, list[str]] = field(default_factory=dict)  # rid -> remote units joined
    data: dict[str, Databag] = field(default_factory=dict)  # rid -> its unit databag
    state: dict[str, str] = field(default_factory=dict)  # Juju's unit state (state-set)


@dataclass
class RelationEnd:
    """One end of a relation: an application's endpoint."""

    app: str
    endpoint: str


@dataclass
class RelationRecord:
    """A relation (one end: a peer relation), its databags, the units in its scope."""

    endpoints: list[RelationEnd]
    interface: str
    scope: str  # "global" or "container"
    app_data: dict[str, Databag]  # application -> its application databag
    members: list[str] = field(default_factory=list)  # units in scope
    life: str = "alive"  # "dying" once removed, until every unit ran relation-broken


@dataclass
class SecretRecord:
    """A Juju secret: its owner, revisions, grants and who tracks which revision."""

    owner: str  # a unit or an application
    revision: int  # the latest
    contents: dict[str, dict[str, str]]  # revision (a string) -> content
    label: str | None  # the owner's
    grants: dict[str, list[str]]  # relation id -> units or applications granted
    observers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # observers: unit -> {"revision": it tracks, "label": its own label}


@dataclass
class ModelState:
    """The whole model: Juju's model identity and config, and every record by name or id."""

    model: dict[str, str]  # Juju's model name and uuid, fixed for the model's life
    seed: int  # orders the hooks that start together (see lab.runner)
    lockstep: bool  # rounds that the seed repeats (else: free-running machines)
    config: dict[str, str]  # model config (update-status-hook-interval)
    applications: dict[str, AppRecord] = field(default_factory=dict)
    units: dict[str, UnitRecord] = field(default_factory=dict)
    relations: dict[str, RelationRecord] = field(default_factory=dict)
    secrets: dict[str, SecretRecord] = field(default_factory=dict)
    next_relation_id: int = 0
    hooks_run: int = 0
    rounds: int = 0
    down: list[str] = field(default_factory=list)  # machines that are down

    @classmethod
    def load(cls, path: str) -> ModelState:
        """The state saved at ``path``."""
        with open(path) as f:
            raw = json.load(f)
        records = {
            "applications": AppRecord,
            "units": UnitRecord,
            "relations": RelationRecord,
            "secrets": SecretRecord,
        }
        for key, record in records.items():
            raw[key] = {name: record(**fields) for name, fields in raw.get(key, {}).items()}
        for relation in raw["relations"].values():
            relation.endpoints = [RelationEnd(**end) for end in relation.endpoints]
        return cls(**raw)

    def save(self, path: str) -> None:
        """Write the state to ``path`` atomically (a reader never sees half of it)."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=1, sort_keys=True)
        os.replace(tmp, path)
