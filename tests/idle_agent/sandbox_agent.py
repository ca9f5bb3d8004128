"""Drive the real idle agent on the real local sandbox host: files, config, start, log, stop.

The agent runs as the plain background process :func:`gpuprov.provisioning.idle_agent.background_command`
starts, over SSH (Fabric), so it lives in the sandbox's network namespace and sees
that host's sockets, sshd and Docker engine. Check intervals are a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fabric import Config, Connection

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.provisioning.idle_agent import REMOTE_CONFIG, agent_config, agent_files, background_command, idle_action

IMAGE = "gpuprov-idle-test:busybox"  # FROM scratch + busybox: no registry is reachable here
VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="monai-reasoning-cxr-3b"}} {running}
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="monai-reasoning-cxr-3b"}} 0.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="stop",model_name="monai-reasoning-cxr-3b"}} {done}
vllm:request_success_total{{engine="0",finished_reason="length",model_name="monai-reasoning-cxr-3b"}} 0.0
"""


def docker_env(box: Any) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": f"unix://{box.docker_socket}", "DOCKER_CONFIG": str(box.dir / "docker-config")}


def ensure_image(box: Any) -> None:
    """Build the busybox image in the sandbox's engine (idempotent, under a second)."""
    env = docker_env(box)
    if subprocess.run(["docker", "image", "inspect", IMAGE], env=env, capture_output=True).returncode == 0:
        return
    ctx = box.dir / "idle-image"
    ctx.mkdir(exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n')
    subprocess.run(["docker", "build", "-q", "-t", IMAGE, str(ctx)], env={**env, "DOCKER_BUILDKIT": "0"},
                   check=True, capture_output=True, timeout=120)


class SandboxAgent:
    """One agent installation on the sandbox, under its own host root directory (its GPUPROV_HOST_ROOT)."""

    def __init__(self, box: Any, cloud: str = "local", lambda_api_url: str = "http://127.0.0.1:9", **agent_overrides: Any):
        self.box = box
        self.host = box.host()
        self.root = str(box.dir / "idle" / uuid.uuid4().hex[:8])
        self.web_port = 18000 + int(uuid.uuid4().int % 1000)  # stand-in service port of this test alone
        self.project = f"idle-{uuid.uuid4().hex[:6]}"
        self.loggers: list[str] = []
        self.docroot = Path(self.root) / "www"
        self.docroot.mkdir(parents=True)
        self.set_metrics(running=0, done=0)
        cfg = StackConfig(stack="idletest", cloud=cloud)
        vllm = registry().service("vllm")[1].metrics  # the metric names the vLLM app declares
        assert vllm is not None
        settings: dict[str, Any] = {
            "idle_minutes": 0.06, "service_ports": {"vllm": self.web_port},
            "metrics": [{"service": "vllm", "url": f"http://127.0.0.1:{self.web_port}/metrics",
                         "running": list(vllm.running), "waiting": list(vllm.waiting), "counters": list(vllm.counters)}],
            "log_containers": [], "compose_projects": [self.project], "sshd_pid_file": str(box.dir / "sshd.pid"),
            "wall": False,  # the sandbox shares this machine's terminals: no broadcasts from tests
        }
        # The cloud's idle action, pointed at the test's Lambda API (LAMBDA_API_URL, as the operator's client).
        instance = agent_overrides.get("instance_id", self.host.instance_id)
        # An agent key in the operator's environment: the action is the API terminate (the key file is the test's).
        with _env("LAMBDA_API_URL", lambda_api_url), _env("GPUPROV_LAMBDA_AGENT_API_KEY", "agent-key"):
            action = idle_action(cfg, self.host.model_copy(update={"instance_id": instance}))
        self.config = agent_config(cfg, self.host, action=action, grace_minutes=0.02, check_interval_s=0.5,
                                   **{**settings, **agent_overrides})
        for remote, local in agent_files(self.root).items():
            Path(remote).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(local, remote)
        Path(f"{self.root}/etc/gpuprov").mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.conn = Connection(
            self.host.address, user=self.host.ssh_user, port=self.host.ssh_port,
            config=Config(overrides={"run": {"in_stream": False}, "load_ssh_configs": False}),
            connect_kwargs={"key_filename": str(box.client_key), "look_for_keys": False, "allow_agent": False},
        )

    # --- the stand-in service: busybox httpd on the host network, serving vLLM-shaped /metrics ---

    def set_metrics(self, running: float, done: float) -> None:
        (self.docroot / "metrics").write_text(VLLM_METRICS.format(running=running, done=done))

    def compose_up(self) -> None:
        ensure_image(self.box)
        compose = Path(self.root) / "compose.yaml"
        compose.write_text(
            "services:\n  web:\n"
            f"    image: {IMAGE}\n    pull_policy: never\n    network_mode: host\n"
            f"    command: [httpd, -f, -p, '127.0.0.1:{self.web_port}', -h, /www]\n"
            f"    volumes: ['{self.docroot}:/www:ro']\n"
        )
        subprocess.run(["docker", "compose", "-p", self.project, "-f", str(compose), "up", "-d"],
                       env=docker_env(self.box), check=True, capture_output=True, timeout=120)

    def running_containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
                             env=docker_env(self.box), check=True, capture_output=True, text=True)
        return out.stdout.split()

    def run_logger(self, name: str, line: str, every_s: float = 0.3) -> None:
        """A container that writes ``line`` to its log every ``every_s`` (a service answering requests)."""
        ensure_image(self.box)
        self.loggers.append(name)
        script = f"while true; do echo '{line}'; sleep {every_s}; done"
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host", IMAGE, "sh", "-c", script],
                       env=docker_env(self.box), check=True, capture_output=True, timeout=60)

    def compose_down(self) -> None:
        for name in self.loggers:
            subprocess.run(["docker", "rm", "-f", name], env=docker_env(self.box), capture_output=True, timeout=60)
        subprocess.run(["docker", "compose", "-p", self.project, "down", "-t", "1"], env=docker_env(self.box),
                       capture_output=True, timeout=120)

    # --- the agent ---------------------------------------------------------------------------

    def path(self, logical: str) -> Path:
        """Where one of the agent's logical paths lives on this machine."""
        return Path(self.root + logical)

    def write_config(self) -> None:
        self.path(REMOTE_CONFIG).write_text(json.dumps(self.config))

    def relaunch_now(self) -> None:
        """Count lifetime and spend from now (the shared sandbox was launched earlier in the session)."""
        self.config["launched_at"] = datetime.now(timezone.utc).isoformat()
        self.write_config()

    def wait_for_signal(self, name: str, timeout: float = 15.0) -> None:
        """Wait until one check (run once, by hand) sees ``name``: the user's session is really there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.conn.run(f"GPUPROV_HOST_ROOT={self.root} python3 -c 'import sys, json; "
                                f"sys.path.insert(0, \"{self.root}/opt/gpuprov/idle-agent\"); "
                                f"import gpuprov_idle as g; c = g.load_config(\"{REMOTE_CONFIG}\"); "
                                f"print(json.dumps(g.collect(c, None)[0].__dict__))'", hide=True).stdout
            if json.loads(out)[name]:
                return
            time.sleep(0.2)
        raise AssertionError(f"the agent never saw {name}")

    def start(self, path_prefix: str | None = None) -> None:
        cmd = background_command(self.root, interval_s=0.5)
        if path_prefix:
            cmd = f"export PATH={path_prefix}:$PATH; {cmd}"
        self.conn.run(cmd, hide=True)

    def stop(self) -> None:
        pid_file = Path(f"{self.root}/run/gpuprov-idle.pid")
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                    break
                time.sleep(0.1)
            pid_file.unlink()

    def records(self) -> list[dict[str, Any]]:
        path = self.path(self.config["log_file"])
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((r for r in self.records() if pred(r)), None)
            if hit:
                return hit
            time.sleep(0.2)
        raise AssertionError(f"no matching agent decision within {timeout}s; log: {self.records()[-5:]}")

    def close(self) -> None:
        self.stop()
        self.conn.close()
        self.compose_down()


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextmanager
def sandbox_agent(box: Any, cloud: str = "local", **overrides: Any) -> Iterator[SandboxAgent]:
    agent = SandboxAgent(box, cloud, **overrides)
    try:
        yield agent
    finally:
        agent.close()


@contextmanager
def user_ssh(box: Any, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A user's own OpenSSH client to the sandbox (interactive session, tunnel), stopped by PID."""
    host = box.host()
    cmd = ["ssh", "-i", str(box.client_key), "-p", str(host.ssh_port), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
           *args, f"{host.ssh_user}@{host.address}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
