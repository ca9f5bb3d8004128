"""The TTL reaper: find what gpuprov left running in the clouds and remove it.

A resource is reaped when
- **expired**: its ``gpuprov-expires-at`` tag has passed (every paid resource
  carries one, :mod:`gpuprov.infra.tags`; ``gpuprov ci`` sets it to its own time limit
  plus a margin, so even a ``kill -9``'d CI job's host goes at the next reap);
- **abandoned**: its stack belongs to a ``gpuprov ci`` run on this machine whose
  process is gone (a CI lease whose pid no longer runs): the stack's own
  teardown runs first, from its saved state, then the tag sweep;
- **orphaned**: no stack of that name exists on this machine (no record, no
  state, no live CI lease) and it was created more than ``grace`` ago (the grace
  protects a launch that another machine is running right now).

Lambda SSH keys and firewall rulesets carry no tags: they are reaped with their
stack (by the name gpuprov gives them, :func:`gpuprov.infra.verify.lambda_name_stack`),
or when no live instance uses them and their stack is gone from this machine.

After removing, the reaper lists the clouds again (:mod:`gpuprov.infra.verify`) and
reports what is still there; nothing is marked gone on the strength of a call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gpuprov.infra import records
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import utcnow
from gpuprov.infra.paths import state_root
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_STACK
from gpuprov.infra.verify import (
    LAMBDA_GONE,
    Leftover,
    LeftoverResources,
    _lambda_owner,
    aws_leftovers,
    gcp_leftovers,
    gcp_project,
)

Progress = Callable[[str], None]
CLOUDS = ("lambda", "aws", "gcp")
DEFAULT_GRACE = timedelta(minutes=30)


class ReapFailed(GpuprovError):
    """Something the reaper should have removed is still there; it may still bill. Says which."""

    exit_code = 5


# --- CI leases: which stacks a live `gpuprov ci` on this machine holds ------------------------------


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
        return [cls(**json.loads(p.read_text())) for p in sorted((state_root() / "ci").glob("*.json"))] \
            if (state_root() / "ci").exists() else []

    @property
    def alive(self) -> bool:
        """Whether the process that holds the lease still runs (a zombie does not count)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            return not Path(f"/proc/{self.pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
        except OSError:
            return True

    def release(self) -> None:
        self.path(self.stack).unlink(missing_ok=True)


def mock_state_path(stack: str) -> Path:
    return state_root() / "mock-state" / f"{stack}.json"


def has_local_state(stack: str) -> bool:
    """Whether this machine keeps a record or saved Pulumi state of the stack."""
    return records.load(stack) is not None or mock_state_path(stack).exists()


def stack_known_here(stack: str) -> bool:
    """Whether this machine still has the stack: a record, saved state, or a live CI lease."""
    lease = CiLease.load(stack)
    if lease is not None:
        return lease.alive
    return has_local_state(stack)


# --- the report -------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One resource the reaper found to remove, and why."""

    item: Leftover
    reason: str  # expired | abandoned | orphaned | stack-teardown

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.item), "reason": self.reason}


@dataclass
class ReapReport:
    """What the reaper found, removed, could not remove, and what the clouds still list."""

    dry_run: bool
    found: list[Finding] = field(default_factory=list)
    removed: list[Finding] = field(default_factory=list)
    stacks_torn_down: list[str] = field(default_factory=list)
    stacks_released: list[str] = field(default_factory=list)  # torn down and verified gone everywhere
    errors: list[str] = field(default_factory=list)
    remaining: list[Leftover] = field(default_factory=list)
    clouds: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.remaining

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "clouds": self.clouds, "found": [f.to_json() for f in self.found],
                "removed": [f.to_json() for f in self.removed], "stacks_torn_down": self.stacks_torn_down,
                "errors": self.errors, "remaining": [asdict(r) for r in self.remaining], "ok": self.ok}


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


# --- Lambda -------------------------------------------------------------------------------------------------


