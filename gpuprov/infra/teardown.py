"""Removing a stack: the one path ``down``, ``ci``, the reaper and a re-run after a crash all take."""

from __future__ import annotations

from collections.abc import Callable

from gpuprov.infra import records
from gpuprov.infra.clouds import driver_for
from gpuprov.infra.clouds.base import Leftover
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.settings import Settings


class TeardownFailed(GpuprovError):
    """The stack's resources could not all be removed; they may still bill. Says which and what to do."""

    exit_code = 5


def teardown(config: StackConfig, progress: Callable[[str], None], settings: Settings | None = None,
             purge: bool = False) -> list[Leftover]:
    """The stack's own destroy (verified), then a sweep by tag for anything no state recorded, verified again.

    Once the cloud lists nothing of the stack, what this machine kept about its host goes too:
    the stack record, the pinned SSH host key (or the next host of this stack would look like an
    attack), the generated service secrets (they guarded a host that no longer exists) and the
    stack's own SSH key pair.

    The stack's cache (``cache: true``) is kept, and returned, unless ``purge``: then it is deleted and
    its absence verified (:func:`gpuprov.infra.verify.verify_cache_gone`).
    """
    from gpuprov.infra.reaper import reap
    from gpuprov.infra.verify import LeftoverResources, verify_destroyed

    settings = settings or Settings.from_env()
    driver = driver_for(config.cloud, settings)
    try:
        driver.backend(progress).destroy(config)
    except LeftoverResources as err:
        if not driver.creates_cloud_resources:
            raise
        progress(f"{len(err.leftovers)} resource(s) of the stack were in no saved state; removing them by tag")
        report = reap([config.cloud], only_stack=config.stack, progress=progress, settings=settings, config=config)
        if report.errors:
            raise TeardownFailed(f"stack '{config.stack}': " + "; ".join(report.errors)) from None
        verify_destroyed(config, settings, progress=progress)
        records.forget(config.stack)
    forget_host(config.stack)
    if not driver.keeps_caches:
        return []
    from gpuprov.infra.verify import own_caches, verify_cache_gone

    kept = own_caches(driver, config)
    if not purge:
        return kept
    for item in kept:
        driver.purge_cache(item, progress)
    verify_cache_gone(config, settings, progress)
    return []


def forget_host(stack: str) -> None:
    """Drop the operator-side traces of a stack's removed host: pinned host key, service secrets, key pair,
    its ``Host gpuprov-<stack>`` ssh_config entry."""
    from gpuprov.infra.keys import forget_keypair
    from gpuprov.provisioning import secrets, ssh_config
    from gpuprov.provisioning.ssh import known_hosts_path

    pins = known_hosts_path(stack)
    for path in (pins, pins.with_name(f"{pins.name}.host"), pins.with_name(f"{pins.name}.replaced")):
        path.unlink(missing_ok=True)
    secrets.forget(stack)
    forget_keypair(stack)
    ssh_config.remove_entry(stack)
