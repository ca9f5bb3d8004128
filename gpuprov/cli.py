"""``gpuprov`` command line: thin over infra/, provisioning/ and cost/."""

from gpuprov import commands  # noqa: F401  (registers every command)
from gpuprov.app import app, main

__all__ = ["app", "main"]
