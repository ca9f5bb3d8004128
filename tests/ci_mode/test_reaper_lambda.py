"""The reaper, destroy verification and ``gpuprov ci --cloud lambda`` against the Lambda API stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gpuprov.infra import records
from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
from gpuprov.infra.config import load_config
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.reaper import reap
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK
from gpuprov.infra.verify import LeftoverResources, verify_destroyed
from gpuprov.testing.lambda_api import CLOSED_GLOBAL_RULES, LambdaStandIn
from tests.conftest import need_sandbox, run_cli

KEY = "standin-reaper-key"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaStandIn]:
    server = LambdaStandIn(boot_seconds=0.0, terminate_seconds=0.2, terminated_linger_seconds=30, api_key=KEY).start()
    server.set_global_rules(list(CLOSED_GLOBAL_RULES))  # an account prepared for gpuprov (README)
    monkeypatch.setenv("LAMBDA_API_URL", server.url)
    monkeypatch.setenv("LAMBDA_API_KEY", KEY)
    monkeypatch.setenv("GPUPROV_LAMBDA_RATE_SCALE", "0.01")
    monkeypatch.setenv("GPUPROV_VERIFY_POLL_S", "0.05")
    try:
        yield server
    finally:
        server.stop()


def tags(stack: str, age: timedelta, ttl: timedelta) -> dict[str, str]:
    created = utcnow() - age
    return {TAG_MANAGED: "true", TAG_STACK: stack, TAG_CREATED_AT: str(int(created.timestamp())),
            TAG_EXPIRES_AT: str(int((created + ttl).timestamp()))}


def launch(api: LambdaCloud, stack: str, age: timedelta, ttl: timedelta, ruleset: str | None = None) -> str:
    api.add_ssh_key(f"gpuprov-{stack}", PUB)
    return api.launch("us-east-1", "gpu_1x_a10", f"gpuprov-{stack}", name=f"gpuprov-{stack}-abc123",
                      tags=tags(stack, age, ttl), firewall_ruleset_ids=[ruleset] if ruleset else None)


def remember(stack: str) -> None:
    records.save(stack, "lambda", GpuHost(cloud="lambda", address="198.51.100.10", ssh_user="ubuntu"))


def live_names(standin: LambdaStandIn) -> dict[str, list[str]]:
    return {"instances": sorted(i["name"] for i in standin.instances(include_terminated=False)),
            "ssh_keys": sorted(k["name"] for k in standin.ssh_keys()),
            "firewall_rulesets": sorted(r["name"] for r in standin.rulesets())}


def test_reap_removes_the_expired_and_keeps_every_unexpired_host_whoever_it_is(standin: LambdaStandIn):
    """Nothing here knows "lost", "fresh" or "live": only expiry decides; a dangling ruleset goes after its grace."""
    api = LambdaCloud()
    from gpuprov.infra.clouds.lambda_cloud.client import FirewallRule

    rule = [FirewallRule(protocol="tcp", source_network="203.0.113.0/24", port_range=(22, 22))]
    rs = api.create_firewall_ruleset("gpuprov-old", "us-east-1", rule)
    launch(api, "old", timedelta(hours=13), timedelta(hours=12), ruleset=rs.id)  # expired, stack still known here
    remember("old")
    launch(api, "lost", timedelta(hours=2), timedelta(hours=12))  # no stack of that name here: not ours to judge
    launch(api, "fresh", timedelta(minutes=5), timedelta(hours=12))
    launch(api, "live", timedelta(hours=2), timedelta(hours=12))
    remember("live")
    api.add_ssh_key("someone-elses-key", PUB)
    api.launch("us-east-1", "gpu_1x_a10", "someone-elses-key", name="not-gpuprov")  # no gpuprov tags at all
    api.add_ssh_key("gpuprov-unused", PUB)  # a gpuprov key with no instance: Lambda gives it no creation time
    api.create_firewall_ruleset("gpuprov-inflight", "us-east-1", rule)  # a launch in flight elsewhere, just now

    dry = reap(["lambda"], dry_run=True)
    assert {(f.item.kind, f.item.name, f.reason) for f in dry.found} == {
        ("instance", "gpuprov-old-abc123", "expired"), ("ssh-key", "gpuprov-old", "with-instance"),
        ("firewall-ruleset", "gpuprov-old", "with-instance")}
    assert len(live_names(standin)["instances"]) == 5  # a dry run removes nothing

    report = reap(["lambda"])
    assert report.ok, report.errors
    assert len(report.removed) == 3 and report.remaining == []
    assert live_names(standin) == {
        "instances": ["gpuprov-fresh-abc123", "gpuprov-live-abc123", "gpuprov-lost-abc123", "not-gpuprov"],
        "ssh_keys": ["gpuprov-fresh", "gpuprov-live", "gpuprov-lost", "gpuprov-unused", "someone-elses-key"],
        "firewall_rulesets": ["gpuprov-inflight"],
    }
    later = reap(["lambda"], now=utcnow() + timedelta(minutes=31))  # the in-flight launch never came
    assert [(f.item.kind, f.item.name, f.reason) for f in later.removed] == [
        ("firewall-ruleset", "gpuprov-inflight", "dangling")]


def test_destroy_verification_names_what_remains(standin: LambdaStandIn):
    api = LambdaCloud()
    iid = launch(api, "leaky", timedelta(0), timedelta(hours=1))
    config = load_config(None, {"cloud": "lambda", "stack": "leaky"})
    with pytest.raises(LeftoverResources) as caught:
        verify_destroyed(config, timeout_s=1)
    message = str(caught.value)
    assert caught.value.exit_code == 5
    assert f"lambda instance {iid}" in message and "ssh-key" in message and "gpuprov reap" in message

    api.terminate([iid])  # terminating: verification waits for it instead of failing
    api.delete_ssh_key(next(k.id for k in api.list_ssh_keys() if k.name == "gpuprov-leaky"))
    started = time.monotonic()
    verify_destroyed(config, timeout_s=10)
    assert time.monotonic() - started < 10
    assert live_names(standin)["instances"] == []


def test_ci_on_lambda_without_capacity_fails_clearly_and_leaves_nothing(standin: LambdaStandIn, tmp_path: Path):
    standin.add_fault("capacity")
    summary = tmp_path / "summary.json"
    result = run_cli("ci", "--cloud", "lambda", "--stack", "nocap", "--summary", str(summary), "--", "true",
                     env={"GPUPROV_PULUMI": "mock"})
    assert result.returncode == 90, result.stderr
    assert "error: up failed" in result.stderr and "capacity" in result.stderr
    data = json.loads(summary.read_text())
    assert (data["outcome"], data["phase"], data["teardown"]) == ("infra-failed", "up", "verified")
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
    assert records.load("nocap") is None
    assert KEY not in result.stderr + result.stdout + summary.read_text()


def test_ci_on_lambda_runs_the_command_on_the_instance(standin: LambdaStandIn, gpuprov_home: Path):
    need_sandbox()
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox

    box = LocalSandbox("lambdabox", root=gpuprov_home, login_user="ubuntu")
    host = box.create()
    try:
        standin.attach(box)
        result = run_cli("ci", "--cloud", "lambda", "--stack", "onbox", "--no-deploy", "--json",
                         "--", "sh", "-c", "echo on the box; exit 4", env={"GPUPROV_PULUMI": "mock"})
    finally:
        box.destroy()
    assert result.returncode == 4, result.stderr
    assert "on the box" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["cloud"] == "lambda" and summary["address"] == host.address and summary["usd_hour"] > 0
    assert summary["teardown"] == "verified"
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}


def test_a_ci_command_on_the_host_cannot_read_the_idle_agents_cloud_key(standin: LambdaStandIn, gpuprov_home: Path):
    """CMD runs as nobody (no groups, no sudo): the agent's root-only key file is out of its reach;
    --privileged gives it the login user's rights, and then it can (which proves the file was there)."""
    need_sandbox()
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox
    from gpuprov.provisioning.idle_agent import REMOTE_SECRET

    show = f'id -u; cat "${{GPUPROV_HOST_ROOT:-}}{REMOTE_SECRET}" || echo "read refused"'
    env = {"GPUPROV_PULUMI": "mock", "GPUPROV_LAMBDA_AGENT_API_KEY": "agent-only-key-1234"}
    box = LocalSandbox("lambdabox", root=gpuprov_home, login_user="ubuntu")
    box.create()
    try:
        standin.attach(box)
        plain = run_cli("ci", "--cloud", "lambda", "--stack", "keyread", "--health-timeout", "120",
                        "--", "sh", "-c", show, env=env)
        privileged = run_cli("ci", "--cloud", "lambda", "--stack", "keyread2", "--health-timeout", "120",
                             "--privileged", "--", "sh", "-c", show, env=env)
    finally:
        box.destroy()
    assert plain.returncode == 0, plain.stderr
    assert "65534" in plain.stdout and "read refused" in plain.stdout
    assert "agent-only-key-1234" not in plain.stdout + plain.stderr
    assert privileged.returncode == 0, privileged.stderr
    assert "agent-only-key-1234" in privileged.stdout  # the file is there; only a --privileged CMD reaches it
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
