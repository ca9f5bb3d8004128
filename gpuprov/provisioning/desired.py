"""What a stack's host should hold: files, images and services, computed from the stack config and
the descriptors of its apps (:mod:`gpuprov.apps`).

Pure data (no SSH): :mod:`gpuprov.provisioning.steps` compares it with the host's facts. Every path
is a logical host path (:mod:`gpuprov.provisioning.hostpaths`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpuprov.apps import registry
from gpuprov.apps.base import App, AppError, GpuTarget, HostContext, Secrets, env_name
from gpuprov.apps.fit import fit
from gpuprov.infra import grammar
from gpuprov.infra.config import StackConfig
from gpuprov.infra.gpus import GpuSpec
from gpuprov.infra.paths import REMOTE_FILES
from gpuprov.provisioning.hostpaths import ROOT

STANDIN = REMOTE_FILES / "standin"  # the stand-in machinery every app shares
STANDIN_EXECUTABLES = ("serve", "http.sh")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    content: bytes
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class HostShape:
    """What the host's facts say about it that changes what it should hold."""

    gpus: int = 0  # NVIDIA GPUs it reports
    sandbox: bool = False  # it declares itself a sandbox: stand-in images, host networking, no pulls
    gpu: GpuSpec | None = None  # its first GPU, as it reports it (what the apps are sized for)
    arch: str | None = None  # its CPU architecture (uname -m)
    inputs: frozenset[str] = frozenset()  # build inputs supplied (on the host or sent now)
    cache_dir: str | None = None  # the stack's cache mount as the host's Docker engine sees it (cache: true)
    driver: str | None = None  # its NVIDIA driver's version (nvidia-smi)

    @property
    def target(self) -> GpuTarget:
        return GpuTarget(self.gpu, self.arch, inputs=self.inputs, driver=self.driver)


@dataclass
class Project:
    """One Compose project on the host (one app)."""

    app: str
    name: str  # the Compose project name
    directory: str
    compose_files: list[str]
    services: dict[str, str]  # service -> config hash it must run with
    images: dict[str, str]  # service -> image reference


@dataclass
class StandinImage:
    """A stand-in image built on a sandbox host, tagged with the real image reference."""

    service: str
    label: str  # what it is made of (its gpuprov.label)
    context: str  # the build context on the host


@dataclass
class SourceImage:
    """An image built on the host from a pinned commit (an app's SourceBuild)."""

    service: str
    repo: str
    ref: str
    image: str
    checkout: str  # where the clone lives on the host
    context: str  # the build context inside the checkout
    dests: dict[str, str] = field(default_factory=dict)  # build input name -> path inside the checkout
    inputs: dict[str, str] = field(default_factory=dict)  # build inputs present on the host: name -> SHA-256
    note: str = ""
    minutes: tuple[float, float] = (0.0, 0.0)  # how long building it on the host takes

    @property
    def label(self) -> str:
        """What the built image is made of (its gpuprov.label): repository, commit, build inputs."""
        extra = "".join(f"+{Path(name).stem}:{sha[:16]}" for name, sha in sorted(self.inputs.items()))
        return f"{self.repo}@{self.ref}{extra}"


@dataclass
class Desired:
    root: str
    sandbox: bool
    files: list[RemoteFile] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    projects: list[Project] = field(default_factory=list)
    standins: dict[str, StandinImage] = field(default_factory=dict)  # image ref -> how to build it
    pulls: list[str] = field(default_factory=list)
    builds: list[SourceImage] = field(default_factory=list)
    registry: str | None = None  # image_registry: built images are pulled from it when it has them
    usd_hour: float = 0.0  # what the host costs (what a build on it instead of a pull costs)

    @property
    def image_refs(self) -> list[str]:
        refs = list(self.standins) + self.pulls + [b.image for b in self.builds]
        return list(dict.fromkeys(refs))


def upload_path(name: str) -> str:
    """Where a build input the user supplied lives on the host (root-only)."""
    return f"{ROOT}/uploads/{name}"


def standin_files(app: App) -> dict[str, Path]:
    """The stand-in build context of ``app``: the shared machinery, then the app's own routes under files/."""
    shared = {p.name: p for p in sorted(STANDIN.iterdir()) if p.is_file() and p.name != "README.md"}
    own = {f"files/{p.relative_to(app.folder / 'standin')}": p
           for p in sorted((app.folder / "standin").rglob("*")) if p.is_file()}
    return {**shared, **own}


def standin_label(app: App) -> str:
    digest = hashlib.sha256()
    for name, path in standin_files(app).items():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return f"standin:{digest.hexdigest()[:16]}"


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


_ENV_PLAIN = re.compile(r"[A-Za-z0-9_./:@+=,%-]*", re.ASCII)  # nothing Compose's .env parser reads as syntax


def _env_value(value: str) -> str:
    """``value`` as Compose reads it back literally: bare when plain, else single-quoted. Compose's parser
    (compose-spec/compose-go dotenv/parser.go) expands ``$`` and cuts at ``#`` in a bare value, and takes
    a single-quoted one as it is, up to the first ``'`` not after a backslash."""
    return value if _ENV_PLAIN.fullmatch(value) else f"'{value}'"


