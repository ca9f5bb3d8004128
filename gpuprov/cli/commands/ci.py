"""``gpuprov ci -- CMD``: an ephemeral GPU host for one CI job, always torn down.

up -> deploy -> wait until healthy -> run CMD (on the host, or here through SSH
tunnels) -> destroy, verified. Teardown runs on success, on failure, on the time
limit, on SIGINT and on SIGTERM. Exit codes (also in ``--help`` and the README):

- CMD's own exit code when the host came up, CMD ran and teardown was verified;
- 2: a config value was refused (nothing was created);
- 90: infrastructure failed before CMD could run (up, deploy or health);
- 91: the time limit (``--timeout``) was reached;
- 92: teardown failed or the cloud still lists resources of the stack: they may
  bill; the message lists them (``gpuprov reap`` removes them);
- 130 / 143: interrupted by SIGINT / SIGTERM (after a verified teardown).
A teardown failure outranks everything else, then signals, the time limit,
infrastructure failure and CMD's own code.

Signals: during ``up`` the first SIGINT/SIGTERM waits for the cloud calls in
flight to finish (as ``pulumi up`` does on Ctrl-C), so every created resource
is recorded and then removed; anywhere else it stops the run at once. Signals
that arrive during teardown are noted and do not stop it. A ``kill -9`` cannot
be caught: the stack's CI lease, saved state and expiry tags let a re-run of the
same stack or ``gpuprov reap`` remove what it left.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path
from typing import Annotated

import typer

from gpuprov.ci.env import check_names
from gpuprov.ci.run import run_ci
from gpuprov.ci.summary import EXIT_INFRA
from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, app, err, load, progress, settings
from gpuprov.infra.stack_index import check_free_for_ci

TTL_MARGIN_H = 0.5  # the host's expiry tag: the time limit plus this, so the reaper gets a kill -9'd run's host


def _default_stack() -> str:
    """A stack name of its own for each CI run: the GitHub run when there is one."""
    run_id = os.environ.get("GITHUB_RUN_ID")
    if run_id and run_id.isdigit():
        return f"ci-{run_id}-{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"[:40]
    return f"ci-{uuid.uuid4().hex[:10]}"


OnOpt = Annotated[str, typer.Option("--on", help="Where CMD runs: 'host' (over SSH) or 'local' (here, with "
                                                 "GPUPROV_URL_<SERVICE> tunnel URLs in its environment).")]


@app.command(context_settings={"ignore_unknown_options": True})
def ci(
    cmd: Annotated[list[str], typer.Argument(help="The command to run, after --.")],
    on: OnOpt = "host",
    timeout: Annotated[float, typer.Option("--timeout", help="Minutes for the whole run, teardown excluded.")] = 60.0,
    deploy: Annotated[bool, typer.Option("--deploy/--no-deploy", help="Deploy the services and wait until healthy.")] = True,
    health_timeout: Annotated[float, typer.Option(
        "--health-timeout", help="Seconds to wait for the services to be healthy (vLLM downloads its model first).")
    ] = 1800.0,
    summary_file: Annotated[Path | None, typer.Option("--summary", help="Write the JSON summary to this file.")] = None,
    pass_env: Annotated[list[str] | None, typer.Option(
        "--pass-env", metavar="NAME", help="Give CMD (--on local) this secret variable too (repeatable); by default it "
        "gets no cloud credentials, HF_TOKEN or Pulumi secrets.")] = None,
    privileged: Annotated[bool, typer.Option(
        "--privileged", help="Run CMD (--on host) as the login user, with sudo and Docker; it can then read the "
        "host's secrets, the idle agent's cloud key included. By default CMD runs as nobody.")] = False,
    json_: JsonOpt = False,
    cloud: CloudOpt = None,
    config: ConfigOpt = None,
    stack: Annotated[str | None, typer.Option(
        "--stack", "-s", help="Stack name; a new one (never an existing stack) for this run: ci-<GITHUB_RUN_ID>-"
                              "<attempt>, else ci-<random> (default).")] = None,
) -> None:
    """Bring a GPU host up, deploy, run CMD, and always tear down (verified).

    Exit code: CMD's own; 2 config refused; 90 infrastructure failed; 91 time limit;
    92 teardown failed (resources may bill: run `gpuprov reap`); 130/143 SIGINT/SIGTERM.
    """
    if on not in ("host", "local"):
        raise typer.BadParameter("expected 'host' or 'local'", param_hint="--on")
    if not 0 < timeout <= 24 * 60:
        raise typer.BadParameter("expected minutes greater than 0 and at most 1440", param_hint="--timeout")
    try:
        passed = tuple(check_names(pass_env or ()))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pass-env") from None
    cfg = load(cloud, config, stack)
    if stack is None and cfg.stack == "dev":
        cfg = load(cloud, config, _default_stack())
    check_free_for_ci(cfg.stack, cfg.cloud, settings())
    ttl_h = timeout / 60 + TTL_MARGIN_H
    if ttl_h < cfg.max_lifetime_hours:
        cfg = load(cloud, config, cfg.stack, max_lifetime_hours=ttl_h)
    summary = run_ci(cfg, list(cmd), on=on, timeout_s=timeout * 60, deploy=deploy, restore_signals=False,
                     health_timeout_s=health_timeout, progress=progress, settings=settings(),
                     pass_env=passed, privileged=privileged)
    text = json.dumps(summary.to_json(), indent=2)
    if summary_file is not None:
        summary_file.write_text(text + "\n")
    if json_:
        print(text)
    line = (f"gpuprov ci: {summary.outcome}, exit {summary.exit_code}, teardown {summary.teardown}, "
            f"{summary.timings_s.get('total', 0):.1f}s, ~${summary.cost_usd:.4f}")
    if summary.error:
        err.print(f"[bold red]error:[/bold red] {summary.error}")
    if summary.teardown_error:
        err.print(f"[bold red]error:[/bold red] teardown failed, resources may still bill: {summary.teardown_error}")
    err.print(line)
    for kept in summary.caches_kept:  # torn down, but this bills on, on purpose: say so where the run's outcome is
        price = f"${kept['usd_month']:.2f}/month" if kept.get("usd_month") is not None else (
            f"${kept['usd_gb_month']:.2f}/GB-month" if kept.get("usd_gb_month") is not None else "price not catalogued")
        err.print(f"gpuprov ci: cache kept: {kept['name']} in {kept['region']} ({kept['cloud']}, {price}); "
                  f"`gpuprov down --purge -s {cfg.stack}` deletes it", markup=False)
    # The job is done and torn down: signals from here on must not turn the exit code into a kill
    # (Python restores the default handlers while it shuts down), so they stay pending until exit.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    raise typer.Exit(summary.exit_code if summary.exit_code is not None else EXIT_INFRA)
