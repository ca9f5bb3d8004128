"""Two operators on one Lambda account (one Lambda API stand-in, two operator homes): every reap from a fresh
home leaves a colleague's live host, key and ruleset alone, while expired hosts still go with theirs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprov.infra.owner import owner_label
from gpuprov.infra.tags import TAG_ORIGIN, TAG_OWNER
from gpuprov.testing.lambda_api import CLOSED_GLOBAL_RULES, LambdaStandIn
from tests.conftest import run_cli

KEY = "standin-shared-account-key"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaStandIn]:
    server = LambdaStandIn(boot_seconds=0.0, terminate_seconds=0.1, terminated_linger_seconds=30, api_key=KEY).start()
    server.set_global_rules(list(CLOSED_GLOBAL_RULES))  # an account prepared for gpuprov (README)
    for name, value in {"LAMBDA_API_URL": server.url, "LAMBDA_API_KEY": KEY, "GPUPROV_LAMBDA_RATE_SCALE": "0.01",
                        "GPUPROV_VERIFY_POLL_S": "0.05", "GPUPROV_PULUMI": "mock"}.items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.stop()


class Operator:
    """One person: their own home (records, keys, state) and their own owner reference."""

    def __init__(self, tmp: Path, name: str):
        self.owner = f"{name}@{name}-laptop"
        self.env = {"GPUPROV_HOME": str(tmp / f"home-{name}"), "GPUPROV_OWNER": self.owner}
        self.config = tmp / f"{name}.yaml"
        self.config.write_text("cloud: lambda\nallowed_cidrs: ['203.0.113.0/24']\n")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env)

    def up(self, stack: str, hours: float = 12) -> None:
        config = self.config.with_name(f"{self.config.stem}-{stack}.yaml")
        config.write_text(self.config.read_text() + f"max_lifetime_hours: {hours}\n")
        result = self.cli("up", "--no-deploy", "--config", str(config), "--stack", stack)
        assert result.returncode == 0, result.stderr

    def reap(self, *args: str) -> dict:  # type: ignore[type-arg]
        result = self.cli("reap", "--cloud", "lambda", "--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def names(standin: LambdaStandIn) -> dict[str, list[str]]:
    """What the account lists, by name (a stack's ruleset exists once per region its launch may use)."""
    return {"instances": sorted(i["name"].rsplit("-", 1)[0] for i in standin.instances(include_terminated=False)),
            "ssh_keys": sorted(k["name"] for k in standin.ssh_keys()),
            "firewall_rulesets": sorted({r["name"] for r in standin.rulesets()})}


@pytest.fixture
def two(tmp_path: Path, standin: LambdaStandIn) -> tuple[Operator, Operator]:
    return Operator(tmp_path, "alice"), Operator(tmp_path, "bob")


def test_a_colleagues_live_host_survives_every_reap_from_a_fresh_home(two, standin: LambdaStandIn, tmp_path: Path):
    alice, bob = two
    alice.up("alice-dev")
    tags = next(i for i in standin.instances() if i["name"].startswith("gpuprov-alice-dev"))["tags"]
    assert {t["key"]: t["value"] for t in tags}[TAG_OWNER] == owner_label(alice.owner)
    before = names(standin)
    assert before == {"instances": ["gpuprov-alice-dev"], "ssh_keys": ["gpuprov-alice-dev"],
                      "firewall_rulesets": ["gpuprov-alice-dev"]}
    fresh = Operator(tmp_path, "runner")  # the hourly job on a fresh runner: knows no stack at all
    for who in (bob, fresh):
        for grace in ("0", "30", "600"):
            report = who.reap("--grace-minutes", grace)
            assert report["found"] == [] and report["removed"] == [], (who.owner, grace, report)
    # Naming another owner's orphans: only that owner's gpuprov ci hosts, and alice's stack is not one.
    assert bob.reap("--sweep-orphans", alice.owner, "--grace-minutes", "0", "--yes")["removed"] == []
    assert names(standin) == before
    # Even alice's own reap, from this home that made it with `gpuprov up`, leaves it: it is hers and unexpired.
    assert alice.reap("--grace-minutes", "0")["found"] == []


def test_an_expired_host_goes_with_its_key_and_ruleset_whoever_reaps(two, standin: LambdaStandIn):
    alice, bob = two
    alice.up("short", hours=0.0005)  # expires ~2 s after launch
    bob.up("bob-live")
    time.sleep(2.5)
    report = bob.reap()
    assert sorted({(f["kind"], f["stack"], f["reason"]) for f in report["removed"]}) == [
        ("firewall-ruleset", "short", "with-instance"), ("instance", "short", "expired"),
        ("ssh-key", "short", "with-instance")]
    assert names(standin) == {"instances": ["gpuprov-bob-live"], "ssh_keys": ["gpuprov-bob-live"],
                              "firewall_rulesets": ["gpuprov-bob-live"]}


def test_a_pulumi_up_style_stack_with_no_record_anywhere_survives(two, standin: LambdaStandIn, tmp_path: Path):
    """``pulumi up`` records nothing in any gpuprov home: its host carries only its tags."""
    alice, bob = two
    alice.up("by-pulumi")
    import shutil

    shutil.rmtree(alice.env["GPUPROV_HOME"])  # as if made by `pulumi up`: no local record, no state here
    for who in (alice, bob):
        assert who.reap("--grace-minutes", "0")["found"] == []
        assert who.reap("--sweep-orphans", alice.owner, "--grace-minutes", "0", "--yes")["found"] == []
    assert names(standin)["instances"] == ["gpuprov-by-pulumi"]


def test_the_owner_scoped_sweep_previews_then_takes_only_that_owners_ci_hosts(two, standin: LambdaStandIn):
    from datetime import timedelta

    from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
    from gpuprov.infra.host import utcnow
    from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK

    alice, bob = two
    api = LambdaCloud()
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"

    def ci_host(stack: str, owner: str) -> None:  # what a runner killed mid-run leaves: a ci host an hour old
        created = utcnow() - timedelta(hours=1)
        api.add_ssh_key(f"gpuprov-{stack}", pub)
        api.launch("us-east-1", "gpu_1x_a10", f"gpuprov-{stack}", name=f"gpuprov-{stack}-abc12345", tags={
            TAG_MANAGED: "true", TAG_STACK: stack, TAG_OWNER: owner_label(owner), TAG_ORIGIN: "ci",
            TAG_CREATED_AT: str(int(created.timestamp())),
            TAG_EXPIRES_AT: str(int((created + timedelta(hours=2)).timestamp()))})

    ci_host("ci-repo-1", "gha:org/repo")
    ci_host("ci-other-1", "gha:org/other")
    bob.up("bob-dev")
    preview = bob.cli("reap", "--cloud", "lambda", "--sweep-orphans", "gha:org/repo")
    assert preview.returncode == 0, preview.stderr
    assert "would remove lambda instance" in preview.stdout and "gpuprov-ci-repo-1-abc12345" in preview.stdout
    assert "rerun with --sweep-orphans gha:org/repo --yes" in preview.stdout
    assert len(names(standin)["instances"]) == 3  # a preview removes nothing
    report = bob.reap("--sweep-orphans", "gha:org/repo", "--yes")
    assert sorted((f["kind"], f["stack"], f["reason"]) for f in report["removed"]) == [
        ("instance", "ci-repo-1", "orphaned"), ("ssh-key", "ci-repo-1", "with-instance")]
    assert names(standin)["instances"] == ["gpuprov-bob-dev", "gpuprov-ci-other-1"]


def test_a_bad_sweep_owner_is_a_usage_error(two):
    alice, _ = two
    result = alice.cli("reap", "--cloud", "lambda", "--sweep-orphans", "x;rm -rf /")
    assert result.returncode == 2 and "is not an owner reference" in result.stderr


def test_a_live_ci_run_in_another_pid_namespace_is_not_torn_down(two, standin: LambdaStandIn, tmp_path: Path):
    """A shared GPUPROV_HOME and a container's PID namespace: the lease's pid means nothing from outside."""
    import os
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a PID namespace") if os.environ.get("CI") != "true" else None
        pytest.fail("root and unshare(1) are needed under CI=true")
    alice, _ = two
    marker = tmp_path / "claimed"
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-c",
         "import os, sys, time; from gpuprov.infra.lease import CiLease; "
         "CiLease.claim('ci-contained', 'lambda', 600); print(os.getpid(), flush=True); "
         f"open({str(marker)!r}, 'w').close(); time.sleep(60)"],
        env={**os.environ, **alice.env}, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert int(holder.stdout.readline()) == 1  # type: ignore[union-attr]  # pid 1 out here is another process
        report = alice.reap("--grace-minutes", "0")
        assert report["stacks_torn_down"] == []
        assert (Path(alice.env["GPUPROV_HOME"]) / "ci" / "ci-contained.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_extend_keeps_a_host_past_its_first_expiry(two, standin: LambdaStandIn):
    alice, bob = two
    alice.up("long-job", hours=0.001)  # expires ~4 s after launch
    result = alice.cli("extend", "--stack", "long-job", "--hours", "2", "--json")
    assert result.returncode == 0, result.stderr
    moved = json.loads(result.stdout)
    assert moved["agent"] == "not deployed" and any(r.startswith("instance ") for r in moved["retagged"])
    status = alice.cli("status", "--stack", "long-job", "--json")
    assert json.loads(status.stdout)["stacks"][0]["expires_at"] == moved["expires_at"]
    time.sleep(4.5)  # past the launch's expiry tag: Lambda cannot change tags, the name carries the new one
    for who in (bob, alice):
        assert who.reap("--grace-minutes", "0")["found"] == []
    assert names(standin)["instances"] == ["gpuprov-long-job"]
    # A colleague cannot extend it: it is not theirs.
    theirs = bob.cli("extend", "--cloud", "lambda", "--stack", "long-job", "--hours", "1")
    assert theirs.returncode == 1 and "lists no host of stack 'long-job' made by you" in theirs.stderr
    unknown = bob.cli("extend", "--stack", "long-job")  # no record here and no cloud named: nothing to guess
    assert unknown.returncode == 1 and "no stack 'long-job' on local here" in unknown.stderr


def test_status_warns_before_the_expiry(two, standin: LambdaStandIn):
    alice, _ = two
    alice.up("soon", hours=0.5)
    result = alice.cli("status", "--stack", "soon")
    assert result.returncode == 0, result.stderr
    assert "warning: stack soon expires in" in result.stderr and "gpuprov extend --stack soon" in result.stderr
