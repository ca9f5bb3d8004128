"""The agent's signal parsers on the real output formats, and what provisioning hands the deploy step."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from types import ModuleType

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.idle_agent import (
    agent_config,
    agent_files,
    agent_secret,
    background_command,
    idle_action_secret,
)

# Text as `ss -Htnp state established` prints it: one user's browser tab through an SSH tunnel to Open
# WebUI (sshd's end and the service's end of the same loopback link), one direct MONAI Label client,
# and the user's own SSH connection.
SS = """\
0      0          127.0.0.1:51522       127.0.0.1:3000  users:(("sshd",pid=2211,fd=11))
0      0          127.0.0.1:3000        127.0.0.1:51522 users:(("docker-proxy",pid=1780,fd=7))
0      0          10.0.0.5:8002         203.0.113.9:60114 users:(("docker-proxy",pid=1790,fd=7))
0      36         10.0.0.5:22           203.0.113.9:50022 users:(("sshd",pid=2211,fd=4),("sshd",pid=2150,fd=4))
"""
PORTS = {"vllm": 8000, "open_webui": 3000, "monai_label": 8002}


def test_ss_tells_tunnels_from_direct_clients(agent: ModuleType) -> None:
    direct, tunnels = agent.parse_ss(SS, PORTS)
    assert tunnels == 1
    assert direct == {"vllm": 0, "open_webui": 0, "monai_label": 1}


def test_ss_on_a_real_loopback_connection(agent: ModuleType) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            conn, _ = server.accept()
            with conn:
                out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True,
                                     check=True).stdout
    direct, tunnels = agent.parse_ss(out, {"svc": port})
    assert direct["svc"] == 1 and tunnels == 0


def test_vllm_metrics(agent: ModuleType) -> None:
    from gpuprov.apps import registry

    vllm = registry().service("vllm")[1].metrics
    assert vllm is not None
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n'
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 40.0\n'
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0\n'
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 1000.0\n'
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
    )
    names = {"running": vllm.running, "waiting": vllm.waiting, "counters": vllm.counters}
    assert agent.parse_metrics(text, names) == (3.0, 1.0, 1042.0)


def test_nvidia_smi_highest_gpu(agent: ModuleType) -> None:
    assert agent.parse_nvidia_smi("3\n91\n") == 91.0
    assert agent.parse_nvidia_smi("") is None


def test_log_requests_leave_health_checks_out(agent: ModuleType) -> None:
    logs = (
        'INFO:     127.0.0.1:40312 - "GET /health HTTP/1.1" 200 OK\n'
        'INFO:     172.18.0.1:50112 - "POST /infer/segmentation?image=x HTTP/1.1" 200 OK\n'
        'INFO:     172.18.0.1:50112 - "GET /api/v1/chats/?page=1 HTTP/1.1" 200 OK\n'
        "Loading model weights took 5.2 GB\n"
    )
    assert agent.count_log_requests(logs, ["/health", "/info/"]) == 2


def test_postpone_file(agent: ModuleType, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "postpone"
    assert agent.read_postpone(str(f)) is None
    f.write_text("")  # `touch`: 60 minutes from the touch
    assert abs(agent.read_postpone(str(f)) - (os.stat(f).st_mtime + 3600)) < 1
    f.write_text("1900000000\n")
    assert agent.read_postpone(str(f)) == 1900000000.0


def test_agent_config_holds_no_secret_and_the_key_goes_apart(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("LAMBDA_API_URL", raising=False)
    monkeypatch.setenv("GPUPROV_LAMBDA_AGENT_API_KEY", "secret-agent-key")  # an agent key: the agent can terminate
    host = GpuHost(cloud="lambda", address="198.51.100.7", ssh_user="ubuntu", instance_id="0920582c7ff041399e34823a0be62549",
                   usd_hour=0.75)
    cfg = agent_config(StackConfig(cloud="lambda", idle_minutes=20, max_lifetime_hours=6, budget_usd=40), host)
    assert (cfg["cloud"], cfg["idle_minutes"], cfg["max_lifetime_hours"], cfg["budget_usd"]) == ("lambda", 20, 6, 40)
    assert cfg["instance_id"] == host.instance_id
    assert cfg["action"]["url"] == "https://cloud.lambda.ai/api/v1/instance-operations/terminate"
    assert cfg["action"]["body"] == {"instance_ids": [host.instance_id]} and cfg["action"]["secret"] == "lambda_api_key"
    assert cfg["compose_projects"] == ["gpuprov-vllm-cxr", "gpuprov-monai-label"]
    monkeypatch.setenv("LAMBDA_API_KEY", "secret-lambda-key")  # the operator's: never what the host gets
    secret = agent_secret(idle_action_secret(StackConfig(cloud="lambda")))
    assert secret is not None and json.loads(secret) == {"lambda_api_key": "secret-agent-key"}
    assert "secret-agent-key" not in json.dumps(cfg) and "secret-lambda-key" not in json.dumps(cfg)
    assert agent_secret(idle_action_secret(StackConfig(cloud="aws"))) is None


def test_agent_files_exist_and_the_script_is_stdlib_only() -> None:
    files = agent_files()
    assert all(p.exists() for p in files.values())
    script = files["/opt/gpuprov/idle-agent/gpuprov_idle.py"]
    # Runs on a bare host: the system python3 with no environment of ours must load it.
    done = subprocess.run(["/usr/bin/python3", "-S", "-c", f"import runpy; runpy.run_path({str(script)!r})"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert files["/usr/local/bin/gpuprov-idle"].stat().st_mode & stat.S_IXUSR


def test_background_command_is_idempotent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cmd = background_command(root=str(tmp_path))
    assert "/proc/" in cmd and f"{tmp_path}/run/gpuprov-idle.pid" in cmd and "nohup" in cmd  # the pid must BE the agent


def test_a_reboot_starts_the_idle_clock_afresh(agent: ModuleType, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # An AWS VM stopped for idleness and started again must be watched again, not left "already acted".
    cfg = {**agent.DEFAULTS, "state_file": str(tmp_path / "state.json"), "launched_at": "2026-11-23T08:00:00+00:00"}
    old = agent.State(launched_at=1.0, last_active=100.0, acted="idle", acted_at=200.0, idle_warned_at=150.0)
    agent.save_state(cfg, old, 200.0)
    same_boot, last = agent.load_state(cfg, 300.0)
    assert same_boot.acted == "idle" and last == 200.0
    raw = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**raw, "boot_id": "another-boot"}))
    rebooted, last = agent.load_state(cfg, 300.0)
    assert rebooted.acted is None and rebooted.last_active == 300.0 and last is None
    assert rebooted.launched_at == agent._iso_epoch(cfg["launched_at"])  # lifetime still counts from launch
