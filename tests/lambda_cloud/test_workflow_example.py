"""The GitHub Actions example, as written: its install step is a plain install, and its gpuprov steps run
(against the Lambda stand-in, on the mock runtime, with no capacity, so no host is made) with the
outcome, summary file and exit codes the example's comments promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from gpuprov.testing.lambda_api import LambdaStandIn

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "gpu-ci.example.yml"


def _steps(job: str) -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"][job]["steps"]


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "GPUPROV_PULUMI": "mock",
           "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30"}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_install_steps_are_plain_installs_and_no_env_names_a_missing_file():
    for job in ("gpu-tests", "reap"):
        installs = [s["run"] for s in _steps(job) if "pip install" in s.get("run", "")]
        assert installs and all(" -e " not in i and "git+" in i for i in installs), installs
    env = yaml.safe_load(WORKFLOW.read_text())["jobs"]["gpu-tests"]["env"]
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in env  # no step writes one; gpuprov's own backend makes its own


def test_the_run_summary_and_reap_steps_run_as_written(standin: LambdaStandIn, tmp_path: Path):
    standin.add_fault("capacity")
    run_step = next(s for s in _steps("gpu-tests") if s.get("name") == "Ephemeral GPU run")
    ran = _run(run_step["run"], tmp_path)
    assert ran.returncode == 90, ran.stderr  # "90 infrastructure failed", as the example's header says
    assert "error: up failed" in ran.stderr and "Traceback" not in ran.stderr
    summary_step = next(s for s in _steps("gpu-tests") if s.get("name", "").startswith("Summary"))
    shown = _run(summary_step["run"], tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["teardown"] == "verified"
    reap_step = next(s for s in _steps("reap") if s.get("run", "").startswith("gpuprov reap"))
    reaped = _run(reap_step["run"], tmp_path)
    assert reaped.returncode == 0, reaped.stderr
    assert json.loads(reaped.stdout)["found"] == []
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
