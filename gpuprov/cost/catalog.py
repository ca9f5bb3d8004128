"""The dated, sourced offline price catalog (``catalog.yaml`` beside this file)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")


@dataclass(frozen=True)
class Offer:
    """One instance type a cloud sells, and what it cost when last seen."""

    cloud: str
    type: str
    gpu: str
    gpus: int
    gpu_mem_gb: int
    vcpus: int
    ram_gb: int
    usd_hour: float
    as_of: str
    source: str
    accelerator: str | None = None


@dataclass(frozen=True)
class CloudDefaults:
    instance_type: str
    region: str | None
    zone: str | None


@cache
def _raw() -> dict:
    with CATALOG_FILE.open() as fh:
        return yaml.safe_load(fh)


def offers(cloud: str | None = None) -> list[Offer]:
    """Every catalog offer (of one cloud when named), cheapest first."""
    clouds = [cloud] if cloud else list(_raw())
    found = [Offer(cloud=c, **entry) for c in clouds for entry in _raw().get(c, {}).get("offers", [])]
    return sorted(found, key=lambda o: o.usd_hour)


def find_offer(cloud: str, instance_type: str) -> Offer | None:
    """The catalog entry for ``instance_type`` on ``cloud``, or None when unknown."""
    return next((o for o in offers(cloud) if o.type == instance_type), None)


def defaults(cloud: str) -> CloudDefaults:
    """The default instance type, region and zone gpuprov picks on ``cloud``."""
    section = _raw()[cloud]
    return CloudDefaults(
        instance_type=section["default_type"],
        region=section.get("default_region"),
        zone=section.get("default_zone"),
    )
