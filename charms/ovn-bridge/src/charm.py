#!/usr/bin/env python3
"""The ovn-bridge charm: OVN central in raft, the OVN chassis, and LXD's OVN networks.

A subordinate of lxd. Read ``_reconcile`` top to bottom: it is the runbook. Every step
is idempotent and reads the world (the daemons, the peer relation), not the event.
"""

from __future__ import annotations

import logging

import ops

import ovn
from charm_common import certs, packages
from charm_common.lxd_member import (
    InvalidMemberDataError,
    LXDMemberRequirer,
    LXDObject,
    MemberRequest,
)
from charm_common.steps import StepStopped, waiting
from charm_common.typed_input import InvalidInputError, load_model
from config import CharmConfig, KickParams
from peers import OVNPeers

logger = logging.getLogger(__name__)

CA_SECRET_LABEL = "ovn-ca"  # noqa: S105 - a label, not a secret
DATABASES = ("nb", "sb")


class OVNBridgeCharm(ops.CharmBase):
    """OVN central (raft, TLS) on the first units, the chassis on all, LXD's networks."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.peers = OVNPeers(self)
        self.lxd_member = LXDMemberRequirer(self)
        self.switch = ovn.Switch()
        self.controller = ovn.Controller()
        self.central = ovn.Central()
        self.tls = ovn.TLSFiles()
        self._statuses: list[ops.StatusBase] = []
        for event in (
            self.on.install,
            self.on.start,
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.update_status,
            self.on.leader_elected,
            self.on.ovn_peers_relation_created,
            self.on.ovn_peers_relation_joined,
            self.on.ovn_peers_relation_changed,
            self.on.lxd_member_relation_created,
            self.on.lxd_member_relation_joined,
            self.on.lxd_member_relation_changed,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.ovn_peers_relation_departed, self._on_peer_departed)
        framework.observe(self.on.stop, self._on_stop)
        framework.observe(self.on.cluster_status_action, self._on_cluster_status)
        framework.observe(self.on.cluster_kick_action, self._on_cluster_kick)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)

    # -- the runbook -------------------------------------------------------------------

    def _reconcile(self, _: ops.EventBase | None = None) -> None:
        try:
            config = load_model(CharmConfig, dict(self.config))
            self._install()
            ca = self._ensure_ca()
            self._request_certificate()
            self._sign_certificates(ca)
            self._install_certificate()
            self._choose_central_units(config)
            self._run_central()
            self._run_chassis(config)
            self._publish_to_lxd(config)
        except InvalidInputError as exc:
            self._statuses.append(ops.BlockedStatus(f"config: {exc}"))
        except StepStopped as stop:
            self._statuses.append(stop.status)
        except InvalidMemberDataError as exc:
            self._statuses.append(ops.BlockedStatus(f"lxd-member data from lxd: {exc}"))
        except ovn.OVNUnavailableError as exc:
            self._statuses.append(ops.WaitingStatus(f"OVN is not answering: {exc}"))
        except ovn.OVNError as exc:
            self._statuses.append(ops.BlockedStatus(f"OVN: {exc}"))
        except packages.PackageError as exc:
            self._statuses.append(ops.BlockedStatus(f"installing OVN: {exc}"))

    # -- steps -------------------------------------------------------------------------

    def _install(self) -> None:
        if packages.install(ovn.PACKAGES):
            logger.info("installed %s", ", ".join(ovn.PACKAGES))

    def _ensure_ca(self) -> dict[str, str]:
        """The leader makes the cluster CA once; its key stays in an app-owned secret.

        Returns the secret's content (``{}`` on other units, which never read it).
        """
        if not self.unit.is_leader():
            return {}
        if self.peers.relation is None:
            raise waiting("waiting for the peer relation")
        content = self._ca_secret()
        if not content:
            key, cert = certs.generate_ca(f"{self.app.name} OVN CA ({self.model.uuid[:8]})")
            content = {"ca-key": key, "ca-cert": cert}
            self.app.add_secret(
                content, label=CA_SECRET_LABEL, description="CA of the OVN central cluster"
            )
            logger.info("created the OVN cluster CA")
        self.peers.set_app(ca=content["ca-cert"])
        return content

    def _ca_secret(self) -> dict[str, str]:
        try:
            return self.model.get_secret(label=CA_SECRET_LABEL).get_content(refresh=True)
        except ops.SecretNotFoundError:
            return {}

    def _request_certificate(self) -> None:
        """Every unit keeps its key on its machine and publishes a CSR for its addresses."""
        key = ovn.ensure_private_key(self.tls, certs.generate_private_key)
        address = self._binding_address("ovn-peers")
        sans = {address, self._binding_address("data")}
        current = next((p.csr for p in self.peers.units() if p.name == self.unit.name), "")
        if not (
            current
            and certs.certificate_matches_key(current, key)
            and certs.certificate_sans(current) == sans
        ):
            current = certs.make_csr(key, self.unit.name, sorted(sans))
        self.peers.publish_csr(address=address, csr=current)

    def _sign_certificates(self, ca: dict[str, str]) -> None:
        """The leader signs each unit's CSR; re-signs when it changed or nears expiry."""
        if not self.unit.is_leader():
            return
        signed = self.peers.certificates
        wanted = {}
        for peer in self.peers.units():
            if not peer.csr or peer.departing:
                continue
            current = signed.get(peer.name, "")
            try:
                if not (current and _still_valid(current, peer.csr, ca["ca-cert"])):
                    current = certs.sign_csr(peer.csr, ca["ca-key"], ca["ca-cert"])
                    logger.info("signed a certificate for %s", peer.name)
            except certs.InvalidCertificateError as exc:
                logger.warning("not signing %s's CSR: %s", peer.name, exc)
                continue
            wanted[peer.name] = current
        self.peers.set_app(certificates=wanted)

    def _install_certificate(self) -> None:
        cert, ca = self.peers.certificates.get(self.unit.name, ""), self.peers.ca
        key = ovn.read_private_key(self.tls) or ""
        if not (cert and ca and certs.certificate_matches_key(cert, key)):
            raise waiting("waiting for the leader to sign this unit's certificate")
        if ovn.write_tls_files(self.tls, None, cert, ca):
            logger.info("installed a new certificate")

    def _choose_central_units(self, config: CharmConfig) -> None:
        """The leader keeps ``central-units`` units in raft: the lowest, replaced when gone."""
        if not self.unit.is_leader():
            return
        live = [p.name for p in self.peers.units() if p.address and not p.departing]
        central = [u for u in self.peers.central_units if u in live]
        central += [u for u in live if u not in central]
        central = central[: config.central_units]
        bootstrapped = any(p.central_member for p in self.peers.units())
        self.peers.set_app(central_units=central, bootstrapped=bootstrapped)

    def _run_central(self) -> None:
        if self.peers.departing:
            return
        central = self.peers.central_units
        if self.unit.name not in central:
            if self.central.has_database():
                self.central.leave()
                logger.info("left the OVN raft clusters (no longer a central unit)")
            self.peers.publish_central(False)
            return
        bootstrap, peers = False, []
        if not self.central.has_database():
            # The first central unit creates the clusters once; all others join them.
            bootstrap = not self.peers.bootstrapped and central[0] == self.unit.name
            peers = self._central_addresses(exclude_self=True)
            if not bootstrap and not peers:
                raise waiting("waiting for an OVN central member to join")
        if self.central.ensure(self._binding_address("ovn-peers"), peers, bootstrap, self.tls):
            logger.info("OVN central started (%s)", "bootstrap" if bootstrap else "member")
        states = {db: self.central.status(db) for db in DATABASES}
        member = all(state.is_member for state in states.values())
        self.peers.publish_central(member)
        if not member:
            raise waiting(
                f"OVN central joining raft (nb: {states['nb'].status}, sb: {states['sb'].status})"
            )
        addresses = self._central_addresses()
        if self.central.ensure_northd(addresses, addresses, self.tls):
            logger.info("ovn-northd (re)started for %s", ", ".join(addresses))

    def _run_chassis(self, config: CharmConfig) -> None:
        self.switch.ensure_running()
        sb = self._central_addresses()
        if not sb:
            raise waiting("waiting for an OVN central member")
        chassis = ovn.ChassisConfig(
            system_id=self.unit.name.replace("/", "-"),
            sb_remote=ovn.connection_string(sb, ovn.SB_PORT),
            encap_ip=self._binding_address("data"),
            datapath_type=config.datapath_type,
            bridge_mappings=config.mappings,
            bridge_interfaces=config.bridge_interfaces,
        )
        if self.switch.configure(chassis):
            logger.info("chassis configured")
        self.controller.ensure_running(self.tls)

    def _publish_to_lxd(self, config: CharmConfig) -> None:
        """Tell the lxd unit what to configure; ready once its client files are in place."""
        if self.lxd_member.relation is None:
            return
        member = self.lxd_member.member()
        if member is None:
            raise waiting("waiting for the lxd unit to describe its member")
        lxd_dir = member.paths.get("ovn", "")
        if lxd_dir and ovn.TLSFiles.in_dir(lxd_dir) != self.tls:
            ovn.write_tls_files(
                ovn.TLSFiles.in_dir(lxd_dir),
                ovn.read_private_key(self.tls),
                self.peers.certificates[self.unit.name],
                self.peers.ca,
            )
        nb = self._central_addresses()
        self.lxd_member.publish(
            MemberRequest(
                app=self.app.name,
                server_config={
                    "network.ovn.northbound_connection": ovn.connection_string(nb, ovn.NB_PORT)
                },
                networks=lxd_networks(config),
                ready=True,
            )
        )

    # -- removal and actions -----------------------------------------------------------

    def _on_peer_departed(self, event: ops.RelationDepartedEvent) -> None:
        if event.departing_unit != self.unit:
            self._reconcile()
            return
        # Leave raft while the others can still commit it, so they keep a majority.
        self.peers.mark_departing()
        self._leave_raft()

    def _on_stop(self, _: ops.StopEvent) -> None:
        self._leave_raft()
        self.controller.stop()

    def _leave_raft(self) -> None:
        if not self.central.has_database():
            return
        try:
            self.central.leave()
            logger.info("left the OVN raft clusters")
        except ovn.OVNError as exc:  # the last member, or peers already gone
            logger.warning("leaving raft failed: %s; stopping central anyway", exc)
            self.central.stop()

    def _on_cluster_status(self, event: ops.ActionEvent) -> None:
        if not self.central.running():
            event.fail(
                f"{self.unit.name} does not run OVN central; central units: "
                f"{', '.join(self.peers.central_units) or 'none yet'}"
            )
            return
        try:
            event.set_results({db: self.central.status(db).as_dict() for db in DATABASES})
        except ovn.OVNError as exc:
            event.fail(f"reading raft status failed: {exc}")

    def _on_cluster_kick(self, event: ops.ActionEvent) -> None:
        try:
            params = load_model(KickParams, event.params)
        except InvalidInputError as exc:
            event.fail(str(exc))
            return
        if not self.central.running():
            event.fail(f"{self.unit.name} does not run OVN central; run it on a central unit")
            return
        try:
            status = self.central.status(params.db)
            server = next((s for s in status.servers if s.sid.startswith(params.server_id)), None)
            if server is None:
                event.fail(f"no {params.db} server {params.server_id}; see cluster-status")
                return
            owner = self._live_unit_at(server.address)
            if owner:
                event.fail(
                    f"server {server.sid} ({server.address}) belongs to live unit {owner}: "
                    "remove that unit instead, it leaves raft cleanly"
                )
                return
            self.central.kick(params.db, server.sid)
        except ovn.OVNError as exc:
            event.fail(f"kicking {params.server_id} failed: {exc}")
            return
        event.set_results({"kicked": server.sid, "address": server.address, "db": params.db})

    # -- status ------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        for status in self._statuses:
            event.add_status(status)
        try:
            load_model(CharmConfig, dict(self.config))
        except InvalidInputError as exc:
            event.add_status(ops.BlockedStatus(f"config: {exc}"))
        role = "central + chassis" if self.unit.name in self.peers.central_units else "chassis"
        event.add_status(ops.ActiveStatus(role))

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        members = [p.name for p in self.peers.units() if p.central_member]
        event.add_status(ops.ActiveStatus(f"{len(members)} central units in raft"))

    # -- addresses ---------------------------------------------------------------------

    def _binding_address(self, endpoint: str) -> str:
        binding = self.model.get_binding(endpoint)
        address = binding.network.bind_address if binding else None
        if address is None:
            raise waiting(f"no address on the {endpoint} binding yet")
        return str(address)

    def _central_addresses(self, exclude_self: bool = False) -> list[str]:
        """Addresses of the central units that are raft members (clients use these)."""
        return [
            p.address
            for p in self.peers.units()
            if p.central_member
            and p.address
            and not p.departing
            and not (exclude_self and p.name == self.unit.name)
        ]

    def _live_unit_at(self, raft_address: str) -> str:
        host = raft_address.split(":")[1].strip("[]") if ":" in raft_address else ""
        return next(
            (p.name for p in self.peers.units() if p.address == host and not p.departing), ""
        )


