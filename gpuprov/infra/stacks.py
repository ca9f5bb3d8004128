"""The one small interface every command uses to reach a stack: up, destroy, outputs, the running host.

Each cloud's driver picks its backend (:meth:`CloudDriver.backend`). Clouds with paid
resources keep their state in Pulumi:
- :class:`AutomationBackend` runs the Pulumi program through the Automation API
  (the Pulumi CLI), with a local file state backend and passphrase secrets.
- :class:`MockRuntimeBackend` runs the same program on Pulumi's mock runtime,
  with the mocks calling the real dynamic providers (against stand-ins in tests);
  it serves whole-flow tests where the Pulumi CLI cannot run.
The local sandbox and existing machines have backends of their own, in their folders.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gpuprov.infra import records
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError, PulumiCliMissing
from gpuprov.infra.host import GpuHost
from gpuprov.infra.paths import REPO_ROOT, state_root
from gpuprov.infra.settings import Settings

Progress = Callable[[str], None]


class StackNotUp(GpuprovError):
    """A command needs the stack's host and there is none running."""


class StackBackend(Protocol):
    """How a stack's host comes and goes."""

    def up(self, config: StackConfig) -> GpuHost: ...

    def destroy(self, config: StackConfig) -> None: ...

    def outputs(self, config: StackConfig) -> GpuHost | None: ...

    def running_host(self, config: StackConfig) -> GpuHost:
        """The stack's host, ready to be reached, or :class:`StackNotUp` saying how to get one."""
        ...


def _quiet(_msg: str) -> None:
    return None


def mock_state_path(stack: str) -> Path:
    """Where the mock-runtime backend keeps a stack's state (resource ids, outputs, providers)."""
    return state_root() / "mock-state" / f"{stack}.json"


def has_local_state(stack: str) -> bool:
    """Whether this machine keeps a record or saved Pulumi state of the stack."""
    return records.load(stack) is not None or mock_state_path(stack).exists()


def recorded_host(config: StackConfig) -> GpuHost:
    """The host the stack's record on this machine names, or :class:`StackNotUp`."""
    record = records.load(config.stack)
    if record is None:
        raise StackNotUp(f"stack '{config.stack}' has no host; bring one up first: gpuprov up --stack {config.stack}")
    return record.host


def pulumi_config_values(config: StackConfig) -> dict[str, tuple[str, bool]]:
    """``gpuprov:<key>`` -> (value as Pulumi config text, is-secret) for every set key."""
    import json

    out: dict[str, tuple[str, bool]] = {}
    for key, value in config.model_dump(exclude={"stack"}, exclude_none=True).items():
        secret = key == "hf_token"
        if secret:
            value = config.hf_token.get_secret_value() if config.hf_token else None
        if value is None:
            continue
        text = json.dumps(list(value)) if isinstance(value, tuple | list) else str(value).lower() if isinstance(
            value, bool) else str(value)
        out[f"gpuprov:{key}"] = (text, secret)
    return out


