"""The reaper on AWS, against moto in server mode: expired stacks go with their security groups and key pairs."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3

from gpuprov.infra import records
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK
from tests.aws.conftest import aws, moto_server  # noqa: F401  (the shared moto fixtures)
from tests.conftest import run_cli

REGION = "us-east-1"


def _tags(stack: str, expires_in: timedelta) -> list[dict[str, str]]:
    now = utcnow()
    return [{"Key": TAG_MANAGED, "Value": "true"}, {"Key": TAG_STACK, "Value": stack},
            {"Key": TAG_CREATED_AT, "Value": str(int((now - timedelta(hours=1)).timestamp()))},
            {"Key": TAG_EXPIRES_AT, "Value": str(int((now + expires_in).timestamp()))}]


def _stack(ec2, stack: str, expires_in: timedelta) -> str:  # type: ignore[no-untyped-def]
    tags = _tags(stack, expires_in)
    sg = ec2.create_security_group(GroupName=f"gpuprov-{stack}", Description=stack,
                                   TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
    ec2.create_key_pair(KeyName=f"gpuprov-{stack}", TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, SecurityGroupIds=[sg],
                             TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]["InstanceId"]


def test_reap_terminates_the_expired_stack_on_ec2_and_keeps_the_live_one(aws):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    old = _stack(ec2, "old", timedelta(minutes=-5))
    live = _stack(ec2, "live", timedelta(hours=3))
    records.save("old", "aws", GpuHost(cloud="aws", address="192.0.2.1", ssh_user="ubuntu"))
    records.save("live", "aws", GpuHost(cloud="aws", address="192.0.2.2", ssh_user="ubuntu"))

    result = run_cli("reap", "--cloud", "aws", "--json", env={"GPUPROV_AWS_REGIONS": REGION})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted((r["kind"], r["stack"], r["reason"]) for r in report["removed"]) == [
        ("instance", "old", "expired"), ("key-pair", "old", "expired"), ("security-group", "old", "expired")]
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]}
    assert states[old] == "terminated" and states[live] == "running"
    groups = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert "gpuprov-old" not in groups and "gpuprov-live" in groups
    assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == {"gpuprov-live"}