def _lambda_findings(now: datetime, grace: timedelta, abandoned: set[str], only_stack: str | None) -> list[Finding]:
    from gpuprov.infra.lambda_cloud.client import LambdaCloud

    api = LambdaCloud()
    instances = [i for i in api.list_instances() if i.status not in LAMBDA_GONE]
    found: list[Finding] = []
    doomed_stacks: set[str] = set(abandoned)
    live_keys: set[str] = set()
    live_rulesets: set[str] = set()
    for inst in instances:
        if inst.tags.get("gpuprov-managed") != "true":
            live_keys.update(inst.ssh_key_names)  # not ours: never remove what it uses
            live_rulesets.update(inst.firewall_ruleset_ids)
            continue
        stack = inst.tags.get(TAG_STACK)
        why = "stack-teardown" if only_stack is not None and stack == only_stack else (
            None if only_stack is not None else reason_for(stack, inst.tags, now, grace, abandoned))
        if why is None:
            live_keys.update(inst.ssh_key_names)
            live_rulesets.update(inst.firewall_ruleset_ids)
            continue
        if stack:
            doomed_stacks.add(stack)
        found.append(Finding(Leftover("lambda", "instance", inst.id, stack, inst.name, inst.region, inst.status), why))

    def named_reason(name: str) -> tuple[str | None, str | None]:
        owner = _lambda_owner(name)
        if owner is None:
            return None, None
        if only_stack is not None:
            from gpuprov.infra.verify import lambda_name_stack

            return (only_stack, "stack-teardown") if lambda_name_stack(name, only_stack) else (owner, None)
        for stack in doomed_stacks:
            from gpuprov.infra.verify import lambda_name_stack

            if lambda_name_stack(name, stack):
                return stack, "abandoned" if stack in abandoned else "expired-with-instance"
        # The stack part of a name is a guess when stacks hold dashes: any known stack prefix keeps it.
        if any(stack_known_here(candidate) for candidate in _name_stack_candidates(owner)):
            return owner, None
        return owner, "orphaned"

    for key in api.list_ssh_keys():
        stack, why = named_reason(key.name)
        if why and key.name not in live_keys:
            found.append(Finding(Leftover("lambda", "ssh-key", key.id, stack, key.name), why))
    for rs in api.list_firewall_rulesets():
        stack, why = named_reason(rs.name)
        if why and rs.id not in live_rulesets:  # rulesets of doomed instances go after they terminate
            found.append(Finding(Leftover("lambda", "firewall-ruleset", rs.id, stack, rs.name, rs.region), why))
    return found


def _name_stack_candidates(owner: str) -> list[str]:
    """``a-b-c`` -> ``a-b-c``, ``a-b``, ``a``: every stack a gpuprov name could belong to."""
    parts = owner.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _lambda_remove(items: list[Finding], progress: Progress, timeout_s: float) -> list[str]:
    """Terminate instances, wait until Lambda says terminated, then delete keys and rulesets."""
    from gpuprov.infra.lambda_cloud.client import LambdaCloud
    from gpuprov.infra.lambda_cloud.errors import FirewallRulesetInUse, InvalidParameters, ObjectNotFound

    api = LambdaCloud()
    errors: list[str] = []
    ids = [f.item.id for f in items if f.item.kind == "instance"]
    if ids:
        progress(f"lambda: terminating {', '.join(ids)}")
        for iid in ids:  # one by one: a single id already gone must not stop the others
            try:
                api.terminate([iid])
            except ObjectNotFound:
                continue
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [i.id for i in api.list_instances() if i.id in ids and i.status not in LAMBDA_GONE]
            if not pending:
                break
            if time.monotonic() >= deadline:
                errors.append(f"lambda: instances {', '.join(pending)} not terminated after {timeout_s:.0f}s")
                break
            time.sleep(1.0 * _poll_scale())
    for f in items:
        try:
            if f.item.kind == "ssh-key":
                try:
                    api.delete_ssh_key(f.item.id)
                except InvalidParameters:
                    # Lambda answers "invalid parameters" for a key id it no longer has: gone is fine.
                    if any(k.id == f.item.id for k in api.list_ssh_keys()):
                        raise
            elif f.item.kind == "firewall-ruleset":
                _retry_in_use(api.delete_firewall_ruleset, f.item.id, FirewallRulesetInUse, timeout_s)
            else:
                continue
            progress(f"lambda: deleted {f.item.kind} {f.item.name or f.item.id}")
        except ObjectNotFound:
            continue
    return errors


def _retry_in_use(call: Callable[[str], None], arg: str, in_use: type[BaseException], timeout_s: float) -> None:
    """A ruleset stays "in use" until its instance is fully terminated: retry until it is not."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

    for attempt in Retrying(retry=retry_if_exception_type(in_use), stop=stop_after_delay(timeout_s),
                            wait=wait_exponential(multiplier=_poll_scale(), max=10), reraise=True):
        with attempt:
            call(arg)


def _poll_scale() -> float:
    """Pauses follow the Lambda client's rate scale, so the suite against the stand-in runs fast."""
    from gpuprov.infra.lambda_cloud.client import rate_scale

    return max(rate_scale(), 0.01)


# --- AWS and GCP ---------------------------------------------------------------------------------------------


