"""The AWS GPU host as a Pulumi ComponentResource: secure by default, tagged for the reaper, priced.

What it creates (children of one ``gpuprov:aws:GpuHost``):
- a key pair from the stack's SSH public key;
- a security group: SSH (22) only from ``ssh_cidrs``, else ``allowed_cidrs``, else the
  operator's own egress address (a /32 detected at ``up``, :mod:`gpuprov.infra.egress`);
  service ports only when listed in ``open_ports`` and only from ``allowed_cidrs``; never
  0.0.0.0/0 or ::/0 unless ``allow_public`` (the config refuses it otherwise);
- an IAM role + instance profile with ``AmazonSSMManagedInstanceCore``, so SSM Session
  Manager port forwarding (``AWS-StartPortForwardingSession`` to port 22) reaches the box
  too, from anywhere IAM allows;
- the instance: the Deep Learning Base GPU AMI from its SSM parameter (or an AMI id
  given), the stack's own SSH host key installed by cloud-init from its user data (a
  Pulumi secret; the public key is the pin before the first connect), IMDSv2 required, an encrypted gp3 root volume sized for the images and the
  model cache, OS shutdown = stop, optional one-time spot;
- with ``cache: true``: the stack's cache, an EBS gp3 volume kept across ``down``
  (:mod:`gpuprov.infra.clouds.aws.cache`), the instance in its availability zone, an
  ``aws.ec2.VolumeAttachment`` and user data that mounts it at the cache mount point;
- with ``budget_usd``: an AWS Budgets monthly budget for the stack's tag, alerting
  at 80 % and 100 %.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timezone
from typing import Any, cast

import pulumi

from gpuprov.cost import catalog
from gpuprov.infra.cache import cache_name, mount_point, with_disk_mount
from gpuprov.infra.clouds.aws.cache import AwsCacheVolume
from gpuprov.infra.clouds.aws.driver import AwsDriver
from gpuprov.infra.clouds.aws.sdk import CACHE_DEVICE, DLAMI_SSM_PARAMETER, cache_device_path
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.host_keys import TAG_HOST_KEY, stack_host_keypair, user_data_for
from gpuprov.infra.keys import public_key
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_OWNER, TAG_STACK, expires_at, stack_tags

COMPONENT_TYPE = "gpuprov:aws:GpuHost"
SSH_USER = "ubuntu"  # the Deep Learning Base AMI is Ubuntu 22.04
# The DLAMI's own snapshot is about 75 GB; vLLM (~10 GB), Open WebUI (~4 GB), the MONAI Label
# build (~20 GB) and the model cache (~6 GB per model) come on top, with room for a second model.
ROOT_VOLUME_GB = 150
SSM_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# Marks a security group whose public ingress the user asked for (allow_public); the
# policy pack (gpuprov/policy/rules.py ALLOW_PUBLIC_MARKER) lets only such groups through.
ALLOW_PUBLIC_TAG = "gpuprov-allow-public"
BUDGET_THRESHOLDS = (80.0, 100.0)
# created-at / expires-at are set once at creation: a later `up` must not move a host's expiry.
_ONCE_TAGS = [f'tags["{TAG_CREATED_AT}"]', f'tags["{TAG_EXPIRES_AT}"]']


def _ingress(port: int, cidrs: tuple[str, ...], description: str) -> dict[str, Any] | None:
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    if not cidrs:
        return None
    return {"protocol": "tcp", "from_port": port, "to_port": port, "cidr_blocks": v4, "ipv6_cidr_blocks": v6,
            "description": description}


def ssh_description(config: StackConfig) -> str:
    """Where the SSH rule's sources come from, as its description says it."""
    if config.ssh_cidrs:
        return "SSH from ssh_cidrs"
    return "SSH from allowed_cidrs" if config.allowed_cidrs else "SSH from the operator's egress address (detected)"


def ingress_rules(config: StackConfig) -> list[Any]:
    """The security group's inbound rules for ``config``: SSH from :attr:`StackConfig.ssh_sources` (the
    operator's detected egress /32 by default), service ports from ``allowed_cidrs`` only."""
    rules = [_ingress(22, config.ssh_sources, ssh_description(config))]
    rules += [_ingress(p, config.allowed_cidrs, f"service port {p} from allowed_cidrs") for p in config.open_ports]
    return [r for r in rules if r is not None]


