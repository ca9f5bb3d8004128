"""The typer app every command registers on, and what commands share: options, config, output."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape

from gpuprov.infra.config import CLOUDS, ConfigError, StackConfig, load_config
from gpuprov.infra.errors import GpuprovError

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
    str | None, typer.Option("--cloud", help=f"Target: {', '.join(CLOUDS)} (overrides the config file).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML stack config (bare keys or a Pulumi.<stack>.yaml).")
]
StackOpt = Annotated[str | None, typer.Option("--stack", "-s", help="Stack name (default: dev).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def load(cloud: str | None, config: Path | None, stack: str | None, **overrides: Any) -> StackConfig:
    """The validated stack config from ``--config`` plus flags."""
    return load_config(config, {"cloud": cloud, "stack": stack, **overrides})


def progress(message: str) -> None:
    err.print(f"[dim]·[/dim] {message}")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {message}")
    raise typer.Exit(code)


def _notice(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    """A warning (a renamed config key, ...) as one line on stderr, never a traceback or source line."""
    err.print(f"[yellow]notice:[/yellow] {escape(str(message))}")


def main() -> None:
    """Console-script entry: user errors become one line on stderr and an exit code, never a traceback."""
    from gpuprov.apps import APP_PATH_ENV, use_app_path
    from gpuprov.cli import commands  # noqa: F401  (registers every command on the app)

    warnings.showwarning = _notice
    use_app_path(os.environ.get(APP_PATH_ENV))  # the app folders of your own, besides the built-ins
    try:
        code = app(standalone_mode=False)
    except ConfigError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}")
        sys.exit(e.exit_code)
    except GpuprovError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}")
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("interrupted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