def _tagged_findings(items: Iterable[Leftover], tags_of: Callable[[Leftover], dict[str, str]], now: datetime,
                     grace: timedelta, abandoned: set[str], only_stack: str | None) -> list[Finding]:
    found = []
    for item in items:
        if only_stack is not None:
            if item.stack == only_stack:
                found.append(Finding(item, "stack-teardown"))
            continue
        why = reason_for(item.stack, tags_of(item), now, grace, abandoned)
        if why:
            found.append(Finding(item, why))
    return found


def _aws_regions() -> list[str]:
    """Regions to sweep: ``GPUPROV_AWS_REGIONS`` (comma-separated), else the default region."""
    raw = os.environ.get("GPUPROV_AWS_REGIONS")
    if raw:
        return [r.strip() for r in raw.split(",") if r.strip()]
    from gpuprov.cost import catalog

    return [catalog.defaults("aws").region or "us-east-1"]


def _tags_lookup(tags: dict[str, dict[str, str]]) -> Callable[[Leftover], dict[str, str]]:
    return lambda item: tags.get(item.id, {})


def _aws_findings(now: datetime, grace: timedelta, abandoned: set[str], only_stack: str | None,
                  regions: list[str] | None = None) -> list[Finding]:
    from gpuprov.infra.aws import sdk

    found: list[Finding] = []
    for region in regions or _aws_regions():
        tags: dict[str, dict[str, str]] = {}
        for t in sdk.find_tagged_instances(region, only_stack):
            tags[t.id] = t.tags
        for t in sdk.find_tagged_security_groups(region, only_stack):
            tags[t.id] = t.tags
        for t in sdk.find_tagged_key_pairs(region, only_stack):
            tags[t.id] = t.tags
        found += _tagged_findings(aws_leftovers(only_stack, region), _tags_lookup(tags), now, grace, abandoned,
                                  only_stack)
    return found


def _aws_remove(items: list[Finding], progress: Progress) -> list[str]:
    from gpuprov.infra.aws import sdk

    by_region: dict[str, list[Leftover]] = {}
    for f in items:
        by_region.setdefault(str(f.item.region), []).append(f.item)
    for region, leftovers in by_region.items():
        ids = [i.id for i in leftovers if i.kind == "instance"]
        if ids:
            progress(f"aws {region}: terminating {', '.join(ids)}")
            sdk.terminate_instances(region, ids, wait=True)
        for i in leftovers:
            if i.kind == "security-group":
                sdk.delete_security_group(region, i.id)
            elif i.kind == "key-pair":
                sdk.delete_key_pair(region, str(i.name))
            else:
                continue
            progress(f"aws {region}: deleted {i.kind} {i.name or i.id}")
    return []


def _gcp_findings(now: datetime, grace: timedelta, abandoned: set[str], only_stack: str | None) -> list[Finding]:
    from gpuprov.infra.gcp import sdk

    project = gcp_project()
    labels = {i.name: i.labels for i in sdk.find_labelled_instances(project, only_stack)}
    items = gcp_leftovers(only_stack, project)
    found = _tagged_findings([i for i in items if i.kind == "instance"], lambda i: labels.get(i.id, {}), now, grace,
                             abandoned, only_stack)
    doomed = {f.item.stack for f in found}
    live = {i.stack for i in items if i.kind == "instance" and i.stack not in doomed}
    for rule in (i for i in items if i.kind == "firewall"):
        if rule.stack in doomed:
            found.append(Finding(rule, "stack-teardown" if only_stack else "expired-with-instance"))
        elif rule.stack not in live and (only_stack or not stack_known_here(str(rule.stack))):
            found.append(Finding(rule, "stack-teardown" if only_stack else "orphaned"))
    return found


def _gcp_remove(items: list[Finding], progress: Progress) -> list[str]:
    from gpuprov.infra.gcp import sdk

    project = gcp_project()
    for f in sorted(items, key=lambda f: f.item.kind != "instance"):  # instances before their firewall rules
        if f.item.kind == "instance":
            sdk.delete_instance(project, str(f.item.region), f.item.id)
        else:
            sdk.delete_firewall(project, f.item.id)
        progress(f"gcp: deleted {f.item.kind} {f.item.id}")
    return []


# --- the whole reap -----------------------------------------------------------------------------------------------


