"""gpuprov's guard rails as plain functions of a resource's type and camelCase inputs.

Each ``check_*`` returns the violations it finds (an empty list: compliant); the
``ResourceValidationPolicy`` objects at the bottom wrap them for CrossGuard. This
module imports nothing of gpuprov but the standard-library-only rule of what counts
as the internet (``gpuprov.infra.wide_ranges``, the one config and ``plan`` apply),
because the policy engine runs it in its own process; a test keeps the names below
in step with ``gpuprov.infra.tags`` and the programs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from gpuprov.infra.wide_ranges import too_wide

TAG_EXPIRES_AT = "gpuprov-expires-at"  # gpuprov.infra.tags.TAG_EXPIRES_AT
ALLOW_PUBLIC_TAG = "gpuprov-allow-public"  # gpuprov.infra.clouds.aws.program.ALLOW_PUBLIC_TAG (value "true")
ALLOW_PUBLIC_MARKER = "[gpuprov-allow-public]"  # gpuprov.infra.clouds.gcp.program.ALLOW_PUBLIC_MARKER (in a description)
SENSITIVE_PORTS = (22, 3000, 8000, 8002, 8080)  # SSH, Open WebUI (host and container), vLLM, MONAI Label (no auth)

AWS_INSTANCE = "aws:ec2/instance:Instance"
AWS_SG = "aws:ec2/securityGroup:SecurityGroup"
AWS_SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
AWS_SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
AWS_VOLUME = "aws:ebs/volume:Volume"
GCP_FIREWALL = "gcp:compute/firewall:Firewall"
GCP_INSTANCE = "gcp:compute/instance:Instance"

# EC2 GPU families (g3, g4dn, g5, g6, g6e, gr6, p3, p4d, p5...); Graviton types end in "g", they do not start with it.
_AWS_GPU_TYPE = re.compile(r"^(g|gr|p)\d")
_GCP_GPU_MACHINE = re.compile(r"^(a2|a3|a4|g2|g4)-")

Props = Mapping[str, Any]


def _exempt(props: Props) -> bool:
    """Public ingress the user asked for (``allow_public``): the tag on AWS, the description marker on GCP."""
    tags = props.get("tags") or {}
    return (isinstance(tags, Mapping) and str(tags.get(ALLOW_PUBLIC_TAG, "")).lower() == "true") or (
        ALLOW_PUBLIC_MARKER in str(props.get("description") or ""))


def _span(protocol: Any, low: Any, high: Any) -> tuple[int, int]:
    """The ports a rule over ``low..high`` admits; every port for all protocols or an open range."""
    if str(protocol) in ("-1", "all") or low is None or high is None:
        return 0, 65535
    return int(low), int(high)


def _wide_reach(rules: list[tuple[list[str], int, int]]) -> list[str]:
    """What too wide a set of sources reaches (``all ports``, ``port 22, 8002``), judged by the addresses
    the resource's rules admit together (wide_ranges), one line per set of sources."""
    found: list[str] = []
    everywhere = sorted({s for sources, lo, hi in rules if lo <= 0 and hi >= 65535 for s in sources})
    if too_wide(everywhere):
        found.append(f"ingress from {', '.join(everywhere)} to all ports ({too_wide(everywhere)})")
    by_sources: dict[tuple[str, ...], list[int]] = {}
    for port in SENSITIVE_PORTS:
        sources = tuple(sorted({s for ss, lo, hi in rules if lo <= port <= hi for s in ss}))
        if too_wide(sources) and not too_wide(everywhere):
            by_sources.setdefault(sources, []).append(port)
    for sources, ports in by_sources.items():
        found.append(f"ingress from {', '.join(sources)} to port {', '.join(map(str, sorted(ports)))} "
                     f"({too_wide(sources)})")
    return found


def _aws_rules(resource_type: str, props: Props) -> Iterable[tuple[list[str], Any, Any, Any]]:
    """(sources, protocol, from, to) for each AWS ingress rule a resource declares."""
    if resource_type == AWS_SG:
        for rule in props.get("ingress") or []:
            sources = list(rule.get("cidrBlocks") or []) + list(rule.get("ipv6CidrBlocks") or [])
            yield sources, rule.get("protocol"), rule.get("fromPort"), rule.get("toPort")
    elif resource_type == AWS_SG_RULE and props.get("type") == "ingress":
        sources = list(props.get("cidrBlocks") or []) + list(props.get("ipv6CidrBlocks") or [])
        yield sources, props.get("protocol"), props.get("fromPort"), props.get("toPort")
    elif resource_type == AWS_SG_INGRESS:
        sources = [s for s in (props.get("cidrIpv4"), props.get("cidrIpv6")) if s]
        yield sources, props.get("ipProtocol"), props.get("fromPort"), props.get("toPort")


