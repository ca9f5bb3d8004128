"""Running the real Pulumi program without the Pulumi CLI, on Pulumi's own mock runtime.

Two uses:
- ``plan``: the program runs with mocks that only record each resource's type,
  name and inputs (no credentials, no network).
- whole flows in tests and in the fault suite: the mocks play the engine and,
  for dynamic resources, call the real provider's ``create``/``diff``/``update``/
  ``delete`` (the hybrid Pulumi's own tests use), so the Lambda provider really
  talks to the Lambda stand-in while everything else stays mocked.

State lives in a JSON file per stack (like a Pulumi state file: resource ids and
outputs). Dynamic providers are kept as the dill blob the engine itself would
store; credentials are never part of it (providers read them in ``configure``
or from the environment).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks
from pulumi.runtime.mocks import MockMonitor

DYNAMIC = "pulumi-python:dynamic:Resource"
PROVIDER_KEY = "__provider"


@dataclass
class RecordedResource:
    """One resource the program declared, as ``plan`` shows it."""

    type: str
    name: str
    inputs: dict[str, Any]
    id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=dict)  # the inputs with secret values hidden (what plan prints)
    delete_before_replace: bool = False  # the resource option: a replacement deletes the old one first
    ignore_changes: tuple[str, ...] = ()


class _Monitor(MockMonitor):
    """Pulumi's mock monitor, keeping the resource options the engine would act on (the mocks' arguments carry
    none): :meth:`EngineMocks.new_resource` puts them on the resource's record."""

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the engine's RPC name)
        assert isinstance(self.mocks, EngineMocks)
        with self.mocks._lock:
            self.mocks._options[(request.type, request.name)] = (bool(request.deleteBeforeReplace),
                                                                 tuple(request.ignoreChanges))
        return super().RegisterResource(request)


SECRET_SHOWN = "(secret)"


