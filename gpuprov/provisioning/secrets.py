"""The stack's generated service secrets: with the stack, as Pulumi secrets, and cached on this machine.

Each value is generated once, the first time a deploy of an app that declares it needs it (an API
key, a web UI's secret key and admin account, ...), and saved first with the stack (secret stack
config in its Pulumi backend, :func:`gpuprov.infra.stacks.secret_store`), so a colleague's deploy
uses the same values, then in one JSON file per stack under the state root, 0600:
``{"apps": {APP: {NAME: VALUE}}}`` (the only store of stacks without a Pulumi backend: local,
existing). They reach the host only inside root-only (0600) env files, written over the SSH
channel's stdin, never on a command line.

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
from gpuprov.apps.base import App, AppError, Secrets
from gpuprov.infra.config import StackConfig
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


HOST_KEYS = "_host_keys"  # the store's entry of host-key pins: {host identity: "ENTRY KEYTYPE BASE64"}


class _Store:
    """The stack's store: its own (in its Pulumi backend) merged over this machine's copy."""

    def __init__(self, config: StackConfig):
        from gpuprov.infra.stacks import secret_store

        self.config, self.path = config, secrets_path(config.stack)
        self.local = _read(self.path)
        self.shared = secret_store(config)
        self.remote = self.shared.load_service_secrets(config) if self.shared else {}
        self.values = {k: {**self.local.get(k, {}), **self.remote.get(k, {})} for k in {*self.local, *self.remote}}
        self.local.pop(HOST_KEYS, None)

    def save(self) -> None:
        """Save to the stack first (the truth), then to this machine's copy (its pins are in known_hosts,
        not here); only what changed."""
        stored = {k: v for k, v in self.values.items() if v}
        if self.shared and stored != self.remote:
            self.shared.save_service_secrets(self.config, stored)
        mine = {k: v for k, v in stored.items() if k != HOST_KEYS}
        if mine != self.local:
            _write(self.path, mine)


def app_secrets(config: StackConfig, apps: Sequence[App]) -> tuple[dict[str, Secrets], dict[str, list[str]]]:
    """Each app's secrets, generating what is missing. Returns (app -> secrets, app -> names generated now).

    The stack's own store wins over this machine's copy; a value only this machine has (a stack
    deployed before its secrets travelled with it) is added to the stack's store."""
    store = _Store(config)
    generated: dict[str, list[str]] = {}
    for app in apps:
        have = store.values.setdefault(app.name, {})
        for s in app.secrets:
            if s.name not in have:
                have[s.name] = s.generate(config.stack)
                generated.setdefault(app.name, []).append(s.name)
    store.save()
    return {a.name: Secrets(store.values.get(a.name, {})) for a in apps}, generated


class NotRotatable(AppError):
    """A secret name no deployed app declares, or one a service keeps in its own data."""


def rotate(config: StackConfig, apps: Sequence[App], names: Sequence[str]) -> list[str]:
    """Replace each named secret of the deployed ``apps`` with a fresh value, in the stack's store (the
    next deploy sends it to the host, and recreates what reads it). Returns ``app.name`` of each."""
    declared = {s.name: (a, s) for a in apps for s in a.secrets}
    for name in names:
        if name not in declared:
            rotatable = ", ".join(n for n, (_a, s) in declared.items() if s.fixed is None) or "none"
            raise NotRotatable(f"no deployed app declares a secret named {name!r}; rotatable: {rotatable}")
        if declared[name][1].fixed:
            raise NotRotatable(f"{name} cannot be rotated by gpuprov: {declared[name][1].fixed}")
    store = _Store(config)
    for name in names:
        app, secret = declared[name]
        store.values.setdefault(app.name, {})[name] = secret.generate(config.stack)
    store.save()
    return [f"{declared[n][0].name}.{n}" for n in names]


def stored(config: StackConfig) -> dict[str, dict[str, str]]:
    """What the stack's store holds now, app -> name -> value (nothing generated, no host-key pins)."""
    return {k: v for k, v in _Store(config).values.items() if k != HOST_KEYS}


def host_key_pins(config: StackConfig, identity: str) -> list[str]:
    """The known_hosts lines pinned for the host ``identity`` (:func:`gpuprov.provisioning.ssh.host_identity`),
    by whoever connected first: pins travel with the stack, so a colleague's first connect is checked too."""
    pinned = _Store(config).values.get(HOST_KEYS, {}).get(identity)
    return pinned.splitlines() if pinned else []


def add_host_key_pin(config: StackConfig, identity: str, line: str) -> None:
    """Record a pin made at first connect with the stack (and this machine's copy)."""
    store = _Store(config)
    if store.shared is None:  # no stack store: this machine's known_hosts is where pins live
        return
    pins = store.values.setdefault(HOST_KEYS, {})
    lines = pins.get(identity, "").splitlines()
    if line not in lines:
        pins[identity] = "\n".join([*lines, line])  # only this host's pins: a replaced host starts afresh
        store.values[HOST_KEYS] = {identity: pins[identity]}
        store.save()


def secrets_of(config: StackConfig, app: App) -> Secrets:
    """One app's secrets (generated when missing)."""
    return app_secrets(config, [app])[0][app.name]


def forget(stack: str) -> None:
    """Drop the stack's secrets (after `down`)."""
    secrets_path(stack).unlink(missing_ok=True)


def restore_app_secrets(config: StackConfig, values: dict[str, dict[str, str]]) -> None:
    """Put apps' secrets back as a backup holds them (``gpuprov restore``): the data restored with them
    (Open WebUI's accounts) was made with these, so the stack's env files must carry them again."""
    store = _Store(config)
    for app, app_values in values.items():
        store.values[app] = dict(app_values)
    store.save()
