"""Errors at the boundary: a cloud that cannot be asked costs the reap one line, not the whole report,
and anything unexpected still ends in one line and a report file, never a traceback."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from gpuprov.infra.clouds.aws import sdk
from tests.ci_mode.test_reaper_lambda import launch, standin  # noqa: F401  (the shared stand-in fixture)
from tests.conftest import run_cli


def test_an_unreachable_aws_api_is_one_line_naming_the_call() -> None:
    import os

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_MAX_ATTEMPTS")}
    os.environ.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
                      AWS_MAX_ATTEMPTS="1")
    try:
        with pytest.raises(sdk.AwsError) as caught:
            sdk.find_tagged_instances("us-east-1")
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    message = str(caught.value)
    assert message.startswith("AWS: listing gpuprov EC2 instances in us-east-1 failed")
    assert "check the network and the region" in message and "\n" not in message


def test_one_cloud_failing_does_not_lose_the_other_clouds_reap(standin) -> None:  # noqa: F811
    from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud

    launch(LambdaCloud(), "old", age=timedelta(hours=3), ttl=timedelta(hours=1))  # expired
    result = run_cli("reap", "--cloud", "aws", "--cloud", "lambda", "--json",
                     env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
                          "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1", "GPUPROV_AWS_REGIONS": "us-east-1"})
    assert result.returncode == 5, result.stderr  # something could not be checked: it may still bill
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert sorted((f["kind"], f["stack"], f["reason"]) for f in report["removed"]) == [
        ("instance", "old", "expired"), ("ssh-key", "old", "with-instance")]
    assert any(e.startswith("aws: could not list resources: AWS: listing gpuprov EC2 instances in us-east-1")
               for e in report["errors"]), report["errors"]
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}


def test_an_unexpected_failure_is_one_line_and_a_private_report(gpuprov_home: Path) -> None:
    (gpuprov_home / "stacks").mkdir(parents=True)
    (gpuprov_home / "stacks" / "broken.json").write_text("{ not json")  # a damaged state file
    result = run_cli("status")
    assert result.returncode == 70, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: gpuprov failed unexpectedly (JSONDecodeError")
    report = Path(lines[0].split("the full report is in ")[1].split(". This is a bug")[0])
    assert report.parent == gpuprov_home / "logs" and report.stat().st_mode & 0o777 == 0o600
    assert "Traceback" in report.read_text()


def test_a_cloud_it_could_not_list_is_not_nothing_to_reap() -> None:
    result = run_cli("reap", "--cloud", "aws", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
                                                    "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1",
                                                    "GPUPROV_AWS_REGIONS": "us-east-1"})
    assert result.returncode == 5, result.stderr
    assert "nothing to reap" not in result.stdout  # it could not look: no all-clear
    assert "aws: could not list resources" in result.stderr and "Traceback" not in result.stderr
