#!/usr/bin/env python3
"""The lxd charm: installs LXD and forms a cluster through the ``cluster`` peer relation.

Read ``_reconcile`` top to bottom: it is the runbook. Every step is idempotent and reads
the world (LXD, the relations) rather than the event that woke it.

Subordinates (ovn-bridge, ceph-link) declare over ``lxd-member`` the server config,
networks and storage pools they need; this charm is the only writer to the LXD API and
applies them once the subordinate says it is ready.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import ops

from charm_common.certs import InvalidCertificateError
from charm_common.lxd_member import (
    NETWORK,
    STORAGE_POOL,
    ConflictingRequestsError,
    InvalidMemberDataError,
    LXDMemberProvider,
    LXDObject,
    MemberInfo,
    MemberRequest,
    check_conflicts,
    ready_requests,
    requested_objects,
    requested_server_config,
)
from charm_common.relation_data import unit_number
from charm_common.steps import StepStopped, blocked, waiting
from charm_common.typed_input import InvalidInputError, Model, load_model
from config import (
    MANAGED_TRUST_PREFIX,
    PRESEED,
    AddTrustedClientParams,
    CharmConfig,
    EvacuateParams,
    GetClientTokenParams,
    NoParams,
    RemoveDeadMemberParams,
    RemoveTrustedClientParams,
    UpgradeParams,
)
from https import HTTPSProvider
from installer import InstallError, detect_installer
from lxd import (
    CREATED,
    LXD,
    CertificateRefusedError,
    Evacuation,
    EvacuationRefusedError,
    HTTPSNotListeningError,
    JoinToken,
    JoinTokenError,
    LXDAPIError,
    LXDError,
    LXDUnavailableError,
    Member,
    MemberConfigKey,
    MemberNotEmptyError,
    ObjectPendingError,
    ObjectRefusedError,
    ObjectUpdateRefusedError,
    SoleDatabaseMemberError,
    TrustedCertificate,
    fill_member_config,
    member_name_for_unit,
    member_values_from_objects,
    needs_member_stage,
)
from observability import ObservabilityProvider
from peers import ClusterPeers
from tuning import apply_settings, wanted_settings
from upgrade import (
    ClusterNotReadyError,
    MemberUpgrade,
    Rollout,
    UpgradeFailure,
    UpgradeRefusedError,
    UpgradeStepError,
    next_plan,
)

logger = logging.getLogger(__name__)
# A unit whose joins failed this many times in a row tries again only after JOIN_PAUSE
# seconds (Juju's default update-status interval): a cause that lasts needs an operator.
JOIN_ATTEMPTS, JOIN_PAUSE = 3, 300.0
# ops sends every log record to Juju (one juju-log call each, the hook's commonest tool
# call): urllib3's DEBUG line per LXD API request is left out, its warnings are not.
logging.getLogger("urllib3").setLevel(logging.INFO)


class RefusedToLeaveError(Exception):
    """Fails the departing unit's hook on purpose, so Juju keeps its machine.

    Failing a hook is the one way a unit can stop its own teardown; it is used only where
    going ahead would destroy the cluster (its only database copy would leave).
    """


class LXDCharm(ops.CharmBase):
    """Install LXD, bootstrap or join the cluster, keep membership right."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.installer = detect_installer()
        self.lxd = LXD(self.installer.paths, keep_server_info=True)  # one per hook
        self.peers = ClusterPeers(self)
        self.subordinates = LXDMemberProvider(self)
        self.https = HTTPSProvider(self, self.lxd, mode=lambda: self.peers.mode)
        self.observability = ObservabilityProvider(self, self.lxd, mode=lambda: self.peers.mode)
        self.member_name = member_name_for_unit(self.unit.name)
        self._statuses: list[ops.StatusBase] = []
        for event in (
            self.on.install,
            self.on.start,
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.update_status,
            self.on.leader_elected,
            self.on.cluster_relation_created,
            self.on.cluster_relation_joined,
            self.on.cluster_relation_changed,
            self.on.lxd_member_relation_created,
            self.on.lxd_member_relation_joined,
            self.on.lxd_member_relation_changed,
            self.on.lxd_member_relation_departed,
            self.on.lxd_member_relation_broken,
            self.on.secret_changed,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.cluster_relation_departed, self._on_peer_departed)
        framework.observe(self.on.remove_dead_member_action, self._on_remove_dead_member)
        framework.observe(self.on.evacuate_action, self._on_evacuate)
        framework.observe(self.on.restore_action, self._on_restore)
        framework.observe(self.on.upgrade_action, self._on_upgrade)
        framework.observe(self.on.add_trusted_client_action, self._on_add_trusted_client)
        framework.observe(self.on.remove_trusted_client_action, self._on_remove_trusted_client)
        framework.observe(self.on.get_client_token_action, self._on_get_client_token)
        framework.observe(self.on.cluster_status_action, self._on_cluster_status)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)

    # -- the runbook -------------------------------------------------------------------

    def _reconcile(self, _: ops.EventBase | None = None) -> None:
        try:
            config = load_model(CharmConfig, dict(self.config))
            self._install(config)
            self._publish_member_info()
            self._tune(config)
            self._check_fixed_options(config)
            if config.mode == "standalone":
                self._init_standalone(config)
            else:
                self._bootstrap(config)
                self._record_members()
                self._choose_issuer()
                self._join(config)
                self._remove_departed_members()
            self._upgrade(config)
            self._publish()
            self._apply_server_config(config)  # before the relations that publish its ports
            self.https.reconcile()
            self.observability.reconcile()
            requests = self._member_requests()
            self._objects_then_tokens(config, requests)
            self._wait_for_subordinates(requests)
        except InvalidInputError as exc:
            self._statuses.append(ops.BlockedStatus(f"config: {exc}"))
        except StepStopped as stop:
            self._statuses.append(stop.status)
        except LXDUnavailableError as exc:
            self._statuses.append(ops.WaitingStatus(f"LXD is not answering: {exc}"))
        except InstallError as exc:
            self._statuses.append(ops.BlockedStatus(f"installing LXD failed: {exc}"))

    # -- steps -------------------------------------------------------------------------

    def _objects_then_tokens(self, config: CharmConfig, requests: list[MemberRequest]) -> None:
        """The objects the preseed and subordinates ask for, then the join tokens.

        Tokens come after the objects in every hook, whatever became of them: a token
        carries the member-specific keys of every object that exists, and none stays out
        while an object is pending or errored (a join then fails, see :meth:`_joins_possible`).
        """
        wanted = [self._preseed_request(config, requests), *ready_requests(requests)]
        try:
            self._check_objects_changeable(config, wanted)
            self._apply_requested_server_config(config, wanted)
            self._define_objects_on_this_member(config, wanted)
            self._create_objects(config, wanted)
            self._apply_preseed_profiles(config)
        finally:
            if config.mode == "cluster":
                self._issue_join_tokens()

    def _install(self, config: CharmConfig) -> None:
        fresh = self.installer.installed_version() is None
        if fresh:
            self.installer.install(self._install_channel(config), self._snap_cohort())
        if self.installer.ensure_running() and not fresh:
            # A daemon that died (or a machine that rebooted) is started by the next hook.
            logger.warning("LXD was not running: started it")
        self.lxd.wait_ready()

    def _install_channel(self, config: CharmConfig) -> str:
        """The channel the members run: the last upgrade's, else the ``channel`` option.

        A unit added after ``upgrade channel=X`` must install X: every member of a cluster
        runs the same LXD version.
        """
        plan = self.peers.upgrade_plan()
        return plan.channel if plan is not None and plan.channel else config.channel

    def _snap_cohort(self) -> str:
        """The cohort every unit installs with: the leader creates it, the others wait."""
        if not self.installer.uses_cohort or self.peers.snap_cohort:
            return self.peers.snap_cohort
        if self.peers.relation is None:
            raise waiting("waiting for the peer relation (snap cohort)")
        if not self.unit.is_leader():
            raise waiting("waiting for the leader's snap cohort")
        cohort = self.installer.create_cohort()
        self.peers.set_app(snap_cohort=cohort)
        return cohort

    def _tune(self, config: CharmConfig) -> None:
        changed = apply_settings(wanted_settings(config.sysctl_tuning, config.kernel_hardening))
        if changed:
            logger.info("sysctl settings changed: %s", ", ".join(changed))

    def _check_fixed_options(self, config: CharmConfig) -> None:
        """Options that cannot change once the cluster exists block; nothing is applied."""
        if self.peers.mode and self.peers.mode != config.mode:
            raise blocked(
                f"mode is fixed at {self.peers.mode!r} since bootstrap; "
                f"set it back: juju config {self.app.name} mode={self.peers.mode}"
            )
        fixed = self._cluster_port()
        if fixed is not None and fixed != config.api_port:
            # Members reach each other on cluster.https_address, which LXD cannot move in
            # place: moving only core.https_address takes the members OFFLINE (measured).
            raise blocked(
                f"api-port is fixed at {fixed} since bootstrap (LXD cannot move a member's "
                f"cluster address); set it back: juju config {self.app.name} api-port={fixed}"
            )

    def _cluster_port(self) -> int | None:
        """The port of the cluster addresses: recorded at bootstrap, else this member's own."""
        if self.peers.mode != "cluster":
            return None
        if self.peers.api_port:
            return int(self.peers.api_port)
        info = self.lxd.server_info()
        address = str(info.config.get("cluster.https_address", ""))
        return int(address.rpartition(":")[2]) if info.clustered and ":" in address else None

    def _init_standalone(self, config: CharmConfig) -> None:
        if self.lxd.init_standalone(self._api_address(config), config.preseed_data):
            logger.info("initialised a standalone server")
        if self.unit.is_leader() and self.peers.relation and not self.peers.mode:
            self.peers.set_app(mode="standalone")

    def _bootstrap(self, config: CharmConfig) -> None:
        """The leader creates the cluster once; nothing ever bootstraps a second one."""
        if not self.unit.is_leader() or self.peers.cluster_fingerprint:
            return
        if self.peers.relation is None:
            raise waiting("waiting for the peer relation")
        if not self.lxd.server_info().clustered and self.peers.any_peer_clustered():
            # Another unit is a member but the record is missing: join it, never fork it.
            raise waiting("a peer is clustered but the cluster record is missing")
        if self.lxd.bootstrap_cluster(
            self.member_name,
            self._api_address(config),
            config.preseed_data,
            cluster_address=self._cluster_address(config),
        ):
            logger.info("bootstrapped the cluster as %s", self.member_name)
        info = self.lxd.server_info()
        self.peers.set_app(
            mode="cluster",
            cluster_fingerprint=info.certificate_fingerprint,
            api_port=str(config.api_port),
        )

    def _record_members(self) -> None:
        """The leader records which members the charm created (only those are removed)."""
        if not self.unit.is_leader() or not self.peers.cluster_fingerprint:
            return
        record = self.peers.joined_members()
        for peer in self.peers.peer_units():
            if peer.clustered:
                record[member_name_for_unit(peer.name)] = peer.name
        if self.lxd.server_info().clustered:
            record[self.member_name] = self.unit.name
        if record != self.peers.joined_members():
            self.peers.set_joined_members(record)

    def _choose_issuer(self) -> None:
        """The leader issues tokens when it is a member; otherwise the lowest member does."""
        if not self.unit.is_leader() or not self.peers.cluster_fingerprint:
            return
        if self.lxd.server_info().clustered:
            issuer = self.unit.name
        else:
            members = [p.name for p in self.peers.peer_units() if p.clustered]
            issuer = members[0] if members else ""
        if issuer != self.peers.issuer:
            self.peers.set_app(issuer=issuer)

    def _issue_join_tokens(self) -> None:
        """One outstanding token at a time, so joins are serialized.

        A token whose join failed (LXD used it up), or that lacks the keys of an object
        created since, is revoked and another one issued; the units whose joins failed come
        after the others. A unit that gets a token again gets it in the same secret (a new
        revision): its label is the unit's, and a removal takes effect after the hook.
        """
        tokens = self.peers.issued_tokens()
        is_issuer = self.peers.issuer == self.unit.name and self.lxd.server_info().clustered
        peers = self.peers.peer_units()
        waiting_peers = {p.name for p in peers if not p.clustered and p.address}
        failed = {p.name: p.failed_token for p in peers if p.failed_token}
        can_join = is_issuer and bool(waiting_peers) and self._joins_possible()
        dropped = {}
        for unit_name, secret_id in list(tokens.items()):
            if (
                can_join
                and unit_name in waiting_peers
                and self._token_usable(secret_id, failed.get(unit_name, ""))
            ):
                continue
            # Used, failed, stale, its unit gone, or no longer ours: revoke it everywhere.
            self.lxd.revoke_join_token(member_name_for_unit(unit_name))
            dropped[unit_name] = tokens.pop(unit_name)
        if can_join and not tokens:
            unit_name = min(waiting_peers, key=lambda u: (u in failed, unit_number(u)))
            tokens[unit_name] = self._grant_join_token(unit_name, dropped.pop(unit_name, ""))
        for secret_id in dropped.values():
            self._remove_secret(secret_id)
        self.peers.set_issued_tokens(tokens)

    def _joins_possible(self) -> bool:
        """No join succeeds while a network or pool is pending or errored (see LXD)."""
        unfinished = self.lxd.unfinished_objects()
        if unfinished:
            listed = ", ".join(f"{name} ({status})" for name, status in sorted(unfinished.items()))
            logger.info("no join token while %s not created on every member", listed)
        return not unfinished

    def _member_config(self) -> str:
        """The member-specific keys a joiner must give values for, as its token carries them.

        Sorted: LXD lists them in any order (Go map iteration), and tokens are compared.
        """
        keys = sorted(self.lxd.member_config(), key=lambda k: (k.entity, k.name, k.key))
        return json.dumps(
            [
                {"entity": k.entity, "name": k.name, "key": k.key, "description": k.description}
                for k in keys
            ]
        )

    def _token_usable(self, secret_id: str, failed_digest: str) -> bool:
        """Whether no join failed with the token, and it names every member-specific key."""
        try:
            content = self.model.get_secret(id=secret_id).peek_content()
            digest = JoinToken.decode(content.get("token", "")).digest
        except (ops.SecretNotFoundError, JoinTokenError):
            return False
        return digest != failed_digest and content.get("member-config") == self._member_config()

    def _grant_join_token(self, unit_name: str, secret_id: str = "") -> str:
        """Issue a token for ``unit_name`` in a secret only that unit can read.

        ``secret_id``: the unit's earlier token secret, which gets the new token.
        """
        member = member_name_for_unit(unit_name)
        token = self.lxd.issue_join_token(member)
        content = {"token": token.encode(), "member-config": self._member_config()}
        logger.info("issued a join token for %s", member)
        if secret_id:
            try:
                self.model.get_secret(id=secret_id).set_content(content)
                return secret_id
            except ops.SecretNotFoundError:
                pass
        secret = self.unit.add_secret(
            content,
            label=f"join-token-{member}",
            description=f"single-use LXD cluster join token for {unit_name}",
        )
        unit = self.peers.get_unit(unit_name)
        relation = self.peers.relation
        if unit is not None and relation is not None:
            secret.grant(relation, unit=unit)
        return secret.id or ""

    def _remove_secret(self, secret_id: str) -> None:
        try:
            self.model.get_secret(id=secret_id).remove_all_revisions()
        except ops.SecretNotFoundError:
            pass

    def _join(self, config: CharmConfig) -> None:
        if self.lxd.server_info().clustered:
            return
        if not self.peers.cluster_fingerprint:
            raise waiting("waiting for the leader to bootstrap the cluster")
        # The cluster's OVN networks and Ceph pools are created on this member as it joins:
        # once the cluster has any, its subordinates must have their daemons and files
        # ready, and their values. Before, it joins at once: it defines them on itself later,
        # as every member does, and the leader creates them once every member has.
        requests = self._member_requests()
        not_ready = [r.app for r in requests if not r.ready]
        if not_ready and self.peers.created_objects():
            raise waiting(f"waiting for {', '.join(not_ready)} to be ready before joining")
        # Tell the issuer we are ready for a token before we look for one.
        self.peers.publish(self.member_name, self._cluster_address(config), clustered=False)
        token, keys = self._granted_join_token()
        values = self._member_values(config, requests)
        # An object a subordinate asked for has this machine's value only from that
        # subordinate (a ceph pool's source needs its files); LXD's default would fail it.
        created = self.peers.created_objects()
        lacking = [
            f"{k.entity} {k.name} {k.key}"
            for k in keys
            if f"{k.entity}/{k.name}" in created and (k.entity, k.name, k.key) not in values
        ]
        if lacking:
            raise waiting(f"waiting for a subordinate to give {', '.join(lacking)} to join")
        try:
            self.lxd.join_cluster(
                token,
                self.member_name,
                self._cluster_address(config),
                fill_member_config(keys, values),
            )
        except JoinTokenError as exc:
            raise blocked(f"join token rejected: {exc}") from None
        except LXDAPIError as exc:
            # LXD used the token up: ask the issuer for another one.
            failure = self.peers.record_join_failure(token.digest, exc.reason, time.time())
            logger.warning("join %d failed, asked for a new token: %s", failure.count, exc)
            raise waiting(f"joining failed ({exc.reason}); waiting for a new join token") from None
        self.peers.clear_join_failure()
        logger.info("joined the cluster as %s", self.member_name)
        ovn = self.lxd.ovn_networks()
        if ovn:
            # LXD 5.0.2 starts the cluster's networks on a joining member before it has the
            # cluster's server config: an OVN network looks for its northbound database on
            # the local socket and stays "unavailable on this server" (measured). Started
            # again by a restart, it has the config. Nothing runs on a new member yet.
            self.installer.restart()
            self.lxd.wait_ready()
            logger.info("restarted LXD to start %s with the cluster's config", ", ".join(ovn))

    def _granted_join_token(self) -> tuple[JoinToken, list[MemberConfigKey]]:
        """The token the issuer granted to this unit, checked against the cluster record.

        Not one a join already failed with; after :data:`JOIN_ATTEMPTS` failures in a row,
        none before :data:`JOIN_PAUSE` seconds have passed.
        """
        secret_id = self.peers.token_secret_id()
        if not secret_id:
            raise waiting("waiting for a join token")
        try:
            content = self.model.get_secret(id=secret_id).get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError):
            raise waiting("waiting for access to the join token") from None
        try:
            token = JoinToken.decode(content.get("token", ""))
            keys = [MemberConfigKey(**k) for k in json.loads(content.get("member-config", "[]"))]
        except (JoinTokenError, ValueError, TypeError) as exc:
            raise blocked(f"join token from {self.peers.issuer} is unusable: {exc}") from None
        if token.fingerprint != self.peers.cluster_fingerprint:
            raise blocked(
                f"join token names certificate {token.fingerprint[:12]}, the cluster's is "
                f"{self.peers.cluster_fingerprint[:12]}; refusing to join"
            )
        failure = self.peers.join_failure()
        if failure is not None and failure.token == token.digest:
            raise waiting(f"joining failed ({failure.reason}); waiting for a new join token")
        if failure is not None and failure.count >= JOIN_ATTEMPTS:
            if time.time() < failure.at + JOIN_PAUSE:
                raise blocked(
                    f"joining the cluster failed {failure.count} times, last: "
                    f"{failure.reason}; trying again at the next update-status"
                )
        return token, keys

    @staticmethod
    def _member_values(
        config: CharmConfig, requests: list[MemberRequest]
    ) -> dict[tuple[str, str, str], str]:
        """This member's values of member-specific keys, for its join.

        The subordinates' values win over the preseed's for the same key: the preseed is
        one text for every machine, a subordinate knows this machine (the interface it
        created, the files it wrote).
        """
        return member_values_from_objects(requested_objects([config.preseed_request, *requests]))

    def _remove_departed_members(self) -> None:
        """The leader removes members whose unit is gone (after they were evacuated).

        Not while the leader itself is being removed: then its peers leave its view one by
        one (Juju's relation-departed on the departing side) although they stay.
        """
        if not self.unit.is_leader() or self.peers.departing:
            return
        if not self.lxd.server_info().clustered:
            return
        record = self.peers.joined_members()
        present = self.peers.unit_names()
        departed = {m: u for m, u in record.items() if u not in present}
        if not departed:
            return
        live = {m.name: m for m in self.lxd.members()}
        for member in sorted(departed):
            if member in live:
                self._remove_member(member, self.lxd.member_answers(live[member]))
            del record[member]
            self.peers.set_joined_members(record)

    def _remove_member(self, member: str, reachable: bool) -> None:
        stranded = [] if reachable else self.lxd.member_instances(member)
        if stranded:
            raise blocked(
                f"member {member} is offline and still holds {len(stranded)} instance(s); "
                f"bring its machine back, or run remove-dead-member name={member} confirm=true"
            )
        try:
            # An unreachable member that holds nothing can only be removed with force.
            self.lxd.remove_member(member, force=not reachable, evacuate=reachable)
        except (MemberNotEmptyError, SoleDatabaseMemberError) as exc:
            raise blocked(str(exc)) from None
        logger.info("removed departed member %s", member)

    def _upgrade(self, config: CharmConfig) -> None:
        """This unit's turn in the rolling upgrade the leader planned (see upgrade.py).

        Its steps run in this hook (the health wait is bounded); finishing or failing is
        recorded in the peer relation, which wakes the next unit or stops the rollout.
        """
        rollout = self.peers.upgrade_rollout()
        if rollout is None or self.peers.departing or not rollout.turn_of(self.unit.name):
            return
        plan = rollout.plan
        member = MemberUpgrade(
            self.lxd,
            self.installer,
            self.member_name,
            clustered=config.mode == "cluster",
            progress=self._show_upgrade_step,
        )
        try:
            member.run(plan, self.peers.snap_cohort)
        except ClusterNotReadyError as exc:
            self._statuses.append(ops.WaitingStatus(f"upgrade waits for a healthy cluster: {exc}"))
            return
        except UpgradeStepError as exc:
            logger.error("upgrade %s failed at %s: %s", plan.id, exc.step, exc.reason)
            failure = UpgradeFailure(plan.id, plan.attempt, exc.reason, exc.step)
            self.peers.record_upgrade_failure(failure)
            return
        logger.info("upgraded %s (upgrade %s to %s)", self.member_name, plan.id, plan.target)
        self.peers.record_upgrade_done(plan.id)

    def _show_upgrade_step(self, step: str) -> None:
        # The one status set outside collect-status: an upgrade step can take minutes
        # and collect-status only runs when the hook ends.
        self.unit.status = ops.MaintenanceStatus(f"upgrading: {step}")

    def _publish(self) -> None:
        info = self.lxd.server_info()
        address = info.config.get("cluster.https_address") or info.config.get(
            "core.https_address", ""
        )
        self.peers.publish(self.member_name, str(address), info.clustered)
        self._publish_member_info()

    def _publish_member_info(self) -> None:
        """Tell every subordinate about this member, as soon as LXD answers."""
        info = self.lxd.server_info()
        paths = self.installer.paths
        self.subordinates.publish(
            MemberInfo(
                member_name=self.member_name,
                clustered=info.clustered,
                lxd_version=info.version,
                api_extensions=tuple(info.api_extensions),
                paths={"ceph": paths.ceph_dir, "ovn": paths.ovn_dir},
            )
        )

    def _apply_server_config(self, config: CharmConfig) -> None:
        host = self._binding_address("api")
        wanted = {
            "core.https_address": f"{host}:{config.api_port}",
            "core.metrics_address": f"{host}:{config.metrics_port}" if config.metrics_port else "",
        }
        if self.lxd.update_server_config(wanted):
            logger.info("server config updated")
        self.unit.set_ports(*(p for p in (config.api_port, config.metrics_port) if p))

    # -- what subordinates ask for ---------------------------------------------------------

    def _member_requests(self) -> list[MemberRequest]:
        """Every subordinate's request; nothing is applied while one is unusable."""
        try:
            requests = self.subordinates.requests()
            check_conflicts(requests)
        except InvalidMemberDataError as exc:
            raise blocked(f"lxd-member data from {exc}") from None
        except ConflictingRequestsError as exc:
            raise blocked(f"conflicting lxd-member requests: {exc}") from None
        return requests

    @staticmethod
    def _preseed_request(config: CharmConfig, requests: list[MemberRequest]) -> MemberRequest:
        """What the preseed asks for after bootstrap, less what a subordinate asks for.

        A subordinate's object or server config value wins over the preseed's of the same
        name, as its member-specific values do at a join (see :meth:`_member_values`).
        """
        preseed = config.preseed_request
        taken = {(entity, obj.name) for entity, obj in requested_objects(requests)}
        keys = requested_server_config(requests)
        return dataclasses.replace(
            preseed,
            server_config={k: v for k, v in preseed.server_config.items() if k not in keys},
            networks=tuple(o for o in preseed.networks if (NETWORK, o.name) not in taken),
            storage_pools=tuple(
                o for o in preseed.storage_pools if (STORAGE_POOL, o.name) not in taken
            ),
        )

    def _check_objects_changeable(self, config: CharmConfig, wanted: list[MemberRequest]) -> None:
        """Nothing is applied while an object is asked for as LXD cannot make it in place.

        (Another driver or type, another pool source.) Checked before any step changes
        something, so a preseed with such a change alongside others changes nothing.
        """
        member = self.member_name if config.mode == "cluster" else ""
        for request in wanted:
            for entity, obj in requested_objects([request]):
                try:
                    self.lxd.check_changeable(entity, obj, member)
                except ObjectRefusedError as exc:
                    raise blocked(f"{request.app}: {exc}") from None

    def _apply_requested_server_config(
        self, config: CharmConfig, wanted: list[MemberRequest]
    ) -> None:
        """Server config is cluster-wide, yet every member checks it against its own view.

        LXD 5.0 members that joined after a key was set do not show (or use) it until it
        is set again: setting it from each member makes every member see it.
        """
        if config.mode == "cluster" and not self.lxd.server_info().clustered:
            return
        server_config = requested_server_config(wanted)
        if not server_config:
            return
        try:
            changed = self.lxd.update_server_config(server_config)
        except LXDAPIError as exc:
            apps = ", ".join(r.app for r in wanted if r.server_config)
            raise blocked(f"LXD refused the server config {apps} asks for: {exc.reason}") from None
        if changed:
            logger.info("server config the preseed and subordinates ask for updated")

    def _define_objects_on_this_member(
        self, config: CharmConfig, wanted: list[MemberRequest]
    ) -> None:
        """The first stage of a cluster object: each unit defines it on its own member.

        Every requested object at once, not in order: a definition is only a database
        record until the leader creates the object, LXD checks nothing then.
        """
        if config.mode != "cluster" or not self.lxd.server_info().clustered:
            return
        defined = set()
        try:
            for entity, obj in requested_objects(wanted):
                if not needs_member_stage(entity, obj):
                    continue
                if self.lxd.ensure_member_object(entity, obj, self.member_name):
                    logger.info("defined %s %s on %s", entity, obj.name, self.member_name)
                defined.add(f"{entity}/{obj.name}")
        except ObjectRefusedError as exc:
            raise blocked(str(exc)) from None
        finally:
            self.peers.publish_defined_objects(defined)

    def _create_objects(self, config: CharmConfig, wanted: list[MemberRequest]) -> None:
        """Networks, then storage pools, in order: every standalone server, or the leader.

        The leader records the subordinates' objects it created: a later joiner needs
        their member-specific values from its own subordinates (the preseed's have
        LXD's defaults, as at bootstrap).
        """
        objects = requested_objects(wanted)
        if config.mode == "standalone":
            for entity, obj in objects:
                self._create_object(entity, obj, self.lxd.ensure_standalone_object)
        elif self._is_clustered_leader():
            asked = requested_objects([r for r in wanted if r.app != PRESEED])
            for entity, obj in objects:
                self._create_object(entity, obj, self.lxd.ensure_cluster_object)
                if (entity, obj) in asked:
                    self.peers.set_created_objects(
                        self.peers.created_objects() | {f"{entity}/{obj.name}"}
                    )
        else:
            self._wait_for_the_leaders_objects(objects)

    def _apply_preseed_profiles(self, config: CharmConfig) -> None:
        """The preseed's profiles (cluster-wide): every standalone server, or the leader."""
        if config.mode == "cluster" and not self._is_clustered_leader():
            return
        for profile in config.preseed_profiles:
            try:
                if self.lxd.ensure_profile(profile):
                    logger.info("created or updated profile %s", profile.name)
            except ObjectRefusedError as exc:
                raise blocked(f"{PRESEED}: {exc}") from None

    def _create_object(
        self, entity: str, obj: LXDObject, ensure: Callable[[str, LXDObject], bool]
    ) -> None:
        """One object; stop here if it cannot be created yet (later ones may need it).

        A refused change of an object that exists does not stop the others: they need it
        to exist, not to be up to date.
        """
        try:
            if ensure(entity, obj):
                logger.info("created or updated %s %s", entity, obj.name)
        except ObjectUpdateRefusedError as exc:
            self._statuses.append(ops.BlockedStatus(str(exc)))
        except ObjectPendingError as exc:
            raise waiting(
                f"waiting for every member to define {entity} {obj.name} "
                f"(missing: {', '.join(exc.missing)})"
            ) from None
        except ObjectRefusedError as exc:
            raise blocked(str(exc)) from None

    def _wait_for_the_leaders_objects(self, objects: list[tuple[str, LXDObject]]) -> None:
        for entity, obj in objects:
            state = self.lxd.object_state(entity, obj.name)
            if state is None or state.status != CREATED:
                raise waiting(f"waiting for the leader to create {entity} {obj.name}")

    def _wait_for_subordinates(self, requests: list[MemberRequest]) -> None:
        not_ready = [r.app for r in requests if not r.ready]
        if not_ready:
            raise waiting(f"waiting for {', '.join(not_ready)} to be ready")

    def _is_clustered_leader(self) -> bool:
        return self.unit.is_leader() and self.lxd.server_info().clustered

    # -- departure and actions ---------------------------------------------------------

    def _on_peer_departed(self, event: ops.RelationDepartedEvent) -> None:
        if event.departing_unit != self.unit:
            self._reconcile()
            return
        # This unit is being removed: empty its member while its machine still exists, so
        # the live member that removes it next has nothing to lose.
        self.peers.mark_departing()
        try:
            info = self.lxd.server_info()
        except LXDUnavailableError:
            return
        if not info.clustered:
            return
        others = [m for m in self.lxd.members() if m.name != self.member_name and m.online]
        if not others:
            logger.warning("no other online member to take instances; not evacuating")
            return
        if self.app.planned_units() > 0:  # only this unit goes: the cluster must survive
            try:
                self.lxd.check_database_survives(self.member_name)
            except SoleDatabaseMemberError as exc:
                raise RefusedToLeaveError(
                    f"{exc}. Add a unit first (juju add-unit {self.app.name}), then retry "
                    f"with: juju resolved {self.unit.name}; or remove another unit instead"
                ) from None
        if self.lxd.evacuate_member(self.member_name):
            logger.info("evacuated %s before departure", self.member_name)

    def _on_remove_dead_member(self, event: ops.ActionEvent) -> None:
        try:
            params = load_model(RemoveDeadMemberParams, event.params)
        except InvalidInputError as exc:
            event.fail(str(exc))
            return
        try:
            members = {m.name: m for m in self.lxd.members()}
            member = members.get(params.name)
            if member is None:
                event.fail(f"no cluster member named {params.name}; members: {sorted(members)}")
                return
            if self.lxd.member_answers(member):
                event.fail(
                    f"member {params.name} still answers at {member.address}, it is not "
                    "dead: remove its unit instead (juju remove-unit) so it is evacuated first"
                )
                return
            self.lxd.remove_member(params.name, force=True)
        except LXDError as exc:
            event.fail(f"removing {params.name} failed: {exc}")
            return
        event.set_results({"removed": params.name, "members": len(members) - 1})

    def _on_evacuate(self, event: ops.ActionEvent) -> None:
        params = self._action_params(EvacuateParams, event)
        if params is None:
            return
        try:
            if not self._require_member(event, "there is no cluster to evacuate it to"):
                return
            evacuation = self.lxd.evacuate(self.member_name, params.mode)
        except EvacuationRefusedError as exc:
            event.fail(f"evacuation of {self.member_name} refused, nothing changed: {exc}")
            return
        except LXDError as exc:
            event.fail(f"evacuating {self.member_name} failed: {exc}")
            return
        results = {"member": evacuation.member, "already-evacuated": evacuation.already}
        event.set_results(results | _moved_results(evacuation))

    def _on_restore(self, event: ops.ActionEvent) -> None:
        if self._action_params(NoParams, event) is None:
            return
        try:
            if not self._require_member(event, "there is nothing to restore"):
                return
            restoration = self.lxd.restore(self.member_name)
        except LXDError as exc:
            event.fail(f"restoring {self.member_name} failed: {exc}")
            return
        results: dict[str, Any] = {
            "member": restoration.member,
            "already-restored": restoration.already,
        }
        if restoration.moved:
            results["returned"] = " ".join(sorted(restoration.moved))
        if restoration.started:
            results["started"] = " ".join(restoration.started)
        event.set_results(results)

    def _on_upgrade(self, event: ops.ActionEvent) -> None:
        """Plan a rolling upgrade; the units carry it out in their own hooks."""
        params = self._action_params(UpgradeParams, event)
        if params is None:
            return
        if not self.unit.is_leader():
            event.fail(f"run it on the leader: juju run {self.app.name}/leader upgrade")
            return
        try:
            config = load_model(CharmConfig, dict(self.config))
        except InvalidInputError as exc:
            event.fail(f"config: {exc}")
            return
        units = self._upgrade_candidates()
        if not units:
            event.fail("nothing to upgrade yet: no unit has joined the cluster")
            return
        # Only the snap has channels: the distro package upgrades to what apt offers.
        has_channels = self.installer.uses_cohort
        channel = (params.channel or config.channel) if has_channels else ""
        try:
            plan, resumed_at = next_plan(
                self.peers.upgrade_rollout(), channel, units, self.unit.name
            )
        except UpgradeRefusedError as exc:
            event.fail(f"{exc}; wait for it, or for it to stop and run upgrade again")
            return
        self.peers.set_upgrade_plan(plan)
        results: dict[str, Any] = {
            "upgrade-id": plan.id,
            "order": " ".join(plan.order),
            "channel": plan.channel or "none",
        }
        if resumed_at:
            results |= {"resumed-at": resumed_at, "attempt": plan.attempt}
        if not has_channels:
            results["note"] = (
                "LXD comes from the distro package here: channels do not apply, each member "
                "upgrades to the newest lxd its apt sources offer"
            )
        event.set_results(results)

    def _upgrade_candidates(self) -> set[str]:
        """The units an upgrade covers: every cluster member's (or every standalone server's)."""
        present = self.peers.unit_names() if self.peers.relation else set()
        if self.peers.mode == "standalone":
            return present
        return set(self.peers.joined_members().values()) & present

    def _on_add_trusted_client(self, event: ops.ActionEvent) -> None:
        params = self._action_params(AddTrustedClientParams, event)
        if params is None:
            return
        try:
            if not self._require_trust_store(event, "add-trusted-client"):
                return
            fingerprint = self.lxd.trust_certificate(
                params.name, params.certificate, "client", params.projects
            )
        except InvalidCertificateError as exc:
            event.fail(f"invalid 'certificate': {exc}")
            return
        except CertificateRefusedError as exc:
            event.fail(str(exc))
            return
        except LXDError as exc:
            event.fail(f"trusting {params.name} failed: {exc}")
            return
        results = {"fingerprint": fingerprint, "name": params.name}
        event.set_results(results | _restriction_results(params.projects))

    def _on_remove_trusted_client(self, event: ops.ActionEvent) -> None:
        params = self._action_params(RemoveTrustedClientParams, event)
        if params is None:
            return
        try:
            if not self._require_trust_store(event, "remove-trusted-client"):
                return
            certificate = self._trusted_certificate(event, params.fingerprint)
            if certificate is None:
                return
            if not self.lxd.untrust_certificate(certificate.fingerprint):
                event.fail(f"no trusted certificate {params.fingerprint}")
                return
        except CertificateRefusedError as exc:
            event.fail(str(exc))
            return
        except LXDError as exc:
            event.fail(f"removing trusted certificate {params.fingerprint} failed: {exc}")
            return
        event.set_results({"removed": certificate.fingerprint, "name": certificate.name})

    def _trusted_certificate(
        self, event: ops.ActionEvent, fingerprint: str
    ) -> TrustedCertificate | None:
        """The one trust entry ``fingerprint`` names; ``None`` once the action failed.

        Server certificates of members and the charm's own (``juju-*``, relations manage
        them) are not the operator's to remove.
        """
        found = [
            c for c in self.lxd.trusted_certificates() if c.fingerprint.startswith(fingerprint)
        ]
        if not found:
            event.fail(f"no trusted certificate {fingerprint}")
            return None
        if len(found) > 1:
            names = ", ".join(sorted(c.name for c in found))
            event.fail(
                f"{fingerprint} matches {len(found)} certificates ({names}): give more of it"
            )
            return None
        certificate = found[0]
        if certificate.name.startswith(MANAGED_TRUST_PREFIX):
            event.fail(
                f"certificate {certificate.fingerprint[:12]} ({certificate.name}) is managed by "
                "the charm through a relation: remove that relation instead"
            )
            return None
        if certificate.type == "server" and certificate.name in {
            m.name for m in self.lxd.members()
        }:
            event.fail(
                f"certificate {certificate.fingerprint[:12]} is the server certificate of "
                f"cluster member {certificate.name}: it leaves the trust store when the member "
                "is removed (juju remove-unit)"
            )
            return None
        return certificate

    def _on_get_client_token(self, event: ops.ActionEvent) -> None:
        params = self._action_params(GetClientTokenParams, event)
        if params is None:
            return
        try:
            if not self._require_trust_store(event, "get-client-token"):
                return
            token = self.lxd.issue_client_token(params.name, params.projects)
        except HTTPSNotListeningError as exc:
            event.fail(f"no client token: {exc}")
            return
        except LXDError as exc:
            event.fail(f"issuing a client token for {params.name} failed: {exc}")
            return
        results = {"token": token, "name": params.name}
        event.set_results(results | _restriction_results(params.projects))

    def _on_cluster_status(self, event: ops.ActionEvent) -> None:
        if self._action_params(NoParams, event) is None:
            return
        hint = f"run it on a member, e.g. juju run {self.app.name}/leader cluster-status"
        try:
            if not self._require_member(event, hint):
                return
            members = self.lxd.members()
            problems = self.lxd.cluster_health()
        except LXDError as exc:
            event.fail(f"reading the cluster failed: {exc}")
            return
        units = self.peers.joined_members()
        results: dict[str, Any] = {
            "members": {m.name: _member_results(m, units.get(m.name, "")) for m in members},
            "healthy": not problems,
        }
        if problems:
            results["problems"] = "; ".join(problems)
        rollout = self.peers.upgrade_rollout()
        if rollout is not None:
            results["upgrade"] = _rollout_results(rollout)
        event.set_results(results)

    @staticmethod
    def _action_params(model: type[Model], event: ops.ActionEvent) -> Model | None:
        """The action's typed parameters; ``None`` once the action failed naming the bad one."""
        try:
            return load_model(model, event.params)
        except InvalidInputError as exc:
            event.fail(str(exc))
            return None

    def _require_member(self, event: ops.ActionEvent, hint: str) -> bool:
        """Whether this unit's LXD is a cluster member; fail the action when it is not."""
        if self.lxd.server_info().clustered:
            return True
        event.fail(
            f"{self.unit.name} is not a cluster member (standalone, or not joined yet): {hint}"
        )
        return False

    def _require_trust_store(self, event: ops.ActionEvent, action: str) -> bool:
        """A unit that has not joined yet has only its own trust store, replaced as it joins."""
        if self.peers.mode == "standalone":
            return True
        hint = f"run it on a member, e.g. juju run {self.app.name}/leader {action}"
        return self._require_member(event, hint)

    # -- status ------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        # First: a stopped rollout names the step and how to resume; what follows from it
        # (e.g. the daemon that failed to restart) is for the logs.
        upgrade = self._upgrade_unit_status()
        statuses = [*([upgrade] if upgrade else []), *self._statuses, self._workload_status()]
        for status in statuses:
            event.add_status(status)
        # ops shows the first Blocked one, if any: the leader shows it for the application.
        blocked = [s.message for s in statuses if isinstance(s, ops.BlockedStatus)]
        self.peers.publish_blocked(blocked[0] if blocked else "")

    def _upgrade_unit_status(self) -> ops.StatusBase | None:
        """Blocked while this unit's failed upgrade step stops the rollout."""
        rollout = self.peers.upgrade_rollout()
        stopped = rollout.failure if rollout is not None else None
        if stopped is None or stopped[0] != self.unit.name:
            return None
        failure = stopped[1]
        evacuated = failure.left_evacuated and self.peers.mode == "cluster"
        return ops.BlockedStatus(
            f"upgrade failed at {failure.step}: {failure.reason}; fix it and run upgrade "
            "again" + (" (the member stays evacuated)" if evacuated else "")
        )

    def _workload_status(self) -> ops.StatusBase:
        try:
            config = load_model(CharmConfig, dict(self.config))
        except InvalidInputError as exc:
            return ops.BlockedStatus(f"config: {exc}")
        try:
            info = self.lxd.server_info()
            if config.mode == "standalone":
                return ops.ActiveStatus(f"standalone server (LXD {info.version})")
            if not info.clustered:
                return ops.WaitingStatus("waiting to join the cluster")
            members = self.lxd.members()
        except LXDError as exc:
            return ops.WaitingStatus(f"LXD is not answering: {exc}")
        own = next((m for m in members if m.name == self.member_name), None)
        if own is not None and _down(own):
            return ops.BlockedStatus(f"member {own.name} {own.status.upper()}: {own.message}")
        state = " evacuated" if own is not None and own.evacuated else ""
        down = "".join(f"; {m.name} {m.status.upper()}" for m in members if _down(m))
        return ops.ActiveStatus(
            f"cluster member {self.member_name}{state} ({len(members)} members{down})"
        )

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        upgrade = self._upgrade_app_status()
        if upgrade is not None:
            event.add_status(upgrade)
        # What blocks the leader (a fixed option changed, say), then what blocks the other
        # units (as they last said), blocks the application.
        for status in self._statuses:
            if isinstance(status, ops.BlockedStatus):
                event.add_status(status)
        for unit, message in self.peers.blocked_peers().items():
            event.add_status(ops.BlockedStatus(f"{unit}: {message}"))
        if self.peers.mode == "cluster":
            event.add_status(self._members_app_status())

    def _members_app_status(self) -> ops.StatusBase:
        """``3 members``, or how many are ONLINE and which are not (Blocked)."""
        count = len(self.peers.joined_members())
        try:
            members = self.lxd.members() if self.lxd.server_info().clustered else []
        except LXDError:
            return ops.ActiveStatus(f"{count} members")  # the unit status says why
        down = [m for m in members if _down(m)]
        if not down:
            return ops.ActiveStatus(f"{count} members")
        online = sum(m.online for m in members)
        names = ", ".join(f"{m.name} {m.status.upper()}" for m in down)
        return ops.BlockedStatus(f"{online}/{len(members)} members ONLINE; {names}")

    def _upgrade_app_status(self) -> ops.StatusBase | None:
        """How far a rolling upgrade got (``None`` when none runs)."""
        rollout = self.peers.upgrade_rollout()
        if rollout is None or rollout.complete:
            return None
        stopped = rollout.failure
        if stopped is not None:
            return ops.BlockedStatus(
                f"upgrade stopped at {stopped[0]} ({rollout.progress} done): {stopped[1].reason}"
            )
        return ops.MaintenanceStatus(f"upgrading {rollout.progress} ({rollout.current})")

    # -- addresses ---------------------------------------------------------------------

    def _binding_address(self, endpoint: str) -> str:
        binding = self.model.get_binding(endpoint)
        address = binding.network.bind_address if binding else None
        if address is None:
            raise waiting(f"no address on the {endpoint} binding yet")
        return str(address)

    def _api_address(self, config: CharmConfig) -> str:
        return f"{self._binding_address('api')}:{config.api_port}"

    def _cluster_address(self, config: CharmConfig) -> str:
        return f"{self._binding_address('cluster')}:{config.api_port}"


