"""The real idle agent on the real sandbox host: each signal alone keeps it up, silence stops the stacks,
the hard lifetime fires under activity, and on Lambda it terminates through the Lambda stand-in."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.idle_agent.sandbox_agent import sandbox_agent, user_ssh

pytestmark = pytest.mark.sandbox


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def acted(r: dict[str, Any]) -> bool:
    return r.get("decision") == "act"


def assert_kept_up(agent: Any, activity: str, seconds: float = 6.0) -> None:
    """For ``seconds`` (many idle periods of the test config) the agent saw ``activity`` and never acted."""
    agent.wait_for(lambda r: any(activity in a for a in r.get("message", "").split("; ")) and r["reason"] == "active")
    time.sleep(seconds)
    records = agent.records()
    assert not [r for r in records if acted(r)], f"acted although {activity}: {records[-3:]}"
    assert records[-1]["reason"] == "active" and activity in records[-1]["message"]


def test_silence_stops_the_compose_stacks(sandbox: Any) -> None:
    with sandbox_agent(sandbox) as agent:
        agent.compose_up()
        assert agent.running_containers()
        agent.start()
        warn = agent.wait_for(lambda r: r.get("decision") == "warn" and r["reason"] == "idle")
        assert "gpuprov-idle postpone" in warn["message"]
        done = agent.wait_for(acted)
        assert done["reason"] == "idle" and agent.project in done["result"]
        assert "signals" in done and "metrics_running" in done["signals"]  # the decision carries its signals
        assert agent.running_containers() == []  # the stack really stopped; the host stays (local)


def test_interactive_ssh_session_alone_keeps_it_up(sandbox: Any) -> None:
    with sandbox_agent(sandbox, dry_run=True) as agent, user_ssh(sandbox, "-tt"):
        agent.start()
        assert_kept_up(agent, "ssh: 1 interactive sessions")


def test_non_interactive_ssh_is_not_activity(sandbox: Any) -> None:
    # A CI job's `ssh host cmd` has no tty: on its own it must not hold a GPU box forever.
    with sandbox_agent(sandbox, dry_run=True) as agent, user_ssh(sandbox, "-T", "sleep", "60"):
        agent.start()
        assert agent.wait_for(acted)["reason"] == "idle"


def test_tunnel_connection_alone_keeps_it_up(sandbox: Any) -> None:
    with sandbox_agent(sandbox, dry_run=True) as agent:
        agent.compose_up()
        local = _free_port()
        with user_ssh(sandbox, "-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{agent.web_port}"):
            deadline = time.monotonic() + 10
            while True:  # the browser tab: one open connection through the tunnel
                try:
                    tab = socket.create_connection(("127.0.0.1", local), timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with tab:
                agent.start()
                assert_kept_up(agent, "ssh tunnel: 1 forwarded connections")


def test_vllm_requests_alone_keep_it_up(sandbox: Any) -> None:
    with sandbox_agent(sandbox, dry_run=True) as agent:
        agent.set_metrics(running=2, done=10)
        agent.compose_up()
        agent.start()
        assert_kept_up(agent, "vllm: 2 requests running")
        agent.set_metrics(running=0, done=10)  # finished, counters still: idle from now on
        assert agent.wait_for(acted)["reason"] == "idle"


def test_vllm_counters_moving_keep_it_up(sandbox: Any) -> None:
    with sandbox_agent(sandbox, dry_run=True) as agent:
        agent.compose_up()
        agent.start()
        t_end = time.monotonic() + 6
        done = 0
        while time.monotonic() < t_end:  # short requests between checks: none running when sampled
            done += 1
            agent.set_metrics(running=0, done=done)
            time.sleep(0.3)
        assert not [r for r in agent.records() if acted(r)]
        assert any("request counters moved" in r["message"] for r in agent.records())


def test_gpu_utilisation_alone_keeps_it_up(sandbox: Any, tmp_path: Path) -> None:
    # STAND-IN: the sandbox has no GPU; this nvidia-smi prints what the real one prints for
    # --query-gpu=utilization.gpu --format=csv,noheader,nounits on a busy one-GPU host.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 87\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    with sandbox_agent(sandbox, dry_run=True) as agent:
        agent.start(path_prefix=str(bin_dir))
        assert_kept_up(agent, "gpu: 87% utilised")


def test_direct_service_connection_alone_keeps_it_up(sandbox: Any) -> None:
    # A user on an allowed CIDR with Open WebUI or MONAI Label open: a connection straight to the port.
    with sandbox_agent(sandbox, dry_run=True) as agent:
        agent.compose_up()
        agent.start()
        client = agent.conn.run(
            f"python3 -c 'import socket, time; s = socket.create_connection((\"127.0.0.1\", {agent.web_port})); "
            f"time.sleep(9)'", hide=True, asynchronous=True)
        assert_kept_up(agent, "vllm: 1 connections", seconds=4)
        client.join()


def test_request_lines_in_service_logs_alone_keep_it_up(sandbox: Any) -> None:
    name = f"monai-{os.urandom(3).hex()}"
    with sandbox_agent(sandbox, dry_run=True, log_containers=[name]) as agent:
        # MONAI Label (uvicorn) answering segmentations, with its health checks in between.
        agent.run_logger(name, 'INFO:     10.0.0.9:50112 - "POST /infer/segmentation HTTP/1.1" 200 OK')
        agent.start()
        assert_kept_up(agent, f"{name}: ")


def test_health_checks_in_service_logs_are_not_activity(sandbox: Any) -> None:
    name = f"webui-{os.urandom(3).hex()}"
    with sandbox_agent(sandbox, dry_run=True, log_containers=[name]) as agent:
        agent.run_logger(name, 'INFO:     127.0.0.1:40312 - "GET /health HTTP/1.1" 200 OK')
        agent.start()
        done = agent.wait_for(acted)
        assert done["reason"] == "idle"
        assert done["signals"]["log_requests"] == {name: 0}  # the log was read; its lines were health checks


def test_postpone_holds_off_the_idle_action(sandbox: Any) -> None:
    with sandbox_agent(sandbox, dry_run=True) as agent:
        agent.conn.run(f"GPUPROV_HOST_ROOT={agent.root} python3 {agent.root}/opt/gpuprov/idle-agent/gpuprov_idle.py "
                       f"--config /etc/gpuprov/idle-agent.json postpone 0.15", hide=True)
        agent.start()
        first = agent.wait_for(lambda r: r.get("reason") == "postponed")
        assert "postponed" in first["message"]
        assert agent.wait_for(acted, timeout=30)["reason"] == "idle"  # after the 9 s postponement
        log = agent.records()
        assert log.index(first) < log.index(next(r for r in log if acted(r)))


def test_lifetime_fires_under_activity(sandbox: Any) -> None:
    with sandbox_agent(sandbox, max_lifetime_hours=6 / 3600) as agent, user_ssh(sandbox, "-tt"):
        agent.compose_up()
        agent.wait_for_signal("ssh_sessions")
        agent.relaunch_now()
        agent.start()
        done = agent.wait_for(acted)
        assert done["reason"] == "lifetime"
        assert done["signals"]["ssh_sessions"] == 1  # in use, and it acted all the same
        assert agent.running_containers() == []


def test_budget_guard_acts(sandbox: Any) -> None:
    # $36/hour = 1 cent a second; budget 12 cents: warns at 9.6 s, acts before 12 s, with the box in use.
    with sandbox_agent(sandbox, usd_hour=36.0, budget_usd=0.12, dry_run=True) as agent, user_ssh(sandbox, "-tt"):
        agent.wait_for_signal("ssh_sessions")
        agent.relaunch_now()
        agent.start()
        warn = agent.wait_for(lambda r: r.get("decision") == "warn" and r["reason"] == "budget")
        done = agent.wait_for(acted)
        assert done["reason"] == "budget" and done["spend_usd"] <= 0.12
        assert agent.records().index(warn) < agent.records().index(done)


def test_agent_terminates_a_lambda_host_through_the_standin(sandbox: Any) -> None:
    from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
    from gpuprov.testing.lambda_api import LambdaStandIn
    from tests.lambda_cloud.conftest import conformance_errors

    key = "standin-idle-key-" + os.urandom(6).hex()
    # The agent runs inside the sandbox's namespace: the stand-in listens on our end of its veth pair.
    outer = sandbox.host().address.rsplit(".", 1)
    outer_addr = f"{outer[0]}.{int(outer[1]) - 1}"
    api = LambdaStandIn(host=outer_addr, boot_seconds=0.1, terminate_seconds=0.1, api_key=key).start()
    try:
        lam = LambdaCloud(api_key=key, base_url=api.url, min_interval_s=0.0, launch_interval_s=0.0)
        lam.add_ssh_key("idle-test", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpuprovidletestkeyxxxxxxxxxxxxxxxxxxxxxxxx idle")
        instance_id = lam.launch("us-east-1", "gpu_1x_a10", "idle-test", name="gpuprov-idle-test")
        with sandbox_agent(sandbox, cloud="lambda", lambda_api_url=api.url, instance_id=instance_id) as agent:
            secret = agent.path(agent.config["secret_file"])
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"lambda_api_key": key}, fh)
            agent.start()
            done = agent.wait_for(acted)
            assert done["reason"] == "idle" and instance_id in done["result"]
            status = api.instances()[0]["status"]
            assert status in ("terminating", "terminated")
            log_text = agent.path(agent.config["log_file"]).read_text()
            assert key not in log_text
        posts = [r for r in api.requests() if r.path.endswith("instance-operations/terminate")]
        assert len(posts) == 1 and json.loads(posts[0].body) == {"instance_ids": [instance_id]}
        assert conformance_errors(posts) == []
    finally:
        api.stop()


def test_lambda_key_readable_by_others_is_refused(sandbox: Any) -> None:
    with sandbox_agent(sandbox, cloud="lambda", lambda_api_url="http://127.0.0.1:9", instance_id="abc") as agent:
        secret = agent.path(agent.config["secret_file"])
        secret.write_text(json.dumps({"lambda_api_key": "k"}))
        secret.chmod(0o644)
        agent.start()
        failed = agent.wait_for(lambda r: r.get("decision") == "act-failed")
        assert "chmod 600" in failed["error"]