def check_public_ingress(resource_type: str, props: Props) -> list[str]:
    """No ingress to SSH, 8002, 8000, 3000, 8080 or to all ports from ranges that reach a large share of the
    internet (0.0.0.0/0, ::/0, 0.0.0.0/1 + 128.0.0.0/1, 2000::/3...), unless allow_public."""
    if _exempt(props):
        return []
    rules = [(sources, *_span(protocol, low, high)) for sources, protocol, low, high in _aws_rules(resource_type, props)]
    if resource_type == GCP_FIREWALL and props.get("direction", "INGRESS") == "INGRESS":
        sources = [str(s) for s in props.get("sourceRanges") or []]
        for allow in props.get("allows") or []:
            ports = allow.get("ports") or []
            if allow.get("protocol") == "all" or not ports:
                rules.append((sources, 0, 65535))
            for spec in ports:
                low, _, high = str(spec).partition("-")
                rules.append((sources, int(low), int(high or low)))
    return [f"{v}: list your own ranges in allowed_cidrs, or set allow_public: true on purpose"
            for v in _wide_reach(rules)]


def check_encrypted_root(resource_type: str, props: Props) -> list[str]:
    """EC2 root and attached EBS volumes, and standalone EBS volumes, must be encrypted."""
    found: list[str] = []
    if resource_type == AWS_INSTANCE:
        if not (props.get("rootBlockDevice") or {}).get("encrypted"):
            found.append("the root volume is not encrypted (rootBlockDevice.encrypted must be true)")
        for device in props.get("ebsBlockDevices") or []:
            if not device.get("encrypted"):
                found.append(f"EBS volume {device.get('deviceName')} is not encrypted")
    elif resource_type == AWS_VOLUME and not props.get("encrypted"):
        found.append("the EBS volume is not encrypted")
    return found


def check_imdsv2(resource_type: str, props: Props) -> list[str]:
    """EC2 instances must require IMDSv2 session tokens (IMDSv1 hands credentials to any SSRF)."""
    if resource_type != AWS_INSTANCE:
        return []
    options = props.get("metadataOptions") or {}
    tokens, hops = options.get("httpTokens"), options.get("httpPutResponseHopLimit")
    found = []
    if tokens != "required":
        found.append(f"IMDSv1 is allowed (metadataOptions.httpTokens is {tokens!r}, must be 'required')")
    if hops is not None and int(hops) > 1:
        found.append(f"containers reach IMDS (metadataOptions.httpPutResponseHopLimit is {hops}, must be 1): "
                     "code in a container could take the instance role's credentials")
    return found


def _is_gpu(resource_type: str, props: Props) -> bool:
    if resource_type == AWS_INSTANCE:
        return bool(_AWS_GPU_TYPE.match(str(props.get("instanceType") or "")))
    if resource_type == GCP_INSTANCE:
        machine = str(props.get("machineType") or "").rsplit("/", 1)[-1]
        return bool(props.get("guestAccelerators")) or bool(_GCP_GPU_MACHINE.match(machine))
    return False


def check_gpu_expiry(resource_type: str, props: Props) -> list[str]:
    """A GPU instance must carry an expires-at tag/label (epoch seconds), so the reaper can end it."""
    if not _is_gpu(resource_type, props):
        return []
    marks = props.get("tags") if resource_type == AWS_INSTANCE else props.get("labels")
    value = str((marks or {}).get(TAG_EXPIRES_AT, ""))
    if not value.isdigit():
        kind = "tag" if resource_type == AWS_INSTANCE else "label"
        return [f"GPU instance without a {TAG_EXPIRES_AT} {kind} (epoch seconds): nothing would ever end it"]
    return []


def _policy(name: str, description: str, check: Callable[[str, Props], list[str]]) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, args.props):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY)


POLICIES = [
    _policy("no-public-service-ingress",
            "No ingress to 22, 3000, 8000, 8002, 8080 or all ports from ranges reaching more than a /8 of IPv4 "
            "or a /32 of IPv6 (0.0.0.0/0, 0.0.0.0/1 + 128.0.0.0/1, 2000::/3...), unless allow_public.",
            check_public_ingress),
    _policy("encrypted-root-volume", "EC2 root and EBS volumes must be encrypted.", check_encrypted_root),
    _policy("imdsv2-required", "EC2 instances must require IMDSv2 (metadataOptions.httpTokens = required).",
            check_imdsv2),
    _policy("gpu-instance-expires", "GPU instances must carry a gpuprov-expires-at tag or label.", check_gpu_expiry),
]
