"""``secrets show``: the logins gpuprov generated for a stack, again (``deploy`` shows them once, on a terminal);
``secrets rotate``: fresh values for generated secrets, deployed at once."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from gpuprov.apps import registry
from gpuprov.cli.app import CloudOpt, ConfigOpt, StackOpt, app, err, fail, load, out

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


@secrets_app.command("rotate")
def rotate(names: Annotated[list[str], typer.Argument(help="Secrets to replace, e.g. vllm_api_key.")],
           cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Replace generated secrets (vLLM's API key...) with fresh ones and deploy them: what reads them
    (vLLM, and Open WebUI, which calls it) restarts with the new value; the old one stops working."""
    from gpuprov.cli.commands.deploy import deploy_and_check, stack_host
    from gpuprov.provisioning.secrets import rotate as rotate_secrets

    cfg, host = stack_host(cloud, config, stack)
    rotated = rotate_secrets(cfg, registry().selected(cfg.apps), names)
    err.print(f"· new value for {', '.join(rotated)}; deploying it")
    deploy_and_check(cfg, host)
