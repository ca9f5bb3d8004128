"""The README's "Try it with no account" flow, copied as written (issue #11: it could not deploy):
the Lambda stand-in with `--sandbox`, then `up --cloud lambda && smoke && down --cloud lambda`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox


def test_the_lambda_standin_flow_deploys_and_leaves_nothing(gpuprov_home: Path):
    need_sandbox()
    standin = subprocess.Popen([sys.executable, "-m", "gpuprov", "sandbox", "lambda-api", "--port", "0", "--sandbox"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert standin.stdout is not None
        url = standin.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), standin.stderr.read() if standin.stderr else ""
        env = {"LAMBDA_API_URL": url, "LAMBDA_API_KEY": "anything", "GPUPROV_PULUMI": "mock"}
        up = run_cli("up", "--cloud", "lambda", env=env)
        assert up.returncode == 0 and "Traceback" not in up.stderr, up.stderr
        assert "all healthy" in up.stdout
        smoke = run_cli("smoke", env=env)
        assert smoke.returncode == 0, smoke.stderr
        down = run_cli("down", "--cloud", "lambda", env=env)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "dev: lambda stack removed"
    finally:
        standin.send_signal(signal.SIGTERM)
        _, said = standin.communicate(timeout=120)
    assert standin.returncode == 0 and "Traceback" not in said, said
    assert LocalSandbox("lambda-api", root=gpuprov_home).leftovers() == []
    kept = ("keys", "known_hosts", "mock-state", "sandbox", "stacks", "ci", "secrets")
    assert sorted(str(p) for d in kept if (gpuprov_home / d).exists() for p in (gpuprov_home / d).rglob("*")) == []