class AwsGpuHost(pulumi.ComponentResource):
    """One GPU instance on EC2 and what it needs; ``host`` is its :class:`~gpuprov.infra.host.GpuHost` dict."""

    host: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        config: StackConfig,
        ami_id: pulumi.Input[str] | None = None,
        now: datetime | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(COMPONENT_TYPE, name, None, opts)
        import pulumi_aws as aws

        region = config.resolved_region
        instance_type = config.resolved_instance_type
        assert region is not None and instance_type is not None  # aws always resolves both
        offer = catalog.find_offer("aws", instance_type)
        assert offer is not None  # the config only accepts catalogued aws types
        tags = stack_tags(config, now or utcnow())
        provider = aws.Provider(f"{name}-region", region=region, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        once = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=_ONCE_TAGS))

        key = aws.ec2.KeyPair(f"{name}-key", public_key=public_key(config), tags=tags, opts=once)

        group_tags = dict(tags)
        if config.allow_public:
            group_tags[ALLOW_PUBLIC_TAG] = "true"
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description=f"gpuprov {config.stack}: SSH and listed ports from the listed ranges only",
            ingress=ingress_rules(config),
            # outbound stays open: image pulls, Hugging Face downloads and SSM need it
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"],
                     "ipv6_cidr_blocks": ["::/0"], "description": "all outbound"}],
            tags=group_tags,
            opts=once,
        )

        role = aws.iam.Role(
            f"{name}-ssm-role",
            description=f"gpuprov {config.stack}: lets SSM Session Manager reach the host with no inbound rule",
            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
            tags=tags,
            opts=once,
        )
        aws.iam.RolePolicyAttachment(f"{name}-ssm-core", role=role.name, policy_arn=SSM_POLICY_ARN, opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=once)

        image = ami_id if ami_id is not None else aws.ssm.get_parameter_output(
            name=DLAMI_SSM_PARAMETER, opts=pulumi.InvokeOutputOptions(parent=self, provider=provider)).value

        # plain dicts (the SDK's *ArgsDict shapes) read closest to the AWS docs; typed Any for mypy
        market: Any = None
        if config.spot:
            # one-time + terminate: a reclaimed spot host is gone, not a stopped box and an open
            # persistent request that relaunches it later and bills again.
            market = {"market_type": "spot",
                      "spot_options": {"spot_instance_type": "one-time", "instance_interruption_behavior": "terminate"}}
        # The host key goes in at launch only: a later `up` (a colleague's machine has its own pair) neither
        # replaces nor restarts the instance; the tag keeps the public key it was launched with.
        host_key_file, host_key = stack_host_keypair(config.stack)
        user_data: pulumi.Input[str] = user_data_for(host_key_file, host_key)
        zone: pulumi.Input[str] | None = None
        cache = None
        if config.cache:
            cache = _cache_volume(name, config, region, instance_type, tags, child)
            zone = cache.availability_zone  # an EBS volume attaches only in its own zone
            mount = mount_point(cache_name(config.stack, tags[TAG_OWNER]), AwsDriver.cache_mount_root)
            user_data = cache.volume_id.apply(
                lambda vid: with_disk_mount(user_data_for(host_key_file, host_key), cache_device_path(vid), mount))
        instance = aws.ec2.Instance(
            f"{name}-instance",
            user_data=pulumi.Output.secret(user_data),
            availability_zone=zone,
            ami=image,
            instance_type=instance_type,
            key_name=key.key_name,
            vpc_security_group_ids=[group.id],
            iam_instance_profile=profile.name,
            associate_public_ip_address=True,
            metadata_options=cast(Any, {
                "http_endpoint": "enabled",
                "http_tokens": "required",  # IMDSv2 only
                # 1: only the host itself (the idle agent) reaches IMDS; a container is one hop further, so
                # vLLM's remote code cannot fetch the instance role's credentials.
                "http_put_response_hop_limit": 1,
            }),
            root_block_device=cast(Any, {
                "volume_type": "gp3", "volume_size": ROOT_VOLUME_GB, "encrypted": True,
                "delete_on_termination": True, "tags": tags,
            }),
            instance_initiated_shutdown_behavior="stop",  # the idle agent's poweroff stops compute billing
            instance_market_options=market,
            tags={**tags, "Name": f"gpuprov-{config.stack}", TAG_HOST_KEY: host_key},
            opts=pulumi.ResourceOptions.merge(once, pulumi.ResourceOptions(ignore_changes=[
                *_ONCE_TAGS, "userData", f'tags["{TAG_HOST_KEY}"]', f'rootBlockDevice.tags["{TAG_CREATED_AT}"]', f'rootBlockDevice.tags["{TAG_EXPIRES_AT}"]'],
                # An EBS volume attaches to one instance at a time: a replacement (a newer AMI at a later `up`)
                # must let go of the cache before its successor takes it, not after.
                delete_before_replace=cache is not None)),
        )

        if cache is not None:
            # Destroyed on `down` (detached), the volume stays; stop first so the filesystem is clean.
            aws.ec2.VolumeAttachment(f"{name}-cache-attachment", device_name=CACHE_DEVICE, volume_id=cache.volume_id,
                                     instance_id=instance.id, stop_instance_before_detaching=True, opts=child)

        if config.budget_usd is not None:
            _budget(aws, name, config, tags, child)

        def to_host(args: list[Any]) -> dict[str, Any]:
            address, instance_id, live_tags = args
            live = dict(live_tags or tags)
            created = live.get(TAG_CREATED_AT)
            return GpuHost(
                cloud="aws", address=address, ssh_user=SSH_USER, instance_id=instance_id, region=region,
                host_key=live.get(TAG_HOST_KEY),  # installed by the launch's user data
                instance_type=instance_type, gpu=offer.gpu, gpu_count=offer.gpus,
                # on-demand price: the ceiling; spot is billed at the (lower) market price
                usd_hour=offer.usd_hour,
                launched_at=datetime.fromtimestamp(int(created), timezone.utc) if created else None,
                expires_at=expires_at(live),
            ).to_outputs()

        self.host = pulumi.Output.all(instance.public_ip, instance.id, instance.tags).apply(to_host)
        self.register_outputs({"host": self.host, "security_group_id": group.id, "instance_id": instance.id})


