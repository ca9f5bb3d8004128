"""The operator-side record of each stack gpuprov brought up: what ``status`` reads.

Plain JSON under the state root, one file a stack, written atomically, never
holding a secret (a GpuHost has none).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.paths import state_root


class StackRecord(BaseModel):
    stack: str
    cloud: str
    host: GpuHost
    created_at: datetime
    deployed: list[str] = []  # services deployed on the host, kept by provisioning
    ssh_key_path: str | None = None  # the configured private key that logs in (an existing machine's); None: the stack's own
    last_up_phases: dict[str, float] = {}  # seconds per phase of the last `up` (gpuprov.provisioning.phases)
    # Where the cloud's rule lets SSH in from, as the last `up` made it; ssh_from_egress: that is the operator's
    # egress address, detected (gpuprov.infra.egress), which `status` and `deploy` compare with this machine's.
    ssh_from: list[str] = []
    ssh_from_egress: bool = False
    # The apps sized for the host's own GPU at the last deploy (gpuprov.apps.fit's JSON): settings and the GPU
    # memory budget, per service, total and headroom; `status` shows it.
    serving: dict[str, Any] = {}


def _dir() -> Path:
    d = state_root() / "stacks"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def save(stack: str, cloud: str, host: GpuHost, ssh_key_path: str | None = None,
         ssh_from: tuple[list[str], bool] | None = None) -> StackRecord:
    """Record the stack's host; ``ssh_from``: (where SSH is open from, whether that is the detected egress
    address), when this run knows it (else the recorded one stays)."""
    old = load(stack)
    same = old is not None and old.cloud == cloud
    sources, from_egress = ssh_from if ssh_from is not None else (
        (old.ssh_from, old.ssh_from_egress) if old is not None and same else ([], False))
    record = StackRecord(
        stack=stack, cloud=cloud, host=host,
        created_at=old.created_at if old and same else utcnow(),
        deployed=old.deployed if old else [],
        ssh_key_path=ssh_key_path,
        last_up_phases=old.last_up_phases if old else {},
        serving=old.serving if old and same else {},
        ssh_from=sources, ssh_from_egress=from_egress,
    )
    write(record)
    return record


def write(record: StackRecord) -> None:
    path = _dir() / f"{record.stack}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    tmp.replace(path)


def record_phases(stack: str, phases: dict[str, float]) -> None:
    """Keep the last ``up``'s seconds per phase in the stack's record (``gpuprov status`` shows them)."""
    record = load(stack)
    if record is not None:
        write(record.model_copy(update={"last_up_phases": dict(phases)}))


def load(stack: str) -> StackRecord | None:
    try:
        return StackRecord.model_validate(json.loads((_dir() / f"{stack}.json").read_text()))
    except FileNotFoundError:
        return None


def all_records() -> list[StackRecord]:
    return [StackRecord.model_validate(json.loads(p.read_text())) for p in sorted(_dir().glob("*.json"))]


def forget(stack: str) -> None:
    (_dir() / f"{stack}.json").unlink(missing_ok=True)
