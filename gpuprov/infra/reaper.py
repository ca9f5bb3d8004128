"""The TTL reaper: find what gpuprov left running in the clouds and remove it, safely in a shared account.

Ownership comes from the cloud's tags, never from this machine's files: every resource
carries its owner reference (``gpuprov-owner``, :mod:`gpuprov.infra.owner`), the same from
every machine. By default a resource is reaped only when it is
- **expired**: its ``gpuprov-expires-at`` tag has passed (every paid resource carries one,
  :mod:`gpuprov.infra.tags`; ``gpuprov ci`` sets it to its own time limit plus a margin, so even
  a ``kill -9``'d CI job's host goes at the next reap; ``gpuprov extend`` moves it); or
- **abandoned** by its caller: its stack belongs to a ``gpuprov ci`` run whose CI lease here
  is provably dead (:mod:`gpuprov.infra.lease`: same machine, boot and PID namespace, and its
  process gone) and the resource carries the caller's own owner reference: the stack's own
  teardown runs (:func:`gpuprov.infra.teardown.teardown`, the one ``down`` and ``ci`` use).

A stack with no record here is *not* an orphan: ``pulumi up`` stacks, a colleague's stacks and
this user's stacks from another laptop all look like that. Sweeping **orphans** is a separate,
explicit choice (:class:`Sweep`): it names one owner reference (the CI job names
``gha:<its repo>``) and takes only that owner's ``gpuprov ci`` hosts (``gpuprov-origin: ci``,
ephemeral by construction; a ``stack`` host's truth is a Pulumi backend no other machine can
see, so it goes by its expiry alone) older than the grace and not held by a live lease here.

What belongs to an instance (SSH keys, firewall rulesets, security groups, firewall rules)
goes with its own stack's instances when they go, never while an instance of its stack stays,
or when no instance of its stack is left and it is past :data:`DEPENDENT_GRACE` (or the
caller's longer grace) from its own creation time (a launch in flight elsewhere has its key
and ruleset before its instance). Where a cloud gives it no creation time (Lambda SSH keys),
it goes only with its stack's instances. The clouds differ only in how they list and remove
these: each cloud's driver does that (:meth:`CloudDriver.reap_findings`,
:meth:`CloudDriver.remove`); the rules above are this module's, the same for every cloud.

After removing, the reaper lists the clouds again and reports what is still there;
nothing is marked gone on the strength of a call.

A stack's **cache** (``cache: true``: storage kept across ``down`` on purpose) is never the reaper's to
remove, whoever owns it: only ``gpuprov down --purge`` deletes one. The reaper tells a cache from an
orphan (:func:`cache_verdicts`): it keeps, and says so, a cache whose owner still has its stack (a live
instance of that stack carrying the same owner in the cloud's tags, or, for the caller's own caches,
a stack its Pulumi backend, records or leases know) and reports every other one as ``ownerless``, with
its monthly price, for a person to decide.
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
from gpuprov.infra.owner import LABEL, owner_label, owner_reference
from gpuprov.infra.settings import Settings
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_ORIGIN, TAG_OWNER

Progress = Callable[[str], None]
DEFAULT_GRACE = timedelta(minutes=30)

DEPENDENT_GRACE = timedelta(minutes=30)  # the least a key or ruleset with no instance is kept, whatever --grace says

__all__ = ["DEFAULT_GRACE", "DEPENDENT_GRACE", "Finding", "ReapFailed", "ReapReport", "Sweep", "TtlPolicy", "reap",
           "reapable_clouds"]


class ReapFailed(GpuprovError):
    """Something the reaper should have removed is still there; it may still bill. Says which."""

    exit_code = 5


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
    owner: str = ""  # the caller's owner reference
    caches: list[dict[str, Any]] = field(default_factory=list)  # every cache seen: kept or ownerless, never removed

    @property
    def ok(self) -> bool:
        return not self.errors and not self.remaining

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "clouds": self.clouds, "owner": self.owner, "found": [f.to_json() for f in self.found],
                "removed": [f.to_json() for f in self.removed], "stacks_torn_down": self.stacks_torn_down,
                "errors": self.errors, "ok": self.ok, "caches": self.caches,
                "remaining": [{k: v for k, v in asdict(r).items() if k != "tags"} for r in self.remaining]}


# --- deciding -------------------------------------------------------------------------------------------


def _epoch(tags: dict[str, str], key: str) -> datetime | None:
    value = tags.get(key, "")
    return datetime.fromtimestamp(int(value), timezone.utc) if value.isdigit() else None


@dataclass(frozen=True)
class Sweep:
    """The explicit orphan sweep: ``owner``'s ``gpuprov ci`` hosts older than ``grace`` that no live lease
    here holds (module docstring)."""

    owner: str  # an owner reference, as the caller names it
    grace: timedelta

    @property
    def label(self) -> str:
        return owner_label(self.owner)


@dataclass
class TtlPolicy(ReapPolicy):
    """The reaper's rules (module docstring), for a sweep at ``now`` by the caller whose owner label is ``me``.

    ``abandoned``: stacks whose CI lease here is provably dead; ``only_stack``: the caller's own teardown of
    that stack (its resources with the caller's owner reference, whatever their expiry).
    """

    now: datetime
    grace: timedelta
    abandoned: set[str]
    only_stack: str | None = None
    me: str = ""
    sweep: Sweep | None = None
    held: set[str] = field(default_factory=set)  # stacks a lease here holds that is not provably dead

    def _reason(self, stack: str | None, tags: dict[str, str]) -> str | None:
        owner = tags.get(TAG_OWNER)
        if self.only_stack is not None:
            # An instance with another owner's reference is someone else's stack of the same name.
            mine = owner is None or owner == self.me or not LABEL.fullmatch(owner)  # untagged, or tagged before references
            return "stack-teardown" if stack == self.only_stack and mine else None
        expires = _epoch(tags, TAG_EXPIRES_AT)
        if expires is not None and expires <= self.now:
            return "expired"
        if stack is None or owner is None:
            return None
        if stack in self.abandoned and owner == self.me:
            return "abandoned"
        created = _epoch(tags, TAG_CREATED_AT)
        if (self.sweep is not None and owner == self.sweep.label and tags.get(TAG_ORIGIN) == "ci"
                and stack not in self.held and created is not None and self.now - created >= self.sweep.grace):
            return "orphaned"
        return None

    def instance_reason(self, stack: str | None, tags: dict[str, str]) -> str | None:
        return self._reason(stack, tags)

    def dependent_reason(self, stack: str | None, tags: dict[str, str], doomed: set[str], live: set[str]) -> str | None:
        if stack is None or stack in live:
            return None  # never while an instance of its stack stays
        own = self._reason(stack, tags)
        if own is not None:
            return own
        if self.only_stack is not None:
            return None
        if stack in doomed:
            return "with-instance"
        created = _epoch(tags, TAG_CREATED_AT)
        if created is not None and self.now - created >= max(self.grace, DEPENDENT_GRACE):
            return "dangling"  # no instance of its stack anywhere, and older than any launch in flight
        return None


# --- the whole reap -----------------------------------------------------------------------------------------------


def cache_verdicts(caches: list[Leftover], instances: list[Leftover], me: str,
                   my_stacks: set[str]) -> list[dict[str, Any]]:
    """Each cache with its verdict: ``kept`` (its owner still has its stack, and why) or ``ownerless``.

    ``instances``: the live instances the cloud lists (their tags carry stack and owner); ``me``: the caller's
    owner label; ``my_stacks``: the stacks the caller's backend, records and leases know.
    """
    from gpuprov.infra.cache import OWNER_HASH_TAG, cache_json, owner_hash_of_label

    live = {(i.stack, owner_hash_of_label(i.tags.get(TAG_OWNER, ""))) for i in instances if i.bills}
    mine = owner_hash_of_label(me)
    out = []
    for c in caches:
        owner = c.tags.get(OWNER_HASH_TAG, "")
        if (c.stack, owner) in live:
            verdict, why = "kept", f"a live instance of stack '{c.stack}' with the same owner mounts it"
        elif owner == mine and c.stack in my_stacks:
            verdict, why = "kept", f"your stack '{c.stack}' still exists; `gpuprov down --purge -s {c.stack}` deletes it"
        elif owner == mine:
            verdict, why = "ownerless", (f"no stack '{c.stack}' of yours exists any more; delete it in the cloud's "
                                         "console if you no longer want it")
        else:
            verdict, why = "ownerless", (f"another owner's ({owner}) cache with no live instance of stack "
                                         f"'{c.stack}'; the reaper never deletes someone else's: ask its owner")
        out.append({**cache_json(c), "owner": owner, "verdict": verdict, "why": why})
    return out


def reapable_clouds(settings: Settings | None = None) -> list[str]:
    """The clouds that create paid resources and have credentials on this machine, and a cluster gpuprov's
    namespaces are on (a kubeconfig here): the reaper asks only those (:meth:`CloudDriver.sweeps`)."""
    return [d.name for d in all_drivers(settings) if d.sweeps()]


def teardown_abandoned(progress: Progress, dry_run: bool, settings: Settings) -> tuple[list[str], list[str]]:
    """Run the one teardown of every stack whose ``gpuprov ci`` process is gone. Returns (stacks, errors)."""
    from gpuprov.infra.config import load_config
    from gpuprov.infra.teardown import teardown

    done: list[str] = []
    errors: list[str] = []
    for lease in CiLease.all():
        if not lease.abandoned:
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
         timeout_s: float = 600.0, settings: Settings | None = None, config: Any = None,
         sweep_owner: str | None = None) -> ReapReport:
    """Find, remove and re-check gpuprov resources in ``clouds`` (default: those with credentials here).

    ``only_stack``: remove everything of that one stack of the caller's, whatever its expiry (the one
    teardown uses it after the stack's own destroy, to catch what no state recorded); ``config``: that
    stack's config, so its driver looks where the stack lives (its region, its project).
    ``sweep_owner``: also take that owner's orphaned ``gpuprov ci`` hosts older than ``grace`` (:class:`Sweep`).
    """
    progress = progress or (lambda _m: None)
    settings = settings or Settings.from_env()
    now = now or utcnow()
    me = owner_reference()
    report = ReapReport(dry_run=dry_run, clouds=list(clouds if clouds is not None else reapable_clouds(settings)),
                        owner=me)
    abandoned: set[str] = set()
    if only_stack is None:
        torn, errors = teardown_abandoned(progress, dry_run, settings)
        report.stacks_torn_down, report.errors = torn, errors
        abandoned = set(torn)
    held = {lease.stack for lease in CiLease.all() if not lease.abandoned}
    sweep = Sweep(sweep_owner, grace) if sweep_owner is not None else None
    policy = TtlPolicy(now, grace, abandoned, only_stack, owner_label(me), sweep, held)
    for cloud in report.clouds:
        driver = driver_for(cloud, settings)
        try:
            found = driver.reap_findings(policy, only_stack, config)
        except GpuprovError as err:
            report.errors.append(f"{cloud}: could not list resources: {err}")
            continue
        report.found += found
        if only_stack is None and driver.keeps_caches:
            report.caches += _caches_of(driver, me, settings)
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


def _caches_of(driver: Any, me: str, settings: Settings) -> list[dict[str, Any]]:
    """The caches ``driver``'s cloud lists, each with its verdict (:func:`cache_verdicts`)."""
    from gpuprov.infra.stack_index import known_stacks

    try:
        items = driver.inventory()
    except GpuprovError:
        return []  # the listing error was reported with the findings
    caches = [i for i in items if i.kind == "cache"]
    if not caches:
        return []
    return cache_verdicts(caches, [i for i in items if i.kind != "cache"], owner_label(me), set(known_stacks(settings)))
