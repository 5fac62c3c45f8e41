"""The ``ovn-peers`` relation: typed reads and writes of its databags.

Application databag (leader writes):
    ``ca``             the cluster CA certificate (its key is in the ``ovn-ca`` secret)
    ``certificates``   json {unit name: certificate PEM}, signed from each unit's CSR
    ``central-units``  json list of the units that run OVN central (raft members)
    ``bootstrapped``   "true" once the first central unit created the raft clusters;
                       from then on every central unit joins, none creates
Unit databag (each unit writes its own):
    ``address``        the unit's address on the ovn-peers binding (raft + clients)
    ``csr``            the unit's certificate request (its key never leaves the machine)
    ``central``        "member" while its NB and SB servers are raft members
    ``departing``      "true" once the unit is being removed
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import ops

from charm_common.relation_data import unit_number, update_databag


@dataclass(frozen=True)
class Peer:
    """What one unit (this one included) published about itself."""

    name: str
    address: str
    csr: str
    central_member: bool
    departing: bool


class OVNPeers:
    """The ``ovn-peers`` relation from this unit's point of view."""

    def __init__(self, charm: ops.CharmBase, endpoint: str = "ovn-peers"):
        self._charm = charm
        self._endpoint = endpoint

    @property
    def relation(self) -> ops.Relation | None:
        """The peer relation (``None`` before it is created)."""
        return self._charm.model.get_relation(self._endpoint)

    def _app(self) -> ops.RelationDataContent | dict[str, str]:
        relation = self.relation
        return relation.data[self._charm.app] if relation else {}

    # -- application data (leader writes) ----------------------------------------------

    @property
    def ca(self) -> str:
        """The cluster CA certificate ('' before the leader made one)."""
        return self._app().get("ca", "")

    @property
    def certificates(self) -> dict[str, str]:
        """Signed certificates by unit name."""
        return json.loads(self._app().get("certificates") or "{}")

    @property
    def central_units(self) -> list[str]:
        """The units chosen to run OVN central."""
        return json.loads(self._app().get("central-units") or "[]")

    @property
    def bootstrapped(self) -> bool:
        """Whether the raft clusters exist (new central units must join them)."""
        return self._app().get("bootstrapped") == "true"

    def set_app(
        self,
        *,
        ca: str | None = None,
        certificates: dict[str, str] | None = None,
        central_units: list[str] | None = None,
        bootstrapped: bool | None = None,
    ) -> None:
        """Leader only: write the given application keys (only those that changed)."""
        relation = self.relation
        if relation is None:
            raise RuntimeError("peer relation not created yet")
        values = {}
        if ca is not None:
            values["ca"] = ca
        if certificates is not None:
            values["certificates"] = json.dumps(certificates, sort_keys=True)
        if central_units is not None:
            values["central-units"] = json.dumps(central_units)
        if bootstrapped:
            values["bootstrapped"] = "true"
        update_databag(relation.data[self._charm.app], values)

    # -- unit data ---------------------------------------------------------------------

    def publish_csr(self, *, address: str, csr: str) -> None:
        """Write this unit's address and certificate request."""
        relation = self.relation
        if relation is not None:
            update_databag(relation.data[self._charm.unit], {"address": address, "csr": csr})

    def publish_central(self, member: bool) -> None:
        """Say whether this unit's NB and SB servers are raft members."""
        relation = self.relation
        if relation is not None:
            update_databag(
                relation.data[self._charm.unit], {"central": "member" if member else ""}
            )

    def mark_departing(self) -> None:
        """This unit is being removed: peers must stop counting on it."""
        relation = self.relation
        if relation is not None:
            update_databag(relation.data[self._charm.unit], {"departing": "true"})

    def units(self) -> list[Peer]:
        """Every unit of the application, this one included, in numeric order."""
        relation = self.relation
        if relation is None:
            return []
        found = []
        for unit in {self._charm.unit, *relation.units}:
            data = relation.data[unit]
            found.append(
                Peer(
                    name=unit.name,
                    address=data.get("address", ""),
                    csr=data.get("csr", ""),
                    central_member=data.get("central") == "member",
                    departing=data.get("departing") == "true",
                )
            )
        return sorted(found, key=lambda p: unit_number(p.name))

    @property
    def departing(self) -> bool:
        """Whether this unit is being removed."""
        relation = self.relation
        return relation is not None and relation.data[self._charm.unit].get("departing") == "true"
