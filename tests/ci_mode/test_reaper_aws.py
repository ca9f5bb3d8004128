"""The reaper on AWS, against moto in server mode, from a fresh home that knows no stack: the expired stack
goes with its security group and key pair; a colleague's live one stays with its own, at any grace."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import pytest

from gpuprov.infra.host import utcnow
from gpuprov.infra.owner import owner_label
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_ORIGIN, TAG_OWNER, TAG_STACK
from tests.aws.conftest import aws, moto_server  # noqa: F401  (the shared moto fixtures)
from tests.conftest import run_cli

REGION = "us-east-1"


def _tags(stack: str, expires_in: timedelta, owner: str, origin: str) -> list[dict[str, str]]:
    now = utcnow()
    return [{"Key": TAG_MANAGED, "Value": "true"}, {"Key": TAG_STACK, "Value": stack},
            {"Key": TAG_OWNER, "Value": owner_label(owner)}, {"Key": TAG_ORIGIN, "Value": origin},
            {"Key": TAG_CREATED_AT, "Value": str(int((now - timedelta(hours=1)).timestamp()))},
            {"Key": TAG_EXPIRES_AT, "Value": str(int((now + expires_in).timestamp()))}]


def _stack(ec2, stack: str, expires_in: timedelta, owner: str = "colleague@m2",  # type: ignore[no-untyped-def]
           origin: str = "stack") -> str:
    tags = _tags(stack, expires_in, owner, origin)
    sg = ec2.create_security_group(GroupName=f"gpuprov-{stack}", Description=stack,
                                   TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
    ec2.create_key_pair(KeyName=f"gpuprov-{stack}", TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, SecurityGroupIds=[sg],
                             TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]["InstanceId"]


def _states(ec2) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


@pytest.mark.parametrize("grace", ["0", "30"])
def test_reap_terminates_the_expired_stack_and_keeps_a_colleagues_live_one(aws, grace: str):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    old = _stack(ec2, "old", timedelta(minutes=-5))
    live = _stack(ec2, "live", timedelta(hours=3))

    result = run_cli("reap", "--cloud", "aws", "--json", "--grace-minutes", grace,
                     env={"GPUPROV_AWS_REGIONS": REGION, "GPUPROV_OWNER": "me@m1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted((r["kind"], r["stack"], r["reason"]) for r in report["removed"]) == [
        ("instance", "old", "expired"), ("key-pair", "old", "expired"), ("security-group", "old", "expired")]
    states = _states(ec2)
    assert states[old] == "terminated" and states[live] == "running"
    groups = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert "gpuprov-old" not in groups and "gpuprov-live" in groups
    assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == {"gpuprov-live"}


def test_the_owner_sweep_takes_only_that_owners_ci_stack(aws):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    mine = _stack(ec2, "ci-a", timedelta(hours=1), "gha:org/a", "ci")
    other = _stack(ec2, "ci-b", timedelta(hours=1), "gha:org/b", "ci")
    result = run_cli("reap", "--cloud", "aws", "--json", "--sweep-orphans", "gha:org/a", "--yes",
                     env={"GPUPROV_AWS_REGIONS": REGION})
    assert result.returncode == 0, result.stderr
    assert sorted((r["kind"], r["stack"], r["reason"]) for r in json.loads(result.stdout)["removed"]) == [
        ("instance", "ci-a", "orphaned"), ("key-pair", "ci-a", "orphaned"), ("security-group", "ci-a", "orphaned")]
    states = _states(ec2)
    assert states[mine] == "terminated" and states[other] == "running"


def test_extend_moves_the_expiry_tags_of_the_callers_stack_only(aws):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    mine = _stack(ec2, "dev", timedelta(minutes=10), "me@m1")
    result = run_cli("extend", "--cloud", "aws", "--stack", "dev", "--hours", "3", "--json",
                     env={"GPUPROV_AWS_REGIONS": REGION, "GPUPROV_OWNER": "me@m1"})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["retagged"]) == 3  # instance, security group, key pair
    tags = {t["Key"]: t["Value"] for r in ec2.describe_instances(InstanceIds=[mine])["Reservations"]
            for i in r["Instances"] for t in i["Tags"]}
    assert int(tags[TAG_EXPIRES_AT]) > int((utcnow() + timedelta(hours=3)).timestamp())
