"""What the deploy step needs to install the idle agent on a host.

The agent itself is a plain stdlib script in ``gpuprov/remote/idle-agent/``; this module says
which files go where (logical host paths), writes the JSON config it reads (what counts as
activity comes from the apps' descriptors; what to do when idle comes from the cloud, as data),
keeps the action's credential in a separate root-only file, and says how to start it where
there is no systemd (the local sandbox).
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path
from typing import Any

from gpuprov.apps import registry
from gpuprov.infra.clouds import driver_for
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.paths import REMOTE_FILES
from gpuprov.provisioning.desired import RemoteFile
from gpuprov.provisioning.hostpaths import HOST_ROOT
from gpuprov.provisioning.steps import Action

AGENT_DIR = REMOTE_FILES / "idle-agent"
REMOTE_AGENT_DIR = "/opt/gpuprov/idle-agent"
REMOTE_CONFIG = "/etc/gpuprov/idle-agent.json"
REMOTE_SECRET = "/etc/gpuprov/idle-agent.secret.json"
GRACE_MINUTES = 5
CHECK_INTERVAL_S = 60
LOG_IGNORE = ("/health", "/metrics")  # request paths that are health checks whatever the app


def agent_files(root: str = "") -> dict[str, Path]:
    """Remote path -> local file, for every file of the agent (``gpuprov_idle.py`` and ``gpuprov-idle``
    are executables: mode 0755). ``root`` prefixes every remote path (tests copy them by hand)."""
    return {
        f"{root}{REMOTE_AGENT_DIR}/gpuprov_idle.py": AGENT_DIR / "gpuprov_idle.py",
        f"{root}/usr/local/bin/gpuprov-idle": AGENT_DIR / "gpuprov-idle",
        f"{root}/etc/systemd/system/gpuprov-idle.service": AGENT_DIR / "gpuprov-idle.service",
        f"{root}/etc/systemd/system/gpuprov-idle.timer": AGENT_DIR / "gpuprov-idle.timer",
    }


def idle_action(config: StackConfig, host: GpuHost) -> dict[str, Any]:
    """What the agent does when the host is idle (or past its lifetime or budget): what stops the bill
    there, as the stack's cloud driver says. The agent branches on ``kind`` only: ``poweroff``,
    ``stop-apps`` or ``http`` (a request whose bearer token is the ``secret`` entry of the root-only
    secret file, see :func:`idle_action_secret`)."""
    return driver_for(config.cloud).idle_action(config, host).to_agent()


def idle_action_secret(config: StackConfig) -> dict[str, str]:
    """The credential the cloud's idle action needs on the host, from the operator's side ({} when none)."""
    return driver_for(config.cloud).idle_credentials(config)


class AgentCannotAct(UserWarning):
    """The deploy left the idle agent unable to stop the bill (Lambda without an agent key)."""

    loud = True


def warn_if_powerless(config: StackConfig) -> str | None:
    """Warn once, loudly, when the host's idle agent cannot stop the bill; returns what protects it instead."""
    protection = driver_for(config.cloud).idle_protection(config)
    if protection:
        warnings.warn(AgentCannotAct(f"the idle agent cannot stop this host's bill: {protection}"), stacklevel=2)
    return protection


def agent_config(config: StackConfig, host: GpuHost, *, action: dict[str, Any] | None = None,
                 check_interval_s: float = CHECK_INTERVAL_S, grace_minutes: float = GRACE_MINUTES,
                 **overrides: Any) -> dict[str, Any]:
    """The JSON the agent reads (``/etc/gpuprov/idle-agent.json``). Holds no secret; its paths are
    logical (the agent prefixes ``GPUPROV_HOST_ROOT`` itself). ``overrides`` set any other agent key."""
    apps = registry().selected(config.apps)
    services = [s for a in apps for s in a.services]
    cfg: dict[str, Any] = {
        "cloud": config.cloud,
        "stack": config.stack,
        "idle_minutes": config.idle_minutes,
        "grace_minutes": min(grace_minutes, config.idle_minutes / 2),
        "check_interval_s": check_interval_s,
        "max_lifetime_hours": config.max_lifetime_hours,
        "budget_usd": config.budget_usd,
        "usd_hour": host.usd_hour,
        "launched_at": host.launched_at.isoformat() if host.launched_at else None,
        "service_ports": {s.name: s.port for s in services},
        "metrics": [{"service": s.name, "url": f"http://127.0.0.1:{s.port}{s.metrics.path}",
                     "running": list(s.metrics.running), "waiting": list(s.metrics.waiting),
                     "counters": list(s.metrics.counters)} for s in services if s.metrics],
        "log_containers": [s.container for s in services if s.log_activity],
        "log_ignore": list(dict.fromkeys([*LOG_IGNORE, *(p for s in services for p in s.log_ignore)])),
        "compose_projects": [a.project for a in apps],
        "instance_id": host.instance_id,
        "action": action if action is not None else idle_action(config, host),
        "secret_file": REMOTE_SECRET,
        "state_file": "/var/lib/gpuprov-idle/state.json",
        "log_file": "/var/log/gpuprov-idle.jsonl",
        "postpone_file": "/run/gpuprov/postpone",
    }
    cfg.update(overrides)
    return cfg


