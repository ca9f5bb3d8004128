"""What an app is: the types an app descriptor (``gpuprov/apps/<name>/app.py``: ``APP = App(...)``) is made of.

An *app* is one Docker Compose bundle gpuprov deploys (``vllm_cxr``: vLLM + Open WebUI;
``monai_label``: the OHIF-AI MONAI Label server). Its folder holds ``app.py``, ``compose.yaml``,
optionally ``compose.gpu.yaml`` (applied only when the host reports NVIDIA GPUs) and
``compose.sandbox.yaml`` (applied only on a host that declares itself a sandbox), and
``standin/<service>.sh`` for each service: the busybox routes of its stand-in image.

Provisioning knows no app by name: everything it writes, builds, starts, probes and watches
comes from these descriptors (:mod:`gpuprov.apps` is the registry).

What gpuprov writes into each app's ``.env`` for every service, so ``compose.yaml`` can use it:
``<SERVICE>_IMAGE`` (the image reference), ``<SERVICE>_BIND`` (the host address its port is
published on: ``127.0.0.1`` unless the port is in ``open_ports``), ``<SERVICE>_LISTEN`` (the
address it listens on inside its container: ``0.0.0.0``, or the bind address with host
networking) and ``<SERVICE>_CONFIG`` (the hash of everything it runs with; label the service
``gpuprov.config: ${<SERVICE>_CONFIG}`` so a deploy recreates exactly the services whose hash
changed). ``<SERVICE>`` is the service name in upper case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuprov.infra.errors import GpuprovError
from gpuprov.provisioning.errors import ProvisioningError, SmokeFailed

if TYPE_CHECKING:
    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.gpus import GpuSpec

__all__ = [
    "App", "AppCheck", "AppError", "BuildInput", "GpuNeed", "GpuTarget", "HostContext", "Login", "Metrics",
    "ProvisioningError", "Secret", "Secrets", "Service", "ServiceCheck", "Sizing", "SmokeFailed", "SourceBuild",
    "env_name",
]


class AppError(GpuprovError):
    """An app descriptor gpuprov cannot use, or a name no app declares; the message says what to fix."""

    exit_code = 2


def env_name(service: str, what: str) -> str:
    """The ``.env`` key gpuprov writes for ``service``: ``env_name("open_webui", "BIND") == "OPEN_WEBUI_BIND"``."""
    return f"{service.upper()}_{what}"


class Secrets(Mapping[str, str]):
    """One app's generated secrets (name -> value). Its repr never shows a value."""

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(sorted(self._values))}: <hidden>)"


# --- what the descriptor's callables are handed -------------------------------------------------


@dataclass(frozen=True)
class GpuTarget:
    """What an app is sized for: the catalog's GPU for the instance type at ``plan``, the host's own at deploy."""

    gpu: GpuSpec | None  # None: no NVIDIA GPU gpuprov may use (a sandbox), or one gpuprov has no row for
    arch: str | None  # the host's CPU architecture (``uname -m``: x86_64, aarch64); None: not known yet
    others_gib: float = 0.0  # what the stack's other apps take on the same card
    inputs: frozenset[str] = frozenset()  # build inputs the user supplied (``sam3.pt``)
    driver: str | None = None  # the host's NVIDIA driver version ("575.57.08"); None: not known yet (plan)


@dataclass(frozen=True)
class GpuNeed:
    """GPU memory one service takes, and how the figure was worked out (with its sources)."""

    service: str
    gib: float
    basis: str


@dataclass(frozen=True)
class Sizing:
    """An app's settings for a GPU target, what it takes on the card, and why it cannot run there."""

    settings: Mapping[str, str] = field(default_factory=dict)  # .env values (and what ``plan`` shows)
    needs: tuple[GpuNeed, ...] = ()
    problems: tuple[str, ...] = ()  # each: what cannot work, why (a source), what to do


@dataclass(frozen=True)
class HostContext:
    """What an app's ``env`` and ``secret_files`` are computed from."""

    config: StackConfig
    secrets: Secrets
    gpus: int  # NVIDIA GPUs the host reports (0 on a sandbox)
    host_network: bool  # containers share the host's network (the sandbox: its engine has no bridge)
    binds: Mapping[str, str] = field(default_factory=dict)  # service -> host address its port is published on
    sizing: Mapping[str, str] = field(default_factory=dict)  # the app's settings for the host's GPU
    cache_dir: str | None = None  # the stack's cache mount on the host (cache: true), else None: Docker volumes

    def cache_source(self, subdir: str, volume: str) -> str:
        """A compose volume source: ``subdir`` of the stack's cache when one is mounted, else the named ``volume``."""
        return f"{self.cache_dir}/{subdir}" if self.cache_dir else volume

    def peer(self, service: str) -> str:
        """The address another container of the same app reaches ``service`` at (its port is the same)."""
        return "127.0.0.1" if self.host_network else service


@dataclass(frozen=True)
class ServiceCheck:
    """What a health probe gets: the service's URL through the SSH tunnel, the config, its app's secrets."""

    service: str
    url: str
    config: StackConfig
    secrets: Secrets
    timeout_s: float = 5.0


@dataclass(frozen=True)
class AppCheck:
    """What a smoke test or an after-healthy hook gets: the app's services' URLs through the tunnel."""

    app: str
    urls: Mapping[str, str]
    config: StackConfig
    secrets: Secrets


