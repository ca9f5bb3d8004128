"""The SSH identity gpuprov uses to reach a stack's host: the configured key, else the stack's own pair."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from gpuprov.infra.config import StackConfig
from gpuprov.infra.paths import state_root


def key_dir(stack: str, root: Path | None = None) -> Path:
    """Where the stack's own key pair lives (under ``root``, default the state root)."""
    return (root or state_root()) / "keys" / stack


def stack_keypair(stack: str, root: Path | None = None) -> tuple[Path, str]:
    """A per-stack ed25519 key pair (made once, 0600): (private key path, public key line)."""
    private = key_dir(stack, root) / "id_ed25519"
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gpuprov-{stack}", "-f", str(private)],
                       check=True, capture_output=True)
    return private, private.with_suffix(".pub").read_text().strip()


def public_key(config: StackConfig) -> str:
    """The public key to install on the stack's host: the configured one, else the stack's own."""
    return config.ssh_public_key or stack_keypair(config.stack)[1]


def private_key_path(config: StackConfig) -> Path:
    """The private key that logs in to the stack's host, whatever the target."""
    if config.ssh_private_key_path is not None:
        return Path(config.ssh_private_key_path).expanduser()
    return stack_keypair(config.stack)[0]


def forget_keypair(stack: str) -> None:
    """Remove the stack's own key pair (its host is gone; a configured key is the user's and stays)."""
    shutil.rmtree(key_dir(stack), ignore_errors=True)
