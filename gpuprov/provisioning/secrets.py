"""The stack's generated service secrets, kept on the operator's machine as secrets.

One JSON file per stack under the state root, 0600, created once: vLLM's API key, Open WebUI's
secret key and admin account. They reach the host only inside root-only (0600) env files,
written over the SSH channel's stdin, never on a command line.
"""

from __future__ import annotations

import json
import os
import secrets as _random
from dataclasses import asdict, dataclass
from pathlib import Path

from gpuprov.infra.paths import state_root


@dataclass(frozen=True)
class StackSecrets:
    vllm_api_key: str
    webui_secret_key: str
    webui_admin_email: str
    webui_admin_password: str

    def __repr__(self) -> str:  # never print the values by accident
        return "StackSecrets(<hidden>)"


def _path(stack: str) -> Path:
    d = state_root() / "secrets"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d / f"{stack}.json"


def stack_secrets(stack: str) -> tuple[StackSecrets, bool]:
    """The stack's secrets, generated on first use. Returns (secrets, created_now)."""
    path = _path(stack)
    try:
        data = json.loads(path.read_text())
        return StackSecrets(**data), False
    except FileNotFoundError:
        pass
    fresh = StackSecrets(
        vllm_api_key="sk-" + _random.token_urlsafe(32),
        webui_secret_key=_random.token_urlsafe(48),
        webui_admin_email=f"admin@{stack}.gpuprov.local",
        webui_admin_password=_random.token_urlsafe(18),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(fresh), fh)
    return fresh, True


def forget(stack: str) -> None:
    """Drop the stack's secrets (after `down`)."""
    _path(stack).unlink(missing_ok=True)
