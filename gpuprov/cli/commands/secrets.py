"""``secrets show``: the logins gpuprov generated for a stack, again (``deploy`` shows them once, on a terminal)."""

from __future__ import annotations

import typer
from rich.markup import escape

from gpuprov.apps import registry
from gpuprov.cli.app import CloudOpt, ConfigOpt, StackOpt, app, fail, load, out

secrets_app = typer.Typer(help="The stack's generated logins (kept 0600 on this machine).", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("show")
def show(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Print the stack's generated logins (the Open WebUI admin...) on stdout."""
    from gpuprov.provisioning.deploy import stored_logins

    cfg = load(cloud, config, stack)
    logins = stored_logins(cfg, registry().selected(cfg.apps))
    if not logins:
        fail(f"stack '{cfg.stack}' has no generated login yet; run `gpuprov deploy --stack "
             f"{cfg.stack}` (it makes them)")
    for login in logins:
        out.print(f"{escape(login.label)} ({escape(login.service)}): {escape('  '.join(login.values))}")
