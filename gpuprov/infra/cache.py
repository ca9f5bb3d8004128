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
DISK_MOUNT_ROOT = "/mnt/gpuprov-cache"  # where the host's user data mounts an EBS volume or persistent disk
SIZE_TAG = "size-gb"  # on a cache Leftover of a cloud that bills by provisioned size (EBS, persistent disk)
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


def mount_point(name: str, root: str = MOUNT_ROOT) -> str:
    """Where the cache ``name`` is mounted under ``root``, the driver's ``cache_mount_root``: Lambda's own place
    for a filesystem, or :data:`DISK_MOUNT_ROOT` (a block device gpuprov formats and mounts, :func:`with_disk_mount`)."""
    return f"{root}/{name}"


def _size_gb(item: Leftover) -> float | None:
    used, size = item.tags.get("bytes-used"), item.tags.get(SIZE_TAG)
    if size and size.isdigit():
        return float(size)
    return int(used) / 1e9 if used and used.isdigit() else None


def mount_script(device: str, mount: str) -> str:
    """Shell that mounts the cache block device ``device`` at ``mount``, idempotent: it waits for the device
    (an EBS volume attaches after the instance runs), formats it only when it holds no filesystem yet (a kept
    cache is never wiped), mounts it and records it in fstab (``nofail``: a boot without it still boots)."""
    from shlex import quote

    dev, mnt = quote(device), quote(mount)
    return (f"i=0; while [ ! -e {dev} ]; do i=$((i+1)); if [ $i -gt 600 ]; then "
            f"echo 'gpuprov cache: '{dev}' never appeared' >&2; exit 1; fi; sleep 1; done; "
            f"blkid {dev} >/dev/null 2>&1 || mkfs.ext4 -q -L gpcache {dev}; mkdir -p {mnt}; "
            f"mountpoint -q {mnt} || mount -o defaults,nofail {dev} {mnt}; "
            f"grep -qs ' '{mnt}' ' /etc/fstab || echo {dev}' '{mnt}' ext4 defaults,nofail 0 2' >> /etc/fstab")


def with_disk_mount(user_data: str, device: str, mount: str) -> str:
    """``user_data`` (a ``#cloud-config`` document) that also mounts the cache (:func:`mount_script`) from
    ``runcmd``; deploy's host probe waits for cloud-init before it reads the mount as a fact."""
    import yaml

    body = yaml.safe_load(user_data.removeprefix("#cloud-config\n")) or {}
    body["runcmd"] = [*body.get("runcmd", []), ["sh", "-c", mount_script(device, mount)]]
    return "#cloud-config\n" + yaml.safe_dump(body, default_flow_style=False, sort_keys=False)


def monthly_cost_line(item: Leftover, size_gb: float | None = None) -> str:
    """What a kept cache costs per month, one line: the cloud's GB-month price from the dated storage catalog,
    times what it holds (Lambda) or its size (EBS, persistent disk)."""
    from gpuprov.cost.storage import storage_price

    price = storage_price(item.cloud)
    gb = size_gb if size_gb is not None else _size_gb(item)
    where = f" in {item.region}" if item.region else ""
    if price is None:
        return f"cache {item.name or item.id}{where}: no storage price catalogued for {item.cloud}"
    return f"cache {item.name or item.id}{where} ({price.kind}): {price.describe(gb)}"


def cache_json(item: Leftover) -> dict[str, object]:
    """A cache as ``status --json`` and ``cost --json`` show it."""
    from gpuprov.cost.storage import storage_price

    price = storage_price(item.cloud)
    gb = _size_gb(item)
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
