"""``deploy``, ``tunnel``, ``smoke``: make the stack's host serve, reach it, try it."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, err, load_existing, out, progress, settings
from gpuprov.cli.commands.kube import WakeTimeoutOpt
from gpuprov.infra import records
from gpuprov.infra.config import ConfigError, StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost
from gpuprov.infra.stacks import running_host
from gpuprov.provisioning.phases import Phases

BuildInputOpt = Annotated[
    list[str] | None,
    typer.Option("--build-input", metavar="NAME=PATH",
                 help="A file an app's source build takes (`gpuprov apps` lists them, e.g. sam3.pt=./sam3.pt): "
                      "uploaded once, root-only, built into the image. Repeatable."),
]
Sam3Opt = Annotated[Path | None, typer.Option("--sam3-checkpoint", hidden=True, help="Old name of --build-input sam3.pt=PATH.")]
WaitOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for every service to be healthy.")]


def stack_host(cloud: str | None, config: Path | None, stack: str | None) -> tuple[StackConfig, GpuHost]:
    """The stack's config and its running host (from the stack's outputs), or a clear error."""
    cfg = load_existing(cloud, config, stack)  # `-s NAME` alone means the stack NAME is, wherever it lives
    return cfg, running_host(cfg, settings())


@contextmanager
def live_progress(phases: Phases | None = None, cfg: StackConfig | None = None,
                  host: GpuHost | None = None) -> Iterator[Callable[[str], None]]:
    """Step lines on stderr; on a terminal also the phases live (:mod:`gpuprov.cli.phase_display`: a row per
    phase, bytes for image layers and for the model download as it lands on the host), or without
    ``phases`` a spinner with the elapsed time and the latest output line. Off a terminal the running
    step's output lines are not shown: step and phase lines only (CI logs)."""
    if not (err.is_terminal and sys.stderr.isatty()):  # FORCE_COLOR (a CI setting) makes rich think it is one
        def plain(message: str) -> None:
            if not message.startswith("  "):
                progress(message.strip())
        yield plain
        return
    if phases is not None:
        from gpuprov.cli.phase_display import PhaseDisplay

        # The display (and its measuring thread) stops before the stack closes the measuring connection.
        with contextlib.ExitStack() as stack, PhaseDisplay(err, phases) as display:
            if cfg is not None and host is not None and (measure := model_bytes(cfg, host, stack)) is not None:
                display.poll_bytes(measure)

            def rows(message: str) -> None:
                if message.startswith("  "):  # output of a running step: its row shows it (and its bytes)
                    display.line(message.strip().split(": ", 1)[-1])
                else:
                    progress(message.strip())
            yield rows
        return
    started = time.monotonic()
    with err.status("starting", spinner="dots") as status:
        def show(message: str) -> None:
            line = message.strip()
            if not message.startswith("  "):  # output of a running step: only the spinner shows it
                progress(line)
            status.update(f"[dim]{time.monotonic() - started:5.0f}s[/dim] {line[:120]}")
        yield show


def model_bytes(cfg: StackConfig, host: GpuHost, stack: contextlib.ExitStack) -> Callable[[], int | None] | None:
    """What the stack's model servers hold in their model directories on the host (bytes), measured over a
    connection of its own (closed with ``stack``); None when no app of the stack downloads a model."""
    from shlex import quote

    from gpuprov.apps import registry
    from gpuprov.provisioning.ssh import Remote, target_for

    dirs = [(a.service(s).container, a.model_dir) for a in registry().selected(cfg.apps) if a.model_dir
            for s in a.model_services]
    if not dirs:
        return None
    script = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n' + "".join(
        f"$SUDO docker exec {quote(c)} du -sk {quote(d)} 2>/dev/null | cut -f1\n" for c, d in dirs)
    lock, opened = threading.Lock(), list[Remote]()

    def measure() -> int | None:
        with lock:  # connected at the first measure (the model phase): the deploy has pinned the host key by then
            if not opened:
                opened.append(stack.enter_context(Remote(target_for(cfg, host))))
            _code, text, _err = opened[0].script(script, timeout_s=30)
        held = [int(n) * 1024 for n in text.split() if n.isdigit()]
        return sum(held) if held else None
    return measure


