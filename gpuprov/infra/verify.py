"""Destroy verification: after any teardown, list the cloud again and fail loudly if the stack left anything.

A destroy that "succeeded" is not trusted (dstack marked instances terminated while
they kept billing: https://github.com/dstackai/dstack/issues/1551): :func:`verify_destroyed`
asks the cloud itself, through the stack's driver, for everything that belongs to the
stack (:meth:`CloudDriver.leftovers`) and raises :class:`LeftoverResources` when something
remains. Instances still shutting down are waited for, up to a limit, since that is the
normal way out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gpuprov.infra.clouds import driver_for
from gpuprov.infra.clouds.base import CloudDriver, Leftover
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.settings import Settings

Progress = Callable[[str], None]

__all__ = ["Leftover", "LeftoverResources", "find_leftovers", "own_caches", "verify_cache_gone", "verify_destroyed"]


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


def find_leftovers(config: StackConfig, settings: Settings | None = None) -> list[Leftover]:
    """Everything the cloud still lists for ``config``'s stack."""
    return driver_for(config.cloud, settings).leftovers(config)


def verify_destroyed(config: StackConfig, settings: Settings | None = None, timeout_s: float | None = None,
                     poll_s: float | None = None, progress: Progress | None = None) -> None:
    """Return once the cloud lists nothing of the stack; raise :class:`LeftoverResources` otherwise.

    Resources that are merely terminating are polled for up to ``timeout_s`` (default: the settings'
    ``verify_timeout_s``, every ``verify_poll_s``); anything else remaining fails at once.
    """
    settings = settings or Settings.from_env()
    driver = driver_for(config.cloud, settings)
    timeout_s = settings.verify_timeout_s if timeout_s is None else timeout_s
    poll_s = settings.verify_poll_s if poll_s is None else poll_s
    deadline = time.monotonic() + timeout_s
    while True:
        left = driver.leftovers(config)
        if not left:
            if progress:
                progress(f"verified: the {config.cloud} API lists nothing left of stack '{config.stack}'")
            return
        if any(not item.settling for item in left) or time.monotonic() >= deadline:
            raise LeftoverResources(config.stack, left)
        if progress:
            progress(f"waiting for {len(left)} resource(s) to finish terminating")
        time.sleep(poll_s)


def own_caches(driver: CloudDriver, config: StackConfig) -> list[Leftover]:
    """The caches of ``config``'s stack that are the caller's (a colleague's stack of the same name has its own)."""
    from gpuprov.infra.cache import OWNER_HASH_TAG, owner_hash_of_label
    from gpuprov.infra.owner import owner_label, owner_reference

    mine = owner_hash_of_label(owner_label(owner_reference()))
    return [c for c in driver.caches(config.stack, config) if c.tags.get(OWNER_HASH_TAG, mine) == mine]


def verify_cache_gone(config: StackConfig, settings: Settings | None = None,
                      progress: Progress | None = None) -> None:
    """Raise :class:`LeftoverResources` while the cloud still lists the caller's cache of the stack."""
    driver = driver_for(config.cloud, settings or Settings.from_env())
    left = own_caches(driver, config)
    if left:
        raise LeftoverResources(config.stack, left)
    if progress:
        progress(f"verified: the {config.cloud} API lists no cache of stack '{config.stack}'")
