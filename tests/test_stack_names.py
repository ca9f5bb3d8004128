"""Stacks by name, as a user types them: a typo or a default never reports success, and nothing is left behind.

Issue #11: a mistyped ``gpuprov down --stack nc-lam`` (the real stack: ``nc-lam3``) printed
"local stack removed" and exited 0 while the real one billed on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

NOT_HERE = "error: no stack named 'nc-lam'; existing stacks: nc-lam3 (existing); did you mean 'nc-lam3'? (`--stack nc-lam3`)"


@pytest.fixture
def existing_stack(tmp_path: Path) -> list[str]:
    """A recorded stack ``nc-lam3`` on an existing (unreachable TEST-NET) machine: what `status` lists."""
    key = tmp_path / "id"
    key.write_text("unused")
    config = tmp_path / "c.yaml"
    config.write_text(f"cloud: existing\nhost: nvidia@192.0.2.10:2222\nssh_private_key_path: {key}\n")
    up = run_cli("up", "--config", str(config), "--stack", "nc-lam3", "--no-deploy")
    assert up.returncode == 0, up.stderr
    return ["--config", str(config)]


def _stacks() -> list[str]:
    return [s["stack"] for s in json.loads(run_cli("status", "--json").stdout)["stacks"]]


@pytest.mark.parametrize("command", [["down"], ["deploy"], ["tunnel"], ["smoke"], ["status"]])
def test_a_mistyped_stack_is_refused_naming_the_real_one(existing_stack, command):
    result = run_cli(*command, "--stack", "nc-lam")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == NOT_HERE
    assert result.stdout == ""
    assert _stacks() == ["nc-lam3"]  # untouched


def test_the_default_stack_is_not_assumed_when_another_exists(existing_stack):
    result = run_cli("down")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: no stack named 'dev' (the default; name one with --stack NAME); "
                                     "existing stacks: nc-lam3 (existing)")
    assert _stacks() == ["nc-lam3"]


def test_a_second_down_does_not_report_success(existing_stack):
    first = run_cli("down", "--stack", "nc-lam3")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "nc-lam3: existing stack removed"
    second = run_cli("down", "--stack", "nc-lam3")
    assert second.returncode == 2
    assert second.stderr.strip() == ("error: no stack named 'nc-lam3': there are no stacks; "
                                     "`gpuprov up --stack nc-lam3` brings one up")


def test_a_stack_named_with_another_cloud_is_refused(existing_stack):
    result = run_cli("down", "--stack", "nc-lam3", "--cloud", "local")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: stack 'nc-lam3' lives on existing, not local; drop --cloud (and a "
                                     "config file's `cloud:`) to reach it, or name another stack with --stack")
    assert _stacks() == ["nc-lam3"]


def test_ci_refuses_a_stack_it_did_not_create(existing_stack):
    result = run_cli("ci", "--stack", "nc-lam3", *existing_stack, "--", "true")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: stack 'nc-lam3' already exists (existing) and is not a `gpuprov ci` run's: ci would tear it down "
        "at the end. Leave out --stack (each run gets a name of its own) or name a new one")
    assert _stacks() == ["nc-lam3"]  # ci did not tear it down


def test_a_failed_up_leaves_no_state_key_or_stack(gpuprov_home):
    env = {"GPUPROV_PULUMI": "mock", "LAMBDA_API_URL": "http://127.0.0.1:9", "LAMBDA_API_KEY": "k",
           "GPUPROV_LAMBDA_RATE_SCALE": "0"}
    up = run_cli("up", "--cloud", "lambda", "--stack", "nc-fail", env=env)
    assert up.returncode != 0 and "Traceback" not in up.stderr
    assert not (gpuprov_home / "mock-state" / "nc-fail.json").exists()
    assert not (gpuprov_home / "keys" / "nc-fail").exists()
    down = run_cli("down", "--stack", "nc-fail", env=env)
    assert down.returncode == 2 and "no stack named 'nc-fail'" in down.stderr


def test_plan_leaves_no_key_pair(gpuprov_home):
    result = run_cli("plan", "--cloud", "lambda", "--stack", "nc-plan")
    assert result.returncode == 0, result.stderr
    assert not (gpuprov_home / "keys" / "nc-plan").exists()


@pytest.mark.parametrize(("command", "says"), [
    ("status", "Show only this stack (default: every stack)."),
    ("ci", "a new one (never an existing stack) for this run"),
])
def test_stack_help_says_the_real_default(command, says):
    result = run_cli(command, "--help", env={"COLUMNS": "400"})
    assert result.returncode == 0
    assert says in result.stdout
    assert "(default: dev)" not in result.stdout


def test_status_json_names_the_key_that_logs_in(existing_stack, tmp_path):
    [stack] = json.loads(run_cli("status", "--json").stdout)["stacks"]
    assert stack["ssh_key_path"] == str(tmp_path / "id")


def test_up_of_a_stack_that_lives_elsewhere_refuses_another_cloud(existing_stack):
    result = run_cli("up", "--stack", "nc-lam3", "--cloud", "local", "--no-deploy")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: stack 'nc-lam3' lives on existing, not local; drop --cloud (and a "
                                     "config file's `cloud:`) to reach it, or name another stack with --stack")
    assert [s["cloud"] for s in json.loads(run_cli("status", "--json").stdout)["stacks"]] == ["existing"]


def test_up_by_name_alone_stays_where_the_stack_lives(existing_stack):
    result = run_cli("up", "--stack", "nc-lam3", "--no-deploy")
    assert result.returncode == 0, result.stderr
    assert "nc-lam3: existing host up at nvidia@192.0.2.10:2222" in result.stdout
    assert [s["cloud"] for s in json.loads(run_cli("status", "--json").stdout)["stacks"]] == ["existing"]