def _cache_volume(name: str, config: StackConfig, region: str, instance_type: str, tags: dict[str, str],
                  opts: pulumi.ResourceOptions) -> AwsCacheVolume:
    """The stack's cache volume (found or made once; never deleted by ``down``), tagged as the stack's
    without an expiry: a cache is kept on purpose, and never the reaper's."""
    kept = {k: v for k, v in tags.items() if k != TAG_EXPIRES_AT}
    return AwsCacheVolume(f"{name}-cache", cache_name=cache_name(config.stack, tags[TAG_OWNER]), region=region,
                          size_gb=config.cache_size_gb, instance_type=instance_type, tags=kept,
                          opts=pulumi.ResourceOptions(parent=opts.parent))


def _budget(aws: Any, name: str, config: StackConfig, tags: dict[str, str], opts: pulumi.ResourceOptions) -> None:
    """A monthly AWS Budget on the stack's tag, alerting at 80 % and 100 % of ``budget_usd``.

    Subscriber: the owner's address when ``owner`` is an email address; otherwise an
    SNS topic (``gpuprov-<stack>-budget``) that needs no address in config, which
    anyone can subscribe to afterwards (email, chat, a Lambda that runs ``gpuprov down``).
    The filter needs ``gpuprov-stack`` activated as a cost allocation tag in Billing.
    """
    subscriber: dict[str, Any]
    if "@" in config.owner:
        subscriber = {"subscriber_email_addresses": [config.owner]}
    else:
        topic = aws.sns.Topic(f"{name}-budget-alerts", tags=tags, opts=opts)
        aws.sns.TopicPolicy(
            f"{name}-budget-alerts-policy",
            arn=topic.arn,
            policy=topic.arn.apply(lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Sid": "AwsBudgetsPublish", "Effect": "Allow", "Principal": {"Service": "budgets.amazonaws.com"},
                "Action": "SNS:Publish", "Resource": arn}]})),
            opts=opts,
        )
        subscriber = {"subscriber_sns_topic_arns": [topic.arn]}
    aws.budgets.Budget(
        f"{name}-budget",
        budget_type="COST",
        time_unit="MONTHLY",
        limit_amount=f"{config.budget_usd:.2f}",
        limit_unit="USD",
        cost_filters=[{"name": "TagKeyValue", "values": [f"user:{TAG_STACK}${config.stack}"]}],
        notifications=[
            {"comparison_operator": "GREATER_THAN", "notification_type": "ACTUAL", "threshold": threshold,
             "threshold_type": "PERCENTAGE", **subscriber}
            for threshold in BUDGET_THRESHOLDS
        ],
        tags=tags,
        opts=opts,
    )


def build_aws_host(config: StackConfig) -> pulumi.Output[dict[str, Any]]:
    """Declare the stack's AWS GPU host; its ``host`` output is a GpuHost dict.

    ``image: ami-...`` in the stack config replaces the SSM lookup of the Deep Learning Base AMI.
    """
    return AwsGpuHost(f"gpuprov-{config.stack}", config, ami_id=config.image).host