class AutomationBackend:
    """Lambda, AWS and GCP for users: the real Pulumi engine through the Automation API."""

    def __init__(self, settings: Settings, progress: Progress | None = None):
        self.settings = settings
        self.progress = progress or _quiet

    def _env(self) -> dict[str, str]:
        root = state_root()
        passphrase = root / "pulumi-passphrase"
        if not passphrase.exists():
            # Generated once, root-only; handed to Pulumi by file so it never shows in `ps`.
            fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        backend = root / "pulumi-state"
        backend.mkdir(exist_ok=True, mode=0o700)
        env = {"PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase)}
        env.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
        return env

    def _stack(self, config: StackConfig) -> Any:
        if not shutil.which("pulumi"):
            raise PulumiCliMissing()
        from pulumi import automation as auto

        opts = auto.LocalWorkspaceOptions(work_dir=str(REPO_ROOT), env_vars=self._env())
        stack = auto.create_or_select_stack(stack_name=config.stack, work_dir=str(REPO_ROOT), opts=opts)
        stack.set_all_config(
            {k: auto.ConfigValue(value=v, secret=s) for k, (v, s) in pulumi_config_values(config).items()}
        )
        return stack

    def up(self, config: StackConfig) -> GpuHost:
        stack = self._stack(config)
        result = stack.up(on_output=self.progress)
        host = GpuHost.model_validate(result.outputs["host"].value)
        records.save(config.stack, config.cloud, host)
        return host

    def destroy(self, config: StackConfig) -> None:
        from gpuprov.infra.verify import verify_destroyed

        stack = self._stack(config)
        stack.destroy(on_output=self.progress)
        verify_destroyed(config, self.settings, progress=self.progress)  # the cloud, asked again, must list nothing
        records.forget(config.stack)

    def outputs(self, config: StackConfig) -> GpuHost | None:
        out = self._stack(config).outputs().get("host")
        return GpuHost.model_validate(out.value) if out else None

    def running_host(self, config: StackConfig) -> GpuHost:
        return recorded_host(config)


class MockRuntimeBackend:
    """The same program on Pulumi's mock runtime; dynamic providers are called for real.

    ``plan`` uses :func:`gpuprov.infra.plan` instead (nothing is called). This backend is
    what tests and the fault suite use to run whole flows without the Pulumi CLI.
    """

    def __init__(self, settings: Settings, progress: Progress | None = None, calls: dict[str, Any] | None = None):
        self.settings = settings
        self.progress = progress or _quiet
        self.calls = calls

    def _state(self, config: StackConfig):  # type: ignore[no-untyped-def]
        from gpuprov.infra.mock_runtime import MockStateFile

        return MockStateFile(mock_state_path(config.stack))

    def up(self, config: StackConfig) -> GpuHost:
        import gpuprov.infra
        from gpuprov.infra.mock_runtime import EngineMocks, destroy_dynamic, run_program

        state = self._state(config)
        prior = state.load()
        mocks = EngineMocks(prior=prior, call_dynamic_providers=True, calls=self.calls)
        outputs: dict[str, Any] | None = None
        try:
            outputs = run_program(lambda: gpuprov.infra.build(config), mocks, stack=config.stack)
        finally:
            # Whatever was created is recorded, even when the run failed, so destroy can remove it;
            # a failed first run that created nothing leaves no state (nor a stack to `down`).
            merged = {**prior, **mocks.state}
            if merged or outputs is not None:
                state.save(merged, outputs, cloud=config.cloud)
            else:
                state.remove()
        gone = {k: v for k, v in prior.items() if k not in mocks.state}
        if gone:
            destroy_dynamic(gone, on_deleted=lambda n: self.progress(f"deleted {n}"))
            state.save({k: v for k, v in merged.items() if k not in gone}, outputs)
        host = GpuHost.model_validate(outputs["host"])
        records.save(config.stack, config.cloud, host)
        return host

    def destroy(self, config: StackConfig) -> None:
        from gpuprov.infra.mock_runtime import destroy_dynamic

        state = self._state(config)
        remaining = state.load()

        def deleted(name: str) -> None:
            remaining.pop(name, None)
            state.save(remaining)
            self.progress(f"deleted {name}")

        destroy_dynamic(dict(remaining), on_deleted=deleted)
        state.remove()
        from gpuprov.infra.verify import verify_destroyed

        verify_destroyed(config, self.settings, progress=self.progress)  # the cloud, asked again, must list nothing
        records.forget(config.stack)

    def outputs(self, config: StackConfig) -> GpuHost | None:
        out = self._state(config).outputs()
        return GpuHost.model_validate(out["host"]) if out and out.get("host") else None

    def running_host(self, config: StackConfig) -> GpuHost:
        return recorded_host(config)


def pulumi_backend(settings: Settings, progress: Progress | None = None) -> StackBackend:
    """The Pulumi engine the settings name: the CLI through the Automation API, or the mock runtime."""
    if settings.pulumi == "mock":
        return MockRuntimeBackend(settings, progress)
    return AutomationBackend(settings, progress)


def backend_for(config: StackConfig, progress: Progress | None = None, settings: Settings | None = None) -> StackBackend:
    """The backend of ``config``'s cloud (its driver decides)."""
    from gpuprov.infra.clouds import driver_for

    return driver_for(config.cloud, settings).backend(progress)


def running_host(config: StackConfig, settings: Settings | None = None) -> GpuHost:
    """The stack's running host, or :class:`StackNotUp` saying how to bring one up."""
    return backend_for(config, settings=settings).running_host(config)
