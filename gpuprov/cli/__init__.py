"""``gpuprov`` command line: thin over gpuprov.infra, gpuprov.provisioning and gpuprov.cost."""

from gpuprov.cli import commands  # noqa: F401  (registers every command)
from gpuprov.cli.app import app, main

__all__ = ["app", "main"]
