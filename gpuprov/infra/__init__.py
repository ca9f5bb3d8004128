"""Getting a GPU host: config, the GpuHost description, and one module per target."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpuprov.infra.config import StackConfig


def build(config: StackConfig) -> dict[str, Any]:
    """Declare the stack's Pulumi resources; returns the outputs to export (``host`` among them)."""
    from gpuprov.infra.program import build as _build  # imports Pulumi only when a program runs

    return _build(config)
