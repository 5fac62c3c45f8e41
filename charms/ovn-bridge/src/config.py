"""Typed config and action parameters of the ovn-bridge charm."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import pydantic

from charm_common.typed_input import require_confirmation

# OVS bridge and port names are Linux interface names (15 bytes); physnets are OVN names.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_PHYSNET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _pairs(value: str, left: re.Pattern[str], what: str) -> list[tuple[str, str]]:
    """``a:b c:d`` (spaces or commas between entries) -> [(a, b), (c, d)]."""
    pairs = []
    for entry in re.split(r"[\s,]+", value.strip()):
        if not entry:
            continue
        name, sep, target = entry.partition(":")
        if not sep or not left.match(name) or not _IFNAME.match(target):
            raise ValueError(f"{entry!r} is not {what}")
        pairs.append((name, target))
    return pairs


def _ipv4_interface(value: str) -> ipaddress.IPv4Interface:
    """``10.0.0.1/24``: an address with its prefix (a bare network address is refused)."""
    if "/" not in value:
        raise ValueError(f"{value!r} needs a prefix length, e.g. 10.0.0.1/24")
    try:
        interface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address with a prefix length") from None
    if interface.ip in (interface.network.network_address, interface.network.broadcast_address):
        raise ValueError(f"{value!r} is the network or broadcast address of its subnet")
    return interface


class CharmConfig(pydantic.BaseModel):
    """The charm's config options (dashes become underscores)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    central_units: Literal[1, 3, 5] = 3
    bridge_mappings: str = ""
    bridge_interface_mappings: str = ""
    datapath_type: Literal["system", "netdev"] = "system"
    uplink_ipv4_gateway: str = ""
    uplink_ipv4_ovn_ranges: str = ""
    uplink_dns_nameservers: str = ""
    network_ipv4_address: str = "auto"

    @pydantic.field_validator("bridge_mappings")
    @classmethod
    def _valid_mappings(cls, value: str) -> str:
        pairs = _pairs(value, _PHYSNET, "PHYSNET:BRIDGE, e.g. physnet1:br-uplink")
        physnets = [p for p, _ in pairs]
        if len(set(physnets)) != len(physnets):
            raise ValueError("a physnet is mapped twice")
        return value

    @pydantic.field_validator("bridge_interface_mappings")
    @classmethod
    def _valid_interfaces(cls, value: str) -> str:
        pairs = _pairs(value, _IFNAME, "BRIDGE:INTERFACE, e.g. br-uplink:eno2")
        interfaces = [i for _, i in pairs]
        if len(set(interfaces)) != len(interfaces):
            raise ValueError("an interface is given to two bridges")
        return value

    @pydantic.field_validator("uplink_ipv4_gateway")
    @classmethod
    def _valid_gateway(cls, value: str) -> str:
        if value:
            _ipv4_interface(value)
        return value

    @pydantic.field_validator("uplink_ipv4_ovn_ranges")
    @classmethod
    def _valid_ranges(cls, value: str) -> str:
        for first, last in _ranges(value):
            if int(first) > int(last):
                raise ValueError(f"{first}-{last} ends before it starts")
        return value

    @pydantic.field_validator("uplink_dns_nameservers")
    @classmethod
    def _valid_nameservers(cls, value: str) -> str:
        for entry in filter(None, re.split(r"[\s,]+", value)):
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address") from None
        return value

    @pydantic.field_validator("network_ipv4_address")
    @classmethod
    def _valid_network(cls, value: str) -> str:
        if value != "auto":
            _ipv4_interface(value)
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> CharmConfig:
        unmapped = sorted({b for b, _ in self.interfaces} - set(self.mappings.values()))
        if unmapped:
            raise ValueError(
                f"bridge-interface-mappings names {', '.join(unmapped)}, which no "
                "bridge-mappings entry maps; add PHYSNET:BRIDGE for it"
            )
        if bool(self.uplink_ipv4_gateway) != bool(self.uplink_ipv4_ovn_ranges):
            raise ValueError("uplink-ipv4-gateway and uplink-ipv4-ovn-ranges go together")
        if self.uplink_ipv4_gateway and not self.mappings:
            raise ValueError(
                "an uplink needs a bridge: set bridge-mappings, e.g. physnet1:br-uplink"
            )
        if self.uplink_ipv4_gateway:
            subnet = _ipv4_interface(self.uplink_ipv4_gateway).network
            outside = [
                f"{a}-{b}"
                for a, b in _ranges(self.uplink_ipv4_ovn_ranges)
                if a not in subnet or b not in subnet
            ]
            if outside:
                raise ValueError(
                    f"uplink-ipv4-ovn-ranges {', '.join(outside)} outside "
                    f"uplink-ipv4-gateway's subnet {subnet}"
                )
        return self

    @property
    def mappings(self) -> dict[str, str]:
        """Physnet -> bridge, in the order given."""
        return dict(_pairs(self.bridge_mappings, _PHYSNET, ""))

    @property
    def interfaces(self) -> list[tuple[str, str]]:
        """(bridge, interface) pairs."""
        return _pairs(self.bridge_interface_mappings, _IFNAME, "")

    @property
    def bridge_interfaces(self) -> dict[str, list[str]]:
        """Bridge -> the interfaces plugged into it; every mapped bridge is there."""
        bridges: dict[str, list[str]] = {bridge: [] for bridge in self.mappings.values()}
        for bridge, interface in self.interfaces:
            bridges[bridge].append(interface)
        return bridges

    @property
    def uplink_bridge(self) -> str:
        """The bridge LXD's UPLINK network uses: the first mapping's ('' without one)."""
        return next(iter(self.mappings.values()), "")

    @property
    def nameservers(self) -> list[str]:
        """The uplink's DNS servers."""
        return [e for e in re.split(r"[\s,]+", self.uplink_dns_nameservers) if e]


def _ranges(value: str) -> list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]]:
    """``a-b,c-d`` -> [(a, b), (c, d)]."""
    found = []
    for entry in filter(None, re.split(r"[\s,]+", value)):
        first, sep, last = entry.partition("-")
        try:
            found.append((ipaddress.IPv4Address(first), ipaddress.IPv4Address(last or first)))
        except ValueError:
            raise ValueError(f"{entry!r} is not FIRST-LAST, e.g. 10.0.0.100-10.0.0.199") from None
    return found


class KickParams(pydantic.BaseModel):
    """Parameters of the cluster-kick action."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    db: Literal["nb", "sb"]
    server_id: str = pydantic.Field(pattern=r"^[0-9a-f]{4,36}$")
    confirm: bool = pydantic.Field(default=False, validate_default=True)

    @pydantic.field_validator("confirm")
    @classmethod
    def _confirmed(cls, value: bool) -> bool:
        return require_confirmation(value, "kicking a raft server cannot be undone")
