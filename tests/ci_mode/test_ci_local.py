"""``gpuprov ci`` as a CI job runs it, on the local sandbox host: real sshd, real processes, real signals.

Every test checks what a CI user would care about: the exit code, the message,
the JSON summary, and that nothing is left on the machine afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprov.infra import records
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.lease import CiLease
from tests.conftest import need_sandbox, run_cli


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder CMD can write to: on the host it runs as nobody, who cannot enter the test's 0700 folders."""
    folder = Path(tempfile.mkdtemp(prefix="gpuprov-ci-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def nothing_left(stack: str, home: Path) -> None:
    assert LocalSandbox(stack, root=home).leftovers() == []
    assert records.load(stack) is None
    assert CiLease.load(stack) is None


def start_ci(stack: str, command: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpuprov", "ci", "--cloud", "local", "--no-deploy", "--stack", stack, *extra,
         "--", "sh", "-c", command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_command_exit_code_is_returned_and_the_host_is_gone(gpuprov_home: Path, tmp_path: Path):
    need_sandbox()
    summary_file = tmp_path / "summary.json"
    result = run_cli("ci", "--cloud", "local", "--no-deploy", "--stack", "ci-exit", "--summary", str(summary_file),
                     "--", "sh", "-c", "echo hello from the host; exit 7")
    assert result.returncode == 7, result.stderr
    assert "hello from the host" in result.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["outcome"] == "command-failed" and summary["command_exit_code"] == 7
    assert summary["teardown"] == "verified" and summary["instance_id"] == "local-ci-exit"
    assert {"up", "command", "teardown", "total"} <= set(summary["timings_s"])
    nothing_left("ci-exit", gpuprov_home)


def test_success_prints_the_json_summary(gpuprov_home: Path):
    need_sandbox()
    result = run_cli("ci", "--cloud", "local", "--no-deploy", "--stack", "ci-ok", "--json", "--", "true")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["outcome"], summary["exit_code"], summary["teardown"]) == ("passed", 0, "verified")
    assert "passed, exit 0, teardown verified" in result.stderr
    nothing_left("ci-ok", gpuprov_home)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_the_command_tears_down(scratch: Path, gpuprov_home: Path, tmp_path: Path, signum: int, code: int):
    need_sandbox()
    marker = scratch / "started"
    proc = start_ci(f"ci-sig{code}", f"touch {marker}; sleep 120")
    wait_for(marker, proc)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"{signal.Signals(signum).name} during command" in err
    assert "teardown verified" in err
    nothing_left(f"ci-sig{code}", gpuprov_home)


def test_signals_during_teardown_do_not_stop_it(scratch: Path, gpuprov_home: Path, tmp_path: Path):
    need_sandbox()
    marker = scratch / "started"
    proc = start_ci("ci-storm", f"touch {marker}; sleep 120")
    wait_for(marker, proc)
    while proc.poll() is None:  # a CI runner that keeps signalling until the job is gone
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    _out, err = proc.communicate()
    assert proc.returncode == 143, err
    nothing_left("ci-storm", gpuprov_home)


def test_time_limit_stops_the_command_and_tears_down(gpuprov_home: Path):
    need_sandbox()
    result = run_cli("ci", "--cloud", "local", "--no-deploy", "--stack", "ci-slow", "--timeout", "0.05",
                     "--", "sleep", "120")
    assert result.returncode == 91, result.stderr
    assert "time limit reached during command" in result.stderr
    nothing_left("ci-slow", gpuprov_home)


def test_killed_run_is_cleaned_by_the_rerun(scratch: Path, gpuprov_home: Path, tmp_path: Path):
    need_sandbox()
    marker = scratch / "started"
    proc = start_ci("ci-rerun", f"touch {marker}; sleep 120")
    wait_for(marker, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    assert LocalSandbox("ci-rerun", root=gpuprov_home).is_running()  # what a kill -9 leaves
    result = run_cli("ci", "--cloud", "local", "--no-deploy", "--stack", "ci-rerun", "--", "true")
    assert result.returncode == 0, result.stderr
    assert "left resources behind; removing them first" in result.stderr
    nothing_left("ci-rerun", gpuprov_home)


def test_killed_run_is_cleaned_by_reap(scratch: Path, gpuprov_home: Path, tmp_path: Path):
    need_sandbox()
    marker = scratch / "started"
    proc = start_ci("ci-reap", f"touch {marker}; sleep 120")
    wait_for(marker, proc)
    proc.kill()
    proc.communicate()
    no_clouds = {"LAMBDA_API_KEY": "", "AWS_ACCESS_KEY_ID": "", "AWS_PROFILE": "", "AWS_ENDPOINT_URL": "",
                 "GOOGLE_CLOUD_PROJECT": "", "CLOUDSDK_CORE_PROJECT": ""}
    dry = run_cli("reap", "--dry-run", env=no_clouds)
    assert dry.returncode == 0, dry.stderr
    assert "stack ci-reap: would be torn down" in dry.stdout
    assert LocalSandbox("ci-reap", root=gpuprov_home).is_running()  # a dry run removes nothing
    result = run_cli("reap", "--json", env=no_clouds)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stacks_torn_down"] == ["ci-reap"]
    nothing_left("ci-reap", gpuprov_home)


def test_second_run_on_a_held_stack_is_refused(scratch: Path, gpuprov_home: Path, tmp_path: Path):
    need_sandbox()
    marker = scratch / "started"
    proc = start_ci("ci-busy", f"touch {marker}; sleep 120")
    try:
        wait_for(marker, proc)
        second = run_cli("ci", "--cloud", "local", "--no-deploy", "--stack", "ci-busy", "--", "true")
        assert second.returncode == 90
        assert f"held by a running gpuprov ci (pid {proc.pid})" in second.stderr
        assert LocalSandbox("ci-busy", root=gpuprov_home).is_running()  # the refused run did not tear it down
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    nothing_left("ci-busy", gpuprov_home)


def test_deployed_services_reach_a_local_command_through_tunnels(gpuprov_home: Path):
    need_sandbox()
    result = run_cli("ci", "--cloud", "local", "--on", "local", "--stack", "ci-tunnel", "--health-timeout", "120",
                     "--json", "--", sys.executable, "-c",
                     "import os, urllib.request; "
                     "print(urllib.request.urlopen(os.environ['GPUPROV_URL_VLLM'] + '/health').status)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "200"  # vLLM's health route, through the SSH tunnel
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["deploy"]["ssh_round_trips"] >= 1 and {"deploy", "health"} <= set(summary["timings_s"])
    # Where the minutes went (#16): every phase of the run, in seconds.
    assert {"launch", "boot", "ssh_ready", "bootstrap", "image_build", "services_started", "model_download",
            "service_healthy"} <= set(summary["phases_s"]), summary["phases_s"]
    nothing_left("ci-tunnel", gpuprov_home)


SECRETS = {"LAMBDA_API_KEY": "lambda-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret", "HF_TOKEN": "hf-secret",
           "PULUMI_CONFIG_PASSPHRASE": "pulumi-secret", "GOOGLE_APPLICATION_CREDENTIALS": "/gcp/key.json",
           "GPUPROV_LAMBDA_AGENT_API_KEY": "agent-secret"}


def test_a_local_command_gets_no_secret_unless_passed_by_name(gpuprov_home: Path):
    need_sandbox()
    show = "import json, os; print(json.dumps(dict(os.environ)))"
    result = run_cli("ci", "--cloud", "local", "--on", "local", "--no-deploy", "--stack", "ci-env", "--pass-env",
                     "HF_TOKEN", "--", sys.executable, "-c", show, env={**SECRETS, "ORDINARY": "kept"})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[0])
    assert seen["ORDINARY"] == "kept" and seen["GPUPROV_STACK"] == "ci-env" and "GPUPROV_HOST" in seen
    assert seen["HF_TOKEN"] == "hf-secret"  # passed through by name
    assert not {k for k in SECRETS if k != "HF_TOKEN"} & set(seen)
    assert not any(v in result.stdout for k, v in SECRETS.items() if k != "HF_TOKEN")
    nothing_left("ci-env", gpuprov_home)


def test_pass_env_takes_variable_names_only():
    result = run_cli("ci", "--cloud", "local", "--pass-env", "HF_TOKEN=x", "--", "true")
    assert result.returncode == 2 and "is not an environment variable name" in result.stderr
