"""What the day-2 Fabric tasks (``fabfile.py``) share with ``gpuprov``: stacks by name, one-line errors, exit codes.

- :func:`day2_task`: a task whose gpuprov errors end as one ``error:`` line and their exit code
  (the README's table), never a traceback; Ctrl-C is 130.
- :func:`usage_errors_exit_2`: a usage error (an unknown option, a missing value) is one line plus
  where the task's usage is, exit 2, as in ``gpuprov`` (invoke prints it and exits 1 by itself).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit, ParseError

from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(GpuprovError):
    exit_code = EXIT_USAGE


def day2_task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a :class:`GpuprovError` becomes one ``error:`` line and its exit code."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GpuprovError as err:
            raise Exit(f"error: {err}", code=err.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=EXIT_INTERRUPTED) from None
    return run


def required(value: str | None, flag: str, what: str) -> str:
    """A task's required option (invoke would take a bare positional, so ``--help`` became its value)."""
    if not value:
        raise UsageError(f"{flag} is required: {what}")
    return value


def stack_host(stack: str | None, cloud: str | None, config: str | None) -> tuple[StackConfig, GpuHost]:
    """The named stack's config and running host: a stack that does not exist is refused, as in ``gpuprov``."""
    from gpuprov.cli.app import load_existing, settings
    from gpuprov.infra.stacks import running_host

    cfg = load_existing(cloud, Path(config) if config else None, stack)
    return cfg, running_host(cfg, settings())


def usage_errors_exit_2() -> None:
    """Make invoke's parse errors of task options one line, a pointer to the task's help, and exit 2."""
    from invoke.program import Program

    if getattr(Program.parse_tasks, "_gpuprov", False):
        return
    parse = Program.parse_tasks

    def parse_tasks(self: Program) -> None:
        try:
            parse(self)
        except ParseError as err:
            raise Exit(f"error: {err}\nTry 'fab --help TASK' for a task's options, 'fab --list' for the tasks.",
                       code=EXIT_USAGE) from None

    parse_tasks._gpuprov = True  # type: ignore[attr-defined]
    Program.parse_tasks = parse_tasks  # type: ignore[method-assign]
