"""Where gpuprov keeps its own state on the operator's machine, and where its shipped files are."""

from __future__ import annotations

import os
from pathlib import Path


def state_root() -> Path:
    """``$GPUPROV_HOME``, else ``~/.local/state/gpuprov``; created private (0700)."""
    root = Path(os.environ.get("GPUPROV_HOME") or Path.home() / ".local" / "state" / "gpuprov").expanduser()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the installed gpuprov package
REMOTE_FILES = PACKAGE_ROOT / "remote"  # files that live on the host (package data)
