"""``deploy``, ``tunnel``, ``smoke``: make the stack's host serve, reach it, try it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, err, load, out, progress, settings
from gpuprov.infra import records
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost
from gpuprov.infra.stacks import running_host

Sam3Opt = Annotated[
    Path | None,
    typer.Option("--sam3-checkpoint", help="Your copy of the gated sam3.pt: uploaded once, built into MONAI Label."),
]
WaitOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for every service to be healthy.")]


def stack_host(cloud: str | None, config: Path | None, stack: str | None) -> tuple[StackConfig, GpuHost]:
    """The stack's config and its running host (from the stack record), or a clear error."""
    cfg = load(cloud, config, stack)
    record = records.load(cfg.stack)
    if cloud is None and config is None and record is not None and record.cloud != cfg.cloud:
        cfg = load(record.cloud, None, cfg.stack)  # `-s NAME` alone means the stack NAME is
    return cfg, running_host(cfg, settings())


@contextmanager
def live_progress() -> Iterator[Callable[[str], None]]:
    """Step lines on stderr, plus a live spinner with the elapsed time and the latest output line
    during the long waits (image pulls and builds, the model download behind the health wait)."""
    started = time.monotonic()
    with err.status("starting", spinner="dots") as status:
        def show(message: str) -> None:
            line = message.strip()
            if message.startswith("  "):  # output of a running step: only the spinner shows it
                status.update(f"[dim]{time.monotonic() - started:5.0f}s[/dim] {line[:120]}")
            else:
                progress(line)
                status.update(f"[dim]{time.monotonic() - started:5.0f}s[/dim] {line[:120]}")
        yield show


def deploy_and_check(cfg: StackConfig, host: GpuHost, *, json_out: bool = False, sam3: Path | None = None,
                     timeout_s: float = 1800.0) -> None:
    """Deploy, wait until every service is healthy through a tunnel, print the result (``up`` uses this too)."""
    from gpuprov.provisioning.deploy import deploy as run_deploy
    from gpuprov.provisioning.health import wait_healthy

    try:
        with live_progress() as show:
            result = run_deploy(cfg, host, show, sam3_checkpoint=sam3)
            show("waiting until every service answers its health check (through an SSH tunnel)")
            wait_healthy(cfg, host, timeout_s, progress=show)
    except (GpuprovError, KeyboardInterrupt):
        # Say it plainly: the host outlives a failed deploy, and may be billing.
        if host.usd_hour:
            err.print(f"[yellow]the host is still up and billing ${host.usd_hour:.2f}/h:[/yellow] fix the cause and "
                      f"run `gpuprov deploy --stack {cfg.stack}`, or remove it with `gpuprov down --stack {cfg.stack}`")
        raise
    if result.admin_credentials:
        from gpuprov.provisioning.secrets import _path as secrets_path

        err.print(f"[bold]Open WebUI admin (shown once; kept 0600 in {secrets_path(cfg.stack)}):[/bold] "
                  f"{result.admin_credentials['email']}  {result.admin_credentials['password']}")
    if json_out:
        print(json.dumps(result.to_json()))
        return
    what = ", ".join(result.changed) if result.changed else "nothing changed"
    out.print(f"[bold]{cfg.stack}[/bold]: deployed {', '.join(result.services)} ({what}) in "
              f"{result.seconds:.1f}s, {result.ssh_round_trips} SSH round trips; all healthy. "
              f"Reach them with `gpuprov tunnel --stack {cfg.stack}`")


@app.command()
def deploy(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
           sam3_checkpoint: Sam3Opt = None, timeout: WaitOpt = 1800.0) -> None:
    """Make the stack's host serve its stacks (only what differs is changed), then check their health."""
    cfg, host = stack_host(cloud, config, stack)
    deploy_and_check(cfg, host, json_out=json_, sam3=sam3_checkpoint, timeout_s=timeout)


@app.command()
def tunnel(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Forward every deployed service to http://127.0.0.1:<port> over one SSH connection, until Ctrl-C."""
    from gpuprov.provisioning.tunnel import Tunnel

    cfg, host = stack_host(cloud, config, stack)
    record = records.load(cfg.stack)
    services = (record.deployed if record else None) or None  # what deploy recorded; else what the config says
    with Tunnel(cfg, host, services=services, same_ports=True, progress=progress) as t:
        for service, url in t.urls.items():
            print(f"{service}  {url}", flush=True)
        err.print("[dim]forwarding over SSH; Ctrl-C to stop[/dim]")
        try:
            t.run_forever()
        except KeyboardInterrupt:
            err.print("tunnel closed")


@app.command()
def smoke(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Send a chat completion to vLLM and a segmentation to MONAI Label through a tunnel; check the answers."""
    from gpuprov.provisioning.smoke import smoke as run_smoke
    from gpuprov.provisioning.tunnel import Tunnel

    cfg, host = stack_host(cloud, config, stack)
    with Tunnel(cfg, host, progress=progress) as t:
        result = run_smoke(cfg, t.urls)
    if json_:
        print(json.dumps(result))
        return
    for service, answer in result.items():
        out.print(f"{service}: ok  {answer}")
