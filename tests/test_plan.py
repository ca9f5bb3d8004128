"""`gpuprov plan` as a user runs it: no credentials, no network, the real program on the mock runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.cost import catalog
from gpuprov.infra.config import build_config
from gpuprov.infra.plan import exposure
from tests.conftest import run_cli

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1bGxhYnkgdGVzdCBrZXkgZm9yIGdwdXByb3Y test@gpuprov"
CLOUD_ENV_PREFIXES = ("AWS_", "GOOGLE_", "CLOUDSDK_", "LAMBDA_", "GPUPROV_AWS", "GPUPROV_GCP")


def plan_cli(*args: str, config: str | None = None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``gpuprov plan ARGS`` with every cloud credential variable removed, and with no network at all
    (a fresh, empty network namespace) when this machine lets us make one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLOUD_ENV_PREFIXES)}
    env["HOME"] = str(tmp_path)  # no ~/.aws, no gcloud application default credentials
    cmd = [sys.executable, "-m", "gpuprov", "plan", *args]
    if config is not None:
        path = tmp_path / "stack.yaml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    if NO_NETWORK:
        cmd = ["unshare", "--net", "--", *cmd]  # the namespace dies with the process
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


NO_NETWORK = os.geteuid() == 0 and bool(shutil.which("unshare"))  # plan_cli runs in an empty network namespace


@pytest.mark.parametrize("cloud", ["aws", "gcp", "lambda"])
def test_default_plan_opens_ssh_to_the_detected_egress_address_only(cloud, tmp_path):
    """With a network (the egress echo stand-in, answering 203.0.113.7), the default plan on every cloud
    opens 22 to that /32 alone, and no port at all to the world."""
    result = run_cli("plan", "--cloud", cloud, "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    ssh = next(e for e in plan["exposure"] if e["port"] == 22)
    assert ssh == {"port": 22, "service": "ssh", "from": ["203.0.113.7/32"], "via": "your egress address, detected"}
    assert all(e["from"] == [] for e in plan["exposure"] if e["port"] != 22)  # services: the tunnel only
    text = run_cli("plan", "--cloud", cloud)
    assert "22 ssh          from 203.0.113.7/32 (your egress address, detected)" in text.stdout


def test_plan_with_ssh_cidrs_detects_nothing(tmp_path, egress_address):
    before = egress_address.requests
    result = run_cli("plan", "--cloud", "aws", "--json", "--config", str(_write(tmp_path, "ssh_cidrs: [198.51.100.0/24]\n")))
    assert result.returncode == 0, result.stderr
    ssh = next(e for e in json.loads(result.stdout)["exposure"] if e["port"] == 22)
    assert (ssh["from"], ssh["via"]) == (["198.51.100.0/24"], "direct")
    assert egress_address.requests == before


def test_wide_ssh_cidrs_need_allow_public(tmp_path):
    result = run_cli("plan", "--cloud", "gcp", "--config", str(_write(tmp_path, "ssh_cidrs: [0.0.0.0/1, 128.0.0.0/1]\n")))
    assert result.returncode == 2 and "config key 'ssh_cidrs'" in result.stderr and "allow_public" in result.stderr


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("cloud", "instance", "price"), [
    ("aws", "aws:ec2/instance:Instance", catalog.find_offer("aws", "g5.xlarge")),
    ("gcp", "gcp:compute/instance:Instance", catalog.find_offer("gcp", "g2-standard-4")),
])
def test_plan_json_needs_no_credentials_and_no_cloud(cloud, instance, price, tmp_path):
    result = plan_cli("--cloud", cloud, "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert set(plan) == {"resources", "exposure", "cost", "idle_protection", "serving"}
    assert plan["idle_protection"] is None  # the agent powers the host off: it needs no credential
    types = [r["type"] for r in plan["resources"]]
    assert types.count(instance) == 1 and f"gpuprov:{cloud}:GpuHost" in types
    assert all(set(r) == {"type", "name", "inputs"} and ":" in r["type"] for r in plan["resources"])
    (vm,) = [r for r in plan["resources"] if r["type"] == instance]
    image = vm["inputs"]["ami"] if cloud == "aws" else vm["inputs"]["bootDisk"]["initializeParams"]["image"]
    assert image.startswith("(resolved at up time)")  # what only the cloud knows is labelled, not invented
    # with no network, this machine's egress address cannot be told: SSH is planned closed, opened at up
    ssh = next(e for e in plan["exposure"] if e["port"] == 22)
    if NO_NETWORK:
        assert ssh == {"port": 22, "service": "ssh", "from": [],
                       "via": "your egress address, detected at up time (not detectable now)"}
        assert "`up` asks again" in result.stderr
    assert not any("0.0.0.0/0" in e["from"] or "::/0" in e["from"] for e in plan["exposure"])
    assert {e["port"]: e["from"] for e in plan["exposure"] if e["port"] in (8000, 3000, 8002)} == {
        8000: [], 3000: [], 8002: []}
    assert price is not None
    assert plan["cost"]["hourly_usd"] == price.usd_hour
    assert plan["cost"]["daily_usd"] == round(price.usd_hour * 24, 2)
    assert plan["cost"]["monthly_usd"] == round(price.usd_hour * 730, 2)


def test_plan_shows_opened_ports_with_their_sources_and_key_settings(tmp_path):
    config = f"cloud: gcp\nssh_public_key: {KEY}\nallowed_cidrs: [198.51.100.0/24]\nopen_ports: [8002]\nspot: true\n"
    result = plan_cli(config=config, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "gcp:compute/firewall:Firewall" in text and "scheduling.onHostMaintenance: TERMINATE" in text
    assert "8002 monai_label  from 198.51.100.0/24 (direct)" in text
    assert "8000 vllm         from nobody" in text
    assert "$0.710/hour" in text and "spot capacity" in text


def test_public_ranges_without_allow_public_are_refused_with_exit_2(tmp_path):
    result = plan_cli("--cloud", "aws", "--json", config='allowed_cidrs: ["0.0.0.0/0"]\n', tmp_path=tmp_path)
    assert result.returncode == 2
    assert "allow_public" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_public_ranges_with_allow_public_are_planned_and_shown_as_public(tmp_path):
    config = 'cloud: aws\nallowed_cidrs: ["0.0.0.0/0"]\nallow_public: true\nopen_ports: [3000]\n'
    result = plan_cli("--json", config=config, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    webui = next(e for e in json.loads(result.stdout)["exposure"] if e["port"] == 3000)
    assert webui["from"] == ["0.0.0.0/0"] and "whole internet" in webui["via"]


def test_exposure_reports_an_every_port_rule():
    cfg = build_config({"cloud": "aws"})
    group = {"type": "aws:ec2/securityGroup:SecurityGroup", "name": "sg", "inputs": {"ingress": [
        {"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["10.0.0.0/8"]}]}}
    rows = exposure(cfg, [group])
    assert rows[0] == {"port": "all", "service": "every port", "from": ["10.0.0.0/8"], "via": "direct"}


@pytest.mark.parametrize("example", sorted((Path(__file__).parent.parent / "examples").glob("Pulumi.*.yaml")),
                         ids=lambda p: p.name)
def test_the_example_stack_files_plan(example, tmp_path):
    result = plan_cli("--json", "--config", str(example), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cost"]["hourly_usd"] > 0


def test_lambda_exposure_reads_the_ruleset_or_states_lambdas_default():
    ruleset = {"type": "pulumi-python:dynamic:Resource", "name": "firewall", "inputs": {"rules": [
        {"protocol": "tcp", "port_range": [22, 22], "source_network": "198.51.100.0/24"},
        {"protocol": "tcp", "port_range": [8002, 8002], "source_network": "198.51.100.0/24"}]}}
    rows = {r["port"]: r for r in exposure(build_config({"cloud": "lambda"}), [ruleset])}
    assert rows[22]["from"] == rows[8002]["from"] == ["198.51.100.0/24"] and rows[8000]["from"] == []
    # no ruleset (a program that declared none): Lambda's own default lets SSH in from anywhere, and plan says so
    rows = {r["port"]: r for r in exposure(build_config({"cloud": "lambda"}), [])}
    assert rows[22]["from"] == ["0.0.0.0/0"] and "Lambda's default firewall" in rows[22]["via"]


def test_lambda_plan_declares_without_calling_the_api(tmp_path):
    """The Lambda program's dynamic providers are recorded, never called: no key, no network, exit 0."""
    result = plan_cli("--cloud", "lambda", "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    instances = [r for r in plan["resources"] if "gpuprov-expires-at" in (r["inputs"].get("tags") or {})]
    assert len(instances) == 1 and instances[0]["type"] == "pulumi-python:dynamic:Resource"
    # the stack's own ruleset, always, so Lambda's default (SSH from anywhere) never applies; with no network
    # here it lets nothing in, and `up` fills in this machine's egress address
    ssh = next(e for e in plan["exposure"] if e["port"] == 22)
    assert "0.0.0.0/0" not in ssh["from"] and ssh["via"].startswith("your egress address, detected")
    (ruleset,) = [r for r in plan["resources"] if "rules" in r["inputs"]]
    assert ruleset["inputs"]["rules"] == ([] if NO_NETWORK else [{
        "protocol": "tcp", "port_range": [22, 22], "source_network": "203.0.113.7/32", "description": "gpuprov dev: SSH"}])
    offer = catalog.find_offer("lambda", catalog.defaults("lambda").instance_type)
    assert offer is not None and plan["cost"]["hourly_usd"] == offer.usd_hour
