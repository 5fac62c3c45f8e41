"""Small helpers every charm's relation wrappers use."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping


def unit_number(unit_name: str) -> int:
    """``lxd/12`` -> 12 (for deterministic, numeric ordering of units)."""
    return int(unit_name.rsplit("/", 1)[1])


def update_databag(databag: MutableMapping[str, str], values: Mapping[str, str]) -> None:
    """Write only the keys whose value changed: every write wakes the other side.

    An empty value is an absent key (as in Juju): writing it where the key is absent is
    no change.
    """
    for key, value in values.items():
        if databag.get(key, "") != value:
            databag[key] = value
