"""CI leases: which stacks a live ``gpuprov ci`` on this machine holds, so a reaper never takes them.

A lease is a small JSON file per stack under the state root: the holder's pid, when it
started and its deadline. It is released once the run's teardown is verified; one whose
process is gone marks its stack as abandoned (a ``kill -9``'d run), for a re-run of the
same stack or the reaper to remove.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from gpuprov.infra.host import utcnow
from gpuprov.infra.paths import state_root
from gpuprov.infra.processes import alive


@dataclass
class CiLease:
    """A ``gpuprov ci`` run's claim on a stack: its pid and deadline. Removed once teardown is verified."""

    stack: str
    cloud: str
    pid: int
    started_at: str
    deadline: str

    @staticmethod
    def path(stack: str) -> Path:
        d = state_root() / "ci"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d / f"{stack}.json"

    @classmethod
    def claim(cls, stack: str, cloud: str, timeout_s: float) -> CiLease:
        now = utcnow()
        lease = cls(stack, cloud, os.getpid(), now.isoformat(), (now + timedelta(seconds=timeout_s)).isoformat())
        tmp = cls.path(stack).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(lease)))
        tmp.replace(cls.path(stack))
        return lease

    @classmethod
    def load(cls, stack: str) -> CiLease | None:
        try:
            return cls(**json.loads(cls.path(stack).read_text()))
        except FileNotFoundError:
            return None

    @classmethod
    def all(cls) -> list[CiLease]:
        folder = state_root() / "ci"
        return [cls(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.exists() else []

    @property
    def alive(self) -> bool:
        """Whether the process that holds the lease still runs (a zombie does not count)."""
        return alive(self.pid)

    def release(self) -> None:
        self.path(self.stack).unlink(missing_ok=True)
