#!/usr/bin/env python3
"""The ceph-link charm: Ceph pools for LXD from one ``ceph-client`` relation.

A subordinate of lxd. Read ``_reconcile`` top to bottom: it is the runbook. It asks the
Ceph provider (ceph-mon, microceph) for the RBD pools of its config with a broker request,
writes ``ceph.conf`` and the keyring where its LXD reads them, and asks its lxd unit over
``lxd-member`` for the ``ceph`` storage pools (and a ``cephfs`` one when configured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ops

import ceph
from charm_common import packages
from charm_common.lxd_member import (
    InvalidMemberDataError,
    LXDMemberRequirer,
    LXDObject,
    MemberInfo,
    MemberRequest,
)
from charm_common.relation_data import unit_number, update_databag
from charm_common.steps import StepStopped, blocked, waiting
from charm_common.typed_input import InvalidInputError, load_model
from config import CharmConfig

logger = logging.getLogger(__name__)

CEPH_ENDPOINT = "ceph"


@dataclass(frozen=True)
class ProviderData:
    """What the Ceph provider sent: usable as soon as it has a key and a mon."""

    key: str
    auth: str
    mons: list[str]
    rbd_features: str
    responses: list[ceph.BrokerResponse]


class CephLinkCharm(ops.CharmBase):
    """Broker request, ceph.conf + keyring for LXD, and LXD's ceph storage pools."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.lxd_member = LXDMemberRequirer(self)
        self._statuses: list[ops.StatusBase] = []
        for event in (
            self.on.install,
            self.on.start,
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.update_status,
            self.on.leader_elected,
            self.on.ceph_relation_created,
            self.on.ceph_relation_joined,
            self.on.ceph_relation_changed,
            self.on.ceph_relation_departed,
            self.on.ceph_relation_broken,
            self.on.lxd_member_relation_created,
            self.on.lxd_member_relation_joined,
            self.on.lxd_member_relation_changed,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)

    @property
    def user(self) -> str:
        """The cephx user: ceph-mon names the key after the requiring application."""
        return self.app.name

    # -- the runbook -------------------------------------------------------------------

    def _reconcile(self, event: ops.EventBase | None = None) -> None:
        try:
            config = load_model(CharmConfig, dict(self.config))
            packages.install(ceph.PACKAGES)
            member = self._member()
            relation = self._ceph_relation(event)
            if relation is None:
                # Nothing to ask LXD for: a joining member need not wait for this unit.
                self.lxd_member.publish(MemberRequest(app=self.app.name, ready=True))
                raise blocked(
                    f"needs the {CEPH_ENDPOINT} relation: "
                    f"juju integrate {self.app.name}:{CEPH_ENDPOINT} ceph-mon:client"
                )
            try:
                request_id = self._send_broker_request(relation, config)
                provider = self._provider_data(relation)
                self._check_response(provider, request_id)
                self._write_files(member, provider)
            except StepStopped:
                # LXD must not use (or join with) pools whose files are not in place.
                self.lxd_member.mark_not_ready()
                raise
            pools = [*rbd_pools(config, self.user), *self._cephfs_pool(config, member)]
            self.lxd_member.publish(
                MemberRequest(app=self.app.name, storage_pools=tuple(pools), ready=True)
            )
        except InvalidInputError as exc:
            self._statuses.append(ops.BlockedStatus(f"config: {exc}"))
        except StepStopped as stop:
            self._statuses.append(stop.status)
        except InvalidMemberDataError as exc:
            self._statuses.append(ops.BlockedStatus(f"lxd-member data from lxd: {exc}"))
        except packages.PackageError as exc:
            self._statuses.append(ops.BlockedStatus(f"installing ceph-common: {exc}"))

    # -- steps -------------------------------------------------------------------------

    def _member(self) -> MemberInfo:
        member = self.lxd_member.member()
        if member is None:
            raise waiting("waiting for the lxd unit to describe its member")
        if not member.paths.get("ceph"):
            raise blocked(f"lxd unit {member.member_name} names no ceph directory ('paths')")
        return member

    def _ceph_relation(self, event: ops.EventBase | None) -> ops.Relation | None:
        relation = self.model.get_relation(CEPH_ENDPOINT)
        if isinstance(event, ops.RelationBrokenEvent) and event.relation == relation:
            return None
        return relation

    def _send_broker_request(self, relation: ops.Relation, config: CharmConfig) -> str:
        """Always send one: microceph sends no key before it has a request."""
        request, request_id = ceph.broker_request(config.pool_list)
        update_databag(
            relation.data[self.unit],
            {
                "broker_req": request,
                "unit-name": self.unit.name,
                "application-name": self.app.name,
            },
        )
        return request_id

    def _provider_data(self, relation: ops.Relation) -> ProviderData:
        """Key, auth, mons and answers of every provider unit.

        Raises:
            StepStopped: Blocked naming the unit and key when a provider sent something
                unusable (nothing is written then); Waiting while the key or mons are absent.
        """
        units = sorted(relation.units, key=lambda u: unit_number(u.name))
        parsed = [self._provider_unit(unit.name, relation.data[unit]) for unit in units]
        listed = relation.data[relation.app].get("ceph-mon-public-addresses", "")
        try:
            mons = ceph.mon_addresses([p["ceph-public-address"] for p in parsed], listed)
        except ceph.InvalidProviderDataError as exc:
            where = f"{relation.app.name}: 'ceph-mon-public-addresses'"
            raise blocked(f"{CEPH_ENDPOINT} data from {where}: {exc}") from None
        keys = [p["key"] for p in parsed if p["key"]]
        auth = next((p["auth"] for p in parsed if p["auth"]), "cephx")
        features = next((p["rbd-features"] for p in parsed if p["rbd-features"]), "")
        if auth not in ("cephx", "none"):
            raise blocked(f"{CEPH_ENDPOINT} data: unknown auth {auth!r} (cephx or none)")
        if features and not features.isdigit():
            raise blocked(f"{CEPH_ENDPOINT} data: 'rbd-features' {features!r} is not a number")
        if not keys or not mons:
            raise waiting(f"waiting for {relation.app.name} to send a key and mon addresses")
        answers = [p["answer"] for p in parsed if p["answer"]]
        return ProviderData(keys[0], auth, mons, features, answers)

    def _provider_unit(self, name: str, data: Mapping[str, str]) -> dict[str, Any]:
        """One provider unit's values, each checked; Blocked naming the unit and the key."""
        parsers: dict[str, Callable[[str], Any]] = {
            "key": ceph.valid_key,
            "ceph-public-address": ceph.mon_address,
            ceph.response_key(self.unit.name): ceph.BrokerResponse.decode,
        }
        values: dict[str, Any] = {
            "auth": data.get("auth", "").strip(),
            "rbd-features": data.get("rbd-features", "").strip(),
        }
        for field, parse in parsers.items():
            raw = data.get(field, "").strip()
            try:
                values[field] = parse(raw) if raw else ""
            except ceph.InvalidProviderDataError as exc:
                raise blocked(f"{CEPH_ENDPOINT} data from {name}: '{field}': {exc}") from None
        values["answer"] = values.pop(ceph.response_key(self.unit.name))
        return values

    def _check_response(self, provider: ProviderData, request_id: str) -> None:
        answer = next((r for r in provider.responses if r.request_id == request_id), None)
        if answer is None:
            raise waiting(f"waiting for Ceph to answer broker request {request_id[:8]}")
        if answer.exit_code != 0:
            raise blocked(
                f"Ceph refused the pools (exit code {answer.exit_code}: "
                f"{answer.stderr or 'no reason given'}); change the pools option to ask again"
            )

    def _write_files(self, member: MemberInfo, provider: ProviderData) -> None:
        directory = member.paths["ceph"]
        if ceph.write_keyring(directory, self.user, provider.key):
            logger.info("wrote the keyring of client.%s in %s", self.user, directory)
        conf = ceph.render_conf(provider.mons, provider.auth, provider.rbd_features)
        try:
            if ceph.write_conf(directory, conf):
                logger.info("wrote %s (mons %s)", ceph.conf_path(directory), provider.mons)
        except ceph.ForeignConfigError as exc:
            # A mon on this machine keeps its own file; it names the same cluster.
            logger.info("%s", exc)

    def _cephfs_pool(self, config: CharmConfig, member: MemberInfo) -> list[LXDObject]:
        """The CephFS pool, when configured and the Ceph cluster has that filesystem."""
        if not config.cephfs:
            return []
        try:
            found = ceph.filesystems(member.paths["ceph"], self.user)
        except ceph.CephError as exc:
            self._statuses.append(ops.WaitingStatus(f"cannot list CephFS filesystems: {exc}"))
            return []
        if config.cephfs not in found:
            self._statuses.append(
                ops.BlockedStatus(
                    f"cephfs: no filesystem {config.cephfs!r} in Ceph "
                    f"({', '.join(found) or 'none'}); create it or unset cephfs"
                )
            )
            return []
        return [
            LXDObject(
                config.cephfs,
                "cephfs",
                {"cephfs.user.name": self.user, "cephfs.cluster_name": ceph.CLUSTER},
                {"source": config.cephfs},
                f"CephFS {config.cephfs} ({self.app.name})",
            )
        ]

    # -- status ------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        for status in self._statuses:
            event.add_status(status)
        try:
            config = load_model(CharmConfig, dict(self.config))
        except InvalidInputError as exc:
            event.add_status(ops.BlockedStatus(f"config: {exc}"))
            return
        pools = ", ".join(p.name for p in config.pool_list)
        event.add_status(ops.ActiveStatus(f"pools {pools} for client.{self.user}"))


def rbd_pools(config: CharmConfig, user: str) -> list[LXDObject]:
    """The ``ceph`` storage pools LXD gets for ``pools``, used as cephx ``user``.

    ``user`` is also the application's name (ceph-mon names the key after it).
    """
    return [
        LXDObject(
            pool.name,
            "ceph",
            {
                "ceph.user.name": user,
                "ceph.cluster_name": ceph.CLUSTER,
                "ceph.rbd.features": config.rbd_features,
            },
            {"source": pool.name},
            f"Ceph RBD pool {pool.name} ({user})",
        )
        for pool in config.pool_list
    ]


if __name__ == "__main__":  # pragma: nocover
    ops.main(CephLinkCharm)
