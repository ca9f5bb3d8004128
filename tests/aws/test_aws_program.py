"""AwsGpuHost on Pulumi's mock runtime: every secure default the issue asks for, as the engine would receive it."""

from __future__ import annotations

from typing import Any

import pytest

from gpuprov.infra.clouds.aws import program
from gpuprov.infra.clouds.aws.sdk import DLAMI_SSM_PARAMETER
from gpuprov.infra.config import ConfigError, build_config
from gpuprov.infra.host import GpuHost
from gpuprov.infra.mock_runtime import EngineMocks, run_program
from gpuprov.infra.owner import owner_label, owner_reference
from gpuprov.infra.plan import placeholders
from gpuprov.infra.tags import TAG_CONTACT, TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_OWNER, TAG_STACK

PLACEHOLDER_CALLS, placeholder_outputs = placeholders("aws")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1bGxhYnkgdGVzdCBrZXkgZm9yIGdwdXByb3Y test@gpuprov"


def run_aws(**values: Any) -> tuple[dict[str, list[dict[str, Any]]], GpuHost, list[str]]:
    """The AWS program for ``values``: resources by type, the host output, and the invokes it made."""
    ami = values.pop("ami_id", None)
    cfg = build_config({"cloud": "aws", "stack": "t1", "owner": "ada", "ssh_public_key": KEY, **values})
    invoked: list[str] = []

    def record(handler):
        def answer(args):
            invoked.append(args.token)
            return handler(args)
        return answer

    mocks = EngineMocks(calls={k: record(v) for k, v in PLACEHOLDER_CALLS.items()}, output_defaults=placeholder_outputs)
    outputs = run_program(lambda: {"host": program.AwsGpuHost("gpuprov-t1", cfg, ami_id=ami).host}, mocks, stack="t1")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in mocks.resources:
        by_type.setdefault(r.type, []).append({"name": r.name, **r.inputs})
    return by_type, GpuHost.model_validate(outputs["host"]), invoked


def one(by_type: dict[str, list[dict[str, Any]]], typ: str) -> dict[str, Any]:
    assert len(by_type.get(typ, [])) == 1, f"expected one {typ}, got {by_type.get(typ)}"
    return by_type[typ][0]


def test_defaults_are_secure_and_complete():
    res, host, invoked = run_aws(egress_cidr="203.0.113.7/32")  # as `gpuprov up` detects it
    assert set(res) == {
        "gpuprov:aws:GpuHost", "pulumi:providers:aws", "aws:ec2/keyPair:KeyPair", "aws:ec2/securityGroup:SecurityGroup",
        "aws:iam/role:Role", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/instanceProfile:InstanceProfile", "aws:ec2/instance:Instance",
    }  # no budget without budget_usd
    assert one(res, "pulumi:providers:aws")["region"] == "us-east-1"
    inst = one(res, "aws:ec2/instance:Instance")
    assert inst["instanceType"] == "g5.xlarge"
    assert inst["metadataOptions"]["httpTokens"] == "required"  # IMDSv2 only
    assert inst["metadataOptions"]["httpPutResponseHopLimit"] == 1  # the host only: no container reaches the role
    root = inst["rootBlockDevice"]
    assert (root["volumeType"], root["encrypted"], root["deleteOnTermination"]) == ("gp3", True, True)
    assert root["volumeSize"] >= 100  # DLAMI snapshot + images + model cache
    assert inst["instanceInitiatedShutdownBehavior"] == "stop"
    assert "instanceMarketOptions" not in inst  # on-demand unless spot
    # the image is the Deep Learning Base AMI's SSM parameter, looked up at up time
    assert "aws:ssm/getParameter:getParameter" in invoked and DLAMI_SSM_PARAMETER in inst["ami"]
    assert one(res, "aws:ec2/keyPair:KeyPair")["publicKey"] == KEY
    assert inst["keyName"] == "gpuprov-t1-key"
    # no allowed_cidrs: SSH only from the operator's detected egress address; SSM reaches the box too
    assert one(res, "aws:ec2/securityGroup:SecurityGroup")["ingress"] == [{
        "protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["203.0.113.7/32"], "ipv6CidrBlocks": [],
        "description": "SSH from the operator's egress address (detected)"}]
    assert one(res, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")["policyArn"].endswith(
        "/AmazonSSMManagedInstanceCore")
    assert inst["iamInstanceProfile"] == "gpuprov-t1-profile"
    assert host.cloud == "aws" and host.ssh_user == "ubuntu" and host.instance_type == "g5.xlarge"
    assert (host.gpu, host.gpu_count, host.usd_hour, host.region) == ("A10G", 1, 1.006, "us-east-1")


def test_every_paid_resource_carries_the_stack_tags_with_expiry():
    res, host, _ = run_aws(max_lifetime_hours=6)
    inst = one(res, "aws:ec2/instance:Instance")
    for tags in (inst["tags"], inst["rootBlockDevice"]["tags"], one(res, "aws:ec2/keyPair:KeyPair")["tags"],
                 one(res, "aws:ec2/securityGroup:SecurityGroup")["tags"]):
        assert tags[TAG_MANAGED] == "true" and tags[TAG_STACK] == "t1" and tags[TAG_CONTACT] == "ada"
        assert tags[TAG_OWNER] == owner_label(owner_reference())  # who made it, the same from every machine
        assert int(tags[TAG_EXPIRES_AT]) - int(tags[TAG_CREATED_AT]) == 6 * 3600
    assert host.expires_at is not None and host.launched_at is not None
    assert (host.expires_at - host.launched_at).total_seconds() == 6 * 3600


