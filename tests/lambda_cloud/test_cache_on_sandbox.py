"""A stack brought down and up again on Lambda (stand-in API, the local sandbox host as every instance) finds its
model cache: the second ``up`` attaches the same filesystem to a freshly wiped machine, vLLM's Hugging Face cache
still holds what the first ``up`` downloaded, and deploy says cache hit instead of downloading."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpuprov.infra.cache import cache_name_for
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox

ME = "cache-e2e@lab"
ENV = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30",
       "GPUPROV_OWNER": ME}
MODEL_FILE = "/root/.cache/huggingface/hub/models--nvidia--NV-Reason-CXR-3B/model.safetensors"


def _in_vllm(box: LocalSandbox, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", f"--host=unix://{box.docker_socket}", "exec", "vllm", "/bin/sh", "-c", script],
                          capture_output=True, text=True, timeout=60)


def _last_up_phases() -> dict[str, float]:
    status = run_cli("status", "--json", "--stack", "ce", env=ENV, timeout=60)
    assert status.returncode == 0, status.stderr
    [rec] = json.loads(status.stdout)["stacks"]
    return dict(rec["last_up_phases_s"])


def _logs(box: LocalSandbox, container: str) -> str:
    logs = subprocess.run(["docker", f"--host=unix://{box.docker_socket}", "logs", container],
                          capture_output=True, text=True, timeout=60)
    return logs.stdout + logs.stderr


@pytest.mark.timeout(900)
def test_a_stack_brought_down_and_up_again_finds_its_model_cache(standin: LambdaStandIn, tmp_path: Path) -> None:
    need_sandbox()
    box = LocalSandbox("cachebox", root=tmp_path / "boxes", login_user="ubuntu")
    box.create()
    name = cache_name_for("ce", ME)
    cfg = tmp_path / "lambda.yaml"
    cfg.write_text(json.dumps({"cloud": "lambda", "stack": "ce", "cache": True, "apps": ["vllm_cxr"]}))
    try:
        standin.attach(box)
        up = run_cli("up", "-c", str(cfg), env=ENV, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"model cache: empty at /lambda/nfs/{name}" in up.stderr
        first = _last_up_phases()
        assert {"launch", "boot", "ssh_ready", "model_download"} <= set(first), first
        assert "model_cache_hit" not in first and "phase model_download:" in up.stderr
        # vLLM's download, as the real one lands in its Hugging Face cache.
        wrote = _in_vllm(box, f"mkdir -p {MODEL_FILE.rsplit('/', 1)[0]} && echo weights > {MODEL_FILE}")
        assert wrote.returncode == 0, wrote.stderr
        [fs] = standin.filesystems()
        marker = json.loads((box.dir / "host" / "lambda" / "nfs" / name / ".gpuprov-cache").read_text())
        assert marker["stack"] == "ce" and marker["owner"] == ME

        down = run_cli("down", "-c", str(cfg), env=ENV, timeout=300)
        assert down.returncode == 0, down.stderr
        assert f"kept cache {name} in {fs['region']['name']}" in down.stdout and "/month" in down.stdout
        assert standin.instances(include_terminated=False) == []
        assert not (box.dir / "host" / "opt").exists()  # the machine is gone: a new one starts empty

        again = run_cli("up", "-c", str(cfg), env=ENV, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"model cache: hit on /lambda/nfs/{name} (kept from an earlier up): nothing to download" in again.stderr
        second = _last_up_phases()  # the model phase says it was a cache hit: the stand-in vLLM downloaded nothing
        assert "model_cache_hit" in second and "model_download" not in second, second
        assert "downloading model" not in _logs(box, "vllm")
        [inst] = standin.instances(include_terminated=False)
        assert inst["file_system_mounts"][0]["file_system_id"] == fs["id"]
        kept = _in_vllm(box, f"cat {MODEL_FILE}")  # the new vLLM container sees the first one's download
        assert (kept.returncode, kept.stdout.strip()) == (0, "weights"), kept.stderr

        purge = run_cli("down", "--purge", "-c", str(cfg), env=ENV, timeout=300)
        assert purge.returncode == 0, purge.stderr
        assert standin.filesystems() == []
        assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
    finally:
        box.destroy()