def _still_valid(cert: str, csr: str, ca_cert: str) -> bool:
    """A signed certificate still serves its CSR: same key and names, our CA, not expiring."""
    return (
        certs.certificate_sans(cert) == certs.certificate_sans(csr)
        and certs.issued_by(cert, ca_cert)
        and not certs.needs_renewal(cert)
        and certs.public_key_der(cert) == certs.public_key_der(csr)
    )


def lxd_networks(config: CharmConfig) -> tuple[LXDObject, ...]:
    """LXD's uplink (member-specific parent bridge) and the default OVN network on it."""
    if not config.uplink_ipv4_gateway:
        return ()
    uplink = {
        "ipv4.gateway": config.uplink_ipv4_gateway,
        "ipv4.ovn.ranges": config.uplink_ipv4_ovn_ranges,
    }
    if config.nameservers:
        uplink["dns.nameservers"] = ",".join(config.nameservers)
    return (
        LXDObject(
            "UPLINK",
            "physical",
            uplink,
            {"parent": config.uplink_bridge},
            "OVN uplink (ovn-bridge)",
        ),
        LXDObject(
            "default",
            "ovn",
            {
                "network": "UPLINK",
                "ipv4.address": config.network_ipv4_address,
                "ipv4.nat": "true",
                "ipv6.address": "none",
            },
            {},
            "default OVN network (ovn-bridge)",
        ),
    )


if __name__ == "__main__":  # pragma: nocover
    ops.main(OVNBridgeCharm)
