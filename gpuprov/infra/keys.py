"""The SSH identity gpuprov uses to reach a stack's host: the configured key, else the stack's own pair."""

from __future__ import annotations

import os
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


def adopt_keypair(stack: str, private_key: str) -> None:
    """Install the stack's generated key pair as its stack outputs carry it (a colleague made the host),
    unless this machine has it already; 0600 in a 0700 folder."""
    private = key_dir(stack) / "id_ed25519"
    if private.exists():
        return
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = private.with_name(".id_ed25519.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key if private_key.endswith("\n") else private_key + "\n")
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp)], check=True, capture_output=True, text=True).stdout
    private.with_suffix(".pub").write_text(f"{public.strip()} gpuprov-{stack}\n")
    tmp.replace(private)


def forget_keypair(stack: str) -> None:
    """Remove the stack's own key pair (its host is gone; a configured key is the user's and stays)."""
    shutil.rmtree(key_dir(stack), ignore_errors=True)
