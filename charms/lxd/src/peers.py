"""The ``cluster`` peer relation: typed reads and writes of its databags.

Application databag (leader writes):
    ``mode``                "cluster" or "standalone", fixed at bootstrap
    ``cluster-fingerprint`` SHA-256 of the cluster certificate, set at bootstrap
    ``api-port``            the port of every member's cluster address, fixed at bootstrap
    ``issuer``              the unit that issues join tokens and removes departed members
    ``members``             json {member name: unit name} of units that joined
    ``snap-cohort``         cohort key every unit installs the snap with
    ``created-objects``     json sorted list of "entity/name" the leader saw created
                            cluster-wide: a change wakes the members waiting for them
    ``upgrade``             json {"id", "channel", "order": [unit names, the leader last],
                            "attempt"}: the rolling upgrade the upgrade action planned
                            (kept once complete; see upgrade.py)
Unit databag (each unit writes its own):
    ``member-name``, ``address`` (cluster address host:port), ``clustered`` (json bool)
    ``join-tokens``         issuer only: json {unit name: Juju secret id}; the tokens
                            themselves live in secrets granted to that unit only
    ``departing``           "true" once the unit is being removed (set in its own first
                            relation-departed): from then on it sees its peers leave one
                            by one and must not take that for their departure
    ``defined-objects``     json sorted list of "entity/name" defined on this unit's
                            member: a change wakes the leader, which creates an object
                            cluster-wide once every member has it (LXD is the truth;
                            these two keys are only signals, LXD changes fire no hooks)
    ``upgrade-done``        the id of the last upgrade this unit completed: a change wakes
                            the next unit in the plan's order
    ``upgrade-failed``      json {"id", "attempt", "reason", "step"}: this unit's step failed
                            and the rollout stops until the operator runs upgrade again
    ``blocked``             the unit's Blocked status message, absent while it is not
                            Blocked: the leader shows it in the application status
    ``join-failed``         json {"token", "reason", "count", "at"}: this unit's join with
                            the token of that digest failed (LXD used the token up): the
                            issuer revokes it and issues another; gone once it joined
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import ops

from charm_common.relation_data import unit_number
from upgrade import Rollout, UpgradeFailure, UpgradePlan


@dataclass(frozen=True)
class PeerUnit:
    """What one unit published about itself."""

    name: str
    member_name: str
    address: str
    clustered: bool
    failed_token: str = ""  # the digest of the token its last join failed with


@dataclass(frozen=True)
class JoinFailure:
    """This unit's last failed join: with which token (its digest), why, how many, when."""

    token: str
    reason: str
    count: int
    at: float

    def to_json(self) -> str:
        """The databag value."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> JoinFailure | None:
        """Parse the databag value; ``None`` when absent or not one (a misbehaving peer)."""
        try:
            body = json.loads(raw)
            return cls(
                str(body["token"]), str(body["reason"]), int(body["count"]), float(body["at"])
            )
        except (ValueError, TypeError, KeyError):
            return None


class ClusterPeers:
    """The ``cluster`` peer relation from this unit's point of view."""

    def __init__(self, charm: ops.CharmBase, endpoint: str = "cluster"):
        self._charm = charm
        self._endpoint = endpoint

    @property
    def relation(self) -> ops.Relation | None:
        """The peer relation (``None`` before it is created)."""
        return self._charm.model.get_relation(self._endpoint)

    @property
    def _app_data(self) -> ops.RelationDataContent | dict[str, str]:
        relation = self.relation
        return relation.data[self._charm.app] if relation else {}

    def _app_get(self, key: str) -> str:
        return self._app_data.get(key, "")

    def set_app(self, **values: str) -> None:
        """Leader only: write application keys (underscores become dashes)."""
        relation = self.relation
        if relation is None:
            raise RuntimeError("peer relation not created yet")
        data = relation.data[self._charm.app]
        for key, value in values.items():
            data[key.replace("_", "-")] = value

    # -- application data --------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The mode the application was bootstrapped in ('' before bootstrap)."""
        return self._app_get("mode")

    @property
    def cluster_fingerprint(self) -> str:
        """Fingerprint of the cluster certificate ('' before bootstrap)."""
        return self._app_get("cluster-fingerprint")

    @property
    def api_port(self) -> str:
        """The cluster addresses' port, recorded at bootstrap ('' before, or if unrecorded)."""
        return self._app_get("api-port")

    @property
    def issuer(self) -> str:
        """The unit that issues join tokens and removes departed members."""
        return self._app_get("issuer")

    @property
    def snap_cohort(self) -> str:
        """The snap cohort key ('' when none was created)."""
        return self._app_get("snap-cohort")

    def joined_members(self) -> dict[str, str]:
        """{member name: unit name} of every unit that joined and has not been removed."""
        raw = self._app_get("members")
        return dict(json.loads(raw)) if raw else {}

    def set_joined_members(self, members: dict[str, str]) -> None:
        """Leader only: record the members the charm created."""
        self.set_app(members=json.dumps(members, sort_keys=True))

    def created_objects(self) -> set[str]:
        """Names ("entity/name") of the objects the leader saw created cluster-wide."""
        raw = self._app_get("created-objects")
        return set(json.loads(raw)) if raw else set()

    def set_created_objects(self, objects: set[str]) -> None:
        """Leader only: record the objects created cluster-wide (only when it changed)."""
        if objects != self.created_objects():
            self.set_app(created_objects=json.dumps(sorted(objects)))

    # -- unit data ---------------------------------------------------------------------

    def publish(self, member_name: str, address: str, clustered: bool) -> None:
        """Write this unit's own keys."""
        relation = self.relation
        if relation is None:
            return
        data = relation.data[self._charm.unit]
        data["member-name"] = member_name
        data["address"] = address
        data["clustered"] = json.dumps(clustered)

    def publish_defined_objects(self, objects: set[str]) -> None:
        """Say which objects this unit's member has defined (only when it changed)."""
        relation = self.relation
        if relation is None:
            return
        value = json.dumps(sorted(objects))
        data = relation.data[self._charm.unit]
        if data.get("defined-objects", "[]") != value:
            data["defined-objects"] = value

    def publish_blocked(self, message: str) -> None:
        """Say why this unit is Blocked ('': it is not); only when it changed.

        Not once the unit is being removed: its peer relation is about to break.
        """
        relation = self.relation
        if relation is None or self.departing:
            return
        data = relation.data[self._charm.unit]
        if data.get("blocked", "") != message:
            if message:
                data["blocked"] = message
            else:
                del data["blocked"]

    def blocked_peers(self) -> dict[str, str]:
        """{unit name: its Blocked message} of the other units that are Blocked."""
        relation = self.relation
        if relation is None:
            return {}
        found = {u.name: relation.data[u].get("blocked", "") for u in relation.units}
        return {name: found[name] for name in sorted(found, key=unit_number) if found[name]}

    @property
    def departing(self) -> bool:
        """Whether this unit is being removed (it marked itself in its own departure)."""
        relation = self.relation
        return relation is not None and relation.data[self._charm.unit].get("departing") == "true"

    def mark_departing(self) -> None:
        """Record that this unit is being removed."""
        relation = self.relation
        if relation is not None:
            relation.data[self._charm.unit]["departing"] = "true"

    def peer_units(self) -> list[PeerUnit]:
        """Every other unit in the relation, lowest unit number first."""
        relation = self.relation
        if relation is None:
            return []
        result = []
        for unit in relation.units:
            data = relation.data[unit]
            result.append(
                PeerUnit(
                    name=unit.name,
                    member_name=data.get("member-name", ""),
                    address=data.get("address", ""),
                    clustered=data.get("clustered") == "true",
                    failed_token=getattr(
                        JoinFailure.from_json(data.get("join-failed", "")), "token", ""
                    ),
                )
            )
        return sorted(result, key=lambda p: unit_number(p.name))

    def unit_names(self) -> set[str]:
        """Names of every unit in the relation, this one included."""
        return {p.name for p in self.peer_units()} | {self._charm.unit.name}

    def any_peer_clustered(self) -> bool:
        """Whether another unit reports it is a cluster member."""
        return any(p.clustered for p in self.peer_units())

    def issued_tokens(self) -> dict[str, str]:
        """This unit's outstanding tokens: {unit name: secret id}."""
        relation = self.relation
        raw = relation.data[self._charm.unit].get("join-tokens", "") if relation else ""
        return dict(json.loads(raw)) if raw else {}

    def set_issued_tokens(self, tokens: dict[str, str]) -> None:
        """Record this unit's outstanding tokens."""
        relation = self.relation
        if relation is None:
            return
        data = relation.data[self._charm.unit]
        if tokens:
            data["join-tokens"] = json.dumps(tokens, sort_keys=True)
        else:
            data.pop("join-tokens", None)

    def token_secret_id(self) -> str:
        """The id of the secret the issuer granted to this unit ('' when none)."""
        relation = self.relation
        if relation is None or not self.issuer:
            return ""
        for unit in relation.units:
            if unit.name == self.issuer:
                raw = relation.data[unit].get("join-tokens", "")
                return dict(json.loads(raw)).get(self._charm.unit.name, "") if raw else ""
        return ""

    def join_failure(self) -> JoinFailure | None:
        """This unit's last failed join (``None``: none since it last joined)."""
        relation = self.relation
        raw = relation.data[self._charm.unit].get("join-failed", "") if relation else ""
        return JoinFailure.from_json(raw) if raw else None

    def record_join_failure(self, digest: str, reason: str, now: float) -> JoinFailure:
        """Say that the join with the token of ``digest`` failed (the issuer replaces it)."""
        last = self.join_failure()
        failure = JoinFailure(digest, reason, (last.count if last else 0) + 1, now)
        relation = self.relation
        if relation is not None:
            relation.data[self._charm.unit]["join-failed"] = failure.to_json()
        return failure

    def clear_join_failure(self) -> None:
        """This unit joined: its failures are over."""
        relation = self.relation
        if relation is not None:
            relation.data[self._charm.unit].pop("join-failed", None)

    def get_unit(self, unit_name: str) -> ops.Unit | None:
        """The ``ops.Unit`` of a peer, if it is still in the relation."""
        relation = self.relation
        if relation is None:
            return None
        return next((u for u in relation.units if u.name == unit_name), None)

    # -- the rolling upgrade -----------------------------------------------------------

    def upgrade_plan(self) -> UpgradePlan | None:
        """The last rolling upgrade the leader planned (``None`` when there was none)."""
        raw = self._app_get("upgrade")
        return UpgradePlan.from_json(raw) if raw else None

    def set_upgrade_plan(self, plan: UpgradePlan) -> None:
        """Leader only: record the rollout every unit follows."""
        self.set_app(upgrade=plan.to_json())

    def upgrade_rollout(self) -> Rollout | None:
        """The last planned upgrade and how far every unit got (``None`` when none)."""
        plan = self.upgrade_plan()
        relation = self.relation
        if plan is None or relation is None:
            return None
        done: dict[str, str] = {}
        failures: dict[str, UpgradeFailure] = {}
        for unit in (self._charm.unit, *relation.units):
            data = relation.data[unit]
            if data.get("upgrade-done"):
                done[unit.name] = data["upgrade-done"]
            if data.get("upgrade-failed"):
                failures[unit.name] = UpgradeFailure.from_json(data["upgrade-failed"])
        return Rollout(plan, done, failures, frozenset(self.unit_names()))

    def record_upgrade_done(self, upgrade_id: str) -> None:
        """This unit completed upgrade ``upgrade_id`` (the next unit's turn)."""
        relation = self.relation
        if relation is None:
            return
        data = relation.data[self._charm.unit]
        data["upgrade-done"] = upgrade_id
        data.pop("upgrade-failed", None)

    def record_upgrade_failure(self, failure: UpgradeFailure) -> None:
        """This unit's step failed: the rollout stops until the operator resumes it."""
        relation = self.relation
        if relation is not None:
            relation.data[self._charm.unit]["upgrade-failed"] = failure.to_json()
