"""``gpuprov doctor``, ``ssh`` and ``logs`` on the real local sandbox host (real sshd, Docker engine and
Compose, stand-in images), run as a user runs them: faults are planted on the host for real."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuprov.provisioning import hostpaths
from gpuprov.provisioning.deploy import deploy
from gpuprov.provisioning.health import wait_healthy
from gpuprov.provisioning.hostpaths import ROOT
from gpuprov.provisioning.idle_agent import background_command
from tests.conftest import need_sandbox, run_cli
from tests.provisioning.conftest import on_host

pytestmark = pytest.mark.sandbox
HR = hostpaths.HOST_ROOT
AGENT_PID = f"{HR}/run/gpuprov-idle.pid"



@pytest.fixture
def deployed(on_sandbox):
    cfg, host = on_sandbox
    deploy(cfg, host)
    wait_healthy(cfg, host, 120)
    return cfg, host


def doctor(stack: str, *extra: str) -> tuple[int, dict]:
    done = run_cli("doctor", "--json", "--stack", stack, *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_doctor_is_exit_0_on_the_healthy_host_and_says_there_is_no_gpu(deployed):
    cfg, _host = deployed
    code, report = doctor(cfg.stack)
    assert (code, report["findings"]) == (0, [])
    assert any("no GPU: this is a sandbox host" in n for n in report["notes"])
    assert report["facts"]["idle_agent"]["decision"] in ("none", "warn")  # its last decision, read from its log
    assert {p["service"] for p in report["facts"]["ports"]} == {"vllm", "open_webui", "monai_label"}
    assert report["facts"]["ssh_round_trips"] == 1  # every check in one exec
    text = run_cli("doctor", "--stack", cfg.stack)
    assert text.returncode == 0 and f"{cfg.stack}: healthy" in text.stdout, text.stdout + text.stderr


def test_doctor_names_each_planted_fault_with_its_fix(deployed):
    cfg, host = deployed
    big = f"{HR}{ROOT}/monai_label/data/studies/planted.bin"
    # SO_REUSEADDR as servers set it: the health checks' connections to 8000 are still in TIME_WAIT.
    squatter = ("import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                "s.bind(('127.0.0.1', 8000)); s.listen(); time.sleep(600)")
    pid = ""
    try:
        on_host(cfg, host, "docker stop open-webui >/dev/null")  # a stopped container
        on_host(cfg, host, f"kill $(cat {AGENT_PID})")  # a stopped idle agent
        on_host(cfg, host, f"fallocate -l 300M {big}")  # a large file over the disk budget
        # A taken port: another process holds vLLM's port, so vLLM (restart: unless-stopped) crash-loops.
        on_host(cfg, host, "docker stop vllm >/dev/null")
        pid = on_host(cfg, host, f"nohup python3 -c \"{squatter}\" >/dev/null 2>&1 </dev/null & echo $!").strip()
        on_host(cfg, host, "sleep 1; docker start vllm >/dev/null")
        deadline = time.monotonic() + 60
        while True:
            code, report = doctor(cfg.stack, "--disk-budget-gb", "0.2")
            named = {(f["check"], f["subject"]): f for f in report["findings"]}
            if ("containers", "vllm") in named or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert code == 1
        assert "open-webui is exited" in named["containers", "open_webui"]["problem"]
        assert named["containers", "open_webui"]["fix"] == f"`gpuprov deploy --stack {cfg.stack}` starts it again"
        loop = named["containers", "vllm"]["problem"]
        assert "crash-looping" in loop and "Address already in use" in loop, loop
        port = named["ports", "8000"]
        assert "held by python3" in port["problem"] and "kill" in port["fix"]
        disk = named["disk", ROOT]
        assert "over the 0.2 GB disk budget" in disk["problem"] and "studies/planted.bin 315 MB" in disk["problem"]
        assert "docker system prune" in disk["fix"]
        assert "not running (process stopped)" in named["idle_agent", "gpuprov-idle"]["problem"]
        shown = run_cli("doctor", "--stack", cfg.stack, "--disk-budget-gb", "0.2")  # the same, for a person: each finding with its fix
        assert shown.returncode == 1 and shown.stdout.count("fix: ") >= 5, shown.stdout
    finally:
        on_host(cfg, host, f"{'kill ' + pid + ';' if pid.isdigit() else ''} rm -f {big}; "
                           f"sh -c {shlex.quote(background_command())} ; true")
        deploy(cfg, host)  # starts what is stopped
        on_host(cfg, host, "docker restart vllm >/dev/null")
    wait_healthy(cfg, host, 120)
    code, report = doctor(cfg.stack)
    assert (code, report["findings"]) == (0, []), report["findings"]  # put right again: healthy


def test_logs_show_the_services_and_the_idle_agents_decisions(deployed):
    cfg, _host = deployed
    shown = run_cli("logs", "--stack", cfg.stack)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(" vllm " in ln and "vllm stand-in listening on 127.0.0.1:8000" in ln for ln in lines), shown.stdout
    decisions = [json.loads(ln.split(" idle-agent ", 1)[1]) for ln in lines if " idle-agent " in ln]
    assert decisions and all("decision" in d for d in decisions)
    only = run_cli("logs", "--stack", cfg.stack, "--service", "idle-agent", "--since", "1d")
    assert only.returncode == 0 and only.stdout and all(" idle-agent " in ln for ln in only.stdout.splitlines())
    bad = run_cli("logs", "--stack", cfg.stack, "--service", "nope")
    assert bad.returncode == 2 and "no service 'nope'" in bad.stderr and "idle-agent" in bad.stderr
    since = run_cli("logs", "--stack", cfg.stack, "--since", "10 minutes")
    assert since.returncode == 2 and "--since" in since.stderr and "Traceback" not in since.stderr


def test_logs_follow_streams_and_ctrl_c_leaves_no_follower_on_the_host(deployed):
    cfg, host = deployed
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "logs", "--follow", "--stack", cfg.stack, "--service",
                             "vllm"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert " vllm " in first, first
        assert "docker logs --timestamps --tail 20 -f vllm" in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in err, err
    deadline = time.monotonic() + 20
    while "docker logs --timestamps --tail 20 -f vllm" in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "a follower outlived the closed channel"
        time.sleep(0.5)


def up_on_a_terminal(stack: str, env: dict[str, str], answer: str) -> str:
    """``gpuprov up --no-deploy`` on a terminal (a pty), answering its question; returns what it showed."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "up", "--stack", stack, "--no-deploy"],
                            stdin=follower, stdout=follower, stderr=follower, env={**os.environ, **env})
    os.close(follower)
    shown, answered = b"", False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other end closed: the command ended
                break
            if not chunk:
                break
            shown += chunk
            if not answered and b"[y/N]" in shown:
                os.write(leader, answer.encode() + b"\n")
                answered = True
        assert proc.wait(timeout=60) == 0, shown.decode(errors="replace")
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return shown.decode(errors="replace")


