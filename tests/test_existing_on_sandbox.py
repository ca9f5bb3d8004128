"""``cloud: existing`` on a real machine (a local sandbox host stands in for it), as the README's flow runs:
``up`` deploys, ``down`` removes what gpuprov installed and leaves the machine (issue #11: it left it all)."""

from __future__ import annotations

import uuid
from pathlib import Path

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.conftest import need_sandbox, run_cli
from tests.test_local_sandbox import ssh

INSTALLED = ["opt/gpuprov", "etc/gpuprov", "usr/local/bin/gpuprov-idle", "etc/systemd/system/gpuprov-idle.service",
             "etc/systemd/system/gpuprov-idle.timer", "run/gpuprov-idle.pid"]


def _listing(box: LocalSandbox) -> dict[str, list[str]]:
    """What a look at the machine shows: gpuprov's files (under its root) and every container and volume."""
    root = box.dir / "host"
    docker = ssh(box, "docker ps -a --format '{{.Names}}'; echo ---; docker volume ls -q")
    assert docker.returncode == 0, docker.stderr
    containers, _, volumes = docker.stdout.partition("---\n")
    return {"files": [p for p in INSTALLED if (root / p).exists()], "containers": containers.split(),
            "volumes": volumes.split()}


def test_down_removes_what_deploy_installed_and_keeps_the_machine(tmp_path: Path):
    need_sandbox()
    box = LocalSandbox(f"ex-{uuid.uuid4().hex[:6]}", root=tmp_path / "machine")
    host = box.create()
    try:
        config = tmp_path / "existing.yaml"
        config.write_text(f"cloud: existing\nhost: {host.ssh_user}@{host.address}:{host.ssh_port}\n"
                          f"ssh_private_key_path: {box.client_key}\napps: [vllm_cxr]\n")
        up = run_cli("up", "--config", str(config), "--stack", "spark")
        assert up.returncode == 0, up.stderr
        deployed = _listing(box)
        assert "opt/gpuprov" in deployed["files"] and "vllm" in deployed["containers"], deployed

        down = run_cli("down", "--stack", "spark")  # the record remembers the machine and its key
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "spark: existing stack removed"
        assert "removing what gpuprov installed" in down.stderr
        assert _listing(box) == {"files": [], "containers": [], "volumes": []}
        assert box.is_running()  # the machine itself stays
        again = run_cli("down", "--stack", "spark")
        assert again.returncode == 2 and "no stack named 'spark'" in again.stderr
    finally:
        box.destroy()
    assert box.leftovers() == []