def agent_secret(values: dict[str, str]) -> str | None:
    """Text of the 0600 secret file (the idle action's credential); None when the action needs none."""
    return json.dumps(values) if values else None


def systemd_commands() -> list[str]:
    """Commands that start the agent's timer on a systemd host (idempotent)."""
    return ["systemctl daemon-reload", "systemctl enable --now gpuprov-idle.timer"]


def agent_in_pid_file(pid_file: str) -> str:
    """Shell test: the process named in ``pid_file`` (a host path, quoted) runs and IS the idle agent.

    A pid alone is not enough: pids are reused (32768 by default on Linux, wrapped within hours on a
    busy host), so a stale file may name any process, which must neither be killed nor count as the agent."""
    return (f'[ -f {pid_file} ] && _p="$(cat {pid_file})" && [ -n "$_p" ] && '
            f'tr "\\0" " " <"/proc/$_p/cmdline" 2>/dev/null | grep -q gpuprov_idle.py')


def background_command(root: str | None = None, interval_s: float | None = None) -> str:
    """Shell command that starts the agent as a plain background process (hosts without systemd).

    Idempotent: does nothing while the process in ``ROOT/run/gpuprov-idle.pid`` runs. ``root``: the
    host root (default: the host's own ``GPUPROV_HOST_ROOT``, evaluated there). Stop it with
    ``kill $(cat ROOT/run/gpuprov-idle.pid)`` (it finishes its check and exits on SIGTERM).
    """
    r = HOST_ROOT if root is None else shlex.quote(root)
    run = ["python3", f"{r}{shlex.quote(REMOTE_AGENT_DIR + '/gpuprov_idle.py')}", "--config", shlex.quote(REMOTE_CONFIG),
           "run"] + (["--interval", f"{interval_s:g}"] if interval_s is not None else [])
    pid_file, log_path = f"{r}/run/gpuprov-idle.pid", f"{r}/var/log/gpuprov-idle.out"
    env = "" if root is None else f"GPUPROV_HOST_ROOT={r} "
    return (f"mkdir -p {r}/run {r}/var/log; "
            f"if {agent_in_pid_file(pid_file)}; then exit 0; fi; "
            f"{env}nohup {' '.join(run)} >>{log_path} 2>&1 </dev/null & echo $! > {pid_file}")


def install(config: StackConfig, host: GpuHost) -> tuple[list[RemoteFile], Action]:
    """The agent's files (logical paths) and the step that starts it: its systemd timer where the host
    has systemd, else a background process."""
    files = [RemoteFile(remote, Path(local).read_bytes(), 0o644 if remote.endswith((".service", ".timer")) else 0o755)
             for remote, local in agent_files().items()]
    files.append(RemoteFile(REMOTE_CONFIG, json.dumps(agent_config(config, host), indent=2, sort_keys=True).encode(),
                            0o600))
    secret = agent_secret(idle_action_secret(config))
    if secret:
        files.append(RemoteFile(REMOTE_SECRET, secret.encode(), 0o600))
    systemd = " && ".join(f"$SUDO {c}" for c in systemd_commands())
    start = (f'if [ -d {HOST_ROOT}/run/systemd/system ]; then {systemd}; '
             f"else $SUDO sh -c {shlex.quote(background_command())}; fi")
    return files, Action("idle_agent", start, ["idle_agent"])
