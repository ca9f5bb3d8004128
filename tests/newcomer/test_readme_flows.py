"""The README's first flows, in order, as a newcomer copies them (issue #11): every command tells the truth,
nothing shows a traceback, and nothing is left behind (process, namespace, key, pin, state file).

Covered: the local sandbox (`up` with deploy, `status`, `smoke`, `fab logs`, a mistyped `down`, `down`),
`ci` on the sandbox, `reap --dry-run`. Not yet: the Lambda stand-in with deploy and `cloud: existing`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.conftest import need_sandbox, run_cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.sandbox


def _leftover_files(home: Path) -> list[str]:
    kept = ("keys", "known_hosts", "mock-state", "sandbox", "stacks", "ci", "secrets")
    return sorted(str(p.relative_to(home)) for d in kept if (home / d).exists() for p in (home / d).rglob("*"))


def _said(result: subprocess.CompletedProcess[str]) -> str:
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown, shown
    return shown


def test_the_sandbox_ci_and_reap_flows_as_the_readme_says(gpuprov_home: Path):
    need_sandbox()
    fab = Path(sys.executable).with_name("fab")
    box = LocalSandbox("dev", root=gpuprov_home)
    try:
        up = run_cli("up")
        assert up.returncode == 0, _said(up)
        assert "dev: local host up at" in _said(up) and "all healthy" in up.stdout
        status = run_cli("status")
        assert status.returncode == 0 and "dev" in _said(status) and "running" in status.stdout
        smoke = run_cli("smoke")
        assert smoke.returncode == 0, _said(smoke)
        logs = subprocess.run([str(fab), "logs", "-s", "dev", "--service", "vllm"], cwd=REPO, capture_output=True,
                              text=True, timeout=120, env=dict(os.environ))
        assert logs.returncode == 0 and "vllm stand-in listening" in _said(logs), logs.stderr
        typo = run_cli("down", "--stack", "devv")
        assert typo.returncode == 2 and "did you mean 'dev'?" in _said(typo)
        down = run_cli("down", "--cloud", "local")  # what `make down ARGS="--cloud local"` runs
        assert down.returncode == 0 and "dev: local stack removed" in _said(down), down.stderr
    finally:
        box.destroy()
    ci = run_cli("ci", "--cloud", "local", "--no-deploy", "--", "true")
    assert ci.returncode == 0 and "gpuprov ci: passed, exit 0, teardown verified" in _said(ci), ci.stderr
    reap = run_cli("reap", "--dry-run")
    assert reap.returncode == 0, _said(reap)
    [ci_stack] = re.findall(r"gpuprov ci: stack '([a-z0-9-]+)' on local", ci.stderr)
    for name in ("dev", ci_stack):  # its processes, network namespace, links, mounts, folders (others' are theirs)
        assert LocalSandbox(name, root=gpuprov_home).leftovers() == [], name
    assert _leftover_files(gpuprov_home) == []
