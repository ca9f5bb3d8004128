"""The description every target returns: where the GPU host is and how to reach it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class GpuHost(BaseModel):
    """One GPU host, whatever made it (Lambda, AWS, GCP, an existing machine, the local sandbox).

    Plain data with no secrets: safe to print, to export as a Pulumi output and to
    keep in the stack record.
    """

    model_config = ConfigDict(frozen=True)

    cloud: str
    address: str
    ssh_user: str
    ssh_port: int = 22
    host_key: str | None = None  # "ssh-ed25519 AAAA..." when known; pinned at first connect otherwise
    instance_id: str | None = None
    region: str | None = None
    instance_type: str | None = None
    gpu: str | None = None  # e.g. "A10G"; None: the host has no GPU (the local sandbox says so)
    gpu_count: int = 0
    usd_hour: float = 0.0
    launched_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu) and self.gpu_count > 0

    def uptime(self, now: datetime | None = None) -> timedelta | None:
        if self.launched_at is None:
            return None
        return (now or utcnow()) - self.launched_at

    def to_outputs(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO 8601), the shape exported as a Pulumi output."""
        return self.model_dump(mode="json")


def expiry(launched_at: datetime, max_lifetime_hours: float) -> datetime:
    """When a host launched at ``launched_at`` must be gone."""
    return launched_at + timedelta(hours=max_lifetime_hours)
