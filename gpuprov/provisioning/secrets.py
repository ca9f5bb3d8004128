"""The stack's generated service secrets, kept on the operator's machine as secrets.

One JSON file per stack under the state root, 0600: ``{"apps": {APP: {NAME: VALUE}}}``, each value
generated once, the first time a deploy of an app that declares it needs it (an API key, a web UI's
secret key and admin account, ...). They reach the host only inside root-only (0600) env
files, written over the SSH channel's stdin, never on a command line.

A file of the earlier flat format (``{NAME: VALUE}``) is read as the secrets of every app that
declares those names, and rewritten in the new format the next time a secret is added.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuprov.apps import registry
from gpuprov.apps.base import App, Secrets
from gpuprov.infra.paths import state_root


def secrets_path(stack: str) -> Path:
    """The stack's secret store (0600, in a 0700 folder)."""
    d = state_root() / "secrets"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d / f"{stack}.json"


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if isinstance(data.get("apps"), dict):
        return {app: dict(values) for app, values in data["apps"].items()}
    flat = {k: v for k, v in data.items() if isinstance(v, str)}
    return {a.name: {s.name: flat[s.name] for s in a.secrets if s.name in flat} for a in registry().apps.values()}


def _write(path: Path, store: dict[str, dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"apps": store}, fh)
    tmp.replace(path)


def app_secrets(stack: str, apps: Sequence[App]) -> tuple[dict[str, Secrets], dict[str, list[str]]]:
    """Each app's secrets, generating what is missing. Returns (app -> secrets, app -> names generated now)."""
    path = secrets_path(stack)
    store = _read(path)
    generated: dict[str, list[str]] = {}
    for app in apps:
        have = store.setdefault(app.name, {})
        for s in app.secrets:
            if s.name not in have:
                have[s.name] = s.generate(stack)
                generated.setdefault(app.name, []).append(s.name)
    if generated:
        _write(path, store)
    return {a.name: Secrets(store.get(a.name, {})) for a in apps}, generated


def stored(stack: str) -> dict[str, dict[str, str]]:
    """What the stack's store holds now, app -> name -> value (nothing generated)."""
    return _read(secrets_path(stack))


def secrets_of(stack: str, app: App) -> Secrets:
    """One app's secrets (generated when missing)."""
    return app_secrets(stack, [app])[0][app.name]


def forget(stack: str) -> None:
    """Drop the stack's secrets (after `down`)."""
    secrets_path(stack).unlink(missing_ok=True)