def _env_file(app: App, name: str, values: Mapping[str, str]) -> bytes:
    for key, value in values.items():
        if grammar.control_character(value) is not None or "'" in value or value.endswith("\\"):
            raise AppError(f"app '{app.name}': {name} value {key} holds a line break, control character, single "
                           "quote or final backslash; a .env value must be one line Compose can read literally")
    return "".join(f"{k}={_env_value(v)}\n" for k, v in values.items()).encode()


def desired_state(config: StackConfig, shape: HostShape, secrets: Mapping[str, Secrets]) -> Desired:
    """Everything the host should hold for ``config`` on a host of ``shape``; ``secrets``: app -> its secrets."""
    want = Desired(root=ROOT, sandbox=shape.sandbox, registry=config.image_registry)
    want.directories.append(ROOT)
    sized = fit(config, shape.target).apps
    for app in registry().selected(config.apps):
        _add_app(want, app, config, shape, secrets[app.name], sized[app.name].settings if app.name in sized else {})
    return want


def _add_app(want: Desired, app: App, config: StackConfig, shape: HostShape, secrets: Secrets,
             sizing: Mapping[str, str]) -> None:
    directory = f"{ROOT}/{app.name}"
    want.directories += [directory] + [f"{directory}/{d}" for d in app.directories]
    # All addresses only for a port the cloud's firewall opens to allowed_cidrs (the config refuses open_ports
    # without them); everything else stays on loopback, reached through the SSH tunnel.
    binds = {s.name: "0.0.0.0" if s.port in config.open_ports and config.allowed_cidrs else "127.0.0.1"
             for s in app.services}
    ctx = HostContext(config=config, secrets=secrets, gpus=shape.gpus, host_network=shape.sandbox, binds=binds,
                      sizing=sizing, cache_dir=shape.cache_dir)
    images = {s.name: s.image(config) for s in app.services}
    if shape.sandbox:
        # A stand-in is built on the sandbox and tagged as the real reference; a tag cannot carry a digest.
        images = {name: ref.split("@", 1)[0] for name, ref in images.items()}
    files = [RemoteFile(f"{directory}/{n}", (app.folder / n).read_bytes()) for n in app.compose_files(shape.gpus, shape.sandbox)]
    label = standin_label(app) if shape.sandbox else ""
    shared = [f.sha256 for f in files] + [label]

    env: dict[str, str] = {}
    for s in app.services:
        # Inside a bridged container a service listens on all of its addresses; with host networking
        # (a sandbox) it binds what its port would be published on.
        env |= {env_name(s.name, "IMAGE"): images[s.name], env_name(s.name, "BIND"): binds[s.name],
                env_name(s.name, "LISTEN"): binds[s.name] if shape.sandbox else "0.0.0.0"}
    env |= app.env(ctx)
    secret_files = {name: RemoteFile(f"{directory}/{name}", _env_file(app, name, values), 0o600)
                    for name, values in app.secret_files(ctx).items()}

    services: dict[str, str] = {}
    for s in app.services:
        keys = [env_name(s.name, k) for k in ("IMAGE", "BIND", "LISTEN")] + list(s.hash_env)
        unknown = [k for k in keys if k not in env] + [f for f in s.hash_files if f not in secret_files]
        if unknown:
            raise AppError(f"app '{app.name}': service '{s.name}' hashes {', '.join(unknown)}, which the app "
                           "does not write; fix hash_env / hash_files in its app.py")
        services[s.name] = _hash(shared, *(secret_files[f].sha256 for f in s.hash_files), {k: env[k] for k in keys})
    env |= {env_name(s, "CONFIG"): h for s, h in services.items()}

    files += list(secret_files.values())
    files.append(RemoteFile(f"{directory}/.env", _env_file(app, ".env", env)))
    want.files += files
    want.projects.append(Project(app=app.name, name=app.project, directory=directory,
                                 compose_files=[Path(f.path).name for f in files if f.path.endswith(".yaml")],
                                 services=services, images=images))

    if shape.sandbox:
        # No registry on the sandbox: a stand-in built there, tagged as the real reference.
        context = f"{directory}/standin"
        want.directories += [context]
        want.files += [RemoteFile(f"{context}/{name}", path.read_bytes(), 0o755 if name in STANDIN_EXECUTABLES else 0o644)
                       for name, path in standin_files(app).items()]
        for s in app.services:
            want.standins[images[s.name]] = StandinImage(s.name, label, context)
        return
    build = app.build
    for s in app.services:
        if build is not None and build.service == s.name and build.when(config):
            want.builds.append(SourceImage(
                service=s.name, repo=build.repo(config), ref=build.ref(config), image=images[s.name],
                checkout=f"{ROOT}/src/{build.checkout}", context=build.context,
                dests={i.name: i.dest for i in build.inputs}, note=build.note, minutes=build.minutes))
        else:
            want.pulls.append(images[s.name])
