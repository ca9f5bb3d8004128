"""What a stack's host should hold: files, images and services, computed from the stack config.

Pure data (no SSH): :mod:`gpuprov.provisioning.steps` compares it with the host's facts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from gpuprov.infra.config import SERVICE_PORTS, StackConfig
from gpuprov.infra.paths import REMOTE_FILES
from gpuprov.provisioning.secrets import StackSecrets

STANDINS = REMOTE_FILES / "standins"
STACK_SERVICES: dict[str, tuple[str, ...]] = {"vllm_cxr": ("vllm", "open_webui"), "monai_label": ("monai_label",)}
COMPOSE_PROJECTS = {name: f"gpuprov-{name.replace('_', '-')}" for name in STACK_SERVICES}


@dataclass(frozen=True)
class RemoteFile:
    path: str
    content: bytes
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Project:
    """One Compose project on the host (one seed stack)."""

    stack: str  # vllm_cxr | monai_label
    name: str  # the Compose project name
    directory: str
    compose_files: list[str]
    services: dict[str, str]  # service -> config hash it must run with
    images: dict[str, str]  # service -> image reference


@dataclass
class MonaiBuild:
    """Build the OHIF-AI MONAI Label image on the host from the pinned commit."""

    repo: str
    ref: str
    image: str
    checkout: str  # where the clone lives on the host
    sam3: str | None = None  # the uploaded sam3.pt on the host, copied in before the build
    sam3_sha: str | None = None  # its SHA-256: part of the image label, so a new sam3.pt rebuilds

    @property
    def label(self) -> str:
        """What the built image is made of (its gpuprov.label): repository, commit, sam3.pt."""
        return f"{self.repo}@{self.ref}" + (f"+sam3:{self.sam3_sha[:16]}" if self.sam3_sha else "")


@dataclass
class Desired:
    root: str
    sandbox: bool
    files: list[RemoteFile] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    projects: list[Project] = field(default_factory=list)
    standins: dict[str, tuple[str, str]] = field(default_factory=dict)  # image ref -> (service, label)
    pulls: list[str] = field(default_factory=list)
    monai_build: MonaiBuild | None = None

    @property
    def image_refs(self) -> list[str]:
        refs = list(self.standins) + self.pulls + ([self.monai_build.image] if self.monai_build else [])
        return list(dict.fromkeys(refs))


def monai_image(config: StackConfig) -> str:
    """The MONAI Label image: the one the user named, else the one gpuprov builds on the host."""
    return config.monai_label_image or f"gpuprov/ohif-ai-monai-label:{config.monai_label_ref}"


def standins_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(STANDINS.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _env_file(values: dict[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in values.items()).encode()


def desired_state(config: StackConfig, root: str, sandbox: bool, gpus: int, secrets: StackSecrets) -> Desired:
    """Everything the host should hold for ``config``. ``gpus``: NVIDIA GPUs the host reports."""
    want = Desired(root=root, sandbox=sandbox)
    want.directories.append(root)
    standin_label = f"standin:{standins_hash()}" if sandbox else ""

    def bind(service: str) -> str:
        return "0.0.0.0" if SERVICE_PORTS[service] in config.open_ports else "127.0.0.1"

    def compose_files(stack: str) -> list[RemoteFile]:
        local = REMOTE_FILES / stack
        names = ["compose.yaml"] + (["compose.gpu.yaml"] if gpus else []) + (["compose.sandbox.yaml"] if sandbox else [])
        return [RemoteFile(f"{root}/{stack}/{n}", (local / n).read_bytes()) for n in names]

    images = {"vllm": config.vllm_image, "open_webui": config.open_webui_image, "monai_label": monai_image(config)}
    for stack in config.stacks:
        directory = f"{root}/{stack}"
        want.directories.append(directory)
        files = compose_files(stack)
        shared = [f.sha256 for f in files] + [standin_label]
        env: dict[str, str]
        services: dict[str, str]
        if stack == "vllm_cxr":
            secret_env = RemoteFile(f"{directory}/secrets.env", _env_file({
                "VLLM_API_KEY": secrets.vllm_api_key,
                **({"HF_TOKEN": config.hf_token_value, "HUGGING_FACE_HUB_TOKEN": config.hf_token_value}
                   if config.hf_token_value else {}),
            }), 0o600)
            webui_env = RemoteFile(f"{directory}/webui.env", _env_file({
                "OPENAI_API_KEY": secrets.vllm_api_key,
                "WEBUI_SECRET_KEY": secrets.webui_secret_key,
                "WEBUI_ADMIN_EMAIL": secrets.webui_admin_email,
                "WEBUI_ADMIN_PASSWORD": secrets.webui_admin_password,
                "WEBUI_ADMIN_NAME": "gpuprov admin",
            }), 0o600)
            env = {
                "VLLM_IMAGE": images["vllm"], "OPEN_WEBUI_IMAGE": images["open_webui"],
                "MODEL_ID": config.model_id, "SERVED_MODEL_NAME": config.served_model_name,
                "GPU_MEMORY_UTILIZATION": str(config.gpu_memory_utilization),
                # Inside a bridged container vLLM must listen on all of the container's addresses;
                # with host networking (sandbox) it binds what the port would be published on.
                "VLLM_LISTEN": bind("vllm") if sandbox else "0.0.0.0",
                "VLLM_BIND": bind("vllm"), "WEBUI_BIND": bind("open_webui"), "WEBUI_LISTEN": bind("open_webui"),
                "OPENAI_API_BASE_URL": "http://127.0.0.1:8000/v1" if sandbox else "http://vllm:8000/v1",
            }
            services = {
                "vllm": _hash(shared, secret_env.sha256, {k: env[k] for k in (
                    "VLLM_IMAGE", "MODEL_ID", "SERVED_MODEL_NAME", "GPU_MEMORY_UTILIZATION", "VLLM_LISTEN", "VLLM_BIND")}),
                "open_webui": _hash(shared, webui_env.sha256, {k: env[k] for k in (
                    "OPEN_WEBUI_IMAGE", "WEBUI_BIND", "WEBUI_LISTEN", "OPENAI_API_BASE_URL")}),
            }
            env |= {"VLLM_CONFIG": services["vllm"], "OPEN_WEBUI_CONFIG": services["open_webui"]}
            files += [secret_env, webui_env]
        else:
            want.directories += [f"{directory}/data/predictions", f"{directory}/data/studies"]
            env = {"MONAI_LABEL_IMAGE": images["monai_label"],
                   "MONAI_LISTEN": bind("monai_label") if sandbox else "0.0.0.0", "MONAI_BIND": bind("monai_label")}
            services = {"monai_label": _hash(shared, env)}
            env["MONAI_LABEL_CONFIG"] = services["monai_label"]
        files.append(RemoteFile(f"{directory}/.env", _env_file(env)))
        want.files += files
        want.projects.append(Project(
            stack=stack, name=COMPOSE_PROJECTS[stack], directory=directory,
            compose_files=[Path(f.path).name for f in files if f.path.endswith(".yaml")],
            services=services, images={s: images[s] for s in STACK_SERVICES[stack]},
        ))

    for project in want.projects:
        for service, ref in project.images.items():
            if sandbox:
                # No registry on the sandbox: a stand-in built there, tagged as the real reference.
                want.standins[ref] = (service, standin_label)
            elif service == "monai_label" and not config.monai_label_image:
                want.monai_build = MonaiBuild(config.monai_label_repo, config.monai_label_ref, ref,
                                              f"{root}/src/ohif-ai")
            else:
                want.pulls.append(ref)
    if sandbox:
        want.directories.append(f"{root}/standins")
        want.files += [RemoteFile(f"{root}/standins/{p.name}", p.read_bytes(), 0o755 if p.name in ("serve", "http.sh") else 0o644)
                       for p in sorted(STANDINS.iterdir()) if p.is_file()]
    return want
