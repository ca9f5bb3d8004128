"""``gpuprov build``: build the images a stack builds wherever Docker runs here, and push them to a registry.

The images are exactly those a deploy would build on the host (:func:`desired_state` says which):
an app's source build at its pinned commit (OHIF-AI MONAI Label) with the build inputs given, or, for
a ``cloud: local`` stack, the stand-in images the sandbox builds. Each is built with the label a
deploy checks (commit and inputs' hashes) and pushed as :func:`registry_ref` names it, so a deploy
with ``image_registry`` pulls it instead of building. Docker runs on this machine (``DOCKER_HOST``
is honoured), never on the GPU host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpuprov.apps import registry as app_registry
from gpuprov.apps.base import Secrets
from gpuprov.infra.clouds import driver_class
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.image_registry import PublicRegistry, anonymous_pull, login_for, registry_ref
from gpuprov.infra.paths import state_root
from gpuprov.provisioning.desired import STANDIN_EXECUTABLES, HostShape, desired_state, standin_files

Progress = Callable[[str], None]


class BuildError(GpuprovError):
    """A local build or push failed; the message says which image and what Docker said."""

    exit_code = 6


class DockerMissing(BuildError):
    """No docker CLI here: `gpuprov build` builds where Docker runs."""

    exit_code = 3


@dataclass
class Built:
    """One image built here and pushed."""

    service: str
    image: str  # the reference the stack's compose file runs
    label: str  # what it is made of (gpuprov.label)
    target: str  # where it was pushed
    inputs: tuple[str, ...]  # build inputs inside it (the user's own files: sam3.pt)
    seconds: float = 0.0


def _placeholder_secrets(config: StackConfig) -> dict[str, Secrets]:
    """Secrets only shape files, never images: placeholders keep the user's store untouched."""
    return {a.name: Secrets({s.name: "unused" for s in a.secrets}) for a in app_registry().selected(config.apps)}


def planned(config: StackConfig, registry: str, inputs: Mapping[str, tuple[Path, str]]) -> list[Built]:
    """The images ``config`` builds, labelled as a deploy labels them, and where they go in ``registry``."""
    sandbox = driver_class(config.cloud).sandbox_hosts
    want = desired_state(config, HostShape(0, sandbox), _placeholder_secrets(config))
    out = [Built(s.service, ref, s.label, registry_ref(registry, ref, s.label.removeprefix("standin:"), standin=True),
                 ()) for ref, s in want.standins.items()]
    for b in want.builds:
        b.inputs = {name: sha for name, (_path, sha) in inputs.items() if name in b.dests}
        out.append(Built(b.service, b.image, b.label, registry_ref(registry, b.image, b.ref, b.inputs),
                         tuple(sorted(b.inputs))))
    return out


def _docker(*args: str, env: Mapping[str, str] | None = None, what: str) -> str:
    if shutil.which("docker") is None:
        raise DockerMissing("the docker CLI is not installed here; `gpuprov build` builds where Docker runs (install "
                         "Docker, or point DOCKER_HOST at an engine)")
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BuildError(f"{what} failed: {' / '.join(tail) or f'docker exited {proc.returncode}'}")
    return proc.stdout


def _build_standin(config: StackConfig, item: Built) -> None:
    app, _ = app_registry().service(item.service)
    busybox = shutil.which("busybox")
    if busybox is None:
        raise BuildError("a stand-in image needs a static busybox here (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory(prefix="gpuprov-standin-") as tmp:
        ctx = Path(tmp)
        for name, path in standin_files(app).items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, ctx / name)
            (ctx / name).chmod(0o755 if name in STANDIN_EXECUTABLES else 0o644)  # as a deploy writes them
        shutil.copy(busybox, ctx / "busybox")
        _docker("build", "-q", "--build-arg", f"SERVICE={item.service}", "--label", f"gpuprov.label={item.label}",
                "-t", item.target, str(ctx), env={"DOCKER_BUILDKIT": "0"}, what=f"building the stand-in {item.image}")


def _git(*args: str, what: str) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {proc.stderr.strip()[-300:]}")


def _build_source(config: StackConfig, item: Built, inputs: Mapping[str, tuple[Path, str]]) -> None:
    app, _ = app_registry().service(item.service)
    build = app.build
    assert build is not None
    repo, ref = build.repo(config), build.ref(config)
    checkout = state_root() / "build" / build.checkout
    if not (checkout / ".git").is_dir():
        checkout.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _git("clone", "-q", "--", repo, str(checkout), what=f"cloning {repo}")
    if subprocess.run(["git", "-C", str(checkout), "cat-file", "-e", f"{ref}^{{commit}}"],
                      capture_output=True).returncode != 0:
        _git("-C", str(checkout), "fetch", "-q", "origin", what=f"fetching {repo}")
    _git("-C", str(checkout), "checkout", "-q", "--force", ref, what=f"checking out {ref[:12]}")
    copied = []
    try:
        for i in build.inputs:
            if i.name in item.inputs:
                dest = checkout / i.dest
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(inputs[i.name][0], dest)
                dest.chmod(0o600)
                copied.append(dest)
        _docker("build", "--label", f"gpuprov.label={item.label}", "-t", item.target, str(checkout / build.context),
                what=f"building {item.image} from {repo}@{ref[:12]}")
    finally:
        for dest in copied:  # the gated file does not stay in a plain checkout
            dest.unlink(missing_ok=True)


def _push(item: Built, registry: str) -> None:
    login = login_for(registry)
    if login is None:  # Docker's own config: `docker login`, credential helpers
        _docker("push", "-q", item.target, what=f"pushing {item.target}")
        return
    with tempfile.TemporaryDirectory(prefix="gpuprov-docker-") as tmp:
        # Credentials only in a throwaway 0600 config, never in argv, ~/.docker or a log.
        config = Path(tmp) / "config.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps(login.docker_config()))
        _docker("--config", tmp, "push", "-q", item.target, what=f"pushing {item.target} (login from {login.source})")


def build_and_push(config: StackConfig, registry: str, inputs: Mapping[str, tuple[Path, str]],
                   say: Progress) -> list[Built]:
    """Build every image the stack builds, here, and push each to ``registry``; refuse (before building
    anything) to put the user's own files into a registry that answers anonymous pulls."""
    import time

    items = planned(config, registry, inputs)
    if not items:
        say("this stack builds no image: every image it runs is pulled as it is")
        return []
    for item in items:
        if item.inputs:
            repo = item.target.rsplit(":", 1)[0][len(registry.rstrip("/")) + 1:]
            if anonymous_pull(registry, repo):
                raise PublicRegistry(
                    f"{registry} lets anyone pull (it answered without credentials), and {item.image} would hold "
                    f"{', '.join(item.inputs)}, a file under its owner's licence (SAM3's is gated: each user accepts "
                    "it); push it to a private registry (ECR, Artifact Registry, a private GHCR package), or build "
                    "without --build-input")
    if shutil.which("docker") is None:
        raise DockerMissing("the docker CLI is not installed here; `gpuprov build` builds where Docker runs (install "
                            "Docker, or point DOCKER_HOST at an engine)")
    for item in items:
        started = time.monotonic()
        say(f"building {item.image} here ({item.label})")
        if item.label.startswith("standin:"):
            _build_standin(config, item)
        else:
            _build_source(config, item, inputs)
        say(f"pushing {item.target}")
        _push(item, registry)
        item.seconds = time.monotonic() - started
    return items
