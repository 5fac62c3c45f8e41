"""Typed config of the ceph-link charm."""

from __future__ import annotations

import re

import pydantic

from ceph import Pool

# A name both Ceph (pool) and LXD (storage pool) accept.
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Image features LXD can ask Ceph for (``ceph.rbd.features``).
RBD_FEATURES = (
    "layering",
    "striping",
    "exclusive-lock",
    "object-map",
    "fast-diff",
    "deep-flatten",
    "journaling",
)
MAX_REPLICAS = 10
MAX_PG_NUM = 32768


def parse_pools(value: str) -> tuple[Pool, ...]:
    """``NAME:REPLICAS[:PG_NUM]`` entries, separated by spaces or commas."""
    pools = []
    for entry in re.split(r"[\s,]+", value.strip()):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"{entry!r} is not NAME:REPLICAS[:PG_NUM], e.g. remote:3")
        name, replicas = parts[0], int(parts[1])
        pg_num = int(parts[2]) if len(parts) == 3 else None
        if not _POOL_NAME.match(name):
            raise ValueError(f"{name!r} is not a pool name (letters, digits, '_.-', ≤ 63)")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"{entry!r}: replicas must be 1..{MAX_REPLICAS}")
        if pg_num is not None and (not 1 <= pg_num <= MAX_PG_NUM or pg_num & (pg_num - 1) != 0):
            raise ValueError(f"{entry!r}: pg_num must be a power of two, 1..{MAX_PG_NUM}")
        pools.append(Pool(name, replicas, pg_num))
    if not pools:
        raise ValueError("no pool given; set e.g. remote:3")
    names = [p.name for p in pools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice")
    return tuple(pools)


class CharmConfig(pydantic.BaseModel):
    """The charm's config options (dashes become underscores)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    pools: str = "remote:3"
    rbd_features: str = "layering"
    cephfs: str = ""

    @pydantic.field_validator("pools")
    @classmethod
    def _valid_pools(cls, value: str) -> str:
        parse_pools(value)
        return value

    @pydantic.field_validator("rbd_features")
    @classmethod
    def _valid_features(cls, value: str) -> str:
        features = [f for f in re.split(r"[\s,]+", value.strip()) if f]
        unknown = [f for f in features if f not in RBD_FEATURES]
        if unknown or "layering" not in features:
            raise ValueError(
                f"must list 'layering' and only these features: {', '.join(RBD_FEATURES)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        return ",".join(features)

    @pydantic.field_validator("cephfs")
    @classmethod
    def _valid_fs(cls, value: str) -> str:
        if value and not _FS_NAME.match(value):
            raise ValueError(f"{value!r} is not a CephFS filesystem name")
        return value

    @pydantic.model_validator(mode="after")
    def _distinct_names(self) -> CharmConfig:
        if self.cephfs and self.cephfs in {p.name for p in self.pool_list}:
            raise ValueError(
                f"cephfs: {self.cephfs!r} is also in pools; LXD pools need distinct names"
            )
        return self

    @property
    def pool_list(self) -> tuple[Pool, ...]:
        """The pools, parsed."""
        return parse_pools(self.pools)