def _down(member: Member) -> bool:
    """A member that neither serves instances nor was emptied on purpose (OFFLINE, ...)."""
    return not member.online and not member.evacuated


# -- action results (Juju keeps string maps: nested dicts flatten to dotted keys, lists
# would arrive as Python reprs, so lists are space-separated strings) --------------------


def _moved_results(evacuation: Evacuation) -> dict[str, Any]:
    """Where the instances went, by member (``project/name`` is no valid result key)."""
    by_member: dict[str, list[str]] = {}
    for instance, member in sorted(evacuation.moved.items()):
        by_member.setdefault(member, []).append(instance)
    results: dict[str, Any] = {}
    if by_member:
        results["moved"] = {member: " ".join(names) for member, names in by_member.items()}
    if evacuation.stopped:
        results["stopped"] = " ".join(evacuation.stopped)
    return results


def _restriction_results(projects: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {"restricted": bool(projects)}
    if projects:
        results["projects"] = " ".join(projects)
    return results


def _member_results(member: Member, unit: str) -> dict[str, str]:
    results = {
        "unit": unit or "none (not a unit of this application)",
        "status": member.status,
        "roles": " ".join(member.roles) or "none",
        "address": member.address,
    }
    if member.message:
        results["message"] = member.message
    return results


def _rollout_results(rollout: Rollout) -> dict[str, Any]:
    plan = rollout.plan
    stopped = rollout.failure
    if rollout.complete:
        state = "complete"
    elif stopped is not None:
        state = f"stopped at {stopped[0]} ({stopped[1].step}): {stopped[1].reason}"
    else:
        state = f"upgrading {rollout.current}"
    return {
        "id": plan.id,
        "channel": plan.channel or "none",
        "attempt": plan.attempt,
        "done": rollout.progress,
        "state": state,
    }


if __name__ == "__main__":  # pragma: nocover
    ops.main(LXDCharm)
