"""CI leases: which stacks a live ``gpuprov ci`` holds, so a reaper never takes them.

A lease is a small JSON file per stack under the state root: the holder's identity
(machine id, boot id, PID namespace, pid and process start time,
:class:`gpuprov.infra.processes.ProcessIdentity`), when it started and its deadline. It is
released once the run's teardown is verified. It marks its stack as abandoned (a
``kill -9``'d run, for a re-run of the same stack or the reaper to remove) only when its
process is *provably* gone: seen from the same machine, boot and PID namespace, its pid is
free or belongs to a process that started at another time. A lease written on another
machine, before a reboot or in another container (a shared ``GPUPROV_HOME``) is never
abandoned by its pid: that stack goes by its expiry tag instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from gpuprov.infra.host import utcnow
from gpuprov.infra.paths import state_root
from gpuprov.infra.processes import ProcessIdentity


@dataclass
class CiLease:
    """A ``gpuprov ci`` run's claim on a stack: who holds it and until when. Removed once teardown is verified."""

    stack: str
    cloud: str
    pid: int
    started_at: str
    deadline: str
    machine_id: str = ""  # "" (a lease from before these were recorded): never provably gone
    boot_id: str = ""
    pid_ns: str = ""
    start_ticks: int = 0

    @staticmethod
    def path(stack: str) -> Path:
        d = state_root() / "ci"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d / f"{stack}.json"

    @classmethod
    def claim(cls, stack: str, cloud: str, timeout_s: float) -> CiLease:
        now = utcnow()
        me = ProcessIdentity.current()
        lease = cls(stack, cloud, me.pid, now.isoformat(), (now + timedelta(seconds=timeout_s)).isoformat(),
                    me.machine_id, me.boot_id, me.pid_ns, me.start_ticks)
        tmp = cls.path(stack).with_suffix(f".{os.getpid()}.tmp")
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
    def holder(self) -> ProcessIdentity:
        return ProcessIdentity(self.machine_id, self.boot_id, self.pid_ns, self.pid, self.start_ticks)

    @property
    def abandoned(self) -> bool:
        """Whether the process that held the lease is provably gone (see the module docstring)."""
        return self.holder.provably_gone()

    @property
    def mine(self) -> bool:
        """Whether this very process holds it."""
        return self.holder.is_current()

    def release(self) -> None:
        self.path(self.stack).unlink(missing_ok=True)
