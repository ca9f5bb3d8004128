"""The one small interface every command uses to reach a stack: up, destroy, outputs, the running host.

Each cloud's driver picks its backend (:meth:`CloudDriver.backend`). Clouds with paid
resources keep their state in Pulumi:
- :class:`AutomationBackend` runs the Pulumi program through the Automation API
  (the Pulumi CLI), in the backend the user's Pulumi uses (:func:`choose_backend`).
- :class:`MockRuntimeBackend` runs the same program on Pulumi's mock runtime,
  with the mocks calling the real dynamic providers (against stand-ins in tests);
  it serves whole-flow tests where the Pulumi CLI cannot run.
The local sandbox and existing machines have backends of their own, in their folders.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gpuprov.infra import records
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError, PulumiCliMissing
from gpuprov.infra.host import GpuHost
from gpuprov.infra.paths import state_root
from gpuprov.infra.settings import Settings

Progress = Callable[[str], None]
PULUMI_CLOUD_URL = "https://api.pulumi.com"


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


@runtime_checkable
class ServiceSecretStore(Protocol):
    """A backend that keeps the stack's generated service secrets with the stack, as Pulumi secrets:
    ``{APP: {NAME: VALUE}}``, the same for every operator who shares the backend."""

    def load_service_secrets(self, config: StackConfig) -> dict[str, dict[str, str]]: ...

    def save_service_secrets(self, config: StackConfig, store: dict[str, dict[str, str]]) -> None: ...


SERVICE_SECRETS_KEY = "gpuprov:service_secrets"  # secret stack config: the generated service secrets, as JSON


def _quiet(_msg: str) -> None:
    return None


# --- which Pulumi backend: the one the user's own Pulumi would use ------------------------------------


class BackendError(GpuprovError):
    """The Pulumi login gpuprov should follow cannot be read."""

    exit_code = 2


@dataclass(frozen=True)
class PulumiBackendChoice:
    """The backend gpuprov's Pulumi stacks live in, and why."""

    url: str
    source: str  # "PULUMI_BACKEND_URL", the credentials file, "PULUMI_ACCESS_TOKEN" or "gpuprov"
    own: bool  # gpuprov's own local file backend (the only one it gives a passphrase)

    @property
    def folder(self) -> Path | None:
        """The folder of a ``file://`` backend; None for any other."""
        if not self.url.startswith("file://"):
            return None
        return Path(self.url[len("file://"):].split("?", 1)[0] or "/").expanduser()


def choose_backend(settings: Settings) -> PulumiBackendChoice:
    """What ``pulumi whoami`` would answer, read without the CLI: ``PULUMI_BACKEND_URL``, else the
    login in ``$PULUMI_HOME/credentials.json`` (``current``), else Pulumi Cloud when
    ``PULUMI_ACCESS_TOKEN`` is set, else (only then) gpuprov's own file backend under its state root."""
    if settings.pulumi_backend_url:
        return PulumiBackendChoice(settings.pulumi_backend_url, "PULUMI_BACKEND_URL", own=False)
    creds = Path(settings.pulumi_home or Path.home() / ".pulumi").expanduser() / "credentials.json"
    try:
        current = json.loads(creds.read_text()).get("current")
    except FileNotFoundError:
        current = None
    except (OSError, ValueError, AttributeError) as err:
        raise BackendError(f"cannot read the Pulumi login in {creds} ({type(err).__name__}); fix or remove it "
                           "(`pulumi logout`), or set PULUMI_BACKEND_URL") from None
    if isinstance(current, str) and current:
        return PulumiBackendChoice(current, str(creds), own=False)
    if settings.pulumi_access_token_set:
        return PulumiBackendChoice(PULUMI_CLOUD_URL, "PULUMI_ACCESS_TOKEN", own=False)
    return PulumiBackendChoice(f"file://{state_root() / 'pulumi-state'}", "gpuprov", own=True)


def _own_passphrase_file() -> Path:
    path = state_root() / "pulumi-passphrase"
    if not path.exists():
        # Generated once, root-only; handed to Pulumi by file so it never shows in `ps`.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path


