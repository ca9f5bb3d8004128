"""The TTL reaper: find what gpuprov left running in the clouds and remove it.

A resource is reaped when
- **expired**: its ``gpuprov-expires-at`` tag has passed (every paid resource
  carries one, :mod:`gpuprov.infra.tags`; ``gpuprov ci`` sets it to its own time limit
  plus a margin, so even a ``kill -9``'d CI job's host goes at the next reap);
- **abandoned**: its stack belongs to a ``gpuprov ci`` run on this machine whose
  process is gone (a CI lease whose pid no longer runs): the stack's own
  teardown runs (:func:`gpuprov.infra.teardown.teardown`, the one ``down`` and ``ci`` use);
- **orphaned**: no stack of that name exists on this machine (no record, no
  state, no live CI lease) and it was created more than ``grace`` ago (the grace
  protects a launch that another machine is running right now).

What belongs to an instance (SSH keys, firewall rulesets, security groups, firewall
rules) goes with its stack's instances, or when no instance of its stack is left and the
stack is unknown here. The clouds differ only in how they list and remove these: each
cloud's driver does that (:meth:`CloudDriver.reap_findings`, :meth:`CloudDriver.remove`);
the rules above are this module's, the same for every cloud.

After removing, the reaper lists the clouds again and reports what is still there;
nothing is marked gone on the strength of a call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from gpuprov.infra.clouds import all_drivers, driver_for
from gpuprov.infra.clouds.base import Finding, Leftover, ReapPolicy
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import utcnow
from gpuprov.infra.lease import CiLease
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import has_local_state, in_pulumi_backend
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT

Progress = Callable[[str], None]
DEFAULT_GRACE = timedelta(minutes=30)

__all__ = ["DEFAULT_GRACE", "Finding", "ReapFailed", "ReapReport", "reap", "reapable_clouds", "reason_for",
           "stack_known_here"]


class ReapFailed(GpuprovError):
    """Something the reaper should have removed is still there; it may still bill. Says which."""

    exit_code = 5


def stack_known_here(stack: str) -> bool:
    """Whether the stack is somebody's: a record or saved state here, a live CI lease, or a stack of that name
    in the Pulumi backend in use."""
    lease = CiLease.load(stack)
    if lease is not None:
        return lease.alive
    return has_local_state(stack) or in_pulumi_backend(stack)  # a colleague's stack on the team's backend


# --- the report -------------------------------------------------------------------------------------


@dataclass
class ReapReport:
    """What the reaper found, removed, could not remove, and what the clouds still list."""

    dry_run: bool
    found: list[Finding] = field(default_factory=list)
    removed: list[Finding] = field(default_factory=list)
    stacks_torn_down: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    remaining: list[Leftover] = field(default_factory=list)
    clouds: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.remaining

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "clouds": self.clouds, "found": [f.to_json() for f in self.found],
                "removed": [f.to_json() for f in self.removed], "stacks_torn_down": self.stacks_torn_down,
                "errors": self.errors, "ok": self.ok,
                "remaining": [{k: v for k, v in asdict(r).items() if k != "tags"} for r in self.remaining]}


# --- deciding -------------------------------------------------------------------------------------------


def _epoch(tags: dict[str, str], key: str) -> datetime | None:
    value = tags.get(key, "")
    return datetime.fromtimestamp(int(value), timezone.utc) if value.isdigit() else None


def reason_for(stack: str | None, tags: dict[str, str], now: datetime, grace: timedelta,
               abandoned: set[str]) -> str | None:
    """Why a tagged resource should go (``expired``/``abandoned``/``orphaned``), or None to keep it."""
    expires = _epoch(tags, TAG_EXPIRES_AT)
    if expires is not None and expires <= now:
        return "expired"
    if stack is None:
        return None
    if stack in abandoned:
        return "abandoned"
    created = _epoch(tags, TAG_CREATED_AT)
    if not stack_known_here(stack) and (created is None or now - created >= grace):
        return "orphaned"
    return None


@dataclass
class TtlPolicy(ReapPolicy):
    """The reaper's rules (module docstring), for a sweep at ``now``; ``only_stack``: remove that stack."""

    now: datetime
    grace: timedelta
    abandoned: set[str]
    only_stack: str | None = None

    def instance_reason(self, stack: str | None, tags: dict[str, str]) -> str | None:
        if self.only_stack is not None:
            return "stack-teardown" if stack == self.only_stack else None
        return reason_for(stack, tags, self.now, self.grace, self.abandoned)

    def dependent_reason(self, stack: str | None, tags: dict[str, str], doomed: set[str], live: set[str]) -> str | None:
        if stack is None:
            return None
        if self.only_stack is not None:
            return "stack-teardown" if stack == self.only_stack else None
        if stack in live:
            return None  # an instance that stays still needs it
        own = reason_for(stack, tags, self.now, self.grace, self.abandoned)
        if stack in doomed:  # it goes with its stack's instances; say why in its own terms where it has them
            return own if own in ("expired", "abandoned") else "expired-with-instance"
        return own


