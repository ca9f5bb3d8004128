"""The registry of clouds: one line per driver. A new cloud is one folder here and one line below.

Each entry names the class implementing :class:`gpuprov.infra.clouds.base.CloudDriver`.
Drivers import their SDKs lazily, so :func:`registered` can import them all to check that
each one is complete: a driver missing part of the interface, or registered under another
name than its own, is refused here with a message, never half-used.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from gpuprov.infra.errors import GpuprovError

if TYPE_CHECKING:
    from gpuprov.infra.clouds.base import CloudDriver
    from gpuprov.infra.settings import Settings

DRIVERS: dict[str, str] = {
    "lambda": "gpuprov.infra.clouds.lambda_cloud.driver:LambdaDriver",
    "aws": "gpuprov.infra.clouds.aws.driver:AwsDriver",
    "gcp": "gpuprov.infra.clouds.gcp.driver:GcpDriver",
    "existing": "gpuprov.infra.clouds.existing.driver:ExistingDriver",
    "local": "gpuprov.infra.clouds.local.driver:LocalDriver",
    "kubernetes": "gpuprov.infra.clouds.kubernetes.driver:KubernetesDriver",
    "eks": "gpuprov.infra.clouds.kubernetes.driver:EksDriver",
    "gke": "gpuprov.infra.clouds.kubernetes.driver:GkeDriver",
}


class DriverBroken(GpuprovError):
    """A registered cloud driver cannot be loaded or does not implement the interface."""


def names() -> tuple[str, ...]:
    """Every registered cloud, in registry order (what ``cloud:`` accepts)."""
    return tuple(DRIVERS)


@cache
def driver_class(name: str) -> type[CloudDriver]:
    """The driver class registered as ``name``, checked to be complete."""
    from gpuprov.infra.clouds.base import CloudDriver

    if name not in DRIVERS:
        raise DriverBroken(f"no cloud driver named {name!r}; registered: {', '.join(DRIVERS)}")
    module_name, _, class_name = DRIVERS[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise DriverBroken(f"cloud driver {name!r} ({DRIVERS[name]}) cannot be loaded: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, CloudDriver)):
        raise DriverBroken(f"cloud driver {name!r}: {DRIVERS[name]} is not a CloudDriver")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise DriverBroken(f"cloud driver {name!r} does not implement {', '.join(missing)}")
    if getattr(cls, "name", None) != name:
        raise DriverBroken(f"cloud driver {name!r}: {DRIVERS[name]} calls itself {getattr(cls, 'name', None)!r}")
    return cls


def driver_for(name: str, settings: Settings | None = None) -> CloudDriver:
    """A driver for cloud ``name`` bound to ``settings`` (read from the environment when not given)."""
    return driver_class(name)(settings)


def all_drivers(settings: Settings | None = None) -> list[CloudDriver]:
    """One driver per registered cloud."""
    return [driver_for(name, settings) for name in DRIVERS]


def registered() -> list[type[CloudDriver]]:
    """Load and check every registered driver (raises :class:`DriverBroken` on the first broken one)."""
    return [driver_class(name) for name in DRIVERS]
