"""Removing a stack: the one path ``down``, ``ci`` and a re-run after a crash all take."""

from __future__ import annotations

from collections.abc import Callable

from gpuprov.infra import records
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.stacks import StackBackend


def teardown(config: StackConfig, backend: StackBackend, progress: Callable[[str], None]) -> None:
    """The stack's own destroy (verified), then a tag sweep for anything no state recorded, verified again.

    Once the cloud lists nothing of the stack, what this machine kept about its host goes too:
    the stack record, the pinned SSH host key (or the next host of this stack would look like an
    attack) and the generated service secrets (they guarded a host that no longer exists).
    """
    from gpuprov.infra.reaper import reap
    from gpuprov.infra.verify import LeftoverResources, verify_destroyed

    try:
        backend.destroy(config)
    except LeftoverResources as err:
        if config.cloud not in ("lambda", "aws", "gcp"):
            raise
        progress(f"{len(err.leftovers)} resource(s) of the stack were in no saved state; removing them by tag")
        report = reap([config.cloud], only_stack=config.stack, progress=progress,
                      aws_regions=[str(config.resolved_region)] if config.cloud == "aws" else None)
        if report.errors:
            raise GpuprovError("; ".join(report.errors)) from None
        verify_destroyed(config, progress=progress)
        records.forget(config.stack)
    forget_host(config.stack)


def forget_host(stack: str) -> None:
    """Drop the operator-side traces of a stack's removed host: pinned host key and service secrets."""
    from gpuprov.provisioning import secrets
    from gpuprov.provisioning.ssh import known_hosts_path

    known_hosts_path(stack).unlink(missing_ok=True)
    secrets.forget(stack)
