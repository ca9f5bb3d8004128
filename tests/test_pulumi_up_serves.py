"""`pulumi up` alone serves (config `deploy: true`): the Pulumi program itself, on Pulumi's mock runtime (the
engine is mocked, the dynamic providers run for real), brings both stacks to healthy on the local sandbox.
A second run changes nothing; a changed setting recreates only the service it belongs to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import build_config
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import MockRuntimeBackend
from tests.conftest import need_sandbox

CONTAINERS = ("vllm", "open-webui", "monai_sam2")


def _containers(box: LocalSandbox) -> dict[str, str]:
    """Container name -> id on the sandbox host (a recreated container has a new id)."""
    out = subprocess.run(["docker", f"--host=unix://{box.docker_socket}", "inspect", "-f", "{{.Name}} {{.Id}}",
                          *CONTAINERS], capture_output=True, text=True, check=True).stdout
    return dict(line.lstrip("/").split() for line in out.splitlines())


def test_the_pulumi_program_alone_deploys_both_stacks_and_a_second_run_changes_nothing(
        gpuprov_home: Path, capfd: pytest.CaptureFixture[str]):
    need_sandbox()
    cfg = build_config({"cloud": "local", "stack": "serves", "deploy": True})
    backend = MockRuntimeBackend(Settings.from_env())
    box = LocalSandbox("serves")
    try:
        backend.up(cfg)
        first = capfd.readouterr().err
        assert "waiting for every service to be healthy" in first, first
        state = json.loads((gpuprov_home / "mock-state" / "serves.json").read_text())
        assert list(state["resources"]) == ["sandbox", "deployment"]
        assert state["outputs"]["tunnel"] == "gpuprov tunnel --stack serves"
        # As a user would check it: gpuprov's own smoke test, from another process, answers for every service.
        smoke = subprocess.run([sys.executable, "-m", "gpuprov", "smoke", "--stack", "serves"], capture_output=True,
                               text=True, timeout=300, env={**os.environ, "GPUPROV_HOME": str(gpuprov_home)})
        assert smoke.returncode == 0, smoke.stderr
        before = _containers(box)

        backend.up(cfg)  # nothing changed: the deployment's diff says so, the host is not touched
        assert "deploy" not in capfd.readouterr().err
        assert _containers(box) == before

        backend.up(build_config({"cloud": "local", "stack": "serves", "deploy": True, "max_model_len": 4096}))
        again = capfd.readouterr().err
        assert "deployed: " in again, again
        after = _containers(box)
        assert after["vllm"] != before["vllm"]  # vLLM's own setting: only vLLM is recreated
        assert after["open-webui"] == before["open-webui"] and after["monai_sam2"] == before["monai_sam2"]
    finally:
        backend.destroy(cfg)
    assert box.leftovers() == []
    assert not (gpuprov_home / "mock-state" / "serves.json").exists()
