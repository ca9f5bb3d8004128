"""The Pulumi program: the stack's cloud driver declares the resources and returns the ``host`` output.

Drivers import their Pulumi providers lazily, so a program for one cloud never loads another's SDK.
"""

from __future__ import annotations

from typing import Any

from gpuprov.infra.clouds import driver_class
from gpuprov.infra.config import StackConfig
from gpuprov.infra.settings import Settings


def build(config: StackConfig) -> dict[str, Any]:
    """Create the stack's resources for ``config.cloud`` and return its outputs."""
    return {"host": driver_class(config.cloud)(Settings()).build(config)}
