"""``gpuprov ci``'s run: up -> deploy -> healthy -> CMD -> teardown (verified), whatever happens.

Teardown runs on success, on failure, on the time limit, on SIGINT and on SIGTERM
(:mod:`gpuprov.ci.signals` says which signal may stop what). Exit codes and their order
of precedence are :mod:`gpuprov.ci.summary`'s. A ``kill -9`` cannot be caught: the stack's
CI lease (:mod:`gpuprov.infra.lease`), its saved state and its expiry tags let a re-run of
the same stack or ``gpuprov reap`` remove what it left.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from gpuprov.ci.env import command_env
from gpuprov.ci.signals import CiSignal, CiTimeout, RunSignals
from gpuprov.ci.summary import EXIT_INFRA, EXIT_TEARDOWN, CiSummary, record, timed
from gpuprov.infra.clouds.base import Leftover
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.lease import CiLease
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import backend_for, has_local_state
from gpuprov.infra.tags import origin_as
from gpuprov.infra.teardown import teardown

Progress = Callable[[str], None]
TEARDOWN_ATTEMPTS = 3


class StackBusy(GpuprovError):
    """Another live ``gpuprov ci`` holds the stack."""

    exit_code = EXIT_INFRA


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _teardown_until_done(config: StackConfig, settings: Settings, summary: CiSummary, signals: RunSignals,
                         progress: Progress) -> None:
    signals.teardown_mode()
    start = time.monotonic()
    last: BaseException | None = None
    for attempt in range(1, TEARDOWN_ATTEMPTS + 1):
        try:
            kept = teardown(config, progress, settings)
            summary.teardown, last = "verified", None
            _say_kept(config, kept, summary, progress)
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


def _say_kept(config: StackConfig, kept: list[Leftover], summary: CiSummary, progress: Progress) -> None:
    """The cache teardown kept (``cache: true``): in the summary and said, with what it costs per month."""
    from gpuprov.infra.cache import cache_json, monthly_cost_line

    summary.caches_kept = [cache_json(item) for item in kept]
    for item in kept:
        progress(f"kept {monthly_cost_line(item)}; `gpuprov down --purge -s {config.stack}` deletes it")


SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'
CMD_UID = 65534  # nobody: owns no file on the host, is in no group, and (no_new_privs) cannot sudo
NO_SETPRIV = 126  # CMD's exit code when the host cannot drop its privileges (util-linux's setpriv missing)


def _in_own_group(cmd: list[str], group: str, privileged: bool = False) -> str:
    """CMD on the host in a session (process group) of its own whose id is kept in ``group``: what
    :func:`_stop_group` signals. CMD's exit code is the script's.

    Unless ``privileged``, CMD runs as ``nobody`` with no groups, ``no_new_privs`` and HOME=/tmp: it
    reaches the services on 127.0.0.1 and the GPU devices, but not the root-only files (the idle agent's
    cloud key, the services' secrets), the Docker socket or sudo."""
    g = shlex.quote(group)
    inner = shlex.quote(f"echo $$ > {g}; cd /tmp; exec \"$@\"")
    if privileged:
        start = f"setsid sh -c {inner} gpuprov-ci {shlex.join(cmd)} &"
    else:
        drop = (f"setpriv --reuid={CMD_UID} --regid={CMD_UID} --clear-groups --no-new-privs -- "
                f"env HOME=/tmp sh -c {inner} gpuprov-ci {shlex.join(cmd)}")
        start = (f"command -v setpriv >/dev/null 2>&1 || {{ echo 'gpuprov ci: the host has no setpriv (util-linux) "
                 f"to run CMD without privileges; install it, or pass --privileged' >&2; exit {NO_SETPRIV}; }}\n"
                 f"$SUDO setsid {drop} &")
    return f"{SUDO}{start}\nwait $!\ncode=$?\n$SUDO rm -f {g}\nexit $code\n"


def _stop_group(group: str) -> str:
    """SIGTERM to CMD's process group on the host, SIGKILL to what is left after 5 seconds."""
    g = shlex.quote(group)
    return (f"{SUDO}pg=$(cat {g} 2>/dev/null) || exit 0\n$SUDO kill -TERM -\"$pg\" 2>/dev/null\n"
            f"for _ in 1 2 3 4 5 6 7 8 9 10; do $SUDO kill -0 -\"$pg\" 2>/dev/null || break; sleep 0.5; done\n"
            f"$SUDO kill -KILL -\"$pg\" 2>/dev/null\n$SUDO rm -f {g}\n")


def _run_command(config: StackConfig, host: GpuHost, cmd: list[str], on: str, timeout_s: float,
                 pass_env: tuple[str, ...] = (), privileged: bool = False) -> int:
    """Run CMD on the host over SSH, or here with the services' tunnel URLs in the least environment
    (:mod:`gpuprov.ci.env`: no cloud, Hugging Face or Pulumi secret unless passed by name)."""
    if on == "host":
        from gpuprov.provisioning.ssh import Remote, target_for

        group = f"/tmp/gpuprov-ci-{uuid.uuid4().hex}.pgid"  # noqa: S108  a name of its own, on the host
        with Remote(target_for(config, host)) as remote:
            try:
                code, _out, stderr = remote.script(_in_own_group(cmd, group, privileged), on_line=print,
                                                     timeout_s=timeout_s)
            except BaseException:
                # Interrupted (a signal, the time limit): closing the channel would leave CMD running on
                # the host (an existing machine keeps it running), so its process group is stopped first.
                with contextlib.suppress(Exception):
                    remote.script(_stop_group(group), timeout_s=20)
                raise
        if stderr:
            sys.stderr.write(stderr)
        return code
    from gpuprov.provisioning.tunnel import Tunnel

    with Tunnel(config, host) as tunnel:
        env = {**command_env(os.environ, pass_env), "GPUPROV_HOST": host.address, "GPUPROV_STACK": config.stack}
        for service, url in tunnel.urls.items():
            env[f"GPUPROV_URL_{service.upper()}"] = url
        return _run_here(cmd, env, timeout_s)


def _run_here(cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
    """CMD on this machine; stopped (TERM, then KILL) when the run is interrupted, before the teardown."""
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


def run_ci(config: StackConfig, cmd: list[str], on: str = "host", timeout_s: float = 3600.0,
           deploy: bool = True, restore_signals: bool = True, health_timeout_s: float = 1800.0, *,
           progress: Progress, settings: Settings | None = None, pass_env: tuple[str, ...] = (),
           privileged: bool = False) -> CiSummary:
    """The whole run; teardown always happens. Returns the summary with its exit code set.

    ``restore_signals=False`` (the command line) keeps signals noted-only until the process
    exits, so a CI runner that keeps signalling cannot change the exit code after teardown.
    """
    settings = settings or Settings.from_env()
    held = CiLease.load(config.stack)
    if held is not None and not held.abandoned and not held.mine:
        # Before the try: a refused run must not tear down the stack another run is using. A lease
        # this process cannot prove dead (another machine, boot or container) counts as held.
        who = (f"a running gpuprov ci (pid {held.pid})" if held.holder.same_kernel_view() else
               f"a gpuprov ci on another machine, boot or container (pid {held.pid} there) that cannot be proven "
               "gone from here")
        raise StackBusy(f"stack '{config.stack}' is held by {who}; pick another --stack or wait for it "
                        f"(its run ends by {held.deadline})")
    from gpuprov.apps.fit import require_fit
    from gpuprov.ci import cluster

    on_cluster = cluster.is_cluster(config)
    if on_cluster:  # before anything bills: CMD's place and the run's own namespace
        config = cluster.for_run(config, on, progress)
    require_fit(config)  # before anything bills: the apps must run on the type's GPU, and fit on it
    # Imported now, not mid-run: a signal raised inside an import can come out wrapped in another error.
    import gpuprov.infra.clouds.local.sandbox  # noqa: F401
    import gpuprov.provisioning.deploy
    import gpuprov.provisioning.health
    import gpuprov.provisioning.ssh
    import gpuprov.provisioning.tunnel  # noqa: F401

    summary = CiSummary(stack=config.stack, cloud=config.cloud)
    backend = backend_for(config, progress, settings)
    signals = RunSignals(progress)
    signals.install()
    progress(f"gpuprov ci: stack '{config.stack}' on {config.cloud}, time limit {timeout_s / 60:g} min")
    start = time.monotonic()
    deadline = start + timeout_s
    lease: CiLease | None = None
    host: GpuHost | None = None
    from gpuprov.provisioning.phases import Phases

    phases = Phases(progress)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            if has_local_state(config.stack) or held is not None:
                with timed(summary, "cleanup-previous"):
                    progress(f"an earlier run of stack '{config.stack}' left resources behind; removing them first")
                    teardown(config, progress, settings)
            lease = CiLease.claim(config.stack, config.cloud, timeout_s)
            phases.begin("launch")
            with timed(summary, "up"), signals.deferred(), origin_as("ci"), phases.watching():
                host = backend.up(config)  # a backend that sees the launch accepted begins `boot` itself
            phases.end()  # `boot` goes on in the deploy, up to the SSH banner
            summary.instance_id, summary.region = host.instance_id, host.region
            summary.instance_type, summary.address, summary.usd_hour = host.instance_type, host.address, host.usd_hour
            progress(f"{config.stack}: {host.cloud} host {host.instance_id} up at {host.address}")
            if deploy and on_cluster:  # up applied the workloads: healthy is every Deployment available
                with timed(summary, "health"):
                    phases.begin("service_healthy")
                    cluster.wait_ready(config, min(health_timeout_s, _left(deadline)), progress)
                    phases.end()
            elif deploy:
                from gpuprov.provisioning.deploy import deploy as deploy_stack
                from gpuprov.provisioning.health import wait_healthy

                with timed(summary, "deploy"):
                    result = deploy_stack(config, host, progress=progress, phases=phases)
                    summary.deploy = {"changed": list(result.changed), "ssh_round_trips": result.ssh_round_trips}
                with timed(summary, "health"):
                    wait_healthy(config, host, timeout_s=min(health_timeout_s, _left(deadline)), progress=progress,
                                 phases=phases, model_cache=result.model_cache)
                    phases.end()
            with timed(summary, "command"):
                code = (cluster.run_command(config, lambda env: _run_here(cmd, env, _left(deadline)), deadline,
                                            progress, pass_env) if on_cluster
                        else _run_command(config, host, cmd, on, _left(deadline), pass_env, privileged))
            summary.command_exit_code = code
            summary.outcome = "passed" if code == 0 else "command-failed"
            if code != 0:
                where = "the cluster's workloads were" if on_cluster else "the host was"
                summary.error = f"the command exited {code} ({where} fine; its exit code is passed on)"
            summary.exit_code = code
            signals.teardown_mode()  # still inside the try: from here on a signal can only be noted
        except BaseException as exc:  # recorded in the summary and the exit code, then teardown
            signals.teardown_mode()
            record(summary, exc)
    except BaseException as exc:  # a signal that arrived while the first one was being recorded
        if summary.exit_code is None:
            record(summary, exc)
    finally:
        phases.end()  # a failed phase counts until the failure, not through the teardown
        _teardown_until_done(config, settings, summary, signals, progress)
        if restore_signals:
            signals.restore()
        if summary.teardown == "verified" and lease is not None:
            lease.release()
        elif summary.teardown == "verified":
            stale = CiLease.load(config.stack)
            if stale is not None and stale.abandoned:
                stale.release()
    summary.phases_s = phases.to_json()
    total = time.monotonic() - start
    summary.timings_s["total"] = round(total, 3)
    if host is not None:
        summary.cost_usd = round(host.usd_hour * total / 3600, 4)
    if summary.teardown != "verified":
        summary.outcome, summary.exit_code = "teardown-failed", EXIT_TEARDOWN
    summary.finished_at = utcnow().isoformat()
    return summary
