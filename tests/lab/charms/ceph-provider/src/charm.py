#!/usr/bin/env python3
"""ceph-provider: a lab stand-in for ceph-mon, a real single-node Ceph behind ``ceph-client``.

Every hook reconciles: packages, the cluster (bootstrapped once, daemons restarted when
gone), then every unit of every ``client`` relation gets what ceph-mon's
``CephClientProvides`` gives it: ``auth``, ``key`` of ``client.<application-name>``,
``ceph-public-address``, and (leader) the answer to its broker request.
"""

from __future__ import annotations

import json
import logging

import ceph_single
import ops

from charm_common import packages

logger = logging.getLogger(__name__)

MON_ADDRESSES = "ceph-mon-public-addresses"


class CephProviderCharm(ops.CharmBase):
    """One unit, one Ceph cluster; serves the ``client`` relation like ceph-mon."""

    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        # request-id -> the JSON response sent for it (ceph-mon's "processed" list).
        self._stored.set_default(responses={})
        for event in (
            self.on.install,
            self.on.start,
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.update_status,
            self.on.leader_elected,
            self.on.client_relation_joined,
            self.on.client_relation_changed,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.rotate_key_action, self._on_rotate_key)

    def _reconcile(self, _: ops.EventBase) -> None:
        binding = self.model.get_binding("client")
        address = binding.network.bind_address if binding else None
        if address is None:
            self.unit.status = ops.WaitingStatus("no address on the client binding yet")
            return
        try:
            if packages.install(ceph_single.PACKAGES):
                logger.info("installed %s", ", ".join(ceph_single.PACKAGES))
            if not ceph_single.bootstrapped():
                self.unit.status = ops.MaintenanceStatus("bootstrapping Ceph")
            started = ceph_single.ensure_cluster(str(address))
            if started:
                logger.info("started %s", ", ".join(started))
            ceph_single.wait_osd_up()
            self._serve_clients(str(address))
            health = ceph_single.health()
        except ceph_single.CephUnavailableError as exc:
            self.unit.status = ops.WaitingStatus(f"Ceph is not answering: {exc}")
            return
        except (ceph_single.CephError, packages.PackageError) as exc:
            self.unit.status = ops.BlockedStatus(f"Ceph: {exc}")
            return
        self.unit.status = ops.ActiveStatus(
            f"ceph {health.version} {health.health}, {health.osds_up} osd up"
        )

    # -- the client relation -----------------------------------------------------------

    def _serve_clients(self, address: str) -> None:
        keys: dict[str, str] = {}  # user -> key: the units of one application share it
        for relation in self.model.relations["client"]:
            if self.unit.is_leader():
                relation.data[self.app][MON_ADDRESSES] = json.dumps([address])
            local = relation.data[self.unit]
            for unit in sorted(relation.units, key=lambda u: u.name):
                user = self._client_user(relation, unit)
                if user not in keys:
                    keys[user] = ceph_single.ensure_client_key(user)
                local["auth"] = "cephx"
                local["ceph-public-address"] = address
                local["key"] = keys[user]
                if self.unit.is_leader():
                    self._answer_broker_request(relation, unit)

    @staticmethod
    def _client_user(relation: ops.Relation, unit: ops.Unit) -> str:
        """The cephx user of a client unit: its ``application-name``, else its app's name."""
        fallback = relation.app.name if relation.app else unit.app.name
        return relation.data[unit].get("application-name") or fallback

    def _answer_broker_request(self, relation: ops.Relation, unit: ops.Unit) -> None:
        """Serve ``unit``'s ``broker_req`` once per request-id; the answer stays published."""
        remote = relation.data[unit]
        raw = remote.get("broker_req")
        if not raw:
            return
        request_id = ceph_single.broker_request_id(raw)
        if request_id is None:
            logger.warning("ignoring a malformed broker_req from %s: %.200s", unit.name, raw)
            return
        local = relation.data[self.unit]
        key = "broker-rsp-" + remote.get("unit-name", unit.name).replace("/", "-")
        response = self._stored.responses.get(request_id)
        if response is None and _response_id(local.get(key, "")) == request_id:
            # Already answered in our databag (what ceph-mon's hooks checked; the lab does
            # not keep StoredState between hooks).
            response = local[key]
        if response is None:
            logger.info("processing broker request %s from %s", request_id, unit.name)
            response = json.dumps(ceph_single.process_broker_request(raw))
            self._stored.responses[request_id] = response
        local[key] = response
        local["broker_rsp"] = response

    # -- actions -----------------------------------------------------------------------

    def _on_rotate_key(self, event: ops.ActionEvent) -> None:
        user = str(event.params.get("user") or "")
        if not user:
            event.fail("give the cephx user: rotate-key user=NAME (without 'client.')")
            return
        try:
            key = ceph_single.rotate_key(user)
        except ceph_single.KeyNotFoundError:
            event.fail(f"there is no cephx user client.{user}")
            return
        except ceph_single.CephError as exc:
            event.fail(f"rotating client.{user} failed: {exc}")
            return
        for relation in self.model.relations["client"]:
            if any(self._client_user(relation, unit) == user for unit in relation.units):
                relation.data[self.unit]["key"] = key
        event.set_results(
            {"user": f"client.{user}", "key-fingerprint": ceph_single.fingerprint(key)}
        )


def _response_id(raw: str) -> str | None:
    """The request-id a published broker response answers (``None`` when unreadable)."""
    try:
        return str(json.loads(raw)["request-id"])
    except (ValueError, TypeError, KeyError):
        return None


if __name__ == "__main__":  # pragma: nocover
    ops.main(CephProviderCharm)
