"""The SSH identity gpuprov uses to reach a stack's host."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpuprov.infra.config import StackConfig
from gpuprov.infra.paths import state_root


def stack_keypair(stack: str) -> tuple[Path, str]:
    """A per-stack ed25519 key pair under the state root (made once, 0600): (private key path, public key line)."""
    key_dir = state_root() / "keys" / stack
    private = key_dir / "id_ed25519"
    if not private.exists():
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gpuprov-{stack}", "-f", str(private)],
                       check=True, capture_output=True)
    return private, private.with_suffix(".pub").read_text().strip()


def public_key(config: StackConfig) -> str:
    """The public key to install on a cloud host: the configured one, else the stack's own."""
    return config.ssh_public_key or stack_keypair(config.stack)[1]


def private_key_path(config: StackConfig) -> Path:
    """The private key that logs in to the stack's host, whatever the target."""
    if config.cloud == "local":
        from gpuprov.infra.local.sandbox import LocalSandbox

        return LocalSandbox(config.stack).client_key
    if config.ssh_private_key_path is not None:
        return Path(config.ssh_private_key_path).expanduser()
    return stack_keypair(config.stack)[0]