def pulumi_env(settings: Settings) -> dict[str, str]:
    """What gpuprov adds to Pulumi's environment: only for its own backend, the backend URL and a passphrase
    (unless another secrets provider is set). A backend the user configured is left exactly as it is."""
    env = {"PULUMI_SKIP_UPDATE_CHECK": "true"}
    choice = choose_backend(settings)
    if not choice.own:
        return env
    folder = choice.folder
    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    env["PULUMI_BACKEND_URL"] = choice.url
    if settings.secrets_provider in (None, "passphrase") and not (
            os.environ.get("PULUMI_CONFIG_PASSPHRASE") or os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")):
        env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(_own_passphrase_file())
    return env


def passphrase(settings: Settings) -> str:
    """The passphrase a passphrase-encrypted stack's secrets use: the user's (``PULUMI_CONFIG_PASSPHRASE``,
    ``PULUMI_CONFIG_PASSPHRASE_FILE``, as for Pulumi), else, for gpuprov's own backend only, its generated one."""
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE"):
        return os.environ["PULUMI_CONFIG_PASSPHRASE"]
    given = os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if not given and choose_backend(settings).own:
        given = str(_own_passphrase_file())
    if not given:
        raise BackendError(f"the stack's secrets in {choose_backend(settings).url} are encrypted with a passphrase; "
                           "set PULUMI_CONFIG_PASSPHRASE_FILE (or PULUMI_CONFIG_PASSPHRASE) to your team's")
    try:
        return Path(given).expanduser().read_text().strip()
    except OSError as err:
        raise BackendError(f"cannot read PULUMI_CONFIG_PASSPHRASE_FILE {given} ({err.strerror})") from None


# --- the mock runtime's state: the same choice, a JSON file a stack -----------------------------------


def mock_state_dir(settings: Settings, project: str = "gpuprov") -> Path:
    """Where the mock-runtime backend keeps a project's stacks: beside a ``file://`` backend's own state
    (so two operator homes on one backend folder share them), else under gpuprov's state root."""
    folder = choose_backend(settings).folder
    if folder is None or choose_backend(settings).own:
        return state_root() / "mock-state"
    return folder / ".gpuprov-mock" / project


def mock_state_path(config: StackConfig, settings: Settings | None = None) -> Path:
    """Where the mock-runtime backend keeps a stack's state (resource ids, outputs, providers, secret config)."""
    return mock_state_dir(settings or Settings.from_env(), config.pulumi_project) / f"{config.stack}.json"


def has_local_state(stack: str) -> bool:
    """Whether this machine keeps a record or saved Pulumi state of the stack."""
    return records.load(stack) is not None or (state_root() / "mock-state" / f"{stack}.json").exists()


def recorded_host(config: StackConfig) -> GpuHost:
    """The host the stack's record on this machine names, or :class:`StackNotUp`."""
    record = records.load(config.stack)
    if record is None:
        raise StackNotUp(no_host_message(config))
    return record.host


def no_host_message(config: StackConfig) -> str:
    return f"stack '{config.pulumi_stack}' has no host; bring one up first: gpuprov up --stack {config.pulumi_stack}"


def host_from_outputs(config: StackConfig, host: Any, ssh_private_key: str | None = None) -> GpuHost:
    """The ``host`` output as a GpuHost, cached in this machine's record (and the stack's generated login
    key, when its outputs carry it, installed here); :class:`StackNotUp` when absent."""
    from gpuprov.infra.keys import adopt_keypair

    if not host:
        raise StackNotUp(no_host_message(config))
    found = GpuHost.model_validate(host)
    if ssh_private_key:
        adopt_keypair(config.stack, ssh_private_key)
    # a cache of the stack's outputs, never their source; where SSH is open from when this config says it
    ssh_from = (list(config.ssh_sources), config.ssh_is_egress) if config.ssh_sources else None
    records.save(config.stack, config.cloud, found, ssh_from=ssh_from)
    return found


def pulumi_config_values(config: StackConfig) -> dict[str, tuple[str, bool]]:
    """``gpuprov:<key>`` -> (value as Pulumi config text, is-secret) for every set key."""
    out: dict[str, tuple[str, bool]] = {}
    for key, value in config.model_dump(exclude={"stack"}, exclude_none=True).items():
        secret = key == "hf_token"
        if secret:
            value = config.hf_token.get_secret_value() if config.hf_token else None
        if value is None:
            continue
        text = json.dumps(list(value)) if isinstance(value, tuple | list) else json.dumps(value, default=str) \
            if isinstance(value, dict) else str(value).lower() if isinstance(value, bool) else str(value)
        out[f"gpuprov:{key}"] = (text, secret)
    return out


def with_egress(config: StackConfig, settings: Settings) -> StackConfig:
    """``config`` with this machine's egress address, when its SSH rule is made for it and no caller has
    detected it yet (``gpuprov up`` has; ``gpuprov ci`` has not): every up opens SSH to a known address."""
    from gpuprov.infra.egress import resolve

    return resolve(config, settings)


class AutomationBackend:
    """Lambda, AWS and GCP for users: the real Pulumi engine through the Automation API, running the
    program that ships in the package (:func:`gpuprov.infra.program.main`) inline, in the backend
    and with the secrets provider the user's Pulumi would use."""

    def __init__(self, settings: Settings, progress: Progress | None = None):
        self.settings = settings
        self.progress = progress or _quiet

    def _opts(self, project: str) -> Any:
        from pulumi import automation as auto

        return auto.LocalWorkspaceOptions(
            env_vars=pulumi_env(self.settings),
            secrets_provider=self.settings.secrets_provider,
            project_settings=auto.ProjectSettings(name=project, runtime="python"),
        )

    def _stack(self, config: StackConfig, create: bool = True) -> Any:
        if not shutil.which("pulumi"):
            raise PulumiCliMissing()
        from pulumi import automation as auto

        from gpuprov.infra.program import main

        args = {"stack_name": config.pulumi_stack, "project_name": config.pulumi_project, "program": main,
                "opts": self._opts(config.pulumi_project)}
        if not create:
            try:
                return auto.select_stack(**args)
            except auto.StackNotFoundError:
                raise StackNotUp(no_host_message(config)) from None
        stack = auto.create_or_select_stack(**args)
        stack.set_all_config(
            {k: auto.ConfigValue(value=v, secret=s) for k, (v, s) in pulumi_config_values(config).items()}
        )
        return stack

    def up(self, config: StackConfig) -> GpuHost:
        config = with_egress(config, self.settings)
        stack = self._stack(config)
        result = stack.up(on_output=self.progress)
        return host_from_outputs(config, result.outputs["host"].value)

    @staticmethod
    def _host(config: StackConfig, outputs: dict[str, Any]) -> GpuHost:
        host, key = outputs.get("host"), outputs.get("ssh_private_key")
        return host_from_outputs(config, host.value if host else None, key.value if key else None)

    def destroy(self, config: StackConfig) -> None:
        from gpuprov.infra.verify import verify_destroyed

        stack = self._stack(config)
        stack.destroy(on_output=self.progress)
        verify_destroyed(config, self.settings, progress=self.progress)  # the cloud, asked again, must list nothing
        if SERVICE_SECRETS_KEY in stack.get_all_config():
            stack.remove_config(SERVICE_SECRETS_KEY)  # the services are gone; a new host gets new secrets
        records.forget(config.stack)

    def load_service_secrets(self, config: StackConfig) -> dict[str, dict[str, str]]:
        value = self._stack(config, create=False).get_all_config().get(SERVICE_SECRETS_KEY)
        return dict(json.loads(value.value)) if value else {}

    def save_service_secrets(self, config: StackConfig, store: dict[str, dict[str, str]]) -> None:
        from pulumi import automation as auto

        self._stack(config, create=False).set_config(SERVICE_SECRETS_KEY, auto.ConfigValue(json.dumps(store), secret=True))

    def outputs(self, config: StackConfig) -> GpuHost | None:
        try:
            out = self._stack(config, create=False).outputs().get("host")
        except StackNotUp:
            return None
        return GpuHost.model_validate(out.value) if out else None

    def running_host(self, config: StackConfig) -> GpuHost:
        return self._host(config, self._stack(config, create=False).outputs())

    def list_stacks(self, project: str = "gpuprov") -> list[str]:
        if not shutil.which("pulumi"):
            raise PulumiCliMissing()
        from pulumi import automation as auto

        workspace = auto.LocalWorkspace(env_vars=pulumi_env(self.settings),
                                        project_settings=auto.ProjectSettings(name=project, runtime="python"))
        return sorted(s.name for s in workspace.list_stacks())


class MockRuntimeBackend:
    """The same program on Pulumi's mock runtime; dynamic providers are called for real.

    ``plan`` uses :func:`gpuprov.infra.plan` instead (nothing is called). This backend is
    what tests and the fault suite use to run whole flows without the Pulumi CLI. Its state
    follows the backend choice (:func:`mock_state_dir`), so a shared ``file://`` backend is shared state.
    """

    def __init__(self, settings: Settings, progress: Progress | None = None, calls: dict[str, Any] | None = None):
        self.settings = settings
        self.progress = progress or _quiet
        self.calls = calls

    def _state(self, config: StackConfig):  # type: ignore[no-untyped-def]
        from gpuprov.infra.mock_runtime import MockStateFile

        return MockStateFile(mock_state_path(config, self.settings))

    def up(self, config: StackConfig) -> GpuHost:
        import gpuprov.infra
        from gpuprov.infra.mock_runtime import EngineMocks, destroy_dynamic, run_program
        from gpuprov.infra.program import SECRET_OUTPUTS

        config = with_egress(config, self.settings)
        state = self._state(config)
        prior = state.load()
        mocks = EngineMocks(prior=prior, call_dynamic_providers=True, calls=self.calls)
        outputs: dict[str, Any] = {}
        try:
            outputs = run_program(lambda: gpuprov.infra.build(config), mocks, stack=config.stack,
                                  project=config.pulumi_project)
        finally:
            # Whatever was created is recorded, even when the run failed, so destroy can remove it; a failed
            # first run that created nothing leaves no state (nor a stack to `down`). Secret outputs are
            # sealed, as the engine keeps them; never in the plain state.
            secret = {k: outputs.pop(k) for k in SECRET_OUTPUTS if k in outputs} if outputs else {}
            merged = {**prior, **mocks.state}
            if merged or outputs is not None or state.sealed_secrets():
                state.save(merged, outputs, cloud=config.cloud)
                if secret or self._sealed(config).get("outputs"):
                    self._seal(config, {**self._sealed(config), "outputs": secret})
            else:
                state.remove()
        gone = {k: v for k, v in prior.items() if k not in mocks.state}
        if gone:
            destroy_dynamic(gone, on_deleted=lambda n: self.progress(f"deleted {n}"))
            state.save({k: v for k, v in merged.items() if k not in gone}, outputs)
        return host_from_outputs(config, outputs.get("host"), secret.get("ssh_private_key"))

    def _sealed(self, config: StackConfig) -> dict[str, Any]:
        """The stack's secret part: ``{"service_secrets": {...}, "outputs": {...}}``, decrypted."""
        from cryptography.exceptions import InvalidTag

        from gpuprov.infra.mock_runtime import unseal

        sealed = self._state(config).sealed_secrets()
        if not sealed:
            return {}
        try:
            return dict(json.loads(unseal(sealed, self._passphrase())))
        except InvalidTag:
            raise BackendError(f"cannot decrypt the secrets of stack '{config.pulumi_stack}': the passphrase is not "
                               "the one they were saved with; set PULUMI_CONFIG_PASSPHRASE_FILE to your team's") from None

    def _seal(self, config: StackConfig, payload: dict[str, Any]) -> None:
        from gpuprov.infra.mock_runtime import seal

        self._state(config).save_sealed_secrets(seal(json.dumps(payload).encode(), self._passphrase()))

    def load_service_secrets(self, config: StackConfig) -> dict[str, dict[str, str]]:
        return dict(self._sealed(config).get("service_secrets") or {})

    def save_service_secrets(self, config: StackConfig, store: dict[str, dict[str, str]]) -> None:
        self._seal(config, {**self._sealed(config), "service_secrets": store})

    def _passphrase(self) -> str:
        if self.settings.secrets_provider not in (None, "passphrase"):
            raise BackendError(f"GPUPROV_SECRETS_PROVIDER={self.settings.secrets_provider}: the mock runtime keeps "
                               "secrets with a passphrase only; unset it, or use the Pulumi CLI (GPUPROV_PULUMI=automation)")
        return passphrase(self.settings)

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
        out = self._state(config).outputs() or {}
        key = self._sealed(config).get("outputs", {}).get("ssh_private_key") if out.get("host") else None
        return host_from_outputs(config, out.get("host"), key)

    def list_stacks(self, project: str = "gpuprov") -> list[str]:
        folder = mock_state_dir(self.settings, project)
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def backend_stacks(settings: Settings | None = None, project: str = "gpuprov") -> list[str]:
    """The stacks of ``project`` that the Pulumi backend in use knows (what a colleague made included)."""
    settings = settings or Settings.from_env()
    backend = pulumi_backend(settings)
    assert isinstance(backend, AutomationBackend | MockRuntimeBackend)
    return backend.list_stacks(project)


def pulumi_backend(settings: Settings, progress: Progress | None = None) -> StackBackend:
    """The Pulumi engine the settings name: the CLI through the Automation API, or the mock runtime."""
    if settings.pulumi == "mock":
        return MockRuntimeBackend(settings, progress)
    return AutomationBackend(settings, progress)


def backend_for(config: StackConfig, progress: Progress | None = None, settings: Settings | None = None) -> StackBackend:
    """The backend of ``config``'s cloud (its driver decides)."""
    from gpuprov.infra.clouds import driver_for

    return driver_for(config.cloud, settings).backend(progress)


def stack_cloud(config: StackConfig, settings: Settings | None = None) -> str | None:
    """Which cloud the stack named in ``config`` is on: this machine's record (a cache), else the ``host``
    output of that stack in the Pulumi backend (a colleague's stack); None when neither knows it."""
    record = records.load(config.stack)
    if record is not None:
        return record.cloud
    try:
        host = pulumi_backend(settings or Settings.from_env()).outputs(config)
    except GpuprovError:  # no Pulumi CLI, no login: the cloud stays what the config says
        return None
    return host.cloud if host else None


def secret_store(config: StackConfig, settings: Settings | None = None) -> ServiceSecretStore | None:
    """The stack's own secret store when its backend keeps one (the Pulumi backends); None: this machine's file."""
    backend = backend_for(config, settings=settings)
    return backend if isinstance(backend, ServiceSecretStore) else None


def running_host(config: StackConfig, settings: Settings | None = None) -> GpuHost:
    """The stack's running host, or :class:`StackNotUp` saying how to bring one up."""
    return backend_for(config, settings=settings).running_host(config)
