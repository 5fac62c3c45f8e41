"""The ``https`` relation (interface ``lxd-https``): client certificates in, the cluster out.

The wire format is the existing LXD charm's (canonical/charm-lxd and its
``examples/https-client``), so its clients work unchanged:

client -> lxd, each client unit's own databag:
    ``version``      ``"1.0"``
    ``certificate``  the client's certificate (PEM)
    ``projects``     optional: project names separated by commas (as
                     ``lxc config trust add --projects`` takes them); the certificate is
                     then restricted to those projects
    ``autoremove``   optional, legacy: ignored here, the trust always leaves with the client
lxd -> client: the application databag in a cluster (the leader writes it), each unit's
own databag for standalone servers (every server has its own certificate and address):
    ``version``                  ``"1.0"``
    ``certificate``              the certificate the HTTPS API serves (PEM): the cluster's
    ``certificate_fingerprint``  its SHA-256 fingerprint (lowercase hex)
    ``addresses``                ``host:port`` of every member's API, separated by commas

Each client certificate is trusted as ``juju-relation-<client app>`` (type ``client``).
The trust store is the cluster's, so in a cluster only the leader writes it; a standalone
server's unit writes its own. Every certificate named ``juju-relation-*`` that no related
unit sends any more (its unit departed, the relation is gone) is removed: that prefix
belongs to this relation. A malformed certificate is refused and reported, never trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import ops

from charm_common import certs
from charm_common.relation_data import update_databag
from lxd import (
    LXD,
    CertificateRefusedError,
    LXDAPIError,
    LXDUnavailableError,
    TrustedCertificate,
    certificate_fingerprint,
)

logger = logging.getLogger(__name__)

ENDPOINT = "https"
VERSION = "1.0"
TRUST_PREFIX = "juju-relation-"
CLUSTER, STANDALONE = "cluster", "standalone"


class InvalidClientDataError(ValueError):
    """A client unit published data this side cannot use (the message names app and key)."""


@dataclass(frozen=True)
class ClientCertificate:
    """One client unit's certificate, checked, and what it asks to be restricted to."""

    app: str
    pem: str
    fingerprint: str
    projects: tuple[str, ...] = ()

    @property
    def trust_name(self) -> str:
        """The name of its entry in LXD's trust store."""
        return f"{TRUST_PREFIX}{self.app}"

    def matches(self, entry: TrustedCertificate) -> bool:
        """Whether ``entry`` already trusts it exactly as asked."""
        return (
            entry.name == self.trust_name
            and entry.type == "client"
            and entry.projects == self.projects
            and entry.restricted == bool(self.projects)
        )


@dataclass(frozen=True)
class ServerAnswer:
    """What this side tells every client: how to reach and verify the HTTPS API."""

    certificate: str
    addresses: tuple[str, ...]

    def encode(self) -> dict[str, str]:
        """The databag form (every value a string, lists comma-separated)."""
        return {
            "version": VERSION,
            "certificate": self.certificate,
            "certificate_fingerprint": certificate_fingerprint(self.certificate),
            "addresses": ",".join(self.addresses),
        }


def parse_projects(raw: str) -> tuple[str, ...]:
    """``"a, b,,a"`` -> ``("a", "b")``: comma-separated names, sorted, without repeats."""
    return tuple(sorted({p.strip() for p in raw.split(",") if p.strip()}))


def read_client(
    app: str, databag: ops.RelationDataContent | dict[str, str]
) -> ClientCertificate | None:
    """One client unit's request; ``None`` while it has not published one.

    Raises:
        InvalidClientDataError: a version this side does not speak, or a certificate
            that is not a PEM certificate.
    """
    version = databag.get("version", "")
    pem = databag.get("certificate", "")
    if not version or not pem.strip():
        return None
    if version != VERSION:
        raise InvalidClientDataError(
            f"https: {app} speaks version {version!r}, this charm speaks {VERSION!r}"
        )
    try:
        certs.load_certificate(pem.strip())
        fingerprint = certificate_fingerprint(pem.strip())
    except (certs.InvalidCertificateError, ValueError) as exc:
        reason = str(exc).split(". ", 1)[0]
        raise InvalidClientDataError(
            f"https: {app} sent an invalid certificate: {reason}"
        ) from None
    return ClientCertificate(app, pem, fingerprint, parse_projects(databag.get("projects", "")))


