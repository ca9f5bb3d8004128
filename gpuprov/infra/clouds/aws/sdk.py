"""AWS outside Pulumi, on boto3: resolve the GPU image, check an instance type, find and remove tagged leftovers.

The program uses :func:`resolve_ami_id` and :func:`check_instance_type_offered`
before ``up``; the reaper uses the ``find_*`` / ``terminate_*`` / ``delete_*``
helpers to remove what a stack left behind. Everything is found by the tags in
:mod:`gpuprov.infra.tags`, never by name.

boto3 is imported lazily. Credentials and endpoints come from boto3's own chain
(``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``..., and ``AWS_ENDPOINT_URL``, which the
tests point at moto in server mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from gpuprov.infra.clouds.base import CloudError, sdk_call
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK, expires_at

# The Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04): drivers, Docker and
# the NVIDIA container toolkit preinstalled, so host preparation is mostly checks
# (https://docs.aws.amazon.com/dlami/latest/devguide/aws-deep-learning-base-gpu-ami-ubuntu-22-04.html).
DLAMI_SSM_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"

# States in which an instance still costs money or still holds its security group.
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")


class AwsError(CloudError):
    """An AWS call gpuprov needs failed; the message says which and what to do."""


# What to do about the usual error codes (botocore's ``Error.Code``).
_HINTS = {
    "AuthFailure": "check your AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
    "UnrecognizedClientException": "check your AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID...)",
    "InvalidClientTokenId": "check your AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID...)",
    "ExpiredToken": "your AWS session expired: log in again (aws sso login, or refresh the keys)",
    "RequestExpired": "your AWS session expired: log in again (aws sso login, or refresh the keys)",
    "UnauthorizedOperation": "the credentials lack the EC2 permission for this; ask your AWS admin",
    "AccessDenied": "the credentials lack the permission for this; ask your AWS admin",
    "AccessDeniedException": "the credentials lack the permission for this; ask your AWS admin",
    "RequestLimitExceeded": "AWS is throttling this account; wait a minute and run again",
    "Throttling": "AWS is throttling this account; wait a minute and run again",
    "OptInRequired": "the region is not enabled for this account; enable it or pick another region",
}

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def boundary(what: str) -> Iterator[None]:
    """Turn botocore's errors into one :class:`AwsError` line: what failed, AWS's code, what to do."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, WaiterError

    try:
        yield
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        message = err.response.get("Error", {}).get("Message", "")
        hint = _HINTS.get(code, "see the AWS console or CloudTrail for more")
        raise AwsError(f"AWS: {what} failed ({code}: {message}); {hint}") from None
    except NoCredentialsError:
        raise AwsError(f"AWS: {what} needs credentials and none were found; set AWS_PROFILE, or "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
    except WaiterError as err:
        raise AwsError(f"AWS: {what} did not finish in time ({err.last_response and err.reason}); "
                       "check the instances in the EC2 console and run again") from None
    except BotoCoreError as err:
        raise AwsError(f"AWS: {what} failed ({type(err).__name__}: {err}); check the network and the region") from None


def aws_call(what: str) -> Callable[[F], F]:
    """Decorate an SDK helper with :func:`boundary`; ``what`` may name the helper's arguments."""
    return sdk_call(boundary, what)


class AmiNotFound(AwsError):
    def __init__(self, parameter: str, region: str, detail: str):
        super().__init__(
            f"could not resolve the GPU image from SSM parameter {parameter} in {region} ({detail}); "
            "check the region, or pin an AMI id in the stack config (image: ami-...)"
        )


class InstanceTypeNotOffered(AwsError):
    def __init__(self, instance_type: str, region: str):
        super().__init__(
            f"instance type {instance_type} is not offered in {region}; "
            "pick another region or instance_type (g5.xlarge, g4dn.xlarge, g6.xlarge)"
        )


def client(service: str, region: str) -> Any:
    """A boto3 client for ``service`` in ``region`` (boto3 imported only here)."""
    import boto3

    return boto3.client(service, region_name=region)


def _tag_dict(tags: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or ()}


def _tag_filters(stack: str | None) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]}]
    if stack is not None:
        filters.append({"Name": f"tag:{TAG_STACK}", "Values": [stack]})
    return filters


@dataclass(frozen=True)
class Tagged:
    """One gpuprov-tagged AWS resource: its id, stack and tags (expiry parsed)."""

    id: str
    region: str
    name: str | None = None  # key pairs: the name delete_key_pair takes
    tags: dict[str, str] = field(default_factory=dict)
    state: str | None = None  # instances only
    instance_type: str | None = None  # instances only
    zone: str | None = None  # volumes only: their availability zone
    size_gb: int | None = None  # volumes only

    @property
    def stack(self) -> str | None:
        return self.tags.get(TAG_STACK)

    @property
    def expires_at(self) -> datetime | None:
        return expires_at(self.tags)


# --- before up ------------------------------------------------------------------------


