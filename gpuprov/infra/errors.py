"""Errors a user can act on. The command line prints the message (no traceback) and exits with ``exit_code``."""

from __future__ import annotations


class GpuprovError(Exception):
    """Base of every error gpuprov reports to its user."""

    exit_code = 1


class PulumiCliMissing(GpuprovError):
    """The Pulumi CLI is needed (lambda, aws, gcp via the Automation API) and is not installed."""

    exit_code = 3

    def __init__(self) -> None:
        super().__init__(
            "the Pulumi CLI is not installed, and `gpuprov up`/`down` on lambda, aws and gcp drive it. "
            "Install it (https://www.pulumi.com/docs/install/, e.g. `curl -fsSL https://get.pulumi.com | sh`) "
            "and put it on PATH, or try the flow with no cloud: `gpuprov up --cloud local`. "
            "`gpuprov plan` works without it."
        )
