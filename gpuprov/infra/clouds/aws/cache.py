"""The stack's cache on AWS (``cache: true``): an EBS gp3 volume outside the stack's Pulumi state.

``AwsCacheVolume`` is a Pulumi dynamic resource whose ``create`` finds the volume by its ``gpuprov-cache`` tag
(:func:`gpuprov.infra.clouds.aws.sdk.ensure_cache_volume`) or makes it once, in a zone that sells the instance
type, and whose ``delete`` deletes nothing: ``gpuprov down`` destroys the attachment and the instance and keeps
the volume, as Lambda keeps its filesystem. The instance launches in the volume's zone (an EBS volume attaches
only there), so every later ``up`` lands where the cache is. ``gpuprov down --purge`` deletes it through the
driver (:meth:`gpuprov.infra.clouds.aws.driver.AwsDriver.purge_cache`).

This module is importable so Pulumi pickles the provider by reference; boto3 reads credentials from its own
chain inside each method, never from an input.
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


class AwsCacheVolumeProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from gpuprov.infra.clouds.aws import sdk

        vol = sdk.ensure_cache_volume(props["region"], props["cache_name"], int(props["size_gb"]),
                                      props["instance_type"], dict(props.get("tags") or {}), _log)
        return CreateResult(id_=vol.id, outs={**props, "volume_id": vol.id, "availability_zone": vol.zone,
                                              "volume_size_gb": vol.size_gb})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Another name or region is another cache; size and tags are the volume's once made.
        replaces = [k for k in ("cache_name", "region", "provider_version") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=True)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Kept on purpose: the cache outlives the stack (``gpuprov down --purge`` deletes it)."""
        _log(f"keeping the stack's cache volume {_props.get('cache_name')} ({_id}) for the next `gpuprov up`")


class AwsCacheVolume(Resource):
    """The stack's cache volume; ``volume_id`` and ``availability_zone`` are where it is."""

    volume_id: pulumi.Output[str]
    availability_zone: pulumi.Output[str]

    def __init__(self, resource_name: str, *, cache_name: str, region: str, size_gb: int, instance_type: str,
                 tags: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__(AwsCacheVolumeProvider(), resource_name, {
            "cache_name": cache_name, "region": region, "size_gb": size_gb, "instance_type": instance_type,
            "tags": tags, "provider_version": PROVIDER_VERSION,
            "volume_id": None, "availability_zone": None, "volume_size_gb": None,
        }, opts)
