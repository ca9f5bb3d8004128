"""``cloud: existing``: a machine you already have (a DGX Spark, a lab server). No cloud calls."""

from __future__ import annotations

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost


def existing_host(config: StackConfig) -> GpuHost:
    """The GpuHost for ``config.host``. Its GPU is unknown until provisioning looks (nvidia-smi)."""
    target = config.existing_host
    assert target is not None  # the config model requires host for cloud: existing
    return GpuHost(
        cloud="existing",
        address=target.address,
        ssh_user=target.user,
        ssh_port=target.port,
        instance_id=f"existing-{target.address}",
        region=config.region,
        instance_type=config.instance_type,
        usd_hour=0.0,  # you already pay for it, whether gpuprov runs or not
    )
