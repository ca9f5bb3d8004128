"""An app of your own, end to end as a user runs it: its folder in GPUPROV_APP_PATH, `apps: [hello_app]`,
`gpuprov up` on the local sandbox host, healthy (`deploy --json`), smoked (`smoke --json`), `down`, nothing left."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.apps.hello_app import write_app
from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox


def test_an_app_of_your_own_deploys_healthy_answers_its_smoke_test_and_goes(tmp_path: Path, gpuprov_home: Path):
    need_sandbox()
    folder = write_app(tmp_path / "my-apps" / "hello_app")
    config = tmp_path / "stack.yaml"
    config.write_text("cloud: local\napps: [hello_app]\n")
    env = {"GPUPROV_APP_PATH": str(folder)}
    args = ("--stack", "extra", "--config", str(config))
    box = LocalSandbox("extra", root=gpuprov_home)

    up = run_cli("up", *args, env=env)  # host up, deployed, every service healthy through the tunnel
    try:
        assert up.returncode == 0, up.stderr
        assert "deployed hello" in up.stdout and "all healthy" in up.stdout
        again = run_cli("deploy", "--json", *args, env=env)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["changed"] == []  # healthy, and a second deploy is a no-op
        smoke = run_cli("smoke", "--json", *args, env=env)
        assert smoke.returncode == 0, smoke.stderr
        assert json.loads(smoke.stdout) == {"hello": {"greeting": "hello from an app of your own"}}
        status = json.loads(run_cli("status", "--json", "--stack", "extra").stdout)["stacks"]
        assert status[0]["deployed"] == ["hello"]
        names = subprocess.run(["docker", f"--host=unix://{box.docker_socket}", "ps", "--format", "{{.Names}}"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert names == ["gpuprov-hello"]  # only the app the stack names: no built-in came along
    finally:
        down = run_cli("down", *args, env=env)
    assert down.returncode == 0, down.stderr
    assert box.leftovers() == []
    assert json.loads(run_cli("status", "--json").stdout) == {"stacks": []}