# --- the whole reap -----------------------------------------------------------------------------------------------


def reapable_clouds(settings: Settings | None = None) -> list[str]:
    """The clouds that create paid resources and have credentials on this machine (the reaper asks only those)."""
    return [d.name for d in all_drivers(settings) if d.creates_cloud_resources and d.has_credentials()]


def teardown_abandoned(progress: Progress, dry_run: bool, settings: Settings) -> tuple[list[str], list[str]]:
    """Run the one teardown of every stack whose ``gpuprov ci`` process is gone. Returns (stacks, errors)."""
    from gpuprov.infra.config import load_config
    from gpuprov.infra.teardown import teardown

    done: list[str] = []
    errors: list[str] = []
    for lease in CiLease.all():
        if lease.alive:
            continue
        done.append(lease.stack)
        if dry_run:
            progress(f"would tear down stack '{lease.stack}' (its gpuprov ci process {lease.pid} is gone)")
            continue
        progress(f"stack '{lease.stack}': its gpuprov ci process {lease.pid} is gone; tearing it down")
        try:
            teardown(load_config(None, {"cloud": lease.cloud, "stack": lease.stack}), progress, settings)
            lease.release()
        except GpuprovError as err:
            errors.append(f"stack '{lease.stack}': {err}")
    return done, errors


def reap(clouds: list[str] | None = None, *, dry_run: bool = False, now: datetime | None = None,
         grace: timedelta = DEFAULT_GRACE, only_stack: str | None = None, progress: Progress | None = None,
         timeout_s: float = 600.0, settings: Settings | None = None, config: Any = None) -> ReapReport:
    """Find, remove and re-check gpuprov resources in ``clouds`` (default: those with credentials here).

    ``only_stack``: remove everything of that one stack whatever its tags say (the one teardown uses it
    after the stack's own destroy, to catch what no state recorded); ``config``: that stack's config,
    so its driver looks where the stack lives (its region, its project).
    """
    progress = progress or (lambda _m: None)
    settings = settings or Settings.from_env()
    now = now or utcnow()
    report = ReapReport(dry_run=dry_run, clouds=list(clouds if clouds is not None else reapable_clouds(settings)))
    abandoned: set[str] = set()
    if only_stack is None:
        torn, errors = teardown_abandoned(progress, dry_run, settings)
        report.stacks_torn_down, report.errors = torn, errors
        abandoned = set(torn)
    policy = TtlPolicy(now, grace, abandoned, only_stack)
    for cloud in report.clouds:
        driver = driver_for(cloud, settings)
        try:
            found = driver.reap_findings(policy, only_stack, config)
        except GpuprovError as err:
            report.errors.append(f"{cloud}: could not list resources: {err}")
            continue
        report.found += found
        if dry_run or not found:
            continue
        try:
            report.errors += driver.remove(found, progress, timeout_s)
            wanted = {(f.item.kind, f.item.id) for f in found}
            remaining = [x for x in driver.inventory(only_stack, config) if (x.kind, x.id) in wanted]
        except GpuprovError as err:
            report.errors.append(f"{cloud}: {err}")
            continue
        report.remaining += remaining
        gone = {(r.kind, r.id) for r in remaining}
        report.removed += [f for f in found if (f.item.kind, f.item.id) not in gone]
    return report
