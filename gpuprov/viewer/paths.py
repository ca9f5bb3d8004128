"""Where the viewer keeps its files on this machine: ``<state>/viewer/<stack>/`` (0700)."""

from __future__ import annotations

from pathlib import Path

from gpuprov.infra.paths import PACKAGE_ROOT, state_root

FILES = PACKAGE_ROOT / "viewer" / "files"  # shipped: compose file, nginx template, OHIF-AI's orthanc.json


def viewer_dir(stack: str, create: bool = False) -> Path:
    """The stack's viewer folder; ``create`` makes it (private) for a writer, readers leave no trace."""
    d = state_root() / "viewer" / stack
    if create:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d
