"""The typer app every command registers on, and what commands share: options, config, settings, output.

Failures reach the user as one line on stderr with a documented exit code, never a
traceback: gpuprov's own errors (:class:`GpuprovError`, each with its ``exit_code``),
usage errors (2, with the command's usage line), Ctrl-C (130), and as a last resort
anything unexpected (70, with the full report written to a 0600 file under the state root).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from gpuprov.infra.config import CLOUDS, StackConfig, load_config, or_list
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.settings import Settings

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug in gpuprov; the report says where the details are

app = typer.Typer(
    name="gpuprov",
    help="Get a GPU host serving medical-imaging AI, safely and cheaply, and get rid of it again.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sandbox_app = typer.Typer(help="Stand-ins that let you try gpuprov with no cloud account.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

# Results go to stdout (so --json pipes cleanly); progress and errors to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

CloudOpt = Annotated[
    str | None, typer.Option("--cloud", help=f"Target: {or_list(CLOUDS)} (overrides the config file).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML stack config (bare keys or a Pulumi.<stack>.yaml).")
]
StackOpt = Annotated[str | None, typer.Option("--stack", "-s", help="Stack name (default: dev, or the config's `stack:`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@cache
def settings() -> Settings:
    """This run's settings, read once from the environment (the command line is an edge)."""
    return Settings.from_env()


def load(cloud: str | None, config: Path | None, stack: str | None, **overrides: Any) -> StackConfig:
    """The validated stack config from ``--config`` plus flags."""
    return load_config(config, {"cloud": cloud, "stack": stack, **overrides})


def load_existing(cloud: str | None, config: Path | None, stack: str | None) -> StackConfig:
    """The config of a stack that exists (:mod:`gpuprov.infra.stack_index`), on the cloud it lives on.

    A stack named by ``--stack`` alone is reached where it lives; flags or a config file that name
    another cloud are refused, and so is a name (typed or the default) no stack has.
    """
    from gpuprov.infra.stack_index import UNKNOWN_CLOUD, StackElsewhere, known_stacks, require
    from gpuprov.infra.stacks import stack_cloud

    cfg = load(cloud, config, stack)
    where = require(cfg.stack, known_stacks(settings()), defaulted="stack" not in cfg.model_fields_set)
    if where == UNKNOWN_CLOUD:  # a stack only its Pulumi backend knows (a colleague's): its outputs say where
        where = stack_cloud(cfg, settings()) or cfg.cloud
    if where != cfg.cloud and "cloud" in cfg.model_fields_set:
        raise StackElsewhere(cfg.stack, where, cfg.cloud)
    if config is not None:
        return cfg if where == cfg.cloud else load(where, config, cfg.stack)
    from gpuprov.infra.clouds import driver_class

    # A stack named by `--stack` alone: what its config needs of the record (an existing machine's host, key),
    # and the apps its last deploy deployed (not the defaults: a smoke test of apps that are not there fails).
    recorded = driver_class(where)(settings()).recorded_config(cfg.stack) if where != cfg.cloud else {}
    return load(where, None, cfg.stack, **recorded, **_deployed_apps(cfg.stack))


def _deployed_apps(stack: str) -> dict[str, Any]:
    """``{"apps": (...)}``: the apps of the services this machine's record says were deployed; {} when none."""
    from gpuprov.apps import registry
    from gpuprov.infra import records

    rec = records.load(stack)
    if rec is None or not rec.deployed:
        return {}
    try:
        return {"apps": tuple(dict.fromkeys(registry().service(name)[0].name for name in rec.deployed))}
    except GpuprovError:  # a service of an app folder this run does not load: the config's apps stand
        return {}


def cache_hosts_from_backend(stack: str | None = None) -> None:
    """Bring this machine's records (a cache) up to date with the stacks' backends, for commands that list
    stacks (status, cost): a colleague's stack, or one made by `pulumi up`, has no record here until its
    host is read from its outputs. ``stack``: that stack only (refused when no one knows it). A stack
    with no host (not up yet, or a CI run's in flight) stays without a record."""
    from gpuprov.infra import records
    from gpuprov.infra.clouds import driver_for
    from gpuprov.infra.stack_index import known_stacks, require

    known = known_stacks(settings())
    if stack is not None:
        require(stack, known)
    recorded = {rec.stack for rec in records.all_records()}
    for name in [stack] if stack else sorted(known):
        if name in recorded:
            continue
        try:
            cfg = load_existing(None, None, name)
            driver_for(cfg.cloud, settings()).backend(progress).running_host(cfg)  # caches the record
        except GpuprovError:
            continue


