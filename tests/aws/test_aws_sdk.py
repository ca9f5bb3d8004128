"""The boto3 helpers against moto in server mode: image lookup, type checks, finding and removing tagged leftovers."""

from __future__ import annotations

import boto3
import pytest

from gpuprov.infra.clouds.aws import sdk
from gpuprov.infra.tags import TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK

REGION = "us-east-1"


def _tags(stack: str) -> list[dict[str, str]]:
    return [{"Key": TAG_MANAGED, "Value": "true"}, {"Key": TAG_STACK, "Value": stack},
            {"Key": TAG_EXPIRES_AT, "Value": "1800000000"}]


def _launch(ec2, stack: str | None, sg: str | None = None) -> str:
    spec = [{"ResourceType": "instance", "Tags": _tags(stack)}] if stack else []
    kwargs = {"SecurityGroupIds": [sg]} if sg else {}
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    answer = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                               TagSpecifications=spec, **kwargs)
    return answer["Instances"][0]["InstanceId"]


def test_ami_id_comes_from_the_ssm_parameter(aws):
    # moto refuses writes under /aws/service (reserved, as on AWS), so the parameter name is injected.
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/gpuprov-test/dlami", Value="ami-0123456789abcdef0", Type="String")
    assert sdk.resolve_ami_id(REGION, parameter="/gpuprov-test/dlami") == "ami-0123456789abcdef0"


def test_missing_ami_parameter_names_it_and_the_way_out(aws):
    with pytest.raises(sdk.AmiNotFound) as caught:
        sdk.resolve_ami_id(REGION)
    assert sdk.DLAMI_SSM_PARAMETER in str(caught.value) and "image: ami-" in str(caught.value)


def test_parameter_that_is_not_an_ami_is_refused(aws):
    boto3.client("ssm", region_name=REGION).put_parameter(Name="/gpuprov-test/odd", Value="hello", Type="String")
    with pytest.raises(sdk.AmiNotFound, match="not an AMI id"):
        sdk.resolve_ami_id(REGION, parameter="/gpuprov-test/odd")


def test_instance_type_offer_check(aws):
    assert sdk.instance_type_offered(REGION, "g5.xlarge")
    assert not sdk.instance_type_offered(REGION, "g5.huge")
    sdk.check_instance_type_offered(REGION, "g4dn.xlarge")
    with pytest.raises(sdk.InstanceTypeNotOffered, match="g5.huge is not offered in us-east-1"):
        sdk.check_instance_type_offered(REGION, "g5.huge")


def test_finds_only_gpuprov_resources_of_the_named_stack_and_removes_them(aws):
    ec2 = boto3.client("ec2", region_name=REGION)
    sg = ec2.create_security_group(GroupName="gpuprov-a", Description="a",
                                   TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags("a")}])["GroupId"]
    ec2.create_security_group(GroupName="gpuprov-b", Description="b",
                              TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags("b")}])
    ec2.create_security_group(GroupName="someone-else", Description="not ours")
    key = ec2.create_key_pair(KeyName="gpuprov-a",
                              TagSpecifications=[{"ResourceType": "key-pair", "Tags": _tags("a")}])["KeyPairId"]
    ec2.create_key_pair(KeyName="not-ours")
    mine = _launch(ec2, "a", sg)
    other_stack = _launch(ec2, "b")
    untagged = _launch(ec2, None)

    found = sdk.find_tagged_instances(REGION, stack="a")
    assert [i.id for i in found] == [mine]
    assert found[0].stack == "a" and found[0].instance_type == "g5.xlarge"
    assert found[0].expires_at is not None and int(found[0].expires_at.timestamp()) == 1800000000
    assert {i.id for i in sdk.find_tagged_instances(REGION)} == {mine, other_stack}  # every stack, never untagged
    assert [g.id for g in sdk.find_tagged_security_groups(REGION, stack="a")] == [sg]
    assert [(k.id, k.name) for k in sdk.find_tagged_key_pairs(REGION, stack="a")] == [(key, "gpuprov-a")]

    assert sdk.terminate_instances(REGION, [mine]) == [mine]
    state = ec2.describe_instances(InstanceIds=[mine])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
    assert sdk.find_tagged_instances(REGION, stack="a") == []
    sdk.delete_security_group(REGION, sg)
    sdk.delete_key_pair(REGION, "gpuprov-a")
    assert sdk.find_tagged_security_groups(REGION, stack="a") == []
    assert sdk.find_tagged_key_pairs(REGION, stack="a") == []
    # a second pass (the reaper after a partial run) is a no-op, not an error
    sdk.delete_security_group(REGION, sg)
    sdk.delete_key_pair(REGION, "gpuprov-a")
    assert sdk.terminate_instances(REGION, []) == []
    running = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
               if i["State"]["Name"] == "running"}
    assert running == {other_stack, untagged}  # nothing of anyone else's was touched


def test_preflight_resolves_the_image_or_says_what_is_wrong(aws, monkeypatch):
    with pytest.raises(sdk.AmiNotFound):
        sdk.preflight(REGION, "g5.xlarge")  # moto has no Deep Learning AMI parameter: the real message
    with pytest.raises(sdk.InstanceTypeNotOffered):
        sdk.preflight(REGION, "g5.huge")
    assert sdk.preflight(REGION, "g6.xlarge", ami_id="ami-0123456789abcdef0") == "ami-0123456789abcdef0"
