"""The day-2 Fabric tasks as a user runs them (``fab`` at the repo root): one-line errors, exit codes, ``-s``.

Issue #11: gpuprov errors in a task were 23-line tracebacks, ``fab logs --help`` ran the task with
``--help`` as the service, and ``fab logs`` took ``-t`` for the stack where the others took ``-s``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]
TASKS = ["deploy", "redeploy", "logs", "restart", "tunnel", "smoke", "backup"]


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    """``fab ARGS`` from the repository root, as the README says."""
    exe = Path(sys.executable).with_name("fab")
    need(exe.exists() or bool(shutil.which("fab")), "fab (Fabric's command) is not installed")
    return subprocess.run([str(exe if exe.exists() else "fab"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_takes_s_for_the_stack_and_help_does_not_run_it(task):
    result = fab(task, "--help")
    assert result.returncode == 0, result.stderr
    assert "-s STRING, --stack=STRING" in result.stdout
    assert "error:" not in result.stderr


def test_an_unknown_stack_is_one_line_exit_2():
    result = fab("logs", "-s", "nc-lam", "--service", "vllm")
    assert result.returncode == 2
    assert result.stderr == "error: no stack named 'nc-lam': there are no stacks; `gpuprov up --stack nc-lam` brings one up\n"


def test_a_missing_required_option_is_one_line_exit_2():
    result = fab("logs")
    assert result.returncode == 2
    assert result.stderr == "error: --service is required: a deployed service (`gpuprov apps` lists them)\n"


@pytest.mark.parametrize("args", [["logs", "--bogus"], ["deploy", "--stack"]])
def test_a_usage_error_is_one_line_and_where_usage_is_exit_2(args):
    result = fab(*args)
    assert result.returncode == 2
    first, second = result.stderr.splitlines()
    assert first.startswith("error: ") and "Traceback" not in result.stderr
    assert second == "Try 'fab --help TASK' for a task's options, 'fab --list' for the tasks."
