"""The deploy as a Pulumi resource, so that ``pulumi up`` alone gives a serving host (config ``deploy: true``).

Its inputs are what the host should serve: the stack's config (the Hugging Face token only as a hash),
the host, and a hash of every file gpuprov ships to it (each app's folder, the idle agent). ``diff``
compares them and nothing else, so ``pulumi preview`` says which of them changed without touching
the host, and an unchanged stack is a no-op. ``create``/``update`` run the same provisioning code as
``gpuprov deploy`` over SSH (which itself changes only what differs on the host: a changed image tag
recreates that service alone), then wait until every service answers healthy.

``delete`` leaves the host as it is: the host's own resource removes it (and with it what deploy
installed); on an existing machine ``gpuprov down`` uninstalls. The Hugging Face token is read
where the provider runs: the stack's secret ``gpuprov:hf_token`` (``configure``) or ``HF_TOKEN``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import ConfigureRequest, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from gpuprov.infra.config import StackConfig, build_config

PROVIDER_VERSION = "1"
HEALTH_TIMEOUT_S = 1800.0  # as `gpuprov up`'s default: a first vLLM start downloads the model
# Config keys that say nothing about what the host serves: where it is and how it was made.
HOST_ONLY = ("stack", "deploy", "hf_token", "ssh_public_key")


def _log(message: str) -> None:
    """Progress to stderr (the mock runtime's user sees it there) and, under the engine, to Pulumi's log."""
    print(f"· {message}", file=sys.stderr, flush=True)
    pulumi.log.info(message)


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def shipped_files(config: StackConfig) -> dict[str, str]:
    """Name -> hash of every folder of files deploy sends to the host: each deployed app's, the host-side files."""
    from gpuprov.apps import registry
    from gpuprov.infra.paths import REMOTE_FILES

    out = {f"app:{app.name}": _tree_hash(app.folder) for app in registry().selected(config.apps)}
    out["remote"] = _tree_hash(REMOTE_FILES)
    return out


def desired_inputs(config: StackConfig, host: Any) -> dict[str, Any]:
    """The resource's inputs: what ``diff`` compares (``host`` may still be an Output)."""
    settings = config.model_dump(mode="json", exclude=set(HOST_ONLY))
    token = config.hf_token.get_secret_value() if config.hf_token else os.environ.get("HF_TOKEN", "")
    return {
        "stack": config.pulumi_stack,
        "settings": settings,
        "hf_token_sha256": hashlib.sha256(token.encode()).hexdigest() if token else None,
        "files": shipped_files(config),
        "host": host,
        "provider_version": PROVIDER_VERSION,
        "tunnel": None, "services": None,
    }


class DeploymentProvider(ResourceProvider):
    """Runs :func:`gpuprov.provisioning.deploy.deploy` and the health wait on the stack's host."""

    def __init__(self) -> None:
        super().__init__()
        self._hf_token: str | None = None

    def configure(self, req: ConfigureRequest) -> None:
        self._hf_token = req.config.get("gpuprov:hf_token")

    def __getstate__(self) -> dict[str, Any]:
        return {}  # pickled into the state by the engine: never with the token in it

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self._hf_token = None

    def _config(self, props: dict[str, Any]) -> StackConfig:
        token = getattr(self, "_hf_token", None) or os.environ.get("HF_TOKEN")
        return build_config({**props["settings"], "stack": props["stack"], "deploy": True,
                             **({"hf_token": token} if token else {})})

    def _serve(self, props: dict[str, Any]) -> dict[str, Any]:
        from gpuprov.infra.stacks import host_from_outputs
        from gpuprov.provisioning.deploy import deploy
        from gpuprov.provisioning.health import wait_healthy

        config = self._config(props)
        host = host_from_outputs(config, props["host"])
        result = deploy(config, host, progress=_log)
        _log(f"deployed: {', '.join(result.changed) or 'nothing changed'}; waiting for every service to be healthy")
        wait_healthy(config, host, timeout_s=HEALTH_TIMEOUT_S, progress=_log)
        return {**props, "services": list(result.services), "tunnel": f"gpuprov tunnel --stack {config.pulumi_stack}"}

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._serve(props)
        return CreateResult(id_=f"{props['stack']}-deployment", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("stack", "settings", "hf_token_sha256", "files", "host", "provider_version")
                   if json.dumps(olds.get(k), sort_keys=True) != json.dumps(news.get(k), sort_keys=True)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._serve(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None  # the host's own resource removes the host, and with it what was deployed (see above)


class Deployment(Resource):
    """The stack's services on its host; ``tunnel`` is the command that reaches them."""

    tunnel: pulumi.Output[str]
    services: pulumi.Output[list[str]]

    def __init__(self, name: str, config: StackConfig, host: pulumi.Input[dict[str, Any]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(DeploymentProvider(), name, desired_inputs(config, host), opts)