def test_plain_ssh_and_scp_work_through_the_included_entry_and_down_removes_it(gpuprov_home: Path, tmp_path: Path):
    """``up --ssh-config`` includes gpuprov's file from ~/.ssh/config (a temporary HOME: the real one is
    never touched). OpenSSH finds ~/.ssh/config through the password database, not HOME, so plain ssh is
    pointed at that same file with -F: the lookup of the Include and the entry is OpenSSH's own."""
    need_sandbox()
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    stack = "diag-ssh"
    user_config = home / ".ssh" / "config"
    asked = run_cli("up", "--stack", stack, "--no-deploy", env=env)  # not a terminal, no flag: nothing added
    try:
        assert asked.returncode == 0, asked.stderr
        assert not user_config.exists() and "--ssh-config" in asked.stderr
        declined = up_on_a_terminal(stack, env, answer="n")
        assert "Add `Include" in declined and not user_config.exists(), declined
        accepted = up_on_a_terminal(stack, env, answer="y")
        assert f"ssh gpuprov-{stack}` reaches the host" in accepted and user_config.exists(), accepted
        again = run_cli("up", "--stack", stack, "--no-deploy", "--ssh-config", env=env)
        assert again.returncode == 0, again.stderr
        assert run_cli("up", "--stack", stack, "--no-deploy", "--ssh-config", env=env).returncode == 0
        text = user_config.read_text()
        assert text.count("Include ") == 1 and str(gpuprov_home / "ssh" / "config") in text
        assert oct(user_config.stat().st_mode & 0o777) == "0o600"

        # gpuprov ssh: CMD's words reach the host as they are; its exit code comes back.
        ran = run_cli("ssh", "--stack", stack, "--", "echo", "a  b", "$HOME;", "x", env=env)
        assert ran.returncode == 0 and ran.stdout == "a  b $HOME; x\n", ran.stdout + ran.stderr
        assert run_cli("ssh", "--stack", stack, "--", "sh", "-c", "exit 7", env=env).returncode == 7

        plain = ["-F", str(user_config), "-o", "BatchMode=yes"]
        ok = subprocess.run(["ssh", *plain, f"gpuprov-{stack}", "true"], capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        (tmp_path / "f.txt").write_text("over scp\n")
        copied = subprocess.run(["scp", *plain, str(tmp_path / "f.txt"), f"gpuprov-{stack}:/tmp/diag-ssh-scp.txt"],
                                capture_output=True, text=True, timeout=60)
        assert copied.returncode == 0, copied.stderr
        assert Path("/tmp/diag-ssh-scp.txt").read_text() == "over scp\n"  # the sandbox shares this machine's disk
        entry = (gpuprov_home / "ssh" / "config").read_text()
        assert "StrictHostKeyChecking yes" in entry and "IdentitiesOnly yes" in entry
        assert str(gpuprov_home / "known_hosts" / stack) in entry  # the pinned key, never ~/.ssh/known_hosts
        assert not (home / ".ssh" / "known_hosts").exists()
        # The pin is what plain ssh trusts: another key in its place and ssh refuses the host.
        pins = gpuprov_home / "known_hosts" / stack
        kept = pins.read_text()
        other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 0, other.stderr
        fake = (tmp_path / "other.pub").read_text().split()[:2]
        pins.write_text("".join(f"{ln.split()[0]} {' '.join(fake)}\n" for ln in kept.splitlines() if ln.strip()))
        try:
            refused = subprocess.run(["ssh", *plain, f"gpuprov-{stack}", "true"], capture_output=True, text=True,
                                     timeout=60)
            assert refused.returncode == 255 and "Host key verification failed" in refused.stderr, refused.stderr
        finally:
            pins.write_text(kept)
    finally:
        Path("/tmp/diag-ssh-scp.txt").unlink(missing_ok=True)
        down = run_cli("down", "--stack", stack, env=env)
    assert down.returncode == 0, down.stderr
    assert not (gpuprov_home / "ssh" / "config").exists()  # its last entry gone: the file too
    gone = subprocess.run(["ssh", "-F", str(user_config), "-o", "BatchMode=yes", f"gpuprov-{stack}", "true"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 255 and "gpuprov-" in gone.stderr, gone.stderr  # no such host any more
