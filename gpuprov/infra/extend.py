"""``gpuprov extend``: move a stack's expiry where the reaper reads it (the cloud's tags) and where the host acts
on it (the idle agent's hard limit), together.

The stack's own resources are those of its name that carry the caller's owner reference (or none: Lambda's
keys and rulesets): a colleague's stack of the same name is not moved. The new expiry is ``hours`` after the
current one (or after now, when it already passed). On the host the agent's lifetime file is written
(``gpuprov-idle lifetime HOURS``, read at every check), so a running agent honours it at once; a later deploy
writes the same limit from the stack's record.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gpuprov.infra import records
from gpuprov.infra.clouds import driver_for
from gpuprov.infra.clouds.base import Leftover
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import utcnow
from gpuprov.infra.owner import LABEL, owner_label, owner_reference
from gpuprov.infra.tags import TAG_OWNER, expires_at

Progress = Callable[[str], None]
MAX_HOURS = 24 * 31


class ExtendFailed(GpuprovError):
    """The expiry could not be moved everywhere (exit 1: nothing was lost, the old limit still holds)."""

    exit_code = 1


@dataclass
class Extended:
    stack: str
    expires_at: datetime
    retagged: list[Leftover]
    agent: str  # "moved" | "not deployed" | "no host record"


def own_resources(config: StackConfig) -> list[Leftover]:
    me = owner_label(owner_reference())
    items = driver_for(config.cloud).inventory(config.stack, config)
    return [i for i in items if i.tags.get(TAG_OWNER) in (None, me) or not LABEL.fullmatch(i.tags[TAG_OWNER])]


def extend(config: StackConfig, hours: float, progress: Progress | None = None) -> Extended:
    say = progress or (lambda _m: None)
    if not 0 < hours <= MAX_HOURS:
        raise ExtendFailed(f"--hours {hours:g}: expected hours greater than 0 and at most {MAX_HOURS}")
    driver = driver_for(config.cloud)
    now = utcnow()
    items = own_resources(config) if driver.creates_cloud_resources else []
    instances = [i for i in items if i.bills]
    record = records.load(config.stack)
    if driver.creates_cloud_resources and not instances:
        raise ExtendFailed(f"{driver.title} lists no host of stack '{config.stack}' made by you "
                           f"({owner_reference()}); nothing to extend")
    if not driver.creates_cloud_resources and record is None:
        raise ExtendFailed(f"no stack '{config.stack}' on {config.cloud} here; `gpuprov status` lists them "
                           "(a cloud stack: pass --cloud or --config)")
    current = [e for e in (expires_at(i.tags) for i in instances) if e is not None]
    if not current and record is not None and record.host.expires_at is not None:
        current = [record.host.expires_at]
    base = max([now, *current])
    new = base + timedelta(hours=hours)
    if items:
        say(f"{config.cloud}: moving the expiry of {len(items)} resource(s) of '{config.stack}' to {new.isoformat()}")
        driver.set_expiry(items, new)
    agent = "no host record"
    if record is not None:
        host = record.host.model_copy(update={"expires_at": new})
        records.write(record.model_copy(update={"host": host}))
        agent = "not deployed"
        if record.deployed and host.launched_at is not None:
            _move_agent_limit(config, host, (new - host.launched_at).total_seconds() / 3600, say)
            agent = "moved"
    return Extended(config.stack, new, items, agent)


def _move_agent_limit(config: StackConfig, host: object, life_hours: float, say: Progress) -> None:
    from gpuprov.provisioning.hostpaths import HOST_ROOT
    from gpuprov.provisioning.idle_agent import REMOTE_AGENT_DIR, REMOTE_CONFIG
    from gpuprov.provisioning.ssh import Remote, target_for

    say(f"idle agent: hard limit to {life_hours:.2f} h after launch")
    script = (f'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'
              f"$SUDO env GPUPROV_HOST_ROOT={HOST_ROOT} python3 {HOST_ROOT}{shlex.quote(REMOTE_AGENT_DIR + '/gpuprov_idle.py')}"
              f" --config {shlex.quote(REMOTE_CONFIG)} lifetime {shlex.quote(f'{life_hours:.4f}')}\n")
    try:
        with Remote(target_for(config, host)) as remote:  # type: ignore[arg-type]
            code, _out, err = remote.script(script, timeout_s=120)
    except (OSError, GpuprovError) as exc:
        raise ExtendFailed(f"the cloud's expiry moved, but the host's idle agent could not be reached ({exc}); it "
                           "still acts at its old limit: rerun `gpuprov extend` when the host answers") from None
    if code != 0:
        raise ExtendFailed(f"the cloud's expiry moved, but the host's idle agent refused the new limit (exit {code}: "
                           f"{err.strip()[-300:]}); rerun `gpuprov extend`")
