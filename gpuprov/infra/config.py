"""The stack config: the one place every gpuprov input is validated.

The same model is filled from Pulumi config (``gpuprov:<key>``) under ``pulumi up``
and from a YAML file (``--config FILE``) plus command-line flags everywhere else.
A bad value raises :class:`ConfigError`, whose message names the key, the value
and what is allowed; the command line turns it into exit code 2.
"""

from __future__ import annotations

import getpass
import ipaddress
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gpuprov.apps import DEFAULT_APPS
from gpuprov.infra import clouds as _clouds
from gpuprov.infra import grammar
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.wide_ranges import too_wide

if TYPE_CHECKING:
    from gpuprov.infra.clouds.base import CloudDriver

CLOUDS: tuple[str, ...] = _clouds.names()

_SSH_PUBLIC_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( [\x20-\x7e]*)?", re.ASCII)
_HOST = re.compile(rf"(?P<user>[a-z_][a-z0-9_.-]{{0,31}})@(?P<address>{grammar.HOST_ADDRESS})(:(?P<port>[0-9]{{1,5}}))?",
                   re.ASCII)
_STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# A fully qualified Pulumi stack name, ``org/project/stack`` (Pulumi's own characters for org and project).
_QUALIFIED_STACK = re.compile(r"^(?P<org>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})/(?P<project>[A-Za-z0-9_.-]{1,100})/(?P<stack>[^/]*)$")
OLD_KEYS = {"stacks": "apps"}  # renamed keys, still read (with a one-line notice)


