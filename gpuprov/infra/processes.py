"""Processes on this machine: whether one still runs (the sandbox's daemons, CI leases, the viewer's tunnel)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs; a zombie counts as gone (it only waits for its parent to read its status)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True
