"""Typed config and action parameters of the lxd charm."""

from __future__ import annotations

import re
from typing import Any, Literal

import pydantic

from charm_common.typed_input import require_confirmation
from lxd import InvalidPreseedError, parse_preseed

CHANNEL_RE = re.compile(r"^(latest|\d+\.\d+)(/(stable|candidate|beta|edge)(/[\w-]+)?)?$")


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
        if not CHANNEL_RE.match(value):
            raise ValueError("expected TRACK[/RISK[/BRANCH]], e.g. 5.21/stable")
        return value

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


class RemoveDeadMemberParams(pydantic.BaseModel):
    """Parameters of the remove-dead-member action."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = pydantic.Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    confirm: bool = pydantic.Field(default=False, validate_default=True)

    @pydantic.field_validator("confirm")
    @classmethod
    def _confirmed(cls, value: bool) -> bool:
        return require_confirmation(value, "force removal cannot be undone")
