"""``cloud: local``: the sandbox host is a real box (sshd, Docker engine, own address) and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.conftest import need_sandbox, run_cli


def ssh(box: LocalSandbox, command: str) -> subprocess.CompletedProcess[str]:
    host = box.host()
    assert host is not None
    known = box.dir / "known_hosts_test"
    known.write_text(f"{host.address} {host.host_key}\n")
    return subprocess.run(
        ["ssh", "-i", str(box.client_key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-p", str(host.ssh_port), f"{host.ssh_user}@{host.address}", command],
        capture_output=True, text=True, timeout=60,
    )


def process_running(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for init to reap it has stopped running."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_up_status_down_through_the_cli_leaves_nothing(gpuprov_home: Path):
    need_sandbox()
    up = run_cli("up", "--stack", "clitest")
    assert up.returncode == 0, up.stderr
    assert "local sandbox" in up.stderr and "--cloud" in up.stderr  # says what it picked and how to choose
    stacks = json.loads(run_cli("status", "--json").stdout)["stacks"]
    assert [(s["stack"], s["cloud"], s["state"], s["gpu"]) for s in stacks] == [("clitest", "local", "running", None)]
    box = LocalSandbox("clitest", root=gpuprov_home)
    st = box.state()
    assert st is not None and st.netns and st.dockerd_pid and st.sshd_pid

    down = run_cli("down", "--cloud", "local", "--stack", "clitest")
    assert down.returncode == 0, down.stderr
    assert box.leftovers() == []
    assert not Path(f"/var/run/netns/{st.netns}").exists()
    for pid in (st.sshd_pid, st.dockerd_pid):
        assert not process_running(pid)
    assert json.loads(run_cli("status", "--json").stdout) == {"stacks": []}


def test_sandbox_is_a_box_behind_ssh_with_its_own_engine_and_no_gpu(sandbox: LocalSandbox):
    host = sandbox.host()
    assert host is not None and host.address.startswith("10.213.") and not host.has_gpu
    result = ssh(sandbox, "docker info --format '{{.ServerVersion}}' && docker compose version --short "
                          "&& echo $DOCKER_HOST && (command -v nvidia-smi || echo no-nvidia-smi)")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert str(sandbox.docker_socket) in lines[2]  # its own engine, not the machine's
    assert lines[-1] == "no-nvidia-smi"


def test_create_is_idempotent_and_destroy_removes_containers(sandbox_root: Path):
    need_sandbox()
    box = LocalSandbox("idem", root=sandbox_root)
    first = box.create()
    try:
        assert box.create() == first  # second call: same host, nothing new started
        # A container running behind the sandbox (an image built FROM scratch with busybox).
        build = ssh(box, "mkdir -p /tmp/idem-img && cp /bin/busybox /tmp/idem-img/ && "
                         "printf 'FROM scratch\\nCOPY busybox /bin/busybox\\n' > /tmp/idem-img/Dockerfile && "
                         "docker build -q -t idem/sleeper /tmp/idem-img && "
                         "docker run -d --network host idem/sleeper /bin/busybox sleep 600")
        assert build.returncode == 0, build.stderr
    finally:
        box.destroy()
    assert box.leftovers() == []
    assert "idem/sleeper" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "busybox sleep 600" not in ps


def test_down_forgets_the_gone_host_so_the_same_stack_comes_up_again(gpuprov_home: Path):
    """A removed host leaves no pinned key or service secrets behind: the next `up` is trusted and gets fresh ones."""
    need_sandbox()
    from gpuprov.provisioning.ssh import known_hosts_path

    first = run_cli("up", "--stack", "again")
    assert first.returncode == 0, first.stderr
    # The Open WebUI admin password: printed on a terminal only, never into a log such as this pipe.
    assert "Open WebUI admin generated" in first.stderr and "not printed" in first.stderr
    shown = run_cli("secrets", "show", "--stack", "again")
    assert shown.returncode == 0 and "Open WebUI admin" in shown.stdout, shown.stderr
    password = shown.stdout.rsplit(" ", 1)[-1].strip()
    assert password and password not in first.stderr + first.stdout
    secrets_file = gpuprov_home / "secrets" / "again.json"
    assert known_hosts_path("again").exists() and secrets_file.exists()
    old_secrets = secrets_file.read_text()

    assert run_cli("down", "--stack", "again").returncode == 0
    assert not known_hosts_path("again").exists() and not secrets_file.exists()

    second = run_cli("up", "--stack", "again")  # a new host key: no "host key changed" refusal
    try:
        assert second.returncode == 0, second.stderr
        assert "Open WebUI admin generated" in second.stderr and secrets_file.read_text() != old_secrets
    finally:
        assert run_cli("down", "--stack", "again").returncode == 0
    assert LocalSandbox("again", root=gpuprov_home).leftovers() == []


def test_a_second_up_keeps_the_expiry_and_down_leaves_no_key_or_pin(gpuprov_home: Path):
    """Issue #11: a second `up` of a running sandbox showed expiry `-` (the record held null)."""
    need_sandbox()
    first = run_cli("up", "--stack", "nc-twice", "--no-deploy")
    assert first.returncode == 0, first.stderr
    try:
        [before] = json.loads(run_cli("status", "--json").stdout)["stacks"]
        again = run_cli("up", "--stack", "nc-twice", "--no-deploy")
        assert again.returncode == 0, again.stderr
        [after] = json.loads(run_cli("status", "--json").stdout)["stacks"]
        assert before["expires_at"] is not None
        assert after["expires_at"] == before["expires_at"]
    finally:
        down = run_cli("down", "--stack", "nc-twice")
    assert down.returncode == 0, down.stderr
    assert LocalSandbox("nc-twice", root=gpuprov_home).leftovers() == []
    assert not (gpuprov_home / "keys" / "nc-twice").exists()
    assert sorted(p.name for p in (gpuprov_home / "known_hosts").glob("nc-twice*")) == []