def test_ssh_and_listed_ports_only_from_allowed_cidrs():
    res, _, _ = run_aws(allowed_cidrs=["198.51.100.0/24", "2001:db8::/48"], open_ports=[8002])
    ingress = {r["fromPort"]: r for r in one(res, "aws:ec2/securityGroup:SecurityGroup")["ingress"]}
    assert set(ingress) == {22, 8002}  # 8000 and 3000 stay closed: not listed
    for rule in ingress.values():
        assert rule["toPort"] == rule["fromPort"] and rule["protocol"] == "tcp"
        assert rule["cidrBlocks"] == ["198.51.100.0/24"] and rule["ipv6CidrBlocks"] == ["2001:db8::/48"]


def test_ssh_cidrs_replace_the_detected_address_and_no_address_means_no_rule():
    res, _, _ = run_aws(ssh_cidrs=["198.51.100.0/24"], egress_cidr="203.0.113.7/32")
    (rule,) = one(res, "aws:ec2/securityGroup:SecurityGroup")["ingress"]
    assert (rule["fromPort"], rule["cidrBlocks"], rule["description"]) == (22, ["198.51.100.0/24"], "SSH from ssh_cidrs")
    res, _, _ = run_aws()  # no address known to the component: nothing opened, never the world
    assert one(res, "aws:ec2/securityGroup:SecurityGroup")["ingress"] == []


def test_listed_ports_without_cidrs_are_refused_pointing_at_the_tunnel():
    with pytest.raises(ConfigError, match="gpuprov tunnel") as caught:
        run_aws(open_ports=[8000, 3000])
    assert caught.value.key == "open_ports"


def test_public_ingress_only_with_allow_public_and_then_marked():
    res, _, _ = run_aws(allowed_cidrs=["0.0.0.0/0"], allow_public=True, open_ports=[3000])
    group = one(res, "aws:ec2/securityGroup:SecurityGroup")
    assert {r["fromPort"] for r in group["ingress"]} == {22, 3000}
    assert group["tags"][program.ALLOW_PUBLIC_TAG] == "true"
    res, _, _ = run_aws(allowed_cidrs=["203.0.113.7/32"])
    assert program.ALLOW_PUBLIC_TAG not in one(res, "aws:ec2/securityGroup:SecurityGroup")["tags"]


@pytest.mark.parametrize(("itype", "gpu"), [("g4dn.xlarge", "T4"), ("g6.xlarge", "L4")])
def test_other_gpu_types_are_selectable(itype, gpu):
    res, host, _ = run_aws(instance_type=itype, region="eu-west-1")
    assert one(res, "aws:ec2/instance:Instance")["instanceType"] == itype
    assert one(res, "pulumi:providers:aws")["region"] == "eu-west-1"
    assert (host.gpu, host.region) == (gpu, "eu-west-1")


def test_spot_is_one_time_and_terminates_when_reclaimed():
    res, _, _ = run_aws(spot=True)
    market = one(res, "aws:ec2/instance:Instance")["instanceMarketOptions"]
    assert market["marketType"] == "spot"
    assert market["spotOptions"] == {"spotInstanceType": "one-time", "instanceInterruptionBehavior": "terminate"}


def test_an_injected_ami_skips_the_lookup():
    res, _, invoked = run_aws(ami_id="ami-0abc1234def567890")
    assert one(res, "aws:ec2/instance:Instance")["ami"] == "ami-0abc1234def567890"
    assert invoked == []


def test_the_program_entry_honours_the_configured_image():
    cfg = build_config({"cloud": "aws", "stack": "t1", "ssh_public_key": KEY, "image": "ami-0fedcba9876543210"})
    mocks = EngineMocks(calls=PLACEHOLDER_CALLS, output_defaults=placeholder_outputs)
    run_program(lambda: {"host": program.build_aws_host(cfg)}, mocks, stack="t1")
    assert [r.inputs["ami"] for r in mocks.resources if r.type == "aws:ec2/instance:Instance"] == [
        "ami-0fedcba9876543210"]


def test_budget_alerts_the_owner_by_email_at_80_and_100_percent():
    res, _, _ = run_aws(budget_usd=50, owner="ada@example.org")
    budget = one(res, "aws:budgets/budget:Budget")
    assert (budget["budgetType"], budget["timeUnit"], budget["limitAmount"], budget["limitUnit"]) == (
        "COST", "MONTHLY", "50.00", "USD")
    assert budget["costFilters"] == [{"name": "TagKeyValue", "values": ["user:gpuprov-stack$t1"]}]
    assert sorted(n["threshold"] for n in budget["notifications"]) == [80, 100]
    assert all(n["subscriberEmailAddresses"] == ["ada@example.org"] for n in budget["notifications"])
    assert "aws:sns/topic:Topic" not in res


def test_budget_without_an_email_goes_to_an_sns_topic_budgets_may_publish_to():
    res, _, _ = run_aws(budget_usd=20)
    budget = one(res, "aws:budgets/budget:Budget")
    topic_policy = one(res, "aws:sns/topicPolicy:TopicPolicy")
    assert '"budgets.amazonaws.com"' in topic_policy["policy"]
    assert all(len(n["subscriberSnsTopicArns"]) == 1 for n in budget["notifications"])