class HTTPSProvider(ops.Object):
    """Trusts the certificates of related clients and tells them how to reach the cluster.

    Args:
        charm: the lxd charm.
        lxd: the LXD client of this unit.
        mode: returns the mode the application was bootstrapped in (``cluster``,
            ``standalone``, or ``""`` before bootstrap).
    """

    _stored = ops.StoredState()

    def __init__(self, charm: ops.CharmBase, lxd: LXD, mode: Callable[[], str]):
        super().__init__(charm, ENDPOINT)
        self._charm = charm
        self._lxd = lxd
        self._mode = mode
        self._problems: list[str] = []
        # Relations this unit leaves because it is being removed (not the relation).
        self._stored.set_default(leaving=[])
        events = charm.on[ENDPOINT]
        self.framework.observe(events.relation_joined, self._on_changed)
        self.framework.observe(events.relation_changed, self._on_changed)
        self.framework.observe(events.relation_departed, self._on_departed)
        self.framework.observe(events.relation_broken, self._on_broken)
        self.framework.observe(charm.on.collect_unit_status, self._on_collect_unit_status)

    # -- events ------------------------------------------------------------------------

    def _on_changed(self, _: ops.RelationEvent) -> None:
        self._run()

    def _on_departed(self, event: ops.RelationDepartedEvent) -> None:
        if event.departing_unit == self._charm.unit:
            # This unit is being removed: its view of the clients empties one by one (and
            # the relations break for it) while they stay for the other units. From now
            # on it changes nothing the clients have.
            self._stored.leaving = sorted({*self._stored.leaving, event.relation.id})
            return
        self._run(gone=event.unit)

    def _on_broken(self, _: ops.RelationBrokenEvent) -> None:
        self._run()

    def _run(self, gone: ops.Unit | None = None) -> None:
        try:
            self.reconcile(gone)
        except LXDUnavailableError as exc:
            # The charm's own reconcile reports it; the next hook catches up.
            logger.info("https relation not served yet: %s", exc)

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        for problem in self._problems:
            event.add_status(ops.BlockedStatus(problem))

    # -- the work ----------------------------------------------------------------------

    def reconcile(self, gone: ops.Unit | None = None) -> None:
        """Trust exactly the related clients' certificates and answer every relation.

        Idempotent; does nothing where this unit does not own the trust store (a cluster
        member that is not the leader) or before LXD serves HTTPS. ``gone`` is a client
        unit leaving the relation in this hook (Juju may still list it).
        """
        self._problems = []
        if self._stored.leaving:
            # This unit is being removed: the relations it leaves stay for the others.
            return
        role = self._role()
        if role is None:
            return
        # Also without any relation: entries of a relation that broke while LXD was not
        # answering leave on the next reconcile.
        self._sync_trust(self._clients(gone))
        relations = self._charm.model.relations[ENDPOINT]
        if not relations:
            return
        answer = self._answer(role).encode()
        owner = self._charm.app if role == CLUSTER else self._charm.unit
        for relation in relations:
            update_databag(relation.data[owner], answer)

    def _role(self) -> str | None:
        """``cluster`` (this unit is the clustered leader), ``standalone``, or ``None``."""
        mode = self._mode()
        if mode == CLUSTER and self._charm.unit.is_leader():
            return CLUSTER if self._lxd.server_info().clustered else None
        if mode == STANDALONE:
            https_address = self._lxd.server_info().config.get("core.https_address")
            return STANDALONE if https_address else None
        return None

    def _clients(self, gone: ops.Unit | None) -> list[ClientCertificate]:
        """Every related client unit's certificate; unusable ones are reported, skipped."""
        clients: dict[str, ClientCertificate] = {}
        for relation in self._charm.model.relations[ENDPOINT]:
            if relation.app is None:
                continue
            for unit in sorted(relation.units, key=lambda u: u.name):
                if unit == gone:
                    continue
                try:
                    client = read_client(relation.app.name, relation.data[unit])
                except InvalidClientDataError as exc:
                    self._problems.append(str(exc))
                    continue
                if client is not None:
                    clients.setdefault(client.fingerprint, client)
        return list(clients.values())

    def _sync_trust(self, clients: list[ClientCertificate]) -> None:
        """Remove the relation's entries nobody sends any more, add or fix the others."""
        wanted = {c.fingerprint: c for c in clients}
        trusted = {t.fingerprint: t for t in self._lxd.trusted_certificates()}
        for stale in trusted.values():
            if stale.name.startswith(TRUST_PREFIX) and stale.fingerprint not in wanted:
                self._lxd.untrust_certificate(stale.fingerprint)
                logger.info(
                    "https: no longer trusting %s (%s)", stale.name, stale.fingerprint[:12]
                )
        for client in clients:
            entry = trusted.get(client.fingerprint)
            if entry is None:
                self._trust(client)
            elif not entry.name.startswith(TRUST_PREFIX):
                # The operator trusted it under another name: that entry is theirs to manage.
                logger.warning(
                    "https: %s's certificate is already trusted as %s; left as it is",
                    client.app,
                    entry.name,
                )
            elif not client.matches(entry) and not self._trust(client):
                # Fail closed: an entry that no longer says what the client asks for (say,
                # broader than the projects it now names) does not stay.
                self._lxd.untrust_certificate(entry.fingerprint)

    def _trust(self, client: ClientCertificate) -> bool:
        """Trust ``client`` as it asks; False (and a problem reported) when refused."""
        try:
            self._lxd.trust_certificate(client.trust_name, client.pem, "client", client.projects)
        except certs.InvalidCertificateError as exc:
            self._problems.append(f"https: {client.app} sent an invalid certificate: {exc}")
            return False
        except CertificateRefusedError as exc:
            self._problems.append(f"https: {client.app}'s certificate refused: {exc}")
            return False
        except LXDAPIError as exc:
            self._problems.append(f"https: LXD refused {client.app}'s certificate: {exc.reason}")
            return False
        restriction = f" for projects {', '.join(client.projects)}" if client.projects else ""
        logger.info("https: trusted %s%s", client.trust_name, restriction)
        return True

    def _answer(self, role: str) -> ServerAnswer:
        if role == CLUSTER:
            members = sorted(self._lxd.members(), key=lambda m: m.name)
            addresses = tuple(m.address for m in members)
        else:
            addresses = (str(self._lxd.server_info().config.get("core.https_address", "")),)
        return ServerAnswer(self._lxd.cluster_certificate(), addresses)
