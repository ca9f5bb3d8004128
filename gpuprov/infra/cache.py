"""A stack's cache: storage that outlives its host (``cache: true``), for the Hugging Face model cache and
MONAI Label's checkpoints, so a stack brought down and up again downloads nothing.

Clouds that cannot tag it (Lambda filesystems carry only a name) find it by its name,
``gpcache-<stack>-<owner>``: ``<owner>`` is the first 10 hex digits of the hash in the owner
label (:func:`gpuprov.infra.owner.owner_label`), so the name says whose it is on every machine and
fits Lambda's 60 characters. On the host it is mounted at :func:`mount_point`; deploy reads the
mount as a fact and binds the caches under it (:data:`HF_DIR`, :data:`CHECKPOINTS_DIR`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gpuprov.infra.owner import owner_label

if TYPE_CHECKING:
    from gpuprov.infra.clouds.base import Leftover

NAME = re.compile(r"^gpcache-([a-z0-9][a-z0-9-]{0,39})-([0-9a-f]{10})\Z")
OWNER_HASH_TAG = "gpuprov-owner-hash"  # on a cache Leftover: the owner part of its name
MOUNT_ROOT = "/lambda/nfs"  # Lambda mounts a filesystem at /lambda/nfs/<name> (OpenAPI 1.8.3, Filesystem.mount_point)
HF_DIR = "huggingface"  # under the mount: vLLM's /root/.cache/huggingface
CHECKPOINTS_DIR = "monai-label-checkpoints"  # under the mount: nnInteractive's weights
MARKER = ".gpuprov-cache"  # written by deploy on the mount: which stack and owner use it


def owner_hash_of_label(label: str) -> str:
    """The owner part of a cache name, from an owner label (``<readable>-<12 hex>``)."""
    return label[-12:][:10]


def cache_name(stack: str, owner_label_value: str) -> str:
    """The name of ``stack``'s cache for the owner whose label is ``owner_label_value``."""
    return f"gpcache-{stack}-{owner_hash_of_label(owner_label_value)}"


def cache_name_for(stack: str, owner_reference: str) -> str:
    return cache_name(stack, owner_label(owner_reference))


def parse_cache_name(name: str | None) -> tuple[str, str] | None:
    """(stack, owner hash) of a cache gpuprov named, else None."""
    m = NAME.match(name or "")
    return (m.group(1), m.group(2)) if m else None


def mount_point(name: str) -> str:
    return f"{MOUNT_ROOT}/{name}"


def monthly_cost_line(item: Leftover, size_gb: float | None = None) -> str:
    """What a kept cache costs per month, one line: the cloud's GB-month price from the dated storage catalog,
    times what it holds (Lambda) or its size (EBS, persistent disk)."""
    from gpuprov.cost.storage import storage_price

    price = storage_price(item.cloud)
    used = item.tags.get("bytes-used")
    gb = size_gb if size_gb is not None else (int(used) / 1e9 if used and used.isdigit() else None)
    where = f" in {item.region}" if item.region else ""
    if price is None:
        return f"cache {item.name or item.id}{where}: no storage price catalogued for {item.cloud}"
    return f"cache {item.name or item.id}{where} ({price.kind}): {price.describe(gb)}"


def cache_json(item: Leftover) -> dict[str, object]:
    """A cache as ``status --json`` and ``cost --json`` show it."""
    from gpuprov.cost.storage import storage_price

    price = storage_price(item.cloud)
    used = item.tags.get("bytes-used")
    gb = int(used) / 1e9 if used and used.isdigit() else None
    return {"cloud": item.cloud, "stack": item.stack, "name": item.name, "id": item.id, "region": item.region,
            "state": item.state, "gb": gb, "usd_gb_month": price.usd_gb_month if price else None,
            "usd_month": price.monthly(gb) if price else None,
            "price_source": f"{price.source}, {price.as_of}" if price else None}


def all_caches(settings: object = None) -> tuple[list[Leftover], list[str]]:
    """Every stack cache the clouds with credentials here list, and one line per cloud that could not be asked."""
    from gpuprov.infra.clouds import all_drivers
    from gpuprov.infra.errors import GpuprovError
    from gpuprov.infra.settings import Settings

    found: list[Leftover] = []
    problems: list[str] = []
    for driver in all_drivers(settings if isinstance(settings, Settings) else None):
        if not (driver.keeps_caches and driver.has_credentials()):
            continue
        try:
            found += driver.caches()
        except GpuprovError as err:
            problems.append(f"{driver.name}: could not list caches: {err}")
    return found, problems
