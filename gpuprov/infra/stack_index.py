"""Which stacks exist, and on which cloud: what every command that takes a stack by name checks first.

A stack exists when something keeps it: the Pulumi backend in use (a colleague's stack
included: :func:`gpuprov.infra.stacks.backend_stacks`), its record on this machine, its saved
mock-runtime state, a CI lease, or a local sandbox's state directory. A name that none of them
knows is refused with the names that do exist and the closest one, so a typo never reports
success and a default never targets a stack that lives elsewhere.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from gpuprov.infra import records
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.paths import state_root
from gpuprov.infra.settings import Settings

UNKNOWN_CLOUD = "unknown"
#: The sandbox host ``gpuprov sandbox lambda-api --sandbox`` makes its instances of: not a stack of its own.
STANDIN_SANDBOX = "lambda-api"


class UnknownStack(GpuprovError):
    """A command named a stack that does not exist; the message lists those that do and the closest."""

    exit_code = 2

    def __init__(self, name: str, known: dict[str, str], *, defaulted: bool = False):
        self.name, self.known = name, known
        what = f"no stack named '{name}'" + (" (the default; name one with --stack NAME)" if defaulted else "")
        if not known:
            super().__init__(f"{what}: there are no stacks; `gpuprov up --stack {name}` brings one up")
            return
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'? (`--stack {close[0]}`)" if close else ""
        super().__init__(f"{what}; existing stacks: {listing(known)}{hint}")


class StackElsewhere(GpuprovError):
    """The stack exists on another cloud than the one the flags or config name."""

    exit_code = 2

    def __init__(self, name: str, cloud: str, asked: str):
        super().__init__(f"stack '{name}' lives on {cloud}, not {asked}; drop --cloud (and a config file's "
                         f"`cloud:`) to reach it, or name another stack with --stack")


def listing(known: dict[str, str]) -> str:
    """``a (lambda), b (local)``: the stacks as a message names them."""
    return ", ".join(f"{name} ({cloud})" for name, cloud in sorted(known.items()))


def _mock_state_clouds(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((root / "mock-state").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        host = (data.get("outputs") or {}).get("host") or {}
        found[path.stem] = str(data.get("cloud") or host.get("cloud") or UNKNOWN_CLOUD)
    return found


def known_stacks(settings: Settings | None = None) -> dict[str, str]:
    """``{stack: cloud}`` for every stack something keeps. The record wins over other traces of a stack."""
    from gpuprov.infra.lease import CiLease
    from gpuprov.infra.stacks import backend_stacks

    root = state_root()
    found: dict[str, str] = {}
    try:  # the backend gives names; the cloud is read from the stack's outputs when a command needs it
        found.update({name.rsplit("/", 1)[-1]: UNKNOWN_CLOUD for name in backend_stacks(settings)})
    except GpuprovError:  # no Pulumi CLI or login here: this machine's traces still count
        pass
    sandboxes = root / "sandbox"
    if sandboxes.is_dir():
        found.update({d.name: "local" for d in sorted(sandboxes.iterdir())
                      if d.is_dir() and d.name != STANDIN_SANDBOX})
    found.update({lease.stack: lease.cloud for lease in CiLease.all()})
    found.update(_mock_state_clouds(root))
    found.update({rec.stack: rec.cloud for rec in records.all_records()})
    return found


def require(name: str, known: dict[str, str], *, defaulted: bool = False) -> str:
    """The cloud of stack ``name``, or :class:`UnknownStack`."""
    if name not in known:
        raise UnknownStack(name, known, defaulted=defaulted)
    return known[name]


class StackTaken(GpuprovError):
    """``gpuprov ci`` was named a stack that is not its own to create (and tear down)."""

    exit_code = 2


def check_free_for_ci(name: str, cloud: str, settings: Settings | None = None) -> None:
    """Refuse a ``ci`` stack name that already exists, unless it is what an earlier ``ci`` run of the
    same cloud left (that run's lease stays until its teardown was verified; a re-run removes it first).

    ``ci`` tears its stack down at the end: naming a stack brought up with ``up`` would remove it.
    """
    from gpuprov.infra.lease import CiLease

    where = known_stacks(settings).get(name)
    if where is None:
        return
    lease = CiLease.load(name)
    if lease is None:
        raise StackTaken(f"stack '{name}' already exists ({where}) and is not a `gpuprov ci` run's: ci would tear "
                         "it down at the end. Leave out --stack (each run gets a name of its own) or name a new one")
    if lease.cloud != cloud:
        raise StackTaken(f"stack '{name}' is what an earlier `gpuprov ci` run left on {lease.cloud}, not {cloud}; "
                         f"remove it with `gpuprov down --stack {name}`, or name another stack")