def build_inputs(given: list[str] | None, sam3: Path | None = None) -> dict[str, Path]:
    """``--build-input NAME=PATH`` values as {name: path} (and the old ``--sam3-checkpoint``, with a notice)."""
    out: dict[str, Path] = {}
    for item in given or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError("--build-input", item, "expected NAME=PATH, such as sam3.pt=./sam3.pt")
        out[name] = Path(path).expanduser()
    if sam3 is not None:
        err.print("[yellow]notice:[/yellow] --sam3-checkpoint is now --build-input sam3.pt=PATH")
        out.setdefault("sam3.pt", sam3)
    return out


def deploy_and_check(cfg: StackConfig, host: GpuHost, *, json_out: bool = False,
                     inputs: dict[str, Path] | None = None, timeout_s: float = 1800.0,
                     phases: Phases | None = None) -> None:
    """Deploy, wait until every service is healthy through a tunnel, print the result (``up`` uses this too).
    ``phases``: the seconds per phase so far (``up``'s launch); the deploy's are added to it."""
    from gpuprov.provisioning.deploy import deploy as run_deploy
    from gpuprov.provisioning.health import wait_healthy

    phases = phases if phases is not None else Phases(progress)
    try:
        with live_progress(phases, cfg, host) as show:
            result = run_deploy(cfg, host, show, build_inputs=inputs, phases=phases)
            show("waiting until every service answers its health check (through an SSH tunnel)")
            wait_healthy(cfg, host, timeout_s, progress=show, phases=phases, model_cache=result.model_cache)
            phases.end()
    except (GpuprovError, KeyboardInterrupt):
        # Say it plainly: the host outlives a failed deploy, and may be billing.
        billing = f" and billing ${host.usd_hour:.2f}/h" if host.usd_hour else ""
        err.print(f"[yellow]the host is still up{billing}:[/yellow] fix the cause and "
                  f"run `gpuprov deploy --stack {cfg.stack}`, or remove it with `gpuprov down --stack {cfg.stack}`")
        raise
    for login in result.credentials:
        # On a terminal only (a real one: FORCE_COLOR makes rich think so): stderr is what CI logs keep.
        if sys.stderr.isatty():
            err.print(f"[bold]{escape(login.label)} (shown once; kept 0600 in {escape(login.kept_in)}):[/bold] "
                      f"{escape('  '.join(login.values))}")
        else:
            err.print(f"{escape(login.label)} generated (kept 0600 in {escape(login.kept_in)}); not printed, as this "
                      f"is not a terminal: `gpuprov secrets show --stack {cfg.stack}` prints it")
    if json_out:
        print(json.dumps(result.to_json() | {"phases_s": phases.to_json()}))
        return
    err.print(f"where the time went: {phases.line()}", markup=False)
    what = ", ".join(result.changed) if result.changed else "nothing changed"
    out.print(f"[bold]{cfg.stack}[/bold]: deployed {', '.join(result.services)} ({what}) in "
              f"{result.seconds:.1f}s, {result.ssh_round_trips} SSH round trips; all healthy. "
              f"Reach them with `gpuprov tunnel --stack {cfg.stack}`")


@app.command()
def deploy(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
           build_input: BuildInputOpt = None, sam3_checkpoint: Sam3Opt = None, timeout: WaitOpt = 1800.0) -> None:
    """Make the stack's host serve its apps (only what differs is changed), then check their health."""
    inputs = build_inputs(build_input, sam3_checkpoint)
    cfg, host = stack_host(cloud, config, stack)
    host = follow_egress(cfg, host)
    deploy_and_check(cfg, host, json_out=json_, inputs=inputs, timeout_s=timeout)