# --- the descriptor -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """A Prometheus endpoint whose metrics count as activity for the idle agent."""

    path: str = "/metrics"  # on the service's host port
    running: tuple[str, ...] = ()  # gauges: requests in flight
    waiting: tuple[str, ...] = ()  # gauges: requests queued
    counters: tuple[str, ...] = ()  # counters: finished work (activity when they move)


@dataclass(frozen=True)
class Service:
    """One compose service of an app."""

    name: str  # the compose service name; users type it too (`fab logs --service NAME`)
    container: str  # its container_name in compose.yaml
    port: int  # the host port it serves on (what the tunnel forwards and open_ports opens)
    image: Callable[[StackConfig], str]  # its image reference, from the config
    health: Callable[[ServiceCheck], str | None]  # None when healthy, else a one-line reason
    hash_env: tuple[str, ...] = ()  # .env keys (besides its own IMAGE/BIND/LISTEN) its config hash covers
    hash_files: tuple[str, ...] = ()  # secret env files (names from secret_files) its config hash covers
    log_activity: bool = False  # request lines in its log count as activity for the idle agent
    log_ignore: tuple[str, ...] = ()  # request paths in its log that are not activity (health checks)
    metrics: Metrics | None = None


@dataclass(frozen=True)
class Secret:
    """A value gpuprov generates once per stack and keeps 0600 under the state root."""

    name: str
    generate: Callable[[str], str]  # stack name -> value
    # Why `gpuprov secrets rotate` must not replace it (a value a service keeps in its own data once
    # set, as a web UI's admin password); None: a new value takes effect on the next deploy.
    fixed: str | None = None


@dataclass(frozen=True)
class Login:
    """Generated secrets that are someone's login: shown once, on the deploy that generated them."""

    label: str  # what the user signs in to, e.g. "Open WebUI admin"
    service: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class BuildInput:
    """A file the user supplies for a source build (``gpuprov deploy --build-input NAME=PATH``).

    Uploaded once (compared by SHA-256) to ``/opt/gpuprov/uploads/NAME``, root-only, and copied to
    ``dest`` in the checkout before the build; its hash is part of the image's label.
    """

    name: str
    dest: str  # path inside the checkout
    help: str = ""


@dataclass(frozen=True)
class SourceBuild:
    """Build a service's image on the host from a pinned commit (instead of pulling it)."""

    service: str
    repo: Callable[[StackConfig], str]
    ref: Callable[[StackConfig], str]
    when: Callable[[StackConfig], bool]  # False: the image is pulled instead
    checkout: str  # folder name under /opt/gpuprov/src
    context: str = "."  # the build context inside the checkout
    inputs: tuple[BuildInput, ...] = ()
    note: str = ""  # printed before the build starts (how long it takes)
    minutes: tuple[float, float] = (0.0, 0.0)  # how long a build on the host takes (what a fallback costs)


def _no_env(_ctx: HostContext) -> dict[str, str]:
    return {}


def _no_files(_ctx: HostContext) -> dict[str, dict[str, str]]:
    return {}


@dataclass(frozen=True)
class App:
    """One compose bundle: everything gpuprov needs to deploy, reach, check and watch it."""

    name: str  # must equal its folder's name
    summary: str
    services: tuple[Service, ...]
    env: Callable[[HostContext], dict[str, str]] = _no_env  # its own .env values
    secret_files: Callable[[HostContext], dict[str, dict[str, str]]] = _no_files  # name -> values, written 0600
    secrets: tuple[Secret, ...] = ()
    login: Login | None = None
    directories: tuple[str, ...] = ()  # created under the app's folder on the host
    build: SourceBuild | None = None
    smoke: Callable[[AppCheck], dict[str, Any]] | None = None  # service -> what its answer showed
    after_healthy: Callable[[AppCheck], str | None] | None = None  # returns a line to show, if any
    backup: tuple[str, ...] = ()  # folders under the app's folder on the host that `gpuprov backup` archives
    backup_volumes: tuple[str, ...] = ()  # its compose file's named volumes `gpuprov backup` archives too
    # Its services that fetch a model at first start and answer health only once it is loaded (the
    # model_download / model_cache_hit phase of :mod:`gpuprov.provisioning.phases` lasts until they answer).
    model_services: tuple[str, ...] = ()
    model_dir: str = ""  # where they keep downloaded models in the container: the live display shows it grow
    # Its settings and GPU memory for a GPU target (:mod:`gpuprov.apps.fit` adds the apps up); None: no GPU use.
    sizing: Callable[[StackConfig, GpuTarget], Sizing] | None = None
    folder: Path = Path()  # set by the registry

    @property
    def project(self) -> str:
        """Its Compose project name on the host."""
        return f"gpuprov-{self.name.replace('_', '-')}"

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def compose_files(self, gpus: int, sandbox: bool) -> list[str]:
        """The compose files that apply on a host: the GPU override only with GPUs, the sandbox one only there."""
        names = ["compose.yaml"] + (["compose.gpu.yaml"] if gpus else []) + (["compose.sandbox.yaml"] if sandbox else [])
        return [n for n in names if (self.folder / n).is_file()]
