"""``cloud: existing``: a machine you already have (a DGX Spark, a lab server). No cloud calls.

Its SSH host key is known before the first connect, never trusted on first use: the config's ``host_key`` (or
``host_key_fingerprint``), else the key your own OpenSSH already knows for it (``~/.ssh/known_hosts``, hashed
entries included). When neither knows it, the first connect stops and shows the fingerprint the machine
presented, and how to accept it (:class:`~gpuprov.provisioning.errors.HostKeyUnknown`).
"""

from __future__ import annotations

from pathlib import Path

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost

PREFERRED = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def user_known_hosts() -> Path:
    """The operator's own OpenSSH known_hosts file (read, never written)."""
    return Path.home() / ".ssh" / "known_hosts"


def known_host_key(address: str, port: int, path: Path | None = None) -> str | None:
    """The key ("TYPE BASE64") ``path`` (default: ~/.ssh/known_hosts) holds for ``address``:``port``, ed25519
    first; None when it holds none or cannot be read. Hashed entries (HashKnownHosts) are matched too."""
    import paramiko

    path = path or user_known_hosts()
    entry = address if port == 22 else f"[{address}]:{port}"
    try:
        known = paramiko.HostKeys(str(path))
    except (OSError, paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, UnicodeDecodeError, ValueError):
        return None  # unreadable or damaged: it knows nothing (the first connect then says how to accept the key)
    keys = known.lookup(entry)
    if not keys:
        return None
    for kind in (*PREFERRED, *sorted(keys.keys())):
        if kind in keys:
            return f"{kind} {keys[kind].get_base64()}"
    return None


def existing_host(config: StackConfig) -> GpuHost:
    """The GpuHost for ``config.host``. Its GPU is unknown until provisioning looks (nvidia-smi)."""
    target = config.existing_host
    assert target is not None  # the config model requires host for cloud: existing
    host_key = config.host_key
    if host_key is None and config.host_key_fingerprint is None:
        host_key = known_host_key(target.address, target.port)
    return GpuHost(
        cloud="existing",
        address=target.address,
        ssh_user=target.user,
        ssh_port=target.port,
        host_key=host_key,
        host_key_fingerprint=None if host_key else config.host_key_fingerprint,
        instance_id=f"existing-{target.address}",
        region=config.region,
        instance_type=config.instance_type,
        usd_hour=0.0,  # you already pay for it, whether gpuprov runs or not
    )
