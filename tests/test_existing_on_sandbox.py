"""``cloud: existing`` on a real machine (a local sandbox host stands in for it), as the README's flow runs:
``up`` deploys, ``down`` removes what gpuprov installed and leaves the machine (issue #11: it left it all)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.conftest import existing_config, need_sandbox, run_cli
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
    box.create()
    try:
        config = tmp_path / "existing.yaml"
        config.write_text(existing_config(box, "apps: [vllm_cxr]"))
        up = run_cli("up", "--config", str(config), "--stack", "spark")
        assert up.returncode == 0, up.stderr
        deployed = _listing(box)
        assert "opt/gpuprov" in deployed["files"] and "vllm" in deployed["containers"], deployed
        smoke = run_cli("smoke", "--stack", "spark")  # by name alone: the apps it has, not the defaults
        assert smoke.returncode == 0, smoke.stderr
        checked = [line.split(":")[0] for line in smoke.stdout.splitlines()]
        assert "vllm" in checked and not [c for c in checked if c.startswith("monai")], smoke.stdout

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


def _containers(box: LocalSandbox) -> dict[str, str]:
    """Every container on the machine: name -> its id, state and start time (a recreated or restarted one differs)."""
    shown = ssh(box, "docker ps -aq | xargs -r docker inspect --format '{{.Name}} {{.Id}} {{.State.Status}} "
                     "{{.State.StartedAt}}'")
    assert shown.returncode == 0, shown.stderr
    return {name.lstrip("/"): rest for name, _, rest in (line.partition(" ") for line in shown.stdout.splitlines())}


def test_a_second_stack_on_the_same_machine_stops_before_anything_changes(tmp_path: Path):
    need_sandbox()
    box = LocalSandbox(f"ex-{uuid.uuid4().hex[:6]}", root=tmp_path / "machine")
    host = box.create()
    alice, bob = {"GPUPROV_OWNER": "alice@lab"}, {"GPUPROV_OWNER": "bob@lab"}
    try:
        config = tmp_path / "existing.yaml"
        config.write_text(existing_config(box, "apps: [vllm_cxr]"))
        up = run_cli("up", "--config", str(config), "--stack", "alice-box", env=alice)
        assert up.returncode == 0, up.stderr
        marker = box.dir / "host/opt/gpuprov/stack.json"
        assert json.loads(marker.read_text()) == {"stack": "alice-box", "owner": "alice@lab"}
        before, files_before = _containers(box), _listing(box)
        assert "running" in before["vllm"], before

        second = run_cli("up", "--config", str(config), "--stack", "bob-box", env=bob)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: {host.address} already serves stack 'alice-box' (owner alice@lab); remove it with "
            "`gpuprov down --stack alice-box` from where it was made, or deploy to another machine")
        assert "applying" not in second.stderr and "Traceback" not in second.stderr
        assert _containers(box) == before and _listing(box) == files_before  # nothing on the host changed
        assert json.loads(marker.read_text())["stack"] == "alice-box"
        smoke = run_cli("smoke", "--config", str(config), "--stack", "alice-box", env=alice)
        assert smoke.returncode == 0, smoke.stderr  # alice's services still answer

        down = run_cli("down", "--stack", "alice-box", env=alice)
        assert down.returncode == 0, down.stderr
        assert not marker.exists()
        deploy = run_cli("deploy", "--stack", "bob-box", env=bob)  # bob's record kept the machine
        assert deploy.returncode == 0, deploy.stderr
        assert json.loads(marker.read_text()) == {"stack": "bob-box", "owner": "bob@lab"}
        running = _containers(box)
        assert "running" in running["vllm"]

        marker.unlink()  # as an older gpuprov left the host: its containers, no marker
        adopt = run_cli("deploy", "--stack", "bob-box", env=bob)
        assert adopt.returncode == 0, adopt.stderr
        assert (f"adopting {host.address}: it runs gpuprov containers but has no stack marker (an older gpuprov "
                "deployed them); marking it as stack 'bob-box'") in " ".join(adopt.stderr.split())
        assert json.loads(marker.read_text()) == {"stack": "bob-box", "owner": "bob@lab"}
        assert _containers(box) == running  # adopting touched no service
        assert run_cli("down", "--stack", "bob-box", env=bob).returncode == 0
        assert _listing(box) == {"files": [], "containers": [], "volumes": []}
    finally:
        box.destroy()
    assert box.leftovers() == []