def or_list(items: tuple[str, ...] | list[str]) -> str:
    """``a, b or c``: a choice as a message says it."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


_CLOUD_NAME = (grammar.CLOUD_NAME, "expected a cloud name of lower-case letters, digits, '.', '_' and '-', such as "
                                   "us-east-1, us-central1-a or g5.xlarge")
# Keys checked by a pattern alone: key -> (its grammar, what the refusal says is allowed).
_GRAMMARS: dict[str, tuple[re.Pattern[str], str]] = {
    "served_model_name": (grammar.SERVED_MODEL_NAME, "expected 1-128 letters, digits, '.', '_', ':', '/' or '-', "
                                                     "starting and ending with a letter or digit"),
    "monai_label_ref": (grammar.GIT_COMMIT, "expected a full 40-hex commit id (git rev-parse <ref>), such as "
                                           "179fe0ddc4e632d872c3d18bf05845cad302b0ee; no branch or tag"),
    "monai_label_repo": (grammar.REPOSITORY_URL, "expected an https:// repository URL without credentials, such as "
                                                 "https://github.com/anandpreshob/OHIF-AI (or file:///path of a "
                                                 "local clone)"),
    "image_registry": (grammar.IMAGE_REGISTRY, "expected a registry host[:port][/path] such as "
                                               "123456789012.dkr.ecr.us-east-1.amazonaws.com, "
                                               "us-docker.pkg.dev/PROJECT/REPO or ghcr.io/ORG"),
    "owner": (grammar.OWNER, "expected a user name: 1-64 letters, digits, '.', '_', '@', '+' or '-'"),
    "region": _CLOUD_NAME, "zone": _CLOUD_NAME, "instance_type": _CLOUD_NAME,
    "host_key": (grammar.SSH_HOST_KEY, "expected the machine's SSH host public key as OpenSSH writes it, such as "
                                       "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... (its type and base64, no comment)"),
    "host_key_fingerprint": (grammar.SSH_FINGERPRINT, "expected a fingerprint as `ssh-keygen -lf "
                                                      "/etc/ssh/ssh_host_ed25519_key.pub` prints it, such as "
                                                      "SHA256:<43 characters of base64>"),
}


class ConfigError(GpuprovError, ValueError):
    """A config value gpuprov cannot use: says which key, which value, and what is allowed."""

    exit_code = 2

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key '{key}': {value!r} is not allowed; {allowed}")


class ExistingHost(BaseModel):
    """``user@address[:port]`` of a machine gpuprov does not create."""

    user: str
    address: str
    port: int = 22


_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_HTTP_URL = re.compile(r"https?://[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?", re.ASCII)
_KUBE_CONTEXT = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.:@/+-]{0,252}[A-Za-z0-9_])?", re.ASCII)
# The default images, pinned by tag and by the digest of the tag's multi-arch index, so a re-pushed tag
# never changes what a host runs. Newer releases exist (vLLM 0.34, Open WebUI 0.12 on PyPI); these are
# the newest whose digests were confirmed; the README's "Moving the image pins" says how to move them.
VLLM_IMAGE = "vllm/vllm-openai:v0.30.0@sha256:8a69ffad015f138d7170c4ddc429e230a3bc1c1719f67e14324749df200a4b90"
OPEN_WEBUI_IMAGE = ("ghcr.io/open-webui/open-webui:v0.11.4"
                    "@sha256:9591b13f13843c7721c2b8eaf7382846c81b3ffe126526d1888d1fed50c6a33f")
KUBERNETES_VERSIONS = ("1.32", "1.33", "1.34")  # cluster versions gpuprov's manifests are validated against


class KubernetesConfig(BaseModel):
    """The ``kubernetes:`` block of a cluster target (cloud: kubernetes, eks or gke)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kubeconfig: Path | None = Field(None, description="kubernetes: the kubeconfig file; unset: $KUBECONFIG, "
                                    "else ~/.kube/config.")
    context: str | None = Field(None, description="kubernetes: the kubeconfig context; unset: its current one.")
    namespace: str | None = Field(None, description="Namespace of the stack's workloads; unset: gpuprov-<stack>.")
    gpu: str | None = Field(None, description="kubernetes: the GPU model of the cluster's GPU nodes (A10G, L4...), "
                            "to size vLLM for it; eks/gke know it from instance_type.")
    min_replicas: int = Field(0, description="vLLM replicas when idle: 0 lets the GPU pool scale to zero.")
    max_replicas: int = Field(1, description="Most vLLM replicas (one GPU node each) under load.")
    storage_class: str | None = Field(None, description="StorageClass of the volumes; unset: the cluster's default.")
    version: str = Field("1.33", description=f"Kubernetes version: {', '.join(KUBERNETES_VERSIONS)}.")
    prometheus_url: str = Field("http://prometheus-server.monitoring.svc:80",
                                description="Prometheus KEDA asks for vllm:num_requests_waiting.")
    prometheus_namespace: str = Field("monitoring", description="Namespace of the Prometheus that scrapes vLLM.")

    @field_validator("namespace", "storage_class", "prometheus_namespace")
    @classmethod
    def _label(cls, v: str | None, info: Any) -> str | None:
        if v is not None and not _DNS_LABEL.fullmatch(v):
            raise ConfigError(f"kubernetes.{info.field_name}", v, "expected a DNS label: 1-63 lower-case letters, "
                                                                 "digits and '-', starting and ending with a letter or digit")
        return v

    @field_validator("context")
    @classmethod
    def _context(cls, v: str | None) -> str | None:
        if v is not None and not _KUBE_CONTEXT.fullmatch(v):
            raise ConfigError("kubernetes.context", v, "expected a kubeconfig context name (letters, digits, "
                                                      "'_', '.', ':', '@', '/', '+', '-')")
        return v

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str | None) -> str | None:
        from gpuprov.infra.gpus import GPUS, lookup

        if v is not None and lookup(v) is None:
            raise ConfigError("kubernetes.gpu", v, f"expected one of: {', '.join(spec.name for _p, spec in GPUS)}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v not in KUBERNETES_VERSIONS:
            raise ConfigError("kubernetes.version", v, f"expected one of: {or_list(KUBERNETES_VERSIONS)}")
        return v

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus(cls, v: str) -> str:
        if not _HTTP_URL.fullmatch(v):
            raise ConfigError("kubernetes.prometheus_url", v, "expected an http(s):// URL without credentials, such "
                                                             "as http://prometheus-server.monitoring.svc:80")
        return v

    @field_validator("kubeconfig")
    @classmethod
    def _kubeconfig(cls, v: Path | None) -> Path | None:
        if v is not None and str(v).startswith("-"):
            raise ConfigError("kubernetes.kubeconfig", str(v), "expected a file path (start it with ./ if it begins "
                                                              "with '-')")
        return v

    @model_validator(mode="after")
    def _replicas(self) -> KubernetesConfig:
        if not 1 <= self.max_replicas <= 20:
            raise ConfigError("kubernetes.max_replicas", self.max_replicas, "expected 1 to 20 replicas")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ConfigError("kubernetes.min_replicas", self.min_replicas,
                              f"expected 0 to max_replicas ({self.max_replicas}); 0 lets the GPU pool scale to zero")
        return self


class StackConfig(BaseModel):
    """Every setting of a gpuprov stack. Field descriptions feed ``Pulumi.yaml`` and ``--help``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str = Field("dev", description="Stack name: lower-case letters, digits and dashes; as a Pulumi "
                       "stack it may be fully qualified, org/project/stack.")
    cloud: str = Field("local", description=f"Where the GPU host comes from: {or_list(CLOUDS)}.")
    region: str | None = Field(None, description="Cloud region; the cloud's default when unset (Lambda: any with capacity).")
    zone: str | None = Field(None, description="Zone (GCP); the region's default zone when unset.")
    instance_type: str | None = Field(None, description="Instance type; the cloud's default when unset.")
    spot: bool = Field(False, description="Use spot/preemptible capacity (AWS, GCP): cheaper, can be reclaimed.")
    ssh_public_key: str | None = Field(None, description="SSH public key to install; a per-stack key is generated when unset.")
    ssh_private_key_path: Path | None = Field(None, description="Private key that matches ssh_public_key (required for existing).")
    allowed_cidrs: tuple[str, ...] = Field((), description="Source ranges allowed to reach opened ports (and SSH, "
                                           "unless ssh_cidrs is set); empty: services through SSH tunnels only.")
    ssh_cidrs: tuple[str, ...] = Field((), description="Source ranges SSH (22) is open from on a cloud host; empty: "
                                       "allowed_cidrs, else this machine's egress address, detected at up.")
    egress_cidr: str | None = Field(None, description="Derived, set by gpuprov at up: this machine's egress address "
                                    "(a /32) that SSH is open from when ssh_cidrs and allowed_cidrs are empty; "
                                    "unset under pulumi up: the program detects it.")
    allow_public: bool = Field(False, description="Must be true when allowed_cidrs reach more than a /8 of IPv4 or a /32 of IPv6 (0.0.0.0/0...).")
    open_ports: tuple[int, ...] = Field((), description="Service ports to open to allowed_cidrs, which it needs "
                                        "(8000 vLLM, 3000 Open WebUI, 8002 MONAI Label).")
    apps: tuple[str, ...] = Field(DEFAULT_APPS, description="Which apps (compose bundles) to deploy: vllm_cxr, "
                                  "monai_label, or an app folder of your own listed in GPUPROV_APP_PATH.")
    deploy: bool = Field(False, description="The Pulumi program deploys the apps too, so `pulumi up` alone "
                         "serves (gpuprov up deploys after the program either way).",
                         json_schema_extra={"pulumi_default": True})
    model_id: str = Field("nvidia/NV-Reason-CXR-3B", description="Hugging Face model id vLLM serves.")
    served_model_name: str = Field("monai-reasoning-cxr-3b", description="Model name vLLM answers to.")
    gpu_memory_utilization: float | None = Field(None, description="Share of GPU memory vLLM may take (0 < x <= 1); "
                                                  "unset: what the GPU memory budget leaves it on the card.")
    max_model_len: int = Field(8192, description="Longest prompt plus answer vLLM accepts, in tokens (1024 to 32768).")
    vllm_image: str = Field(VLLM_IMAGE, description="vLLM image reference, pinned by tag and digest.")
    open_webui_image: str = Field(OPEN_WEBUI_IMAGE, description="Open WebUI image reference, pinned by tag and digest.")
    monai_label_image: str | None = Field(None, description="Prebuilt OHIF-AI MONAI Label image; built on the host when unset.")
    monai_label_repo: str = Field("https://github.com/anandpreshob/OHIF-AI", description="OHIF-AI repository to build from.")
    monai_label_ref: str = Field("179fe0ddc4e632d872c3d18bf05845cad302b0ee",
                                 description="Commit of monai_label_repo to build (the full 40-hex id).")
    image_registry: str | None = Field(None, description="Registry `gpuprov build` pushes the images a stack builds "
                                       "to; deploy pulls from it, and builds on the host only when it has none.")
    hf_token: SecretStr | None = Field(None, description="Hugging Face token (secret; also read from HF_TOKEN).")
    idle_minutes: int = Field(30, description="Minutes without activity before the idle action.")
    max_lifetime_hours: float = Field(12.0, description="Hard limit on the host's life, whatever its activity.")
    budget_usd: float | None = Field(None, description="Spending cap for the stack in USD; unset: no cap.")
    lambda_agent_uses_operator_key: bool = Field(
        False, description="Lambda: copy your own LAMBDA_API_KEY onto the host for the idle agent when no "
        "GPUPROV_LAMBDA_AGENT_API_KEY is set. That key can terminate, launch and reconfigure anything in the "
        "account and stays valid after the host is gone; anyone on the host can read it.")
    cache: bool = Field(False, description="Keep the Hugging Face model cache and MONAI Label's checkpoints on "
                                           "storage that survives `down` (Lambda: a persistent filesystem); "
                                           "`down --purge` removes it.")
    cache_size_gb: int = Field(100, description="Size of the cache where the cloud sizes it up front (EBS, "
                                                "persistent disk), in GB (10 to 16384); Lambda's grows as needed.")
    owner: str = Field(default_factory=lambda: os.environ.get("USER") or getpass.getuser(), description="Owner tag.")
    host: str | None = Field(None, description="user@address[:port] of the machine (cloud: existing).")
    host_key: str | None = Field(None, description="cloud: existing: the machine's SSH host public key "
                                 "(\"ssh-ed25519 AAAA...\"); the first connect is verified against it.")
    host_key_fingerprint: str | None = Field(None, description="cloud: existing: the SHA256 fingerprint of the "
                                             "machine's SSH host key (\"SHA256:...\"), instead of host_key.")
    image: str | None = Field(
        None, description="Machine image: an AWS AMI id (ami-...), a GCP image link or family/<name>; "
        "unset: the cloud's GPU image (AWS Deep Learning Base AMI, GCP Deep Learning VM).")

    kubernetes: KubernetesConfig | None = Field(
        None, description="Cluster targets (cloud: kubernetes, eks, gke): a mapping of kubeconfig, context, "
        "namespace, gpu, min_replicas, max_replicas, storage_class, version, prometheus_url, prometheus_namespace.")

    # The ``org/project`` of a fully qualified stack name; ``stack`` itself keeps the last part, the
    # name the Pulumi program sees (``pulumi.get_stack()``) and every resource, tag and file is named by.
    _qualifier: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _qualified_stack(cls, data: Any, handler: Any) -> StackConfig:
        qualifier = None
        if isinstance(data, dict) and isinstance(data.get("stack"), str) and "/" in data["stack"]:
            m = _QUALIFIED_STACK.match(data["stack"])
            if not m:
                raise ConfigError("stack", data["stack"], "a fully qualified stack name is org/project/stack")
            qualifier, data = f"{m['org']}/{m['project']}", {**data, "stack": m["stack"]}
        model: StackConfig = handler(data)
        if qualifier:
            model._qualifier = qualifier
        return model

    @property
    def pulumi_stack(self) -> str:
        """The stack's name in its Pulumi backend: ``org/project/stack`` when given so, else ``stack``."""
        return f"{self._qualifier}/{self.stack}" if self._qualifier else self.stack

    @property
    def pulumi_project(self) -> str:
        """The Pulumi project the stack belongs to (``gpuprov`` unless the stack name says another)."""
        return self._qualifier.split("/")[1] if self._qualifier else "gpuprov"

    # --- field checks: each raises ConfigError naming the key -------------------

    @field_validator("stack")
    @classmethod
    def _stack(cls, v: str) -> str:
        if not _STACK_NAME.match(v):
            raise ConfigError("stack", v, "use 1-40 lower-case letters, digits or dashes, starting with a letter or digit")
        return v

    @field_validator("cloud")
    @classmethod
    def _cloud(cls, v: str) -> str:
        if v not in CLOUDS:
            raise ConfigError("cloud", v, f"expected one of: {or_list(CLOUDS)}")
        return v

    @field_validator("allowed_cidrs", "ssh_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, v: Any, info: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        out = []
        for item in v or ():
            try:
                out.append(str(ipaddress.ip_network(str(item), strict=True)))
            except ValueError as err:
                raise ConfigError(
                    info.field_name, item, f"expected a network such as 203.0.113.7/32 or 2001:db8::/48 ({err})"
                ) from None
        return tuple(dict.fromkeys(out))

    @field_validator("egress_cidr")
    @classmethod
    def _egress(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError:
            net = None
        if net is None or net.prefixlen != net.max_prefixlen:
            raise ConfigError("egress_cidr", v, "expected one address as a /32 (or /128), such as 203.0.113.7/32; "
                                                "gpuprov sets it at up (list ranges in ssh_cidrs instead)")
        return str(net)

    @field_validator("open_ports", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> tuple[int, ...]:
        out = []
        for item in v or ():
            if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).isdigit():
                raise ConfigError("open_ports", item, "expected port numbers such as 8002")
            port = int(item)
            if not 1 <= port <= 65535 or port == 22:
                raise ConfigError("open_ports", item, "expected a port from 1 to 65535 other than 22 (SSH is always open)")
            out.append(port)
        return tuple(sorted(set(out)))

    @field_validator("apps", mode="before")
    @classmethod
    def _apps(cls, v: Any) -> tuple[str, ...]:
        from gpuprov.apps import APP_PATH_ENV, registry

        known = registry().names
        items = [v] if isinstance(v, str) else list(v or ())
        if not items:
            raise ConfigError("apps", v, f"name at least one of: {', '.join(known)}")
        for item in items:
            if item not in known:
                raise ConfigError("apps", item, f"expected one of: {', '.join(known)} "
                                  f"(an app of your own: add its folder to {APP_PATH_ENV})")
        return tuple(dict.fromkeys(str(i) for i in items))

    @field_validator("ssh_public_key")
    @classmethod
    def _pubkey(cls, v: str | None) -> str | None:
        if v is not None and not _SSH_PUBLIC_KEY.fullmatch(v.strip()):
            raise ConfigError("ssh_public_key", v[:40], "expected an OpenSSH public key line such as 'ssh-ed25519 AAAA...'")
        return v.strip() if v else v

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _gpu_share(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:  # NaN fails this too
            raise ConfigError("gpu_memory_utilization", v, "expected a share greater than 0 and at most 1, such as 0.5")
        return v

    @field_validator("max_model_len")
    @classmethod
    def _context(cls, v: int) -> int:
        if not 1024 <= v <= 32768:  # NV-Reason-CXR-3B's context is 32k
            raise ConfigError("max_model_len", v, "expected tokens from 1024 to 32768 (the model's context)")
        return v

    @field_validator("idle_minutes")
    @classmethod
    def _idle(cls, v: int) -> int:
        if not 1 <= v <= 7 * 24 * 60:
            raise ConfigError("idle_minutes", v, "expected whole minutes from 1 to 10080 (a week)")
        return v

    @field_validator("max_lifetime_hours")
    @classmethod
    def _lifetime(cls, v: float) -> float:
        if not 0 < v <= 24 * 31:
            raise ConfigError("max_lifetime_hours", v, "expected hours greater than 0 and at most 744 (31 days)")
        return v

    @field_validator("cache_size_gb")
    @classmethod
    def _cache_size(cls, v: int) -> int:
        if not 10 <= v <= 16384:
            raise ConfigError("cache_size_gb", v, "expected a size from 10 to 16384 GB")
        return v

    @field_validator("budget_usd")
    @classmethod
    def _budget(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError("budget_usd", v, "expected a positive amount in USD, or leave it unset for no cap")
        return v

    @field_validator("vllm_image", "open_webui_image", "monai_label_image")
    @classmethod
    def _image(cls, v: str | None, info: Any) -> str | None:
        if v is not None and not grammar.is_image_reference(v):
            raise ConfigError(info.field_name, v, "expected an OCI image reference such as registry/name:tag "
                                                  "(lower-case name, optional tag and @sha256:digest)")
        return v

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, v: str) -> str:
        if not grammar.is_hf_model_id(v):
            raise ConfigError("model_id", v, "expected a Hugging Face model id owner/name, such as "
                                             "nvidia/NV-Reason-CXR-3B (letters, digits, '_', '-', '.')")
        return v

    @field_validator("served_model_name", "monai_label_ref", "monai_label_repo", "image_registry", "owner", "region", "zone",
                     "instance_type", "host_key", "host_key_fingerprint")
    @classmethod
    def _grammar(cls, v: str | None, info: Any) -> str | None:
        pattern, allowed = _GRAMMARS[info.field_name]
        if v is not None and not pattern.fullmatch(v):
            raise ConfigError(info.field_name, v, allowed)
        return v

    @field_validator("hf_token")
    @classmethod
    def _hf_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not grammar.HF_TOKEN.fullmatch(v.get_secret_value()):
            raise ConfigError("hf_token", "(hidden)", "expected a Hugging Face access token (hf_..., letters, "
                                                      "digits, '_' and '-')")
        return v

    @field_validator("ssh_private_key_path")
    @classmethod
    def _key_path(cls, v: Path | None) -> Path | None:
        if v is not None and str(v).startswith("-"):
            raise ConfigError("ssh_private_key_path", str(v), "expected a file path (start it with ./ if it "
                                                              "begins with '-')")
        return v

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, values: Any) -> Any:
        """No key takes a newline, escape, NUL or bidi override, whatever its own grammar allows."""
        if isinstance(values, dict):
            for key, value in values.items():
                items = value if isinstance(value, list | tuple) else list(value.values()) if isinstance(
                    value, dict) else [value]
                for item in items:
                    text = item.get_secret_value() if isinstance(item, SecretStr) else item
                    bad = grammar.control_character(str(text)) if isinstance(text, str | Path) else None
                    if bad is not None:
                        shown = "(hidden)" if key == "hf_token" else text
                        raise ConfigError(str(key), shown, f"it holds the control character {bad!r}; "
                                                           "config values are one line of printable text")
        return values

    # --- checks across keys ---------------------------------------------------------

    @model_validator(mode="after")
    def _across_keys(self) -> StackConfig:
        for key in ("allowed_cidrs", "ssh_cidrs"):
            wide = too_wide(getattr(self, key))
            if wide and not self.allow_public:
                raise ConfigError(
                    key, list(getattr(self, key)),
                    f"{wide}: opening ports to the internet needs allow_public: true; list your own ranges instead "
                    "(MONAI Label has no authentication)",
                )
        if self.open_ports and not self.allowed_cidrs:
            raise ConfigError(
                "open_ports", list(self.open_ports),
                "open_ports needs allowed_cidrs (the ranges that may reach them); without them, reach the services "
                "through an SSH tunnel: gpuprov tunnel",
            )
        driver = self._driver
        if self.instance_type is not None:
            allowed = driver.instance_type_allowed(self.instance_type)
            if allowed is not None:
                raise ConfigError("instance_type", self.instance_type, allowed)
        if self.host is not None:
            m = _HOST.fullmatch(self.host)
            if not m or not 1 <= int(m["port"] or 22) <= 65535:
                raise ConfigError("host", self.host, "expected user@address[:port], such as ubuntu@192.0.2.10:22")
        if self.image is not None:
            if driver.image_grammar is None:
                where = [n for n in CLOUDS if _clouds.driver_class(n).image_grammar is not None]
                raise ConfigError("image", self.image, f"image applies to {or_list(where).replace(' or ', ' and ')}, "
                                                       f"not to {self.cloud}")
            pattern, allowed = driver.image_grammar
            if not pattern.fullmatch(self.image):
                raise ConfigError("image", self.image, f"expected {allowed}")
        if self.kubernetes is not None and not driver.cluster:
            where = [n for n in CLOUDS if _clouds.driver_class(n).cluster]
            raise ConfigError("kubernetes", "(a mapping)", f"the kubernetes block applies to "
                                                           f"{or_list(where).replace(' or ', ' and ')}, not to {self.cloud}")
        if self.spot and not driver.supports_spot:
            where = [n for n in CLOUDS if _clouds.driver_class(n).supports_spot]
            raise ConfigError("spot", True, f"spot capacity exists on {or_list(where).replace(' or ', ' and ')} only, "
                                            f"not on {self.cloud}")
        if self.cache and not driver.keeps_caches:
            where = [n for n in CLOUDS if _clouds.driver_class(n).keeps_caches]
            raise ConfigError("cache", True, f"a cache kept across `down` is made on {or_list(where)} only so far, "
                                             f"not on {self.cloud}; remove cache: true")
        driver.check_config(self)
        return self

    @property
    def _driver(self) -> CloudDriver:
        """The stack's cloud driver, for what the config itself needs (rules, defaults). Code that calls
        the cloud gets its driver from the registry with the edge's settings."""
        from gpuprov.infra.settings import Settings

        return _clouds.driver_class(self.cloud)(Settings())

    # --- derived values -------------------------------------------------------------

    @property
    def ssh_sources(self) -> tuple[str, ...]:
        """Where SSH (22) to a cloud host is open from: ``ssh_cidrs``, else ``allowed_cidrs``, else the
        operator's egress address (``egress_cidr``, :mod:`gpuprov.infra.egress`); empty when none is known."""
        return self.ssh_cidrs or self.allowed_cidrs or ((self.egress_cidr,) if self.egress_cidr else ())

    @property
    def ssh_is_egress(self) -> bool:
        """Whether SSH is open from the detected egress address (not from ranges the config lists)."""
        return not self.ssh_cidrs and not self.allowed_cidrs and self.egress_cidr is not None

    @property
    def resolved_instance_type(self) -> str | None:
        """The instance type to launch: the configured one or the cloud's default."""
        return self.instance_type or self._driver.default_instance_type()

    @property
    def resolved_region(self) -> str | None:
        return self.region or self._driver.default_region()

    @property
    def resolved_zone(self) -> str | None:
        return self.zone or self._driver.default_zone(self.resolved_region)

    @property
    def existing_host(self) -> ExistingHost | None:
        if self.host is None:
            return None
        m = _HOST.fullmatch(self.host)
        assert m is not None  # checked in _across_keys
        return ExistingHost(user=m["user"], address=m["address"].strip("[]"), port=int(m["port"] or 22))

    @property
    def hf_token_value(self) -> str | None:
        """The Hugging Face token from config, else from HF_TOKEN; never logged."""
        if self.hf_token is not None:
            return self.hf_token.get_secret_value()
        return os.environ.get("HF_TOKEN") or None


class ViewerConfig(BaseModel):
    """The local viewer stack (``gpuprov viewer``): OHIF-AI's viewer behind nginx, and Orthanc, on
    this machine. It follows the stack's ``monai_label_repo`` / ``monai_label_ref``, so the viewer
    and the server it talks to come from one commit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str | None = Field(None, description="Viewer image (nginx + the OHIF-AI build); built from the "
                                                "repository's Viewers/ recipe when unset.")
    orthanc_image: str = Field("jodogne/orthanc-plugins:1.12.4", description="Orthanc image with the DICOMweb plugin.")
    port: int = Field(1026, description="Port of the viewer on 127.0.0.1 (OHIF-AI's own: 1026).")
    orthanc_port: int = Field(8042, description="Port of Orthanc's REST API on 127.0.0.1.")

    @field_validator("image", "orthanc_image")
    @classmethod
    def _image(cls, v: str | None, info: Any) -> str | None:
        if v is not None and not grammar.is_image_reference(v):
            raise ConfigError(f"--{info.field_name.replace('_', '-')}", v,
                              "expected an image reference such as registry/name:tag")
        return v

    @field_validator("port", "orthanc_port")
    @classmethod
    def _port(cls, v: int, info: Any) -> int:
        if not 1024 <= v <= 65535:
            raise ConfigError(f"--{info.field_name.replace('_', '-')}", v, "expected a port from 1024 to 65535")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> ViewerConfig:
        if self.port == self.orthanc_port:
            raise ConfigError("--orthanc-port", self.orthanc_port, "the viewer and Orthanc need two different ports")
        return self


def viewer_config(**values: Any) -> ViewerConfig:
    """Validate the viewer's settings (command-line flags; unset ones take their defaults)."""
    try:
        return ViewerConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        raise _first_error(err) from None


def _first_error(err: ValidationError) -> ConfigError:
    """Turn pydantic's report into one ConfigError that names the key."""
    first = err.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    key = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "config"
    value = first.get("input")
    kind = first["type"]
    if kind == "extra_forbidden":
        known = KubernetesConfig.model_fields if key.startswith("kubernetes.") else StackConfig.model_fields
        return ConfigError(key, value, f"'{key}' is not a gpuprov setting; known keys: {', '.join(known)}")
    if kind == "literal_error":
        return ConfigError(key, value, f"expected one of: {first['ctx']['expected'].replace(chr(39), '')}")
    return ConfigError(key, value, first["msg"].lower())


def _renamed_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Move each old key to its new name, with a one-line notice (a FutureWarning) naming the new key."""
    out = dict(values)
    for old, new in OLD_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(old, out[old], f"'{old}' is the old name of '{new}' and both are set; keep only '{new}'")
        warnings.warn(f"config key '{old}' is now '{new}'; rename it (the old name is still read, for now)",
                      FutureWarning, stacklevel=3)
        out[new] = out.pop(old)
    return out


def build_config(values: dict[str, Any]) -> StackConfig:
    """Validate ``values`` into a StackConfig, raising ConfigError on the first bad key."""
    values = _renamed_keys(values)
    try:
        return StackConfig(**values)
    except ValidationError as err:
        raise _first_error(err) from None
    except ConfigError:
        raise


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> StackConfig:
    """Read a YAML config file (optional), apply command-line overrides, validate.

    Keys may be written bare (``cloud: aws``) or Pulumi-style (``gpuprov:cloud: aws``),
    so a ``Pulumi.<stack>.yaml`` file's ``config:`` block can be passed as it is.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError("--config", str(path), "the file does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError("--config", str(path), f"the file is not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise ConfigError("--config", str(path), "expected a YAML mapping of key: value")
        if isinstance(raw.get("config"), dict):  # a Pulumi.<stack>.yaml file
            raw = raw["config"]
        for key, value in raw.items():
            key = str(key)
            if ":" in key and not key.startswith("gpuprov:"):
                continue  # another namespace's setting (aws:region, gcp:project): its provider reads it
            key = key.removeprefix("gpuprov:")
            if key == "hf_token" and not (isinstance(value, dict) and "secure" in value):
                # The README's rule: secrets never come from plain config files (the value is not echoed).
                raise ConfigError("hf_token", "(a token, not shown)", f"secrets are not read from plain config files "
                                  f"like {path}: remove it there and set HF_TOKEN in the environment")
            values[key] = value.get("secure") if isinstance(value, dict) and "secure" in value else value
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_config(values)


def from_pulumi_config() -> StackConfig:
    """Build the StackConfig from the running Pulumi stack's ``gpuprov:*`` config."""
    import pulumi

    cfg = pulumi.Config("gpuprov")
    values: dict[str, Any] = {"stack": pulumi.get_stack()}
    fields = {**{old: StackConfig.model_fields[new] for old, new in OLD_KEYS.items()}, **StackConfig.model_fields}
    for key, field in fields.items():
        if key == "stack":
            continue
        raw = pulumi.runtime.get_config(f"gpuprov:{key}")  # plain text, secrets included, no warning
        if raw is None:
            continue
        annotation = str(field.annotation)
        if "tuple" in annotation or "KubernetesConfig" in annotation:
            values[key] = cfg.get_object(key)
        elif "bool" in annotation:
            values[key] = cfg.get_bool(key)
        elif "float" in annotation:
            values[key] = cfg.get_float(key)
        elif "int" in annotation:
            values[key] = cfg.get_int(key)
        else:
            values[key] = raw
    return build_config(values)


def pulumi_config_block() -> dict[str, Any]:
    """The ``config:`` block of ``Pulumi.yaml``, generated from the model (a test keeps them in sync)."""
    block: dict[str, Any] = {}
    for key, field in StackConfig.model_fields.items():
        if key == "stack":  # the Pulumi stack name itself
            continue
        annotation = str(field.annotation)
        entry: dict[str, Any] = {}
        if "KubernetesConfig" in annotation:
            entry["type"] = "string"  # a JSON mapping: Pulumi's project config types have no object
        elif "tuple" in annotation:
            entry["type"] = "array"
            entry["items"] = {"type": "integer" if "int" in annotation else "string"}
        elif "bool" in annotation:
            entry["type"] = "boolean"
        elif "int" in annotation and "float" not in annotation:
            entry["type"] = "integer"
        else:
            entry["type"] = "string"  # floats too: Pulumi's schema types have no float
        default = field.get_default(call_default_factory=False)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        default = extra.get("pulumi_default", default)  # the repository's program may default otherwise
        if default is not None and field.default_factory is None:
            entry["default"] = list(default) if isinstance(default, tuple) else default
            if entry["type"] == "string":
                entry["default"] = str(default)
        if "Secret" in annotation:
            entry["secret"] = True
        entry["description"] = field.description
        block[f"gpuprov:{key}"] = entry
    return block


def render_pulumi_yaml() -> str:
    """The whole ``Pulumi.yaml`` (``make pulumi-yaml`` writes it after a setting changes)."""
    doc = {
        "name": "gpuprov",
        "description": "A GPU host serving medical-imaging AI (vLLM + MONAI-Reasoning-CXR-3B, OHIF-AI MONAI Label), "
                       "safely and cheaply.",
        "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}},
        "config": pulumi_config_block(),
    }
    header = "# Generated from gpuprov/infra/config.py (StackConfig) by `make pulumi-yaml`; tests check they agree.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)
