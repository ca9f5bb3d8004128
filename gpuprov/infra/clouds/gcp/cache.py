"""The stack's cache on GCP (``cache: true``): a pd-balanced persistent disk outside the stack's Pulumi state.

``GcpCacheDisk`` is a Pulumi dynamic resource whose ``create`` finds the disk by name (labelled ``gpuprov-cache``,
:meth:`gpuprov.infra.clouds.gcp.sdk.ComputeApi.ensure_cache_disk`) or makes it once in the stack's zone, and whose
``delete`` deletes nothing: ``gpuprov down`` deletes the VM (the disk is attached, not auto-deleted) and keeps the
disk. The VM takes it as a secondary disk (``attached_disks``, device name ``gpcache``) and its user data mounts it.
``gpuprov down --purge`` deletes it through the driver.

Importable so Pulumi pickles the provider by reference; the project and API endpoint come from gpuprov's settings
(``GOOGLE_CLOUD_PROJECT``, ``GPUPROV_GCP_API_ENDPOINT``) and credentials from Application Default Credentials.
"""

from __future__ import annotations

import sys
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

PROVIDER_VERSION = "1"


def _log(message: str) -> None:
    print(f"· {message}", file=sys.stderr, flush=True)
    pulumi.log.info(message)


class GcpCacheDiskProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from gpuprov.infra.clouds.gcp.driver import GcpDriver
        from gpuprov.infra.settings import Settings

        driver = GcpDriver(Settings.from_env())
        disk = driver.api().ensure_cache_disk(driver.project(), props["zone"], props["cache_name"],
                                              int(props["size_gb"]), dict(props.get("labels") or {}), _log)
        return CreateResult(id_=disk.name, outs={**props, "self_link": disk.self_link, "disk_size_gb": disk.size_gb})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("cache_name", "zone", "provider_version") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=True)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Kept on purpose: the cache outlives the stack (``gpuprov down --purge`` deletes it)."""
        _log(f"keeping the stack's cache disk {_id} for the next `gpuprov up`")


class GcpCacheDisk(Resource):
    """The stack's cache disk; ``self_link`` is what ``attached_disks`` takes."""

    self_link: pulumi.Output[str]

    def __init__(self, resource_name: str, *, cache_name: str, zone: str, size_gb: int, labels: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(GcpCacheDiskProvider(), resource_name, {
            "cache_name": cache_name, "zone": zone, "size_gb": size_gb, "labels": labels,
            "provider_version": PROVIDER_VERSION, "self_link": None, "disk_size_gb": None,
        }, opts)