@aws_call("resolving the GPU image in {region}")
def resolve_ami_id(region: str, parameter: str = DLAMI_SSM_PARAMETER) -> str:
    """The AMI id the SSM public parameter ``parameter`` names today in ``region``."""
    from botocore.exceptions import ClientError

    try:
        value = client("ssm", region).get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as err:
        raise AmiNotFound(parameter, region, err.response["Error"]["Code"]) from None
    if not str(value).startswith("ami-"):
        raise AmiNotFound(parameter, region, f"the parameter holds {value!r}, not an AMI id")
    return str(value)


@aws_call("checking whether {instance_type} is sold in {region}")
def instance_type_offered(region: str, instance_type: str) -> bool:
    """Whether ``instance_type`` is sold in ``region`` at all (capacity is another matter)."""
    answer = client("ec2", region).describe_instance_type_offerings(
        LocationType="region", Filters=[{"Name": "instance-type", "Values": [instance_type]}]
    )
    return any(o["InstanceType"] == instance_type for o in answer.get("InstanceTypeOfferings", []))


def check_instance_type_offered(region: str, instance_type: str) -> None:
    """Raise :class:`InstanceTypeNotOffered` unless ``instance_type`` is sold in ``region``."""
    if not instance_type_offered(region, instance_type):
        raise InstanceTypeNotOffered(instance_type, region)


def preflight(region: str, instance_type: str, ami_id: str | None = None) -> str:
    """Before ``pulumi up``: fail fast, with a message to act on, when the type is not sold in the region
    or the image cannot be found; returns the AMI id the program will get (a configured ``ami_id`` wins)."""
    check_instance_type_offered(region, instance_type)
    return ami_id or resolve_ami_id(region)


# --- finding what a stack left -------------------------------------------------------------


@aws_call("listing gpuprov EC2 instances in {region}")
def find_tagged_instances(region: str, stack: str | None = None, states: Iterable[str] = LIVE_STATES) -> list[Tagged]:
    """gpuprov instances in ``region`` (of one stack when named) in ``states``: the ones that bill or block."""
    ec2 = client("ec2", region)
    filters = [*_tag_filters(stack), {"Name": "instance-state-name", "Values": list(states)}]
    found: list[Tagged] = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                found.append(Tagged(id=inst["InstanceId"], region=region, tags=_tag_dict(inst.get("Tags")),
                                    state=inst["State"]["Name"], instance_type=inst.get("InstanceType")))
    return found


@aws_call("listing gpuprov security groups in {region}")
def find_tagged_security_groups(region: str, stack: str | None = None) -> list[Tagged]:
    """gpuprov security groups in ``region`` (of one stack when named)."""
    answer = client("ec2", region).describe_security_groups(Filters=_tag_filters(stack))
    return [Tagged(id=g["GroupId"], region=region, tags=_tag_dict(g.get("Tags"))) for g in answer["SecurityGroups"]]


@aws_call("listing gpuprov key pairs in {region}")
def find_tagged_key_pairs(region: str, stack: str | None = None) -> list[Tagged]:
    """gpuprov key pairs in ``region`` (of one stack when named)."""
    answer = client("ec2", region).describe_key_pairs(Filters=_tag_filters(stack))
    return [Tagged(id=k["KeyPairId"], region=region, name=k["KeyName"], tags=_tag_dict(k.get("Tags")))
            for k in answer["KeyPairs"]]


# --- removing it ------------------------------------------------------------------------------


@aws_call("terminating instances {instance_ids} in {region}")
def terminate_instances(region: str, instance_ids: Iterable[str], wait: bool = True) -> list[str]:
    """Terminate ``instance_ids`` (idempotent: already-gone ids are fine); wait until terminated when asked.

    Returns the ids terminate was asked for. Errors are raised, never swallowed:
    an instance that cannot be terminated keeps billing.
    """
    ids = sorted(set(instance_ids))
    if not ids:
        return []
    ec2 = client("ec2", region)
    ec2.terminate_instances(InstanceIds=ids)
    if wait:
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    return ids


@aws_call("moving the expiry tag of {resource_ids} in {region}")
def set_expiry_tag(region: str, resource_ids: list[str], expires: datetime) -> None:
    """Set ``gpuprov-expires-at`` on instances, security groups and key pairs (by id) in one call."""
    from gpuprov.infra.tags import TAG_EXPIRES_AT

    client("ec2", region).create_tags(Resources=list(resource_ids),
                                      Tags=[{"Key": TAG_EXPIRES_AT, "Value": str(int(expires.timestamp()))}])


