"""The description every target returns: where the GPU host is and how to reach it."""

from __future__ import annotations

import socket
import time
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
    host_key: str | None = None  # "ssh-ed25519 AAAA...": the key the first connect must see
    host_key_fingerprint: str | None = None  # "SHA256:...": the fingerprint it must have (when no host_key)
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


def ssh_banner_error(address: str, port: int, timeout_s: float = 2.0) -> str | None:
    """None when an SSH server answers at ``address:port`` with its ``SSH-`` banner, else why not.

    An open port is not enough: sshd may accept before it can talk, a proxy may answer.
    """
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            return None if s.recv(4).startswith(b"SSH-") else "answered without an SSH banner"
    except OSError as err:
        return str(err) or type(err).__name__


def wait_for_ssh_banner(address: str, port: int, timeout_s: float, interval_s: float = 0.5) -> str | None:
    """Probe until the SSH banner answers (None) or ``timeout_s`` passes (the last reason it did not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reason = ssh_banner_error(address, port, timeout_s=min(5.0, max(0.5, timeout_s)))
        if reason is None or time.monotonic() >= deadline:
            return reason
        time.sleep(interval_s)


def expiry(launched_at: datetime, max_lifetime_hours: float) -> datetime:
    """When a host launched at ``launched_at`` must be gone."""
    return launched_at + timedelta(hours=max_lifetime_hours)