def _plain(value: Any, reveal: bool = True) -> Any:
    """Inputs as JSON-ready data (secrets arrive wrapped by the mock monitor); ``reveal=False``: each secret
    value replaced by ``(secret)``, as ``plan`` shows it."""
    if isinstance(value, dict):
        if value.get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270":  # secret sig
            return _plain(value.get("value")) if reveal else SECRET_SHOWN
        return {k: _plain(v, reveal) for k, v in value.items() if k != PROVIDER_KEY}
    if isinstance(value, list | tuple):
        return [_plain(v, reveal) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the mock monitor turns every number into a float
    return value


def _holds_resource(value: Any) -> bool:
    if isinstance(value, pulumi.Resource):
        return True
    if isinstance(value, dict):
        return any(_holds_resource(v) for v in value.values())
    return isinstance(value, list | tuple) and any(_holds_resource(v) for v in value)


def _without_resources(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs a mock echoes as outputs, less those holding resource references (a component's
    ``cluster=``, ``node_role=``): echoed back, the runtime would rehydrate them on a loop of its own."""
    return {k: v for k, v in inputs.items() if not _holds_resource(v)}


def load_provider(blob: str) -> Any:
    """The dynamic provider object, unpickled exactly as Pulumi's provider host does."""
    import dill

    return dill.loads(base64.b64decode(blob))


CallHandler = Callable[[MockCallArgs], dict[str, Any]]
OutputDefaults = Callable[[MockResourceArgs], dict[str, Any]]


class EngineMocks(Mocks):
    """Pulumi mocks that record every resource and, when asked, drive dynamic providers for real."""

    def __init__(
        self,
        prior: dict[str, dict[str, Any]] | None = None,
        call_dynamic_providers: bool = False,
        calls: dict[str, CallHandler] | None = None,
        output_defaults: OutputDefaults | None = None,
    ):
        self.prior = prior or {}
        self.call_dynamic_providers = call_dynamic_providers
        self.calls = calls or {}
        self.output_defaults = output_defaults or (lambda _args: {})
        self.resources: list[RecordedResource] = []
        self.state: dict[str, dict[str, Any]] = {}  # name -> {type, id, outputs, provider}
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._options: dict[tuple[str, str], tuple[bool, tuple[str, ...]]] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        inputs = _plain(args.inputs)
        record = RecordedResource(type=args.typ, name=args.name, inputs=inputs, shown=_plain(args.inputs, reveal=False))
        with self._lock:
            record.delete_before_replace, record.ignore_changes = self._options.get((args.typ, args.name), (False, ()))
            self.resources.append(record)
        try:
            if args.typ == DYNAMIC and self.call_dynamic_providers:
                rid, outs = self._drive_dynamic(args, inputs)
            else:
                rid, outs = f"{args.name}-id", {**_without_resources(inputs), **self.output_defaults(args)}
        except BaseException as err:  # kept and re-raised by run_program: the engine would report it
            with self._lock:
                self.errors.append(err)
            raise
        record.id, record.outputs = rid, outs
        return rid, outs

    def _drive_dynamic(self, args: MockResourceArgs, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raw = args.inputs.get(PROVIDER_KEY)
        blob = str(raw.get("value") if isinstance(raw, dict) else raw)
        provider = load_provider(blob)
        old = self.prior.get(args.name)
        if old is None:
            created = provider.create(inputs)
            rid, outs = created.id, dict(created.outs or {})
        else:
            rid, old_outs = old["id"], old["outputs"]
            diff = provider.diff(rid, old_outs, inputs)
            if diff.replaces:
                provider.delete(rid, old_outs)
                created = provider.create(inputs)
                rid, outs = created.id, dict(created.outs or {})
            elif diff.changes:
                updated = provider.update(rid, old_outs, inputs)
                outs = {**old_outs, **dict(updated.outs or {})}
            else:
                outs = old_outs
        with self._lock:
            self.state[args.name] = {"type": args.typ, "id": rid, "outputs": outs, "provider": blob}
        return rid, outs

    def call(self, args: MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        handler = self.calls.get(args.token)
        # The mock monitor iterates the second item as the list of failures: it must be a list.
        return (handler(args) if handler else {}), []


def run_program(
    program: Callable[[], dict[str, Any]], mocks: EngineMocks, stack: str, project: str = "gpuprov"
) -> dict[str, Any]:
    """Run ``program`` under ``mocks`` and return its outputs, resolved.

    An exception raised by a provider (say, no capacity anywhere) is re-raised as
    itself, as the real engine would report it, not as a mock-runtime wrapper.
    """
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=_Monitor(mocks))
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run() -> pulumi.Output[Any]:
        return pulumi.Output.from_input(program()).apply(result.update)

    try:
        _run()
    except BaseException:
        if mocks.errors:
            raise mocks.errors[0] from None
        raise
    if mocks.errors:
        raise mocks.errors[0]
    return result


class MockStateFile:
    """A stack's state under the mock runtime: dynamic resources with ids, outputs and providers, and its
    secret config, encrypted (:func:`seal`) as Pulumi's passphrase provider keeps it: never in plain text."""

    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
        tmp.replace(self.path)

    def load(self) -> dict[str, dict[str, Any]]:
        return dict(self._read().get("resources", {}))

    def save(self, resources: dict[str, dict[str, Any]], outputs: dict[str, Any] | None = None,
             cloud: str | None = None) -> None:
        """Write the state; ``cloud`` (kept from the last save when not given) says where the stack lives."""
        data = self._read()
        self._write({**data, "resources": resources, "outputs": outputs or {}, **({"cloud": cloud} if cloud else {})})

    def outputs(self) -> dict[str, Any] | None:
        data = self._read()
        return dict(data.get("outputs") or {}) if data else None

    def sealed_secrets(self) -> dict[str, str] | None:
        return self._read().get("secrets")

    def save_sealed_secrets(self, sealed: dict[str, str]) -> None:
        data = self._read()
        self._write({"resources": {}, "outputs": {}, **data, "secrets": sealed})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def seal(plain: bytes, passphrase: str) -> dict[str, str]:
    """``plain`` encrypted with AES-256-GCM under a key derived (scrypt) from ``passphrase``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    key = hashlib.scrypt(passphrase.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    sealed = AESGCM(key).encrypt(nonce, plain, None)
    return {k: base64.b64encode(v).decode() for k, v in (("salt", salt), ("nonce", nonce), ("ciphertext", sealed))}


def unseal(sealed: dict[str, str], passphrase: str) -> bytes:
    """What :func:`seal` sealed; ``cryptography``'s InvalidTag when the passphrase is not the one it used."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = {k: base64.b64decode(sealed[k]) for k in ("salt", "nonce", "ciphertext")}
    key = hashlib.scrypt(passphrase.encode(), salt=raw["salt"], n=2**14, r=8, p=1, dklen=32)
    return AESGCM(key).decrypt(raw["nonce"], raw["ciphertext"], None)


def destroy_dynamic(resources: dict[str, dict[str, Any]], on_deleted: Callable[[str], None] | None = None) -> None:
    """Delete every recorded dynamic resource, newest first, as ``pulumi destroy`` would."""
    for name in reversed(list(resources)):
        entry = resources[name]
        load_provider(entry["provider"]).delete(entry["id"], entry["outputs"])
        if on_deleted:
            on_deleted(name)