def _dependency_violation(err: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(err, ClientError) and err.response["Error"]["Code"] == "DependencyViolation"


@aws_call("deleting security group {group_id} in {region}")
@retry(retry=retry_if_exception(_dependency_violation), stop=stop_after_delay(300),
       wait=wait_exponential(multiplier=1, max=15), reraise=True)
def delete_security_group(region: str, group_id: str) -> None:
    """Delete a security group; retried while a terminating instance still holds it. Gone already is fine."""
    from botocore.exceptions import ClientError

    try:
        client("ec2", region).delete_security_group(GroupId=group_id)
    except ClientError as err:
        if err.response["Error"]["Code"] != "InvalidGroup.NotFound":
            raise


@aws_call("deleting key pair {key_name} in {region}")
def delete_key_pair(region: str, key_name: str) -> None:
    """Delete a key pair by name (``Tagged.name``); EC2 answers success for an unknown name too.

    By name rather than id: both work on AWS, and moto honours only the name.
    """
    client("ec2", region).delete_key_pair(KeyName=key_name)


# --- a stack's cache: an EBS volume kept across `down` ----------------------------------------

TAG_CACHE = "gpuprov-cache"  # on the cache volume: its name (gpuprov.infra.cache.cache_name)
CACHE_DEVICE = "/dev/sdf"  # the attachment's device name; on Nitro hosts it shows as an NVMe disk (by-id, below)


def cache_device_path(volume_id: str) -> str:
    """The cache volume's stable path on a Nitro host: NVMe disks carry the volume id as their serial
    (https://docs.aws.amazon.com/ebs/latest/userguide/identify-nvme-ebs-device.html)."""
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


def _volume(v: dict[str, Any], region: str) -> Tagged:
    return Tagged(id=v["VolumeId"], region=region, name=_tag_dict(v.get("Tags")).get(TAG_CACHE),
                  tags=_tag_dict(v.get("Tags")), state=v.get("State"), zone=v.get("AvailabilityZone"),
                  size_gb=v.get("Size"))


@aws_call("listing gpuprov cache volumes in {region}")
def find_cache_volumes(region: str, stack: str | None = None, name: str | None = None) -> list[Tagged]:
    """The stacks' cache volumes in ``region`` (of one stack, or one cache name, when given), not yet deleted."""
    filters = [*_tag_filters(stack), {"Name": "tag-key", "Values": [TAG_CACHE]},
               {"Name": "status", "Values": ["creating", "available", "in-use"]}]
    if name is not None:
        filters.append({"Name": f"tag:{TAG_CACHE}", "Values": [name]})
    found: list[Tagged] = []
    for page in client("ec2", region).get_paginator("describe_volumes").paginate(Filters=filters):
        found += [_volume(v, region) for v in page["Volumes"]]
    return found


@aws_call("finding an availability zone of {region} that sells {instance_type}")
def zone_for(region: str, instance_type: str) -> str:
    """The first availability zone (by name) of ``region`` where ``instance_type`` is sold: where a new cache
    volume goes, since the instance must launch in the volume's zone to attach it."""
    answer = client("ec2", region).describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}])
    zones = sorted(o["Location"] for o in answer.get("InstanceTypeOfferings", []))
    if not zones:
        raise InstanceTypeNotOffered(instance_type, region)
    return zones[0]


@aws_call("creating the cache volume {name} in {region}")
def ensure_cache_volume(region: str, name: str, size_gb: int, instance_type: str, tags: dict[str, str],
                        progress: Callable[[str], None] | None = None) -> Tagged:
    """The cache volume ``name``: the one already there (kept by an earlier ``down``), else a new encrypted gp3
    volume of ``size_gb`` in a zone selling ``instance_type``, tagged as the stack's and with its name."""
    say = progress or (lambda _m: None)
    found = find_cache_volumes(region, name=name)
    if found:
        vol = sorted(found, key=lambda v: v.id)[0]
        say(f"using the stack's cache volume {name} ({vol.id}, {vol.size_gb} GB) in {vol.zone}")
        return vol
    zone = zone_for(region, instance_type)
    say(f"creating the stack's cache volume {name} ({size_gb} GB gp3) in {zone} (kept across `gpuprov down`)")
    ec2 = client("ec2", region)
    made = ec2.create_volume(
        AvailabilityZone=zone, Size=size_gb, VolumeType="gp3", Encrypted=True,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [
            {"Key": k, "Value": v} for k, v in {**tags, TAG_CACHE: name, "Name": name}.items()]}])
    ec2.get_waiter("volume_available").wait(VolumeIds=[made["VolumeId"]], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    return _volume({**made, "State": "available"}, region)


def _volume_in_use(err: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(err, ClientError) and err.response["Error"]["Code"] == "VolumeInUse"


@aws_call("deleting cache volume {volume_id} in {region}")
@retry(retry=retry_if_exception(_volume_in_use), stop=stop_after_delay(300),
       wait=wait_exponential(multiplier=1, max=15), reraise=True)
def delete_volume(region: str, volume_id: str) -> None:
    """Delete a volume; retried while a terminating instance still has it attached. Gone already is fine."""
    from botocore.exceptions import ClientError

    try:
        client("ec2", region).delete_volume(VolumeId=volume_id)
    except ClientError as err:
        if err.response["Error"]["Code"] != "InvalidVolume.NotFound":
            raise
