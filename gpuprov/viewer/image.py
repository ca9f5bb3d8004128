"""The viewer image: the one the user names, else one built here from OHIF-AI's own recipe.

The recipe is ``Viewers/platform/app/.recipes/Nginx-Orthanc/dockerfile`` in the stack's
``monai_label_repo`` at ``monai_label_ref`` (the commit the MONAI Label server is built from, so the
viewer's client and the server agree): yarn install, OHIF-AI's replaced node_modules files, a
development build of the viewer with ``config/docker-nginx-orthanc.js``, served by nginx. The clone is
kept under the state root, and the image is labelled with repository and commit, so the next ``up``
builds nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from gpuprov.infra.config import StackConfig, ViewerConfig
from gpuprov.infra.paths import state_root
from gpuprov.viewer.errors import ViewerError

RECIPE = "platform/app/.recipes/Nginx-Orthanc/dockerfile"  # relative to Viewers/, the build context
Progress = Callable[[str], None]
Docker = Callable[..., subprocess.CompletedProcess[str]]


def built_image(config: StackConfig) -> str:
    return f"gpuprov/ohif-ai-viewer:{config.monai_label_ref}"


def build_label(config: StackConfig) -> str:
    return f"{config.monai_label_repo}@{config.monai_label_ref}"


def _checkout(config: StackConfig) -> Path:
    key = hashlib.sha256(config.monai_label_repo.encode()).hexdigest()[:12]
    return state_root() / "viewer-src" / key


def _git(*args: str, timeout: float = 1200) -> None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ViewerError("git is not installed; it fetches OHIF-AI's source to build the viewer. Install git, "
                          "or name a viewer image with --image") from None
    except subprocess.TimeoutExpired:
        raise ViewerError(f"`git {args[0]}` did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or "no output").splitlines()[-1]
        verb = args[2] if args[0] == "-C" else args[0]
        raise ViewerError(f"`git {verb}` failed: {last}")


def ensure_viewer_image(config: StackConfig, viewer: ViewerConfig, docker: Docker, progress: Progress) -> str:
    """The image reference the viewer runs; built from the recipe when none was named and none is here."""
    if viewer.image:
        return viewer.image  # Compose pulls it when missing (--pull missing)
    image, label = built_image(config), build_label(config)
    have = docker("image", "inspect", "--format", '{{index .Config.Labels "gpuprov.label"}}', image, check=False)
    if have.returncode == 0 and have.stdout.strip() == label:
        return image
    src = _checkout(config)
    if not (src / ".git").is_dir():
        progress(f"cloning {config.monai_label_repo}")
        src.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _git("clone", "-q", "--no-checkout", "--", config.monai_label_repo, str(src))
    try:
        _git("-C", str(src), "cat-file", "-e", f"{config.monai_label_ref}^{{commit}}")
    except ViewerError:
        _git("-C", str(src), "fetch", "-q", "origin")
    _git("-C", str(src), "checkout", "-q", "--force", config.monai_label_ref)
    progress(f"building the viewer image {image} from OHIF-AI's recipe (yarn install and a webpack build: "
             "expect 15 minutes or more the first time)")
    docker("build", "--label", f"gpuprov.label={label}", "-t", image, "-f", str(src / "Viewers" / RECIPE),
           str(src / "Viewers"), timeout=7200)
    return image
