"""``gpuprov sandbox lambda-api``: run the Lambda Cloud API stand-in, to try the Lambda flow with no account."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from gpuprov.cli.app import err, progress, sandbox_app
from gpuprov.infra.stack_index import STANDIN_SANDBOX

SANDBOX_NAME = STANDIN_SANDBOX  # the sandbox host the stand-in's instances are, under the state root


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@sandbox_app.command("lambda-api")
def lambda_api(
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    with_sandbox: Annotated[bool, typer.Option(
        "--sandbox/--no-sandbox",
        help="Make every instance a local sandbox host (root, Docker): launch, deploy and terminate are real.")] = False,
    instance_ip: Annotated[str, typer.Option(
        "--instance-ip", help="Address instances report once active, without --sandbox.")] = "127.0.0.1",
    boot_seconds: Annotated[float, typer.Option("--boot-seconds", help="Seconds an instance stays booting.")] = 5.0,
    terminate_seconds: Annotated[float, typer.Option(
        "--terminate-seconds", help="Seconds an instance stays terminating.")] = 2.0,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="GPUPROV_STANDIN_API_KEY",
        help="The only key accepted (default: any); prefer the env var, a flag shows in ps.")] = None,
) -> None:
    """Serve a STAND-IN of the Lambda Cloud API (not Lambda: state in memory, nothing bills).

    Point gpuprov at it with LAMBDA_API_URL=http://HOST:PORT, any LAMBDA_API_KEY, and GPUPROV_PULUMI=mock
    (the program on Pulumi's mock runtime, since the Pulumi CLI is optional). Faults are injected with
    POST /_standin/faults (see gpuprov/testing/lambda_api.py).
    """
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox
    from gpuprov.testing.lambda_api import CLOSED_GLOBAL_RULES, LambdaStandIn

    box = None
    if with_sandbox:
        box = LocalSandbox(SANDBOX_NAME, progress=progress, login_user="ubuntu")
        box.create()
    try:
        standin = LambdaStandIn(port, host=host, instance_ip=instance_ip, boot_seconds=boot_seconds,
                                terminate_seconds=terminate_seconds, api_key=api_key, box=box)
        standin.start()
        # An account prepared for gpuprov: its global ruleset no longer opens SSH to everyone (README, Lambda).
        standin.set_global_rules(list(CLOSED_GLOBAL_RULES))
        err.print(f"Lambda API stand-in listening on {standin.url} (Ctrl-C stops it)")
        err.print(f"  export LAMBDA_API_URL={standin.url} LAMBDA_API_KEY=standin-key GPUPROV_PULUMI=mock")
        if box is None:
            err.print("  instances are addresses only (no --sandbox): use `gpuprov up --cloud lambda --no-deploy`")
        print(standin.url, flush=True)  # first stdout line: the URL, for scripts that start it with --port 0
        # SIGTERM (how the fault suite stops it) ends it as cleanly as Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            err.print("stopping the stand-in")
        finally:
            standin.stop()
    finally:
        if box is not None:
            from gpuprov.infra.keys import forget_keypair

            box.destroy()
            forget_keypair(SANDBOX_NAME)  # the box's own login key: nothing is left of it
