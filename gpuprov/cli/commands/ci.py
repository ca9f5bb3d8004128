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

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, err, load, progress
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.reaper import has_local_state
from gpuprov.infra.stacks import StackBackend, backend_for
from gpuprov.infra.teardown import teardown

EXIT_INFRA = 90
EXIT_TIMEOUT = 91
EXIT_TEARDOWN = 92
TTL_MARGIN_H = 0.5  # the host's expiry tag: the time limit plus this, so the reaper gets a kill -9'd run's host
TEARDOWN_ATTEMPTS = 3


class CiSignal(BaseException):  # noqa: N818  (BaseException: library `except Exception` must not swallow it)
    """SIGINT or SIGTERM arrived while the run could stop."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received")


class CiTimeout(BaseException):  # noqa: N818
    """The run's time limit passed."""


class StackBusy(GpuprovError):
    """Another live ``gpuprov ci`` holds the stack."""

    exit_code = EXIT_INFRA


class _Signals:
    """SIGINT/SIGTERM/SIGALRM while a run is in flight: raise at once, defer (up), or note only (teardown)."""

    def __init__(self) -> None:
        self.mode = "raise"
        self.pending: list[BaseException] = []
        self.noted: list[str] = []
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            self._old[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._old.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        exc: BaseException = CiTimeout() if signum == signal.SIGALRM else CiSignal(signum)
        name = "time limit" if signum == signal.SIGALRM else signal.Signals(signum).name
        if self.mode == "raise":
            # One exception only: whatever comes after it is teardown, which no later signal may cut short.
            self.teardown_mode()
            raise exc
        if self.mode == "defer":
            self.pending.append(exc)
            progress(f"{name}: waiting for the cloud calls in flight to finish, then tearing down")
            return
        self.noted.append(name)
        progress(f"{name} during teardown: teardown goes on (a kill -9 now leaves resources for `gpuprov reap`)")

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.mode = "defer"
        try:
            yield
        except BaseException as err:
            self.teardown_mode()
            if self.pending:  # the cloud code stopped because of the signal (a launch cancels itself)
                raise self.pending.pop(0) from err
            raise
        if self.pending:
            self.teardown_mode()
            raise self.pending.pop(0)
        self.mode = "raise"

    def teardown_mode(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.mode = "teardown"


@dataclass
class CiSummary:
    """What one ``gpuprov ci`` run did, for CI logs (``--json`` / ``--summary FILE``). Holds no secret."""

    stack: str
    cloud: str
    outcome: str = "running"  # passed | command-failed | infra-failed | timeout | interrupted | teardown-failed
    exit_code: int | None = None
    command_exit_code: int | None = None
    phase: str = "start"
    error: str | None = None
    instance_id: str | None = None
    region: str | None = None
    instance_type: str | None = None
    address: str | None = None
    usd_hour: float = 0.0
    cost_usd: float = 0.0
    teardown: str = "not-run"  # verified | failed
    teardown_error: str | None = None
    signals_during_teardown: list[str] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _timed(summary: CiSummary, phase: str) -> Iterator[None]:
    summary.phase = phase
    start = time.monotonic()
    try:
        yield
    finally:
        summary.timings_s[phase] = round(time.monotonic() - start, 3)


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _teardown_until_done(config: StackConfig, backend: StackBackend, summary: CiSummary, signals: _Signals) -> None:
    signals.teardown_mode()
    start = time.monotonic()
    last: BaseException | None = None
    for attempt in range(1, TEARDOWN_ATTEMPTS + 1):
        try:
            teardown(config, backend, progress)
            summary.teardown, last = "verified", None
            break
        except CiSignal:  # only in the instant before teardown_mode took effect
            continue
        except Exception as exc:  # noqa: BLE001  reported below and in the exit code; never swallowed
            last = exc
            progress(f"teardown attempt {attempt}/{TEARDOWN_ATTEMPTS} failed: {exc}")
            time.sleep(min(5.0, 0.5 * attempt))
    if last is not None:
        summary.teardown, summary.teardown_error = "failed", f"{type(last).__name__}: {last}"
    summary.timings_s["teardown"] = round(time.monotonic() - start, 3)
    summary.signals_during_teardown = list(signals.noted)


def _run_command(config: StackConfig, host: GpuHost, cmd: list[str], on: str, timeout_s: float) -> int:
    """Run CMD on the host over SSH, or here with the services' tunnel URLs in the environment."""
    if on == "host":
        from gpuprov.provisioning.ssh import Remote, target_for

        with Remote(target_for(config, host)) as remote:
            code, _out, stderr = remote.script(shlex.join(cmd) + "\n", on_line=print, timeout_s=timeout_s)
        if stderr:
            sys.stderr.write(stderr)
        return code
    from gpuprov.provisioning.tunnel import Tunnel

    with Tunnel(config, host) as tunnel:
        env = {**os.environ, "GPUPROV_HOST": host.address, "GPUPROV_STACK": config.stack}
        for service, url in tunnel.urls.items():
            env[f"GPUPROV_URL_{service.upper()}"] = url
        proc = subprocess.Popen(cmd, env=env)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CiTimeout() from None
        finally:
            if proc.poll() is None:  # interrupted: the command goes too, before the host does
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


STANDIN_SANDBOX_ENV = "GPUPROV_STANDIN_SANDBOX"


def deploy_target(config: StackConfig, host: GpuHost) -> tuple[StackConfig, GpuHost]:
    """Where deploy, health checks and CMD go: the host itself, except behind the STAND-IN seam.

    ``GPUPROV_STANDIN_SANDBOX=<name>`` is for the fault suite and tests only: the cloud is the
    Lambda API stand-in, whose instances report the local sandbox host ``<name>``'s address
    as their IP. That box is reached as the sandbox it is (its user, key, host key, stand-in
    images), while up and teardown still go through the real providers against the stand-in.
    """
    name = os.environ.get(STANDIN_SANDBOX_ENV)
    if not name or host.cloud == "local":
        return config, host
    from gpuprov.infra.local.sandbox import LocalSandbox

    box = LocalSandbox(name).host()
    if box is None or box.address != host.address:
        raise GpuprovError(f"{STANDIN_SANDBOX_ENV}={name}: no running local sandbox at {host.address}; "
                           "unset it outside the fault suite")
    return config.model_copy(update={"stack": name, "cloud": "local"}), box


def _signal_in_chain(exc: BaseException) -> BaseException:
    """The CiSignal/CiTimeout behind ``exc`` when library code wrapped it (e.g. a RuntimeError from Python
    itself when the signal landed inside a class definition), else ``exc``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, CiSignal | CiTimeout):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return exc


def _record(summary: CiSummary, exc: BaseException) -> None:
    exc = _signal_in_chain(exc)
    if isinstance(exc, CiSignal):
        summary.outcome, summary.error = "interrupted", f"{signal.Signals(exc.signum).name} during {summary.phase}"
        if exc.__cause__ is not None:
            summary.error += f" ({exc.__cause__})"
        summary.exit_code = 128 + exc.signum
    elif isinstance(exc, CiTimeout):
        summary.outcome, summary.error = "timeout", f"time limit reached during {summary.phase}"
        summary.exit_code = EXIT_TIMEOUT
    elif isinstance(exc, GpuprovError):
        summary.outcome, summary.error = "infra-failed", f"{summary.phase} failed: {exc}"
        summary.exit_code = EXIT_INFRA
    else:
        summary.outcome = "infra-failed"
        summary.error = f"{summary.phase} failed unexpectedly: {type(exc).__name__}: {exc}"
        summary.exit_code = EXIT_INFRA


def run_ci(config: StackConfig, cmd: list[str], on: str = "host", timeout_s: float = 3600.0,
           deploy: bool = True, restore_signals: bool = True, health_timeout_s: float = 1800.0) -> CiSummary:
    """The whole run; teardown always happens. Returns the summary with its exit code set.

    ``restore_signals=False`` (the command line) keeps signals noted-only until the process
    exits, so a CI runner that keeps signalling cannot change the exit code after teardown.
    """
    from gpuprov.infra.reaper import CiLease

    held = CiLease.load(config.stack)
    if held is not None and held.alive and held.pid != os.getpid():
        # Before the try: a refused run must not tear down the stack another run is using.
        raise StackBusy(f"stack '{config.stack}' is held by a running gpuprov ci (pid {held.pid}); "
                        "pick another --stack or wait for it")
    # Imported now, not mid-run: a signal raised inside an import can come out wrapped in another error.
    import gpuprov.infra.local.sandbox  # noqa: F401
    import gpuprov.provisioning.deploy
    import gpuprov.provisioning.health
    import gpuprov.provisioning.ssh
    import gpuprov.provisioning.tunnel  # noqa: F401

    summary = CiSummary(stack=config.stack, cloud=config.cloud)
    backend = backend_for(config, progress)
    signals = _Signals()
    signals.install()
    progress(f"gpuprov ci: stack '{config.stack}' on {config.cloud}, time limit {timeout_s / 60:g} min")
    start = time.monotonic()
    deadline = start + timeout_s
    lease: CiLease | None = None
    host: GpuHost | None = None
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            if has_local_state(config.stack) or held is not None:
                with _timed(summary, "cleanup-previous"):
                    progress(f"an earlier run of stack '{config.stack}' left resources behind; removing them first")
                    teardown(config, backend, progress)
            lease = CiLease.claim(config.stack, config.cloud, timeout_s)
            with _timed(summary, "up"), signals.deferred():
                host = backend.up(config)
            summary.instance_id, summary.region = host.instance_id, host.region
            summary.instance_type, summary.address, summary.usd_hour = host.instance_type, host.address, host.usd_hour
            progress(f"{config.stack}: {host.cloud} host {host.instance_id} up at {host.address}")
            box_config, box = deploy_target(config, host)
            if deploy:
                from gpuprov.provisioning.deploy import deploy as deploy_stack
                from gpuprov.provisioning.health import wait_healthy

                with _timed(summary, "deploy"):
                    result = deploy_stack(box_config, box, progress=progress)
                    summary.deploy = {"changed": list(result.changed), "ssh_round_trips": result.ssh_round_trips}
                with _timed(summary, "health"):
                    wait_healthy(box_config, box, timeout_s=min(health_timeout_s, _left(deadline)), progress=progress)
            with _timed(summary, "command"):
                code = _run_command(box_config, box, cmd, on, _left(deadline))
            summary.command_exit_code = code
            summary.outcome = "passed" if code == 0 else "command-failed"
            if code != 0:
                summary.error = f"the command exited {code} (the host was fine; its exit code is passed on)"
            summary.exit_code = code
            signals.teardown_mode()  # still inside the try: from here on a signal can only be noted
        except BaseException as exc:  # recorded in the summary and the exit code, then teardown
            signals.teardown_mode()
            _record(summary, exc)
    except BaseException as exc:  # a signal that arrived while the first one was being recorded
        if summary.exit_code is None:
            _record(summary, exc)
    finally:
        _teardown_until_done(config, backend, summary, signals)
        if restore_signals:
            signals.restore()
        if summary.teardown == "verified" and lease is not None:
            lease.release()
        elif summary.teardown == "verified":
            stale = CiLease.load(config.stack)
            if stale is not None and not stale.alive:
                stale.release()
    total = time.monotonic() - start
    summary.timings_s["total"] = round(total, 3)
    if host is not None:
        summary.cost_usd = round(host.usd_hour * total / 3600, 4)
    if summary.teardown != "verified":
        summary.outcome, summary.exit_code = "teardown-failed", EXIT_TEARDOWN
    summary.finished_at = utcnow().isoformat()
    return summary


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
    json_: JsonOpt = False,
    cloud: CloudOpt = None,
    config: ConfigOpt = None,
    stack: StackOpt = None,
) -> None:
    """Bring a GPU host up, deploy, run CMD, and always tear down (verified).

    Exit code: CMD's own; 2 config refused; 90 infrastructure failed; 91 time limit;
    92 teardown failed (resources may bill: run `gpuprov reap`); 130/143 SIGINT/SIGTERM.
    """
    if on not in ("host", "local"):
        raise typer.BadParameter("expected 'host' or 'local'", param_hint="--on")
    if not 0 < timeout <= 24 * 60:
        raise typer.BadParameter("expected minutes greater than 0 and at most 1440", param_hint="--timeout")
    cfg = load(cloud, config, stack)
    if stack is None and cfg.stack == "dev":
        cfg = load(cloud, config, _default_stack())
    ttl_h = timeout / 60 + TTL_MARGIN_H
    if ttl_h < cfg.max_lifetime_hours:
        cfg = load(cloud, config, cfg.stack, max_lifetime_hours=ttl_h)
    summary = run_ci(cfg, list(cmd), on=on, timeout_s=timeout * 60, deploy=deploy, restore_signals=False,
                     health_timeout_s=health_timeout)
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
    # The job is done and torn down: signals from here on must not turn the exit code into a kill
    # (Python restores the default handlers while it shuts down), so they stay pending until exit.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    raise typer.Exit(summary.exit_code if summary.exit_code is not None else EXIT_INFRA)