def table(*headers: str, whole: tuple[str, ...] = ()) -> Any:
    """A rich table for narrow terminals (80 columns): the ``whole`` columns (addresses, instance types)
    are not wrapped (the others wrap between words first to make room), and nothing is cut to an ellipsis."""
    from rich import box
    from rich.table import Column, Table

    return Table(*(Column(h, overflow="fold", no_wrap=h in whole) for h in headers), box=box.SIMPLE_HEAD, collapse_padding=True)


def print_table(grid: Any) -> None:
    """Print ``grid`` on stdout, each column at least as wide as its longest word (so words wrap whole)."""
    for column in grid.columns:
        words = [w for cell in [column.header, *column.cells] for w in str(cell).split()]
        column.min_width = min(max((len(w) for w in words), default=1), 24)
    out.print(grid)


def progress(message: str) -> None:
    err.print(f"[dim]·[/dim] {message}")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {message}")
    raise typer.Exit(code)


def _error_line(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False)


def _notice(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    """A warning (a renamed config key, ...) as one line on stderr, never a traceback or source line;
    a category with ``loud = True`` (money at stake) says ``warning:`` in bold."""
    label = "[bold yellow]warning:[/bold yellow]" if getattr(category, "loud", False) else "[yellow]notice:[/yellow]"
    err.print(f"{label} {escape(str(message))}")


def _context_for(command: Any, args: list[str]) -> Any:
    """The click context of the (sub)command ``args`` name, made without parsing its options: for the
    usage line of an error click raised without one (a missing option value)."""
    import contextlib

    try:
        cmd = typer.main.get_command(command) if isinstance(command, typer.Typer) else command
        ctx = cmd.make_context("gpuprov", [], resilient_parsing=True)
        for word in args:
            sub = getattr(ctx.command, "commands", {}).get(word)
            if sub is None:
                if not word.startswith("-"):
                    break
                continue
            ctx = sub.make_context(word, [], parent=ctx, resilient_parsing=True)
        return ctx
    except Exception:  # noqa: BLE001  only the usage line is lost
        with contextlib.suppress(Exception):
            return None
    return None


def _usage_error(exc: Exception, command: Any = None, args: list[str] | None = None) -> int:
    """A usage error from whichever click typer runs on: one line, then the command's usage (on stderr)."""
    import contextlib

    ctx = getattr(exc, "ctx", None)
    if ctx is None and command is not None:
        ctx = _context_for(command, sys.argv[1:] if args is None else args)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        with contextlib.redirect_stdout(sys.stderr):  # typer's rich help prints itself
            text = ctx.get_help()
        if text:
            err.print(text, markup=False, highlight=False)  # a bare group: its help is the answer
        return EXIT_USAGE
    _error_line(message)
    if ctx is not None:
        err.print(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.", markup=False, highlight=False)
    return int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)


def _is_click_error(exc: BaseException) -> bool:
    """Click's usage errors, whether typer brought its own copy of click or uses the installed one."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and hasattr(exc, "exit_code")


def _is_click_abort(exc: BaseException) -> bool:
    return any(cls.__name__ == "Abort" and cls.__module__.endswith("exceptions") for cls in type(exc).__mro__)


def _internal_error(exc: BaseException) -> int:
    """Last resort: one line, and the full report in a private file for a bug report."""
    from datetime import datetime, timezone

    from gpuprov.infra.paths import state_root

    try:
        logs = state_root() / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        report = logs / f"error-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.log"
        report.touch(mode=0o600)
        report.write_text(f"gpuprov {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        where = f"the full report is in {report}"
    except OSError as write_err:
        where = f"the report could not be written ({write_err})"
    _error_line(f"gpuprov failed unexpectedly ({type(exc).__name__}: {exc}); {where}. This is a bug: please "
                "report it with that file")
    return EXIT_INTERNAL


def run(command: Any, args: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run a typer/click ``command`` and turn every failure into one line and an exit code."""
    try:
        code = command(args=args, prog_name=prog_name, standalone_mode=False)
    except GpuprovError as exc:
        _error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001  the last resort: classified below, never a traceback
        if _is_click_abort(exc):
            err.print("interrupted")
            return EXIT_INTERRUPTED
        if _is_click_error(exc):
            return _usage_error(exc, command, args)
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):
            return int(exc.exit_code)
        return _internal_error(exc)
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console-script entry."""
    from gpuprov.apps import APP_PATH_ENV, use_app_path
    from gpuprov.cli import commands  # noqa: F401  (registers every command on the app)

    warnings.showwarning = _notice
    use_app_path(os.environ.get(APP_PATH_ENV))  # the app folders of your own, besides the built-ins
    sys.exit(run(app))