def configured_clouds() -> list[str]:
    """The clouds this machine has credentials for (the reaper only asks those)."""
    found = []
    if os.environ.get("LAMBDA_API_KEY"):
        found.append("lambda")
    if any(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ENDPOINT_URL")):
        found.append("aws")
    if os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT"):
        found.append("gcp")
    return found


def _findings(cloud: str, now: datetime, grace: timedelta, abandoned: set[str], only_stack: str | None,
              aws_regions: list[str] | None) -> list[Finding]:
    if cloud == "lambda":
        return _lambda_findings(now, grace, abandoned, only_stack)
    if cloud == "aws":
        return _aws_findings(now, grace, abandoned, only_stack, aws_regions)
    return _gcp_findings(now, grace, abandoned, only_stack)


def _remove(cloud: str, items: list[Finding], progress: Progress, timeout_s: float) -> list[str]:
    if cloud == "lambda":
        return _lambda_remove(items, progress, timeout_s)
    if cloud == "aws":
        return _aws_remove(items, progress)
    return _gcp_remove(items, progress)


def _still_there(cloud: str, items: list[Finding]) -> list[Leftover]:
    """Which of ``items`` the cloud, listed again, still shows."""
    if not items:
        return []
    from gpuprov.infra import verify

    if cloud == "lambda":
        now_listed = verify.lambda_leftovers(None)
    elif cloud == "aws":
        now_listed = [x for r in {str(f.item.region) for f in items} for x in verify.aws_leftovers(None, r)]
    else:
        now_listed = verify.gcp_leftovers(None, gcp_project())
    wanted = {(f.item.kind, f.item.id) for f in items}
    return [x for x in now_listed if (x.kind, x.id) in wanted]


def teardown_abandoned(progress: Progress, dry_run: bool) -> tuple[list[str], list[str]]:
    """Run the saved-state teardown of every stack whose ``gpuprov ci`` process is gone. (stacks, errors)"""
    from gpuprov.infra.config import load_config
    from gpuprov.infra.stacks import backend_for

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
            config = load_config(None, {"cloud": lease.cloud, "stack": lease.stack})
            backend_for(config, progress).destroy(config)
            lease.release()
        except LeftoverResources as err:
            # Created after its state was last saved (killed mid-call): the tag sweep below removes
            # these, and finish_abandoned() releases the stack once the clouds list nothing of it.
            progress(f"stack '{lease.stack}': {len(err.leftovers)} resource(s) in no saved state; sweeping by tag")
        except GpuprovError as err:
            errors.append(f"stack '{lease.stack}': {err}")
    return done, errors


def finish_abandoned(stacks: list[str], report: ReapReport) -> None:
    """Forget an abandoned stack's local state once the sweep left nothing of it in any cloud."""
    still = {r.stack for r in report.remaining}
    for stack in stacks:
        if stack in still or any(f"stack '{stack}'" in e for e in report.errors):
            continue
        lease = CiLease.load(stack)
        if lease is not None and not lease.alive:
            records.forget(stack)
            mock_state_path(stack).unlink(missing_ok=True)
            lease.release()
            report.stacks_released.append(stack)


def reap(clouds: list[str] | None = None, *, dry_run: bool = False, now: datetime | None = None,
         grace: timedelta = DEFAULT_GRACE, only_stack: str | None = None, progress: Progress | None = None,
         timeout_s: float = 600.0, aws_regions: list[str] | None = None) -> ReapReport:
    """Find, remove and re-check gpuprov resources in ``clouds`` (default: those with credentials here).

    ``only_stack``: remove everything of that one stack whatever its tags say
    (``gpuprov ci`` uses it after its own teardown, to catch what no state recorded).
    ``aws_regions``: the EC2 regions to sweep (default ``GPUPROV_AWS_REGIONS`` or the default region).
    """
    progress = progress or (lambda _m: None)
    now = now or utcnow()
    report = ReapReport(dry_run=dry_run, clouds=list(clouds if clouds is not None else configured_clouds()))
    abandoned: set[str] = set()
    if only_stack is None:
        torn, errors = teardown_abandoned(progress, dry_run)
        report.stacks_torn_down, report.errors = torn, errors
        abandoned = set(torn)
    for cloud in report.clouds:
        try:
            found = _findings(cloud, now, grace, abandoned, only_stack, aws_regions)
        except GpuprovError as err:
            report.errors.append(f"{cloud}: could not list resources: {err}")
            continue
        report.found += found
        if dry_run or not found:
            continue
        try:
            report.errors += _remove(cloud, found, progress, timeout_s)
        except GpuprovError as err:
            report.errors.append(f"{cloud}: {err}")
        remaining = _still_there(cloud, found)
        report.remaining += remaining
        gone = {(r.kind, r.id) for r in remaining}
        report.removed += [f for f in found if (f.item.kind, f.item.id) not in gone]
    if not dry_run:
        finish_abandoned(report.stacks_torn_down, report)
    return report
