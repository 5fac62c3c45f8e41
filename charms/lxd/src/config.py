"""Typed config and action parameters of the lxd charm."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic

from charm_common.certs import InvalidCertificateError, load_certificate
from charm_common.lxd_member import NETWORK, MemberRequest
from charm_common.typed_input import require_confirmation
from lxd import (
    InvalidPreseedError,
    Profile,
    normalize_fingerprint,
    parse_preseed,
    preseed_objects,
    preseed_profiles,
    preseed_server_config,
)

# Who asks, in statuses, for what the preseed option asks for after bootstrap.
PRESEED = "preseed"

CHANNEL_RE = re.compile(r"^(latest|\d+\.\d+)(/(stable|candidate|beta|edge)(/[\w-]+)?)?$")
# A name in LXD's trust store (a client's certificate or token): what an operator types.
TRUST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
# Trust entries the charm manages through relations (juju-metrics, juju-relation-*).
MANAGED_TRUST_PREFIX = "juju-"
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def valid_channel(value: str) -> str:
    """A snap channel as the operator writes it.

    Raises:
        ValueError: not TRACK[/RISK[/BRANCH]].
    """
    if not CHANNEL_RE.match(value):
        raise ValueError("expected TRACK[/RISK[/BRANCH]], e.g. 5.21/stable")
    return value


def valid_trust_name(value: str) -> str:
    """The name of a trust store entry the operator manages.

    Raises:
        ValueError: not a plain name, or one the charm reserves for its relations.
    """
    if not TRUST_NAME_RE.match(value):
        raise ValueError(
            "expected 1-63 letters, digits and . _ @ - (starting with a letter or digit)"
        )
    if value.startswith(MANAGED_TRUST_PREFIX):
        raise ValueError(
            f"names starting with {MANAGED_TRUST_PREFIX!r} are reserved for the certificates "
            "the charm manages through relations"
        )
    return value


def parse_projects(value: Any) -> tuple[str, ...]:
    """``"a,b c"`` -> ``("a", "b", "c")``: the LXD projects a client is restricted to.

    Raises:
        ValueError: a name LXD would not accept.
    """
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise ValueError("expected project names separated by commas or spaces")
    names = tuple(dict.fromkeys(n for n in re.split(r"[\s,]+", value) if n))
    bad = [n for n in names if not PROJECT_RE.match(n)]
    if bad:
        raise ValueError(f"{', '.join(bad)}: not a project name (letters, digits, . _ -)")
    return names


TrustName = Annotated[str, pydantic.AfterValidator(valid_trust_name)]
Projects = Annotated[tuple[str, ...], pydantic.BeforeValidator(parse_projects)]


class CharmConfig(pydantic.BaseModel):
    """The charm's config options (dashes become underscores)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    channel: str = "5.21/stable"
    mode: Literal["cluster", "standalone"] = "cluster"
    preseed: str = ""
    api_port: int = pydantic.Field(default=8443, ge=1, le=65535)
    metrics_port: int = pydantic.Field(default=0, ge=0, le=65535)
    sysctl_tuning: bool = True
    kernel_hardening: bool = True

    @pydantic.field_validator("channel")
    @classmethod
    def _valid_channel(cls, value: str) -> str:
        return valid_channel(value)

    @pydantic.field_validator("preseed")
    @classmethod
    def _valid_preseed(cls, value: str) -> str:
        try:
            parse_preseed(value)
        except InvalidPreseedError as exc:
            raise ValueError(str(exc)) from None
        return value

    @pydantic.model_validator(mode="after")
    def _distinct_ports(self) -> CharmConfig:
        if self.metrics_port == self.api_port:
            raise ValueError("metrics-port must differ from api-port (or be 0)")
        return self

    @property
    def preseed_data(self) -> dict[str, Any]:
        """The validated preseed as a mapping."""
        return parse_preseed(self.preseed)

    @property
    def preseed_request(self) -> MemberRequest:
        """The preseed as desired state after bootstrap: asked for like a subordinate's.

        Its server config, networks and storage pools go through the same steps as what
        subordinates ask for (set from every member; objects defined per member, then
        created cluster-wide by the leader); its profiles are :attr:`preseed_profiles`.
        """
        preseed = self.preseed_data
        objects = preseed_objects(preseed)
        return MemberRequest(
            app=PRESEED,
            server_config=preseed_server_config(preseed),
            networks=tuple(o for entity, o in objects if entity == NETWORK),
            storage_pools=tuple(o for entity, o in objects if entity != NETWORK),
            ready=True,
        )

    @property
    def preseed_profiles(self) -> list[Profile]:
        """The profiles the preseed names."""
        return preseed_profiles(self.preseed_data)


class RemoveDeadMemberParams(pydantic.BaseModel):
    """Parameters of the remove-dead-member action."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = pydantic.Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    confirm: bool = pydantic.Field(default=False, validate_default=True)

    @pydantic.field_validator("confirm")
    @classmethod
    def _confirmed(cls, value: bool) -> bool:
        return require_confirmation(value, "force removal cannot be undone")


class EvacuateParams(pydantic.BaseModel):
    """Parameters of the evacuate action."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    mode: Literal["auto", "migrate", "stop"] = "auto"


class NoParams(pydantic.BaseModel):
    """Actions without parameters (restore, cluster-status) refuse unknown ones."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class UpgradeParams(pydantic.BaseModel):
    """Parameters of the upgrade action ('' channel: the ``channel`` option)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    channel: str = ""

    @pydantic.field_validator("channel")
    @classmethod
    def _valid_channel(cls, value: str) -> str:
        return valid_channel(value) if value else value


class AddTrustedClientParams(pydantic.BaseModel):
    """Parameters of the add-trusted-client action."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: TrustName
    certificate: str
    projects: Projects = ()

    @pydantic.field_validator("certificate")
    @classmethod
    def _valid_certificate(cls, value: str) -> str:
        try:
            load_certificate(value.strip())
        except InvalidCertificateError as exc:
            raise ValueError(str(exc)) from None
        return value.strip() + "\n"


class RemoveTrustedClientParams(pydantic.BaseModel):
    """Parameters of the remove-trusted-client action (any common fingerprint spelling)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    fingerprint: str

    @pydantic.field_validator("fingerprint")
    @classmethod
    def _normalized(cls, value: str) -> str:
        return normalize_fingerprint(value)


class GetClientTokenParams(pydantic.BaseModel):
    """Parameters of the get-client-token action."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: TrustName
    projects: Projects = ()
