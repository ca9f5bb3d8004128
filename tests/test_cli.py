"""The command line as a user meets it: clear errors, exit codes, no tracebacks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

BAD_CONFIGS = {
    "cloud: moon\n": "cloud",
    "allowed_cidrs: [10.0.0.0/33]\n": "allowed_cidrs",
    "allowed_cidrs: ['0.0.0.0/0']\n": "allow_public",
    "budget_usd: -3\n": "budget_usd",
    "cloud: aws\ninstance_type: t3.micro\n": "instance_type",
}


@pytest.mark.parametrize(("text", "named"), BAD_CONFIGS.items())
@pytest.mark.parametrize("command", ["plan", "up"])
def test_bad_config_exits_2_naming_the_key_without_traceback(tmp_path, text, named, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = run_cli(command, "--config", str(bad))
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("error:") == 1


def test_bad_flag_value_exits_2():
    result = run_cli("plan", "--cloud", "moon")
    assert result.returncode == 2
    assert "config key 'cloud'" in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file_is_named():
    result = run_cli("plan", "--config", "/nonexistent/gpuprov.yaml")
    assert result.returncode == 2
    assert "/nonexistent/gpuprov.yaml" in result.stderr and "does not exist" in result.stderr


def test_status_with_no_stacks():
    result = run_cli("status", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"stacks": []}


def test_cloud_up_without_pulumi_cli_says_how_to_install(tmp_path):
    result = run_cli("up", "--cloud", "aws", env={"PATH": "/usr/bin:/bin", "GPUPROV_PULUMI": "automation"})
    assert result.returncode == 3
    assert "Pulumi CLI is not installed" in result.stderr and "get.pulumi.com" in result.stderr
    assert "Traceback" not in result.stderr


def test_existing_host_up_and_down_make_no_cloud_calls(tmp_path):
    key = tmp_path / "id"
    key.write_text("unused")
    args = ["--cloud", "existing", "--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text(f"host: nvidia@192.0.2.10:2222\nssh_private_key_path: {key}\n")
    up = run_cli("up", *args, "--no-deploy")  # an unreachable TEST-NET address: host record only
    assert up.returncode == 0, up.stderr
    status = json.loads(run_cli("status", "--json").stdout)["stacks"]
    assert [(s["cloud"], s["address"], s["ssh_port"], s["ssh_user"]) for s in status] == [
        ("existing", "192.0.2.10", 2222, "nvidia")
    ]
    assert run_cli("down", *args).returncode == 0
    assert json.loads(run_cli("status", "--json").stdout) == {"stacks": []}
