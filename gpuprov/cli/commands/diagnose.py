"""``doctor``, ``ssh``, ``logs``: look into a running stack's host."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from typing import Annotated

import typer
from rich.markup import escape

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, err, out
from gpuprov.cli.commands.deploy import stack_host
from gpuprov.infra.config import ConfigError, StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost

EXIT_FINDINGS = 1


class SshMissing(GpuprovError):
    exit_code = 3


@app.command()
def doctor(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
           min_free_gb: Annotated[float, typer.Option("--min-free-gb", min=0,
                                                      help="Less free disk than this (GB) is a finding.")] = 5.0,
           disk_budget_gb: Annotated[float | None, typer.Option(
               "--disk-budget-gb", min=0, help="What gpuprov's files and Docker may hold (GB); more is a finding.")] = None,
           ) -> None:
    """Check the stack's host (one SSH round trip): GPU, containers, ports, disk, logs, idle agent, expiry.
    Exit 0 when healthy, 1 with findings (each with the fix to run)."""
    from gpuprov.provisioning.doctor import diagnose

    cfg, host = stack_host(cloud, config, stack)
    report = diagnose(cfg, host, min_free_gb=min_free_gb, disk_budget_gb=disk_budget_gb)
    if json_:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        for note in report.notes:
            out.print(f"[dim]·[/dim] {escape(note)}")
        for f in report.findings:
            out.print(f"[bold red]✗[/bold red] [bold]{escape(f.check)}[/bold] {escape(f.subject)}: {escape(f.problem)}")
            out.print(f"    fix: {escape(f.fix)}")
        if report.healthy:
            out.print(f"[bold]{cfg.stack}[/bold]: healthy")
        else:
            out.print(f"[bold]{cfg.stack}[/bold]: {len(report.findings)} finding(s)")
    if not report.healthy:
        raise typer.Exit(EXIT_FINDINGS)


def ssh_entry(cfg: StackConfig, host: GpuHost, consent: bool | None) -> None:
    """Write the stack's ``Host gpuprov-<stack>`` entry (gpuprov's own file); include that file from
    ~/.ssh/config only with consent: ``consent`` True (``--ssh-config``), or a yes at the prompt on a terminal."""
    from gpuprov.provisioning import ssh_config

    path = ssh_config.write_entry(cfg, host)
    if ssh_config.is_included():
        err.print(f"`ssh {ssh_config.alias(cfg.stack)}` reaches the host (pinned key, {escape(str(path))})")
        return
    if consent is None and sys.stdin.isatty() and sys.stderr.isatty():
        consent = typer.confirm(f"Add `{ssh_config.include_line()}` to {ssh_config.user_config()}, so that "
                                f"`ssh {ssh_config.alias(cfg.stack)}` works?", default=False, err=True)
    if consent:
        ssh_config.add_include()
        err.print(f"added `{escape(ssh_config.include_line())}` to {escape(str(ssh_config.user_config()))}: "
                  f"`ssh {ssh_config.alias(cfg.stack)}` reaches the host")
    else:
        err.print(f"[dim]`gpuprov ssh --stack {cfg.stack}` opens a shell; for plain `ssh {ssh_config.alias(cfg.stack)}` "
                  f"add `{escape(ssh_config.include_line())}` to {escape(str(ssh_config.user_config()))} "
                  f"(or run `gpuprov up --ssh-config`)[/dim]")


@app.command(context_settings={"allow_interspersed_args": False})
def ssh(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
        command: Annotated[list[str] | None, typer.Argument(
            metavar="[-- CMD...]", help="Run CMD (its words as they are, each quoted for the host's shell) instead "
                                        "of a shell; the exit code is CMD's.")] = None,
        ) -> None:
    """Open a shell on the stack's host, or run a command, with the pinned host key and the stack's key."""
    from gpuprov.provisioning import ssh_config
    from gpuprov.provisioning.ssh import Remote, target_for, wait_for_ssh

    binary = shutil.which("ssh")
    if binary is None:
        raise SshMissing("the OpenSSH client (ssh) is not installed here; install it (apt install openssh-client)")
    cfg, host = stack_host(cloud, config, stack)
    path = ssh_config.write_entry(cfg, host)
    if not ssh_config.is_pinned(cfg.stack, host):  # first contact: pin the host key as every gpuprov connection does
        wait_for_ssh(host, 120)
        with Remote(target_for(cfg, host)):
            pass
    argv = [binary, "-F", str(path), ssh_config.alias(cfg.stack)]
    if command:
        argv += ["--", " ".join(shlex.quote(word) for word in command)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, argv)


ServiceOpt = Annotated[str | None, typer.Option("--service", help="Only this service's log (or idle-agent).")]


@app.command()
def logs(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None, service: ServiceOpt = None,
         since: Annotated[str | None, typer.Option("--since", help="From then on: 30s, 10m, 2h, 1d or a UTC time "
                                                                   "(2026-05-01T12:00).")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing new lines until Ctrl-C.")] = False,
         tail: Annotated[int, typer.Option("--tail", min=1, max=100000, help="At most this many lines per log.")] = 200,
         ) -> None:
    """Every service's log and the idle agent's decisions (JSON), merged in time, over one SSH connection."""
    from gpuprov.provisioning.stack_logs import follow_logs, parse_since, show_logs, sources

    try:
        when = parse_since(since) if since else None
    except ConfigError:
        raise typer.BadParameter(f"{since!r}: expected a duration such as 30s, 10m, 2h, 1d, or a UTC time such as "
                                 "2026-05-01T12:00", param_hint="--since") from None
    cfg, host = stack_host(cloud, config, stack)
    sources(cfg, service)  # an unknown --service fails before any connection

    def show(line: str) -> None:
        print(line, flush=True)

    if follow:
        try:
            follow_logs(cfg, host, show, service=service, since=when, tail=min(tail, 20) if since is None else tail)
        except KeyboardInterrupt:
            err.print("stopped")
        return
    if show_logs(cfg, host, show, service=service, since=when, tail=tail) == 0:
        err.print("no log lines" + (f" since {since}" if since else ""))
