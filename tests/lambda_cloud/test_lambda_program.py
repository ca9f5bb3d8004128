"""The whole Lambda program on Pulumi's mock runtime (real providers, stand-in API), driven through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuprov.testing.lambda_api import LambdaStandIn
from tests.conftest import run_cli

MOCK = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30"}


def _config(tmp_path: Path, **values: object) -> str:
    path = tmp_path / "lambda.yaml"
    path.write_text(json.dumps({"cloud": "lambda", "stack": "lt", **values}))
    return str(path)


def test_up_then_down_leaves_nothing_in_the_account(standin: LambdaStandIn, tmp_path: Path,
                                                    gpuprov_home: Path) -> None:
    cfg = _config(tmp_path, allowed_cidrs=["203.0.113.7/32"], open_ports=[8002], region="us-west-1")
    up = run_cli("up", "--no-deploy", "-c", cfg, env=MOCK)
    assert up.returncode == 0, up.stderr
    assert "lambda host up at ubuntu@127.0.0.1:22 (gpu_1x_a10, A10, $0.75/h)" in up.stdout
    [inst] = standin.instances(include_terminated=False)
    assert (inst["status"], inst["region"]["name"]) == ("active", "us-west-1")
    tags = {t["key"]: t["value"] for t in inst["tags"]}
    assert {"gpuprov-managed", "gpuprov-stack", "gpuprov-owner", "gpuprov-created-at", "gpuprov-expires-at"} <= set(tags)
    assert tags["gpuprov-stack"] == "lt"
    assert int(tags["gpuprov-expires-at"]) - int(tags["gpuprov-created-at"]) == 12 * 3600
    [ruleset] = standin.rulesets()
    assert ruleset["region"]["name"] == "us-west-1" and inst["firewall_rulesets"] == [{"id": ruleset["id"]}]
    assert sorted((r["source_network"], r["port_range"][0]) for r in ruleset["rules"]) == [
        ("203.0.113.7/32", 22), ("203.0.113.7/32", 8002)]
    [key] = standin.ssh_keys()
    assert key["name"] == "gpuprov-lt"
    # The key never lands in the state the engine keeps (or anywhere under the state root).
    for path in gpuprov_home.rglob("*"):
        if path.is_file():
            assert os.environ["LAMBDA_API_KEY"] not in path.read_text(errors="ignore"), path

    again = run_cli("up", "--no-deploy", "-c", cfg, env=MOCK)  # a second up changes nothing
    assert again.returncode == 0, again.stderr
    assert [i["id"] for i in standin.instances(include_terminated=False)] == [inst["id"]]

    down = run_cli("down", "-c", cfg, env=MOCK)
    assert down.returncode == 0, down.stderr
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
    assert [i["status"] for i in standin.instances()] == ["terminated"]


def test_without_allowed_cidrs_ssh_opens_to_the_egress_address_and_follows_it(
        standin: LambdaStandIn, tmp_path: Path, egress_address) -> None:  # type: ignore[no-untyped-def]
    """The default: a ruleset of the stack's own lets SSH in from this machine's egress address only
    (Lambda's default, SSH from anywhere, never applies); when the address changes, `status` says so and
    the next `up` patches the ruleset in place, the instance kept."""
    cfg = _config(tmp_path)
    up = run_cli("up", "--no-deploy", "-c", cfg, env=MOCK)
    assert up.returncode == 0, up.stderr
    assert "SSH to the host opens from 203.0.113.7/32 only" in up.stderr
    rulesets = standin.rulesets()  # one per region the instance may land in, none where Lambda applies none
    [inst] = standin.instances(include_terminated=False)
    [ruleset] = [r for r in rulesets if r["region"]["name"] == inst["region"]["name"]]
    assert inst["firewall_rulesets"] == [{"id": ruleset["id"]}] and inst["region"]["name"] != "us-south-1"
    assert "us-south-1" not in {r["region"]["name"] for r in rulesets}
    for each in rulesets:
        assert [(r["source_network"], r["port_range"]) for r in each["rules"]] == [("203.0.113.7/32", [22, 22])]

    status = run_cli("status", "--json", env=MOCK)
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)["stacks"]
    assert (row["ssh_from"], row["ssh_from_egress"], row["egress_changed"]) == (["203.0.113.7/32"], True, False)

    egress_address.answer = "198.51.100.23"  # this machine's NAT moved
    status = run_cli("status", env=MOCK)
    assert status.returncode == 0, status.stderr
    assert "lt: SSH open from 203.0.113.7/32 (your egress address, detected at up)" in status.stdout
    assert "egress address is now 198.51.100.23/32" in status.stderr and "gpuprov up --stack lt" in status.stderr

    again = run_cli("up", "--no-deploy", "-c", cfg, env=MOCK)
    assert again.returncode == 0, again.stderr
    assert "it was open from 203.0.113.7/32: the rule moves" in again.stderr
    patched = standin.rulesets()
    assert sorted(r["id"] for r in patched) == sorted(r["id"] for r in rulesets)  # patched in place
    assert all([r["source_network"] for r in each["rules"]] == ["198.51.100.23/32"] for each in patched)
    assert [i["id"] for i in standin.instances(include_terminated=False)] == [inst["id"]]  # not replaced
    [row] = json.loads(run_cli("status", "--json", env=MOCK).stdout)["stacks"]
    assert (row["ssh_from"], row["egress_changed"]) == (["198.51.100.23/32"], False)

    assert run_cli("down", "-c", cfg, env=MOCK).returncode == 0
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}


def test_a_failed_egress_detection_stops_up_before_anything_is_made(
        standin: LambdaStandIn, tmp_path: Path, egress_address) -> None:  # type: ignore[no-untyped-def]
    egress_address.answer = "10.0.0.5"  # a private address: no cloud sees this machine from it
    up = run_cli("up", "--no-deploy", "-c", _config(tmp_path), env=MOCK)
    assert up.returncode == 1, up.stderr
    assert "answered 10.0.0.5, which is not a public address" in up.stderr and "ssh_cidrs" in up.stderr
    assert "Traceback" not in up.stderr and len(up.stderr.strip().splitlines()) == 1
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
    # ssh_cidrs instead: no detection at all, SSH from the listed range
    up = run_cli("up", "--no-deploy", "-c", _config(tmp_path, ssh_cidrs=["192.0.2.0/24"]), env=MOCK)
    assert up.returncode == 0, up.stderr
    assert standin.rulesets() and all([r["source_network"] for r in each["rules"]] == ["192.0.2.0/24"]
                                      for each in standin.rulesets())
    assert run_cli("down", "-c", _config(tmp_path, ssh_cidrs=["192.0.2.0/24"]), env=MOCK).returncode == 0


def test_up_with_no_capacity_anywhere_fails_clearly_and_down_cleans_up(standin: LambdaStandIn,
                                                                        tmp_path: Path) -> None:
    standin.add_fault("capacity")
    cfg = _config(tmp_path, instance_type="gpu_1x_a10", allowed_cidrs=["203.0.113.0/24"])
    up = run_cli("up", "--no-deploy", "-c", cfg, env=MOCK)
    assert up.returncode == 4
    for region in ("us-east-1", "us-west-1"):
        assert f"gpu_1x_a10 in {region} ($0.75/h): instance-operations/launch/insufficient-capacity" in up.stderr
    assert "in us-south-1" not in up.stderr  # no firewall rules apply there: the allow-list would mean nothing
    # The user reads one error first, not a traceback. (Pulumi's mock event loop sometimes prints an
    # unrelated "Bad file descriptor" note from its __del__ at interpreter exit, after it.)
    error_at = up.stderr.index("error: no Lambda offer could be launched (2 tried, cheapest first):")
    assert "Traceback" not in up.stderr[:error_at], up.stderr
    assert standin.instances(include_terminated=False) == []
    down = run_cli("down", "-c", cfg, env=MOCK)
    assert down.returncode == 0, down.stderr
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_up_terminates_the_booting_instance(standin: LambdaStandIn, tmp_path: Path, signum: int) -> None:
    standin.boot_seconds = 120
    cfg = _config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "up", "--no-deploy", "-c", cfg], env={**os.environ, **MOCK},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not standin.instances() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert standin.instances(), "the launch never reached the stand-in"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "terminated what it had launched" in err
    assert standin.instances(include_terminated=False) == []
    down = run_cli("down", "-c", cfg, env=MOCK)  # the key made before the interrupt goes too
    assert down.returncode == 0, down.stderr
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}


def test_after_kill_9_during_up_the_next_up_adopts_the_instance_and_down_removes_it(
        standin: LambdaStandIn, tmp_path: Path) -> None:
    standin.boot_seconds = 3
    cfg = _config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "up", "--no-deploy", "-c", cfg],
                            env={**os.environ, **MOCK}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not standin.instances() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()  # no cleanup can run: the instance is left booting, unknown to the local state
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    [left] = standin.instances(include_terminated=False)
    again = run_cli("up", "--no-deploy", "-c", cfg, env=MOCK)
    assert again.returncode == 0, again.stderr
    assert "adopting instance" in again.stderr
    assert [i["id"] for i in standin.instances(include_terminated=False)] == [left["id"]]  # one, not two
    assert run_cli("down", "-c", cfg, env=MOCK).returncode == 0
    assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}


def test_deploy_moves_the_ssh_rule_first_when_the_egress_address_changed(
        standin: LambdaStandIn, tmp_path: Path, egress_address, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """`deploy` after a NAT moved: the ruleset follows this machine's new address before any SSH is tried
    (the step `deploy` runs first, in-process: nobody can log in to this stand-in's instance)."""
    from gpuprov.cli.commands.deploy import follow_egress
    from gpuprov.infra import records
    from gpuprov.infra.config import load_config

    cfg = _config(tmp_path, region="us-west-1")
    assert run_cli("up", "--no-deploy", "-c", cfg, env=MOCK).returncode == 0
    [inst] = standin.instances(include_terminated=False)
    for name, value in MOCK.items():
        monkeypatch.setenv(name, value)
    config = load_config(Path(cfg))
    record = records.load("lt")
    assert record is not None and record.ssh_from == ["203.0.113.7/32"]
    assert follow_egress(config, record.host) == record.host  # unchanged: nothing is run
    egress_address.answer = "198.51.100.23"
    host = follow_egress(config, record.host)
    [ruleset] = standin.rulesets()
    assert [r["source_network"] for r in ruleset["rules"]] == ["198.51.100.23/32"]
    assert host.instance_id == inst["id"] and [i["id"] for i in standin.instances(include_terminated=False)] == [
        inst["id"]]
    assert records.load("lt").ssh_from == ["198.51.100.23/32"]  # type: ignore[union-attr]
    assert run_cli("down", "-c", cfg, env=MOCK).returncode == 0
