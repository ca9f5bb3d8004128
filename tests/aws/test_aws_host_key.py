"""The AWS host's SSH host key, known before the first connect: the stack's own pair goes in through the
instance's cloud-init user data (a Pulumi secret), and its public key is the host's declared ``host_key``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime import MockResourceArgs

from gpuprov.infra.clouds.aws import program
from gpuprov.infra.config import build_config
from gpuprov.infra.host import GpuHost
from gpuprov.infra.host_keys import HOST_KEY, TAG_HOST_KEY
from gpuprov.infra.mock_runtime import SECRET_SHOWN, EngineMocks, _plain, run_program
from gpuprov.infra.plan import placeholders
from tests.test_plan import plan_cli

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1bGxhYnkgdGVzdCBrZXkgZm9yIGdwdXByb3Y test@gpuprov"
CALLS, OUTPUTS = placeholders("aws")


class _Engine(EngineMocks):
    """The mocks, also keeping what the engine itself receives (secrets included) for the instance."""

    sent: dict[str, Any]

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == "aws:ec2/instance:Instance":
            self.sent = _plain(args.inputs)
        return super().new_resource(args)


def test_the_instance_gets_the_stacks_host_key_as_a_secret_and_declares_its_public_key(gpuprov_home: Path):
    cfg = build_config({"cloud": "aws", "stack": "hka", "owner": "ada", "ssh_public_key": KEY})
    mocks = _Engine(calls=CALLS, output_defaults=OUTPUTS)
    outputs = run_program(lambda: {"host": program.AwsGpuHost("gpuprov-hka", cfg).host}, mocks, stack="hka")
    private = gpuprov_home / "keys" / "hka" / HOST_KEY
    public = " ".join(private.with_suffix(".pub").read_text().split()[:2])
    [shown] = [r.shown for r in mocks.resources if r.type == "aws:ec2/instance:Instance"]
    assert shown["userData"] == SECRET_SHOWN  # a Pulumi secret: sealed in the state, hidden in the plan
    user_data = mocks.sent["userData"]
    assert user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(user_data)["ssh_keys"] == {"ed25519_private": private.read_text(), "ed25519_public": public}
    assert shown["tags"][TAG_HOST_KEY] == public  # the key it was launched with, kept by the instance itself
    assert GpuHost.model_validate(outputs["host"]).host_key == public


def test_plan_never_shows_the_private_host_key(tmp_path: Path):
    result = plan_cli("--cloud", "aws", "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    [vm] = [r for r in plan["resources"] if r["type"] == "aws:ec2/instance:Instance"]
    assert vm["inputs"]["userData"] == SECRET_SHOWN
    assert "PRIVATE KEY" not in result.stdout + result.stderr