def follow_egress(cfg: StackConfig, host: GpuHost) -> GpuHost:
    """When the stack's SSH rule was made for this machine's egress address and that address has changed,
    move the rule first (the stack's program, as `up` runs it), so the deploy's SSH gets in."""
    from gpuprov.cli.commands.stack import open_ssh_from_egress
    from gpuprov.infra.clouds import driver_for
    from gpuprov.infra.egress import changed

    rec = records.load(cfg.stack)
    if rec is None or not rec.ssh_from_egress or changed(rec.ssh_from, cfg, settings()) is None:
        return host
    return driver_for(cfg.cloud, settings()).backend(progress).up(open_ssh_from_egress(cfg))


PortOpt = Annotated[list[str] | None, typer.Option(
    "--port", metavar="SERVICE=PORT", help="The local port of one service (e.g. monai_label=18002); repeatable. "
                                           "Default: each service's own port when free, else any free port.")]


def local_ports(given: list[str] | None) -> dict[str, int]:
    """``--port SERVICE=PORT`` values as {service: port}."""
    ports: dict[str, int] = {}
    for item in given or []:
        name, sep, port = item.partition("=")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise typer.BadParameter(f"{item!r}: expected SERVICE=PORT, such as monai_label=18002", param_hint="--port")
        ports[name] = int(port)
    return ports


def auth_hint(stack: str, services: list[str]) -> str | None:
    """How to authenticate to a tunnelled vLLM, without the key itself: where it is kept."""
    if "vllm" not in services:
        return None
    from gpuprov.apps import registry
    from gpuprov.provisioning.secrets import secrets_path

    app = registry().service("vllm")[0].name
    where = secrets_path(stack)
    return (f"vllm's /v1 API wants `Authorization: Bearer <key>`; the key (vllm_api_key) is kept 0600 in "
            f"{where}: KEY=$(jq -r '.apps.{app}.vllm_api_key' {where})")


@app.command()
def tunnel(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None, port: PortOpt = None,
           wake_timeout: WakeTimeoutOpt = 1800.0) -> None:
    """Forward every deployed service to http://127.0.0.1:<port> over one SSH connection (on a Kubernetes
    stack: the Kubernetes API's port-forward), until Ctrl-C."""
    from gpuprov.cli.commands.kube import cluster_tunnel, is_cluster
    from gpuprov.provisioning.tunnel import Tunnel

    ports = local_ports(port)
    existing = load_existing(cloud, config, stack)
    if is_cluster(existing):  # a cluster's services: through the Kubernetes API's port-forward, not SSH
        cluster_tunnel(existing, ports, wake_timeout)
        return
    cfg, host = existing, running_host(existing, settings())
    record = records.load(cfg.stack)
    services = (record.deployed if record else None) or None  # what deploy recorded; else what the config says
    with Tunnel(cfg, host, services=services, same_ports=True, progress=progress, local_ports=ports) as t:
        hold_tunnel(cfg.stack, t, ports, "over SSH")


def hold_tunnel(stack: str, tunnel: Any, ports: dict[str, int], how: str) -> None:
    """An open tunnel as ``gpuprov tunnel`` shows it (a line per service on stdout, the key hint), held until Ctrl-C."""
    unknown = sorted(set(ports) - set(tunnel.urls))
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: not a tunnelled service ({', '.join(tunnel.urls)})",
                                 param_hint="--port")
    for service, url in tunnel.urls.items():
        print(f"{service}  {url}", flush=True)
    hint = auth_hint(stack, list(tunnel.urls))
    if hint:
        err.print(hint, markup=False)
    err.print(f"[dim]forwarding {how}; Ctrl-C to stop[/dim]")
    try:
        tunnel.run_forever()
    except KeyboardInterrupt:
        err.print("tunnel closed")


@app.command()
def smoke(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Send each deployed app's smoke requests through a tunnel (a chat completion to vLLM, a segmentation to
    MONAI Label); check the answers."""
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
