"""``gpuprov doctor``'s judging half, as data: what the host's script printed in, findings out.
(The gathering half runs on the sandbox in test_diagnose_sandbox.py.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from gpuprov.infra.config import load_config
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.doctor import MARK, docker_size, findings, listeners, parse
from gpuprov.provisioning.stack_logs import format_line, parse_since

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
STARTED = "2026-05-01T10:00:00.123456789Z"
AGENT_CFG = {"idle_minutes": 30, "check_interval_s": 60, "action": {"kind": "stop-apps"}}


def decision(**kw: object) -> str:
    return json.dumps({"time": "2026-05-01T11:59:30+00:00", "decision": "none", "reason": "idle",
                       "message": "no activity for 3 min", "idle_minutes": 3.0, "spend_usd": 0.0, **kw})


def healthy() -> dict[str, list[str]]:
    """A healthy sandbox as the script reports it: every container running, listening, agent deciding."""
    sec: dict[str, list[str]] = {
        "now": [str(int(NOW.timestamp()))], "sandbox": ["1"], "gpu_host": ["sandbox"], "gpu_report": [],
        "listen": [], "holders": [],
        "disk": ["/dev/vda 263174212 26000000 80000000 25% /"], "du": ["1200"], "big": [],
        "docker_df": ["Images|25.3MB|1.2MB (4%)", "Containers|0B|0B", "Local Volumes|1kB|0B", "Build Cache|0B|0B"],
        "agent_config": [json.dumps(AGENT_CFG)], "agent_run": ["process running"], "agent_log": [decision()],
        "end": [],
    }
    for i, (service, _container, port) in enumerate([("vllm", "vllm", 8000), ("open_webui", "open-webui", 3000),
                                                    ("monai_label", "monai_sam2", 8002)]):
        pid = 100 + i
        sec[f"inspect:{service}"] = [f"running|false|0|0|false|{STARTED}|{pid}|"]
        sec[f"logs:{service}"] = ['INFO: 127.0.0.1:5000 - "GET /health HTTP/1.1" 200 OK']
        sec[f"last:{service}"] = [f"{service} stand-in listening on 127.0.0.1:{port}"]
        sec["listen"].append(f'LISTEN 0 50 127.0.0.1:{port} 0.0.0.0:* users:(("nc",pid={pid},fd=3))')
        sec["holders"].append(f"{pid}|nc| {pid} 90 1")
    return sec


def judge(sec: dict[str, list[str]], **kw: object):
    cfg = load_config(None, {"stack": "doc", "cloud": "local", **kw.pop("config", {})})  # type: ignore[dict-item]
    host = GpuHost(cloud="local", address="10.213.0.2", ssh_user="root", ssh_port=22,
                   launched_at=NOW - timedelta(hours=2), expires_at=kw.pop("expires_at", NOW + timedelta(hours=10)),
                   usd_hour=float(kw.pop("usd_hour", 0.0)))  # type: ignore[arg-type]
    return findings(cfg, host, sec, now=NOW, **kw)  # type: ignore[arg-type]


def checks(report) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in report.findings]


def test_the_script_output_parses_into_sections():
    text = f"noise\n{MARK}now\n123\n{MARK}listen\n\nLISTEN 0 1 127.0.0.1:8000 0.0.0.0:*\n{MARK}end\n"
    assert parse(text) == {"now": ["123"], "listen": ["LISTEN 0 1 127.0.0.1:8000 0.0.0.0:*"], "end": []}
    with pytest.raises(ValueError):
        parse(f"{MARK}now\n123\n")  # stopped before its end: never read as "all fine"


def test_a_healthy_sandbox_has_no_findings_and_says_there_is_no_gpu():
    report = judge(healthy())
    assert report.findings == [] and report.healthy
    assert any("no GPU: this is a sandbox host" in n for n in report.notes)
    assert any("idle agent: last decision none" in n and "stop-apps in about 27 min" in n for n in report.notes)


def test_a_stopped_container_is_named_with_its_last_lines_and_the_fix():
    sec = healthy()
    sec["inspect:open_webui"] = [f"exited|false|0|137|false|{STARTED}|0|"]
    sec["last:open_webui"] = ["shutting down"]
    sec["listen"] = [ln for ln in sec["listen"] if ":3000 " not in ln]
    [f] = judge(sec).findings
    assert (f.check, f.subject) == ("containers", "open_webui")
    assert "open-webui is exited (exit code 137" in f.problem and "shutting down" in f.problem
    assert f.fix == "`gpuprov deploy --stack doc` starts it again"


def test_a_crash_loop_is_named_whether_caught_restarting_or_just_restarted():
    sec = healthy()
    sec["inspect:vllm"] = [f"restarting|true|7|1|false|{STARTED}|0|"]
    sec["last:vllm"] = ["nc: bind: Address in use"]
    sec["listen"] = [ln for ln in sec["listen"] if ":8000 " not in ln]
    report = judge(sec)
    assert checks(report) == [("containers", "vllm")]
    assert "crash-looping (7 restarts" in report.findings[0].problem and "Address in use" in report.findings[0].problem
    just = (NOW - timedelta(seconds=20)).isoformat().replace("+00:00", "Z")
    sec["inspect:vllm"] = [f"running|false|3|0|false|{just}|100|"]
    sec["listen"] = healthy()["listen"]
    assert checks(judge(sec)) == [("containers", "vllm")]


def test_a_port_held_by_another_process_is_named_with_who_holds_it():
    sec = healthy()
    sec["inspect:vllm"] = [f"exited|false|0|1|false|{STARTED}|0|"]
    sec["listen"][0] = 'LISTEN 0 5 127.0.0.1:8000 0.0.0.0:* users:(("python3",pid=4242,fd=3))'
    sec["holders"][0] = "4242|python3| 4242 77 1"
    found = {(f.check, f.subject): f for f in judge(sec).findings}
    port = found[("ports", "8000")]
    assert "held by python3 (pid 4242)" in port.problem and "not by vllm" in port.problem
    assert "kill 4242" in port.fix
    assert ("containers", "vllm") in found


def test_a_child_of_the_container_or_docker_proxy_holds_the_port_rightly():
    sec = healthy()
    sec["holders"][0] = "100|nc| 100 90 1"
    sec["listen"].append('LISTEN 0 5 0.0.0.0:8000 0.0.0.0:* users:(("docker-proxy",pid=55,fd=4))')
    assert judge(sec).findings == []


def test_nothing_listening_on_a_running_service_port_is_connection_refused():
    sec = healthy()
    sec["listen"] = sec["listen"][1:]
    [f] = judge(sec).findings
    assert (f.check, f.subject) == ("path", "vllm") and "connection refused" in f.problem


def test_low_free_disk_and_an_overspent_disk_budget_name_the_largest_files_and_what_prune_frees():
    sec = healthy()
    sec["disk"] = ["/dev/vda 263174212 260000000 3000000 99% /"]
    sec["big"] = ["734003200 monai_label/data/studies/huge.bin"]
    sec["du"] = ["716800"]
    report = judge(sec, disk_budget_gb=0.5)
    assert checks(report) == [("disk", "/"), ("disk", "/opt/gpuprov")]
    assert "3.0 GB free on /" in report.findings[0].problem
    assert "/opt/gpuprov/monai_label/data/studies/huge.bin 734 MB" in report.findings[1].problem
    assert "docker system prune` frees about 0.0 GB" in report.findings[1].fix
    assert report.facts["disk"]["largest_files"] == sec["big"]


def test_5xx_tracebacks_and_oom_in_the_logs_are_findings_4xx_only_a_note():
    sec = healthy()
    sec["logs:vllm"] = [
        'INFO: 127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 401 Unauthorized',
        'INFO: 127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
        "Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    ]
    report = judge(sec)
    assert checks(report) == [("logs", "vllm"), ("logs", "vllm"), ("oom", "vllm")]
    assert "1 HTTP 5xx" in report.findings[0].problem and "500 /v1/chat/completions" in report.findings[0].problem
    assert "torch.OutOfMemoryError" in report.findings[1].problem
    assert "gpu_memory_utilization" in report.findings[2].fix
    assert any("1 HTTP 4xx" in n for n in report.notes)
    sec = healthy()
    sec["inspect:vllm"] = [f"exited|false|0|137|true|{STARTED}|0|"]
    assert ("oom", "vllm") in checks(judge(sec))


def test_gpu_host_checks_the_gpu_in_each_gpu_container_and_torch_cuda():
    sec = healthy()
    sec.update({"sandbox": ["0"], "gpu_host": ["GPU 0: NVIDIA A10G (UUID: GPU-1)"],
                "gpu_report": ["NVIDIA A10G, 8.6, 23028"],
                "gpu:vllm": ["GPU 0: NVIDIA A10G (UUID: GPU-1)"], "torch:vllm": ["torch 2.5.1 True 1"],
                "gpu:monai_label": ["Failed to initialize NVML: Unknown Error"],
                "torch:monai_label": ["torch 2.5.1 False 0"]})
    report = judge(sec)
    assert checks(report) == [("gpu", "monai_label"), ("gpu", "monai_label")]
    assert "not visible inside monai_sam2" in report.findings[0].problem
    assert "cannot use CUDA (torch 2.5.1 False 0)" in report.findings[1].problem
    assert any(n.startswith("GPU on the host: GPU 0: NVIDIA A10G") for n in report.notes)


def test_an_out_of_memory_finding_on_a_gpu_host_says_the_budget_from_the_gpu_settings():
    sec = healthy()
    sec.update({"sandbox": ["0"], "gpu_host": ["GPU 0: NVIDIA A10G (UUID: GPU-1)"],
                "gpu_report": ["NVIDIA A10G, 8.6, 23028"], "gpu:vllm": ["GPU 0: NVIDIA A10G"],
                "logs:vllm": ["ValueError: No available memory for the cache blocks."]})
    [f] = [f for f in judge(sec).findings if f.check == "oom"]
    assert "its budget:" in f.problem and "GiB of the" in f.problem


def test_a_stopped_or_stuck_idle_agent_and_a_failed_action_are_findings():
    sec = healthy()
    sec["agent_run"] = ["process stopped"]
    [f] = judge(sec).findings
    assert (f.check, f.subject) == ("idle_agent", "gpuprov-idle") and "not running (process stopped)" in f.problem
    sec = healthy()
    sec["agent_log"] = [decision(time="2026-05-01T11:00:00+00:00")]
    assert "it is stuck" in judge(sec).findings[0].problem
    sec = healthy()
    sec["agent_log"] = [decision(decision="act-failed", error="HTTP 403")]
    assert "action failed: HTTP 403" in judge(sec).findings[0].problem
    sec = healthy()
    sec["agent_config"] = [""]
    assert "not installed" in judge(sec).findings[0].problem


def test_expiry_soon_or_past_and_spend_near_the_budget_are_findings():
    assert checks(judge(healthy(), expires_at=NOW + timedelta(minutes=20))) == [("expiry", "doc")]
    past = judge(healthy(), expires_at=NOW - timedelta(minutes=1))
    assert "past its expiry" in past.findings[0].problem and "gpuprov extend" in past.findings[0].fix
    spent = judge(healthy(), usd_hour=5.0, config={"budget_usd": 11})
    assert checks(spent) == [("budget", "doc")] and "$10.00 is 91%" in spent.findings[0].problem
    assert spent.facts["spend_usd"] == 10.0


def test_docker_sizes_and_ss_lines_read_as_docker_and_ss_write_them():
    assert docker_size("1.2GB") == 1.2e9 and docker_size("512MB (40%)") == 512e6 and docker_size("0B") == 0
    [a, b] = listeners(['LISTEN 0 4096 [::1]:8002 [::]:* users:(("nc",pid=9,fd=3))', "LISTEN 0 5 *:22 *:*"])
    assert (a.address, a.port, a.pid, a.name) == ("::1", 8002, 9, "nc")
    assert (b.port, b.pid) == (22, None)


def test_since_takes_durations_and_utc_times_and_nothing_else():
    assert parse_since("10m", NOW) == NOW - timedelta(minutes=10)
    assert parse_since("1d", NOW) == NOW - timedelta(days=1)
    assert parse_since("2026-05-01T11:00", NOW) == datetime(2026, 5, 1, 11, tzinfo=timezone.utc)
    from gpuprov.infra.config import ConfigError

    for bad in ("10", "5 m", "-1h", "1h; rm -rf /", "0m", "yesterday", "2026-13-01"):
        with pytest.raises(ConfigError):
            parse_since(bad, NOW)


def test_log_lines_show_time_source_and_text():
    t, line = format_line("vllm|2026-05-01T11:00:00.123456789Z vllm stand-in listening") or (0, "")
    assert line == "2026-05-01T11:00:00Z vllm         vllm stand-in listening" and t > 0
    agent = decision()
    assert format_line(f"idle-agent|{agent}") == (datetime(2026, 5, 1, 11, 59, 30, tzinfo=timezone.utc).timestamp(),
                                                  f"2026-05-01T11:59:30Z idle-agent   {agent}")
    assert format_line("no tag here") is None


def test_the_ssh_config_entry_pins_and_the_include_goes_first_once_through_a_symlink(tmp_path, monkeypatch):
    from gpuprov.provisioning import ssh_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(None, {"stack": "ent", "cloud": "local"})
    host = GpuHost(cloud="local", address="10.213.0.2", ssh_user="root", ssh_port=2222)
    path = ssh_config.write_entry(cfg, host)
    text = path.read_text()
    assert "Host gpuprov-ent\n  HostName 10.213.0.2\n  User root\n  Port 2222\n" in text
    assert "StrictHostKeyChecking yes" in text and "IdentitiesOnly yes" in text and "UpdateHostKeys no" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    dotfiles = tmp_path / "dotfiles" / "ssh_config"
    dotfiles.parent.mkdir()
    dotfiles.write_text("Host work\n  User me\n")
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "config").symlink_to(dotfiles)
    assert ssh_config.add_include() and not ssh_config.add_include()
    assert (tmp_path / "home" / ".ssh" / "config").is_symlink()
    lines = dotfiles.read_text().splitlines()
    assert lines[1] == f'Include "{path}"' and lines[-2:] == ["Host work", "  User me"]
    assert ssh_config.remove_entry("ent") and not path.exists() and not ssh_config.remove_entry("ent")
    bad = GpuHost(cloud="local", address="10.0.0.1\n  ProxyCommand evil", ssh_user="root")
    from gpuprov.provisioning.errors import ProvisioningError

    with pytest.raises(ProvisioningError, match="cannot be written"):
        ssh_config.write_entry(cfg, bad)
