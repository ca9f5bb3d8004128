"""AWS as a gpuprov cloud: EC2 GPU instances (g5.xlarge and kin) from the Pulumi AWS provider."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, ClassVar

from gpuprov.infra.clouds.base import (
    CatalogCloud,
    ExposureRow,
    Finding,
    IdleAction,
    Leftover,
    Progress,
)

if TYPE_CHECKING:
    from datetime import datetime

    import pulumi
    from pulumi.runtime import MockCallArgs, MockResourceArgs

    from gpuprov.cost.live import PricedOffer
    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost
    from gpuprov.infra.mock_runtime import CallHandler

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INSTANCE = "aws:ec2/instance:Instance"
SSH_VIA_SSM = ("SSM Session Manager port forwarding to 22 (no inbound rule; IAM-authenticated): "
               "aws ssm start-session --document-name AWS-StartPortForwardingSession")
# Where boto3's own chain finds credentials (the profile file, the environment, web identity, an endpoint).
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL")


class AwsDriver(CatalogCloud):
    name = "aws"
    title = "AWS"
    ssh_from_egress = True
    supports_spot = True
    keeps_caches = True  # an EBS volume (gpuprov.infra.clouds.aws.cache)
    image_grammar = (re.compile(r"^ami-[0-9a-f]{8,17}\Z"), "an AMI id such as ami-0123456789abcdef0")
    credential_hint = "AWS credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID...)"
    # boto3's credential variables (https://boto3.amazonaws.com/v1/documentation/api/latest/guide/credentials.html)
    secret_env = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                  "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
    KEY_SETTINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        "pulumi:providers:aws": ("region",),
        INSTANCE: ("instanceType", "ami", "metadataOptions.httpTokens", "rootBlockDevice.volumeType",
                   "rootBlockDevice.volumeSize", "rootBlockDevice.encrypted", "instanceInitiatedShutdownBehavior",
                   "instanceMarketOptions.marketType"),
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
        "aws:budgets/budget:Budget": ("limitAmount", "limitUnit", "timeUnit"),
    }

    # --- config ----------------------------------------------------------------------------------

    # --- program and plan ------------------------------------------------------------------------

    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
        from gpuprov.infra.clouds.aws.program import build_aws_host

        return build_aws_host(config)

    def plan_calls(self) -> dict[str, CallHandler]:
        from gpuprov.infra.plan import RESOLVED_AT_UP

        def ssm_parameter(args: MockCallArgs) -> dict[str, Any]:
            name = args.args.get("name")
            return {"id": name, "name": name, "type": "String", "arn": "(assigned at up time)",
                    "value": f"{RESOLVED_AT_UP} AMI id from SSM parameter {name}", "insecureValue": RESOLVED_AT_UP}

        return {"aws:ssm/getParameter:getParameter": ssm_parameter}

    def plan_outputs(self, args: MockResourceArgs) -> dict[str, Any]:
        from gpuprov.infra.plan import ASSIGNED_AT_UP

        if args.typ == "aws:ec2/keyPair:KeyPair":
            return {"keyName": args.inputs.get("keyName") or args.name}
        if args.typ == INSTANCE:
            return {"publicIp": f"{ASSIGNED_AT_UP} public IPv4", "privateIp": ASSIGNED_AT_UP}
        if args.typ == "pulumi-python:dynamic:Resource" and "cache_name" in args.inputs:  # the cache volume
            return {"volume_id": f"{ASSIGNED_AT_UP} vol-", "availability_zone":
                    f"{ASSIGNED_AT_UP} (the cache volume's zone)"}
        return {}

    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        from gpuprov.infra.exposure import Opened, rows, rows_from_config

        opened = Opened()
        for r in resources:
            if r["type"] != SECURITY_GROUP:
                continue
            opened.found = True
            for rule in r["inputs"].get("ingress") or []:
                sources = set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])
                if str(rule.get("protocol")) in ("-1", "all"):
                    opened.add_all(sources)
                else:
                    opened.add(int(rule["fromPort"]), int(rule["toPort"]), sources)
        if not opened.found:
            return rows_from_config(config, list(config.allowed_cidrs), "direct" if config.allowed_cidrs else SSH_VIA_SSM)
        return rows(config, opened, SSH_VIA_SSM)

    def key_settings(self, resource: dict[str, Any]) -> dict[str, Any]:
        if resource["type"] == SECURITY_GROUP:
            return {"ingress": [f"{r['protocol']} {r['fromPort']}-{r['toPort']} from "
                                f"{', '.join((r.get('cidrBlocks') or []) + (r.get('ipv6CidrBlocks') or []))}"
                                for r in resource["inputs"].get("ingress") or []] or "none"}
        return super().key_settings(resource)

    # --- before up -------------------------------------------------------------------------------

    def has_credentials(self) -> bool:
        return any(os.environ.get(v) for v in CREDENTIAL_VARIABLES)

    def preflight(self, config: StackConfig, progress: Progress | None = None) -> None:
        from gpuprov.infra.clouds.aws import sdk

        region, instance_type = str(config.resolved_region), str(config.resolved_instance_type)
        if progress:
            progress(f"aws: checking that {instance_type} is sold in {region} and the GPU image resolves")
        sdk.preflight(region, instance_type, config.image)

    # --- what a stack left; the reaper -----------------------------------------------------------

    def regions(self, config: StackConfig | None = None) -> list[str]:
        """Where to look: the stack's own region when known, else the swept regions, else the default."""
        if config is not None and config.resolved_region:
            return [config.resolved_region]
        return list(self.settings.aws_regions) or [str(self.default_region())]

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        from gpuprov.infra.clouds.aws import sdk

        found: list[Leftover] = []
        for region in self.regions(config):
            found += [Leftover(self.name, "instance", i.id, i.stack, None, region, i.state, i.tags)
                      for i in sdk.find_tagged_instances(region, stack)]
            found += [Leftover(self.name, "security-group", g.id, g.stack, None, region, tags=g.tags)
                      for g in sdk.find_tagged_security_groups(region, stack)]
            found += [Leftover(self.name, "key-pair", k.id, k.stack, k.name, region, tags=k.tags)
                      for k in sdk.find_tagged_key_pairs(region, stack)]
            found += [self._cache_leftover(v) for v in sdk.find_cache_volumes(region, stack)]
        return found

    def _cache_leftover(self, vol: Any) -> Leftover:
        """A cache volume as a Leftover: its owner from its name, its size (what EBS bills), its zone."""
        from gpuprov.infra.cache import OWNER_HASH_TAG, SIZE_TAG, parse_cache_name

        parsed = parse_cache_name(vol.name)
        tags = {**vol.tags, SIZE_TAG: str(vol.size_gb or 0)}
        if parsed:
            tags[OWNER_HASH_TAG] = parsed[1]
        if vol.zone:
            tags["availability-zone"] = vol.zone
        return Leftover(self.name, "cache", vol.id, vol.stack or (parsed[0] if parsed else None), vol.name,
                        vol.region, "in-use" if vol.state == "in-use" else "kept", tags)

    def purge_cache(self, item: Leftover, progress: Progress) -> None:
        """Delete the cache volume; EC2 refuses while a terminating instance still has it attached: retried."""
        from gpuprov.infra.clouds.aws import sdk

        sdk.delete_volume(str(item.region), item.id)
        progress(f"aws {item.region}: deleted cache volume {item.name} ({item.id})")

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        from gpuprov.infra.clouds.aws import sdk

        errors: list[str] = []
        by_region: dict[str, list[Leftover]] = {}
        for f in items:
            by_region.setdefault(str(f.item.region), []).append(f.item)
        for region, leftovers in by_region.items():
            ids = [i.id for i in leftovers if i.bills]
            if ids:
                progress(f"aws {region}: terminating {', '.join(ids)}")
                try:
                    sdk.terminate_instances(region, ids, wait=True)
                except sdk.AwsError as err:
                    errors.append(str(err))
            for item in leftovers:
                try:
                    if item.kind == "security-group":
                        sdk.delete_security_group(region, item.id)
                    elif item.kind == "key-pair":
                        sdk.delete_key_pair(region, str(item.name))
                    else:
                        continue
                except sdk.AwsError as err:
                    errors.append(str(err))
                    continue
                progress(f"aws {region}: deleted {item.kind} {item.name or item.id}")
        return errors

    def set_expiry(self, items: list[Leftover], expires: datetime) -> None:
        from gpuprov.infra.clouds.aws import sdk

        by_region: dict[str, list[str]] = {}
        for item in items:
            if item.kind != "cache":  # kept on purpose, never the reaper's: it carries no expiry
                by_region.setdefault(str(item.region), []).append(item.id)
        for region, ids in by_region.items():
            sdk.set_expiry_tag(region, ids, expires)

    # --- on the host; prices ---------------------------------------------------------------------

    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        return IdleAction("poweroff", "an OS shutdown stops an EC2 instance (instance_initiated_shutdown_behavior "
                                      "= stop): no compute billing; its EBS volume still bills")

    def live_offers(self, region: str | None = None) -> list[PricedOffer]:
        from gpuprov.infra.clouds.aws.prices import aws_offers

        return aws_offers(region or self.default_region(), credentials=self.has_credentials())
