"""Destroy verification: after any teardown, list the cloud again and fail loudly if the stack left anything.

A destroy that "succeeded" is not trusted (dstack marked instances terminated
while they kept billing, FACTS §4): :func:`verify_destroyed` asks the cloud
itself for everything tagged (or named) for the stack and raises
:class:`LeftoverResources` when something remains. Instances still shutting
down are waited for, up to a limit, since that is the normal way out.

What belongs to a stack, per cloud:
- Lambda: instances tagged ``gpuprov-stack=<stack>``; SSH keys and firewall
  rulesets carry no tags in Lambda's API, so they are recognised by the name
  gpuprov gives them (:func:`lambda_name_stack`).
- AWS: instances, security groups and key pairs tagged for the stack.
- GCP: instances labelled for the stack, firewall rules targeting its network tag.
- local: the sandbox's processes, namespace, links and files.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK

Progress = Callable[[str], None]

# Lambda resources gpuprov names: "gpuprov-<stack>" or "gpuprov-<stack>-<suffix>".
LAMBDA_NAME_PREFIX = "gpuprov-"
# States that are on their way out: worth waiting for rather than failing at once.
SETTLING = {"terminating", "shutting-down", "stopping", "STOPPING", "SUSPENDING"}
# Lambda instance states that no longer bill nor exist for our purposes.
LAMBDA_GONE = {"terminated"}


@dataclass(frozen=True)
class Leftover:
    """One resource that still exists for a stack after teardown."""

    cloud: str
    kind: str  # instance, ssh-key, firewall-ruleset, security-group, key-pair, firewall, sandbox
    id: str
    stack: str | None = None
    name: str | None = None
    region: str | None = None
    state: str | None = None

    @property
    def settling(self) -> bool:
        """On its way out (terminating): verification waits for it instead of failing."""
        return self.state in SETTLING

    def __str__(self) -> str:
        where = f" in {self.region}" if self.region else ""
        name = f" '{self.name}'" if self.name and self.name != self.id else ""
        state = f" ({self.state})" if self.state else ""
        return f"{self.cloud} {self.kind} {self.id}{name}{where}{state}"


class LeftoverResources(GpuprovError):
    """Teardown finished but the cloud still lists resources of the stack: they may bill. Says which."""

    exit_code = 5

    def __init__(self, stack: str, leftovers: list[Leftover]):
        self.stack, self.leftovers = stack, leftovers
        lines = "".join(f"\n  - {item}" for item in leftovers)
        super().__init__(
            f"stack '{stack}': teardown finished but {len(leftovers)} resource(s) tagged for it still exist "
            f"and may still bill:{lines}\nRun `gpuprov reap` (or `gpuprov down -s {stack}` again), "
            "and check the cloud console if they persist."
        )


def lambda_name_stack(name: str | None, stack: str) -> bool:
    """Whether a Lambda SSH key or firewall ruleset named ``name`` belongs to ``stack``."""
    if not name:
        return False
    own = f"{LAMBDA_NAME_PREFIX}{stack}"
    return name == own or name.startswith(f"{own}-")


def lambda_leftovers(stack: str | None) -> list[Leftover]:
    """Lambda instances, SSH keys and firewall rulesets of ``stack`` (every gpuprov one when None)."""
    from gpuprov.infra.lambda_cloud.client import LambdaCloud

    api = LambdaCloud()
    found: list[Leftover] = []
    for inst in api.list_instances():
        if inst.status in LAMBDA_GONE or inst.tags.get(TAG_MANAGED) != "true":
            continue
        if stack is None or inst.tags.get(TAG_STACK) == stack:
            found.append(Leftover("lambda", "instance", inst.id, inst.tags.get(TAG_STACK), inst.name,
                                  inst.region, inst.status))
    for key in api.list_ssh_keys():
        owner = _lambda_owner(key.name)
        if owner and (stack is None or lambda_name_stack(key.name, stack)):
            found.append(Leftover("lambda", "ssh-key", key.id, stack or owner, key.name))
    for rs in api.list_firewall_rulesets():
        owner = _lambda_owner(rs.name)
        if owner and (stack is None or lambda_name_stack(rs.name, stack)):
            found.append(Leftover("lambda", "firewall-ruleset", rs.id, stack or owner, rs.name, rs.region))
    return found


def _lambda_owner(name: str | None) -> str | None:
    """The stack part of a gpuprov-made Lambda name (best effort: stack names may hold dashes)."""
    m = re.match(rf"^{LAMBDA_NAME_PREFIX}([a-z0-9][a-z0-9-]*)$", name or "")
    return m.group(1) if m else None


def aws_leftovers(stack: str | None, region: str) -> list[Leftover]:
    """EC2 instances (not yet terminated), security groups and key pairs tagged for ``stack``."""
    from gpuprov.infra.aws import sdk

    found = [Leftover("aws", "instance", i.id, i.stack, None, region, i.state)
             for i in sdk.find_tagged_instances(region, stack)]
    found += [Leftover("aws", "security-group", g.id, g.stack, None, region)
              for g in sdk.find_tagged_security_groups(region, stack)]
    found += [Leftover("aws", "key-pair", k.id, k.stack, k.name, region) for k in sdk.find_tagged_key_pairs(region, stack)]
    return found


def gcp_project() -> str:
    """The GCP project gpuprov works in: ``GOOGLE_CLOUD_PROJECT`` (or gcloud's ``CLOUDSDK_CORE_PROJECT``)."""
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
    if not project:
        raise GpuprovError("no GCP project: set GOOGLE_CLOUD_PROJECT to the project gpuprov creates hosts in")
    return project


def gcp_leftovers(stack: str | None, project: str) -> list[Leftover]:
    """Compute Engine instances labelled for ``stack`` and firewall rules targeting its network tag."""
    from gpuprov.infra.gcp import sdk

    found = [Leftover("gcp", "instance", i.name, i.stack, i.name, i.zone, i.status)
             for i in sdk.find_labelled_instances(project, stack)]  # TERMINATED still holds billed disks
    found += [Leftover("gcp", "firewall", f.name, f.stack, f.name) for f in sdk.find_gpuprov_firewalls(project, stack)]
    return found


def find_leftovers(config: StackConfig) -> list[Leftover]:
    """Everything the cloud still lists for ``config``'s stack."""
    if config.cloud == "lambda":
        return lambda_leftovers(config.stack)
    if config.cloud == "aws":
        return aws_leftovers(config.stack, str(config.resolved_region))
    if config.cloud == "gcp":
        return gcp_leftovers(config.stack, gcp_project())
    if config.cloud == "local":
        from gpuprov.infra.local.sandbox import LocalSandbox

        return [Leftover("local", "sandbox", what, config.stack) for what in LocalSandbox(config.stack).leftovers()]
    return []  # existing: gpuprov created nothing


def verify_destroyed(config: StackConfig, timeout_s: float | None = None, poll_s: float | None = None,
                     progress: Progress | None = None) -> None:
    """Return once the cloud lists nothing of the stack; raise :class:`LeftoverResources` otherwise.

    Resources that are merely terminating are polled for up to ``timeout_s``
    (``GPUPROV_VERIFY_TIMEOUT_S``, default 600 s; polled every ``GPUPROV_VERIFY_POLL_S``, default 2 s);
    anything else remaining fails at once.
    """
    if timeout_s is None:
        timeout_s = float(os.environ.get("GPUPROV_VERIFY_TIMEOUT_S", "600"))
    if poll_s is None:
        poll_s = float(os.environ.get("GPUPROV_VERIFY_POLL_S", "2"))
    deadline = time.monotonic() + timeout_s
    while True:
        left = find_leftovers(config)
        if not left:
            if progress:
                progress(f"verified: the {config.cloud} API lists nothing left of stack '{config.stack}'")
            return
        if any(not item.settling for item in left) or time.monotonic() >= deadline:
            raise LeftoverResources(config.stack, left)
        if progress:
            progress(f"waiting for {len(left)} resource(s) to finish terminating")
        time.sleep(poll_s)
