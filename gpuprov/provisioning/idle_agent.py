"""What the deploy step needs to install the idle agent on a host (issue 6).

The agent itself is a plain stdlib script in ``gpuprov/remote/idle-agent/``;
this module says which files go where, writes the JSON config it reads, keeps
the Lambda key in a separate root-only file, and says how to start it where
there is no systemd (the local sandbox).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from gpuprov.infra.config import SERVICE_PORTS, StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.paths import REMOTE_FILES
from gpuprov.provisioning.desired import COMPOSE_PROJECTS

AGENT_DIR = REMOTE_FILES / "idle-agent"
REMOTE_AGENT_DIR = "/opt/gpuprov/idle-agent"
REMOTE_CONFIG = "/etc/gpuprov/idle-agent.json"
REMOTE_SECRET = "/etc/gpuprov/idle-agent.secret.json"
GRACE_MINUTES = 5
CHECK_INTERVAL_S = 60
LAMBDA_API_URL = "https://cloud.lambda.ai"
# Containers whose request lines count as activity (names from the compose files).
LOG_CONTAINERS = {"vllm_cxr": ["open-webui"], "monai_label": ["monai_sam2"]}


def agent_files(root: str = "") -> dict[str, Path]:
    """Remote path -> local file, for every file of the agent (``gpuprov_idle.py`` and ``gpuprov-idle``
    are executables: mode 0755).

    ``root`` prefixes every remote path: the local sandbox shares this machine's
    filesystem, so its files live under the sandbox's own directory.
    """
    return {
        f"{root}{REMOTE_AGENT_DIR}/gpuprov_idle.py": AGENT_DIR / "gpuprov_idle.py",
        f"{root}/usr/local/bin/gpuprov-idle": AGENT_DIR / "gpuprov-idle",
        f"{root}/etc/systemd/system/gpuprov-idle.service": AGENT_DIR / "gpuprov-idle.service",
        f"{root}/etc/systemd/system/gpuprov-idle.timer": AGENT_DIR / "gpuprov-idle.timer",
    }


def agent_config(config: StackConfig, host: GpuHost, *, lambda_api_url: str | None = None,
                 check_interval_s: float = CHECK_INTERVAL_S, grace_minutes: float = GRACE_MINUTES,
                 root: str = "", **overrides: Any) -> dict[str, Any]:
    """The JSON the agent reads (``/etc/gpuprov/idle-agent.json``). Holds no secret.

    ``root`` prefixes the agent's own files (state, log, postpone, secret), as in
    :func:`agent_files`. ``overrides`` set any other agent key (``sshd_pid_file`` on
    the sandbox, whose PID space is this machine's).
    """
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
        "service_ports": dict(SERVICE_PORTS),
        "vllm_metrics_url": f"http://127.0.0.1:{SERVICE_PORTS['vllm']}/metrics",
        "log_containers": [c for s in config.stacks for c in LOG_CONTAINERS.get(s, [])],
        "compose_projects": [COMPOSE_PROJECTS[s] for s in config.stacks],
        "instance_id": host.instance_id,
        "secret_file": f"{root}{REMOTE_SECRET}",
        "state_file": f"{root}/var/lib/gpuprov-idle/state.json",
        "log_file": f"{root}/var/log/gpuprov-idle.jsonl",
        "postpone_file": f"{root}/run/gpuprov/postpone",
    }
    if config.cloud == "lambda":
        # The API the operator's own client uses (LAMBDA_API_URL, as in gpuprov.infra.clouds.lambda_cloud.client).
        cfg["lambda_api_url"] = lambda_api_url or os.environ.get("LAMBDA_API_URL") or LAMBDA_API_URL
    cfg.update(overrides)
    return cfg


def agent_secret(lambda_api_key: str | None) -> str | None:
    """Text of the 0600 secret file (Lambda only: terminating needs the API key); None elsewhere."""
    if not lambda_api_key:
        return None
    return json.dumps({"lambda_api_key": lambda_api_key})


def systemd_commands() -> list[str]:
    """Commands that start the agent's timer on a systemd host (idempotent)."""
    return ["systemctl daemon-reload", "systemctl enable --now gpuprov-idle.timer"]


def background_command(root: str = "", interval_s: float | None = None) -> str:
    """Shell command that starts the agent as a plain background process (hosts without systemd).

    Idempotent: does nothing while the process in ``ROOT/run/gpuprov-idle.pid`` runs.
    Stop it with ``kill $(cat ROOT/run/gpuprov-idle.pid)`` (it finishes its check and
    exits on SIGTERM).
    """
    pid_file, log_path = f"{root}/run/gpuprov-idle.pid", f"{root}/var/log/gpuprov-idle.out"
    run = ["python3", f"{root}{REMOTE_AGENT_DIR}/gpuprov_idle.py", "--config", f"{root}{REMOTE_CONFIG}", "run"]
    if interval_s is not None:
        run += ["--interval", f"{interval_s:g}"]
    q = shlex.quote
    return (f"mkdir -p {q(root + '/run')} {q(root + '/var/log')}; "
            f"if [ -f {q(pid_file)} ] && kill -0 \"$(cat {q(pid_file)})\" 2>/dev/null; then exit 0; fi; "
            f"nohup {shlex.join(run)} >>{q(log_path)} 2>&1 </dev/null & echo $! > {q(pid_file)}")
