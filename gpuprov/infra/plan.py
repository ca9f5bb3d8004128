"""``plan``: what the Pulumi program would create, who could reach what, and what it would cost.

The real program runs on Pulumi's mock runtime with mocks that only record, so a
plan needs no credentials, no network and no Pulumi CLI. What only the cloud
knows (the AMI id today, the image of a family today, the public address) is
answered by placeholders that say "resolved at up time" / "assigned at up time".

Exposure is read from the firewall resources the program declared (AWS security
group ingress, GCP firewall rules), not from the config, so it shows what would
really be opened; every port without a rule says how it is reached instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict
from typing import Any

from pulumi.runtime import MockCallArgs, MockResourceArgs

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.infra.mock_runtime import DYNAMIC, CallHandler, EngineMocks, OutputDefaults, run_program

RESOLVED_AT_UP = "(resolved at up time)"
ASSIGNED_AT_UP = "(assigned at up time)"
GCP_IAP_RANGE = "35.235.240.0/20"  # Google's IAP TCP forwarding source range (documented by Google)

AWS_SG = "aws:ec2/securityGroup:SecurityGroup"
GCP_FIREWALL = "gcp:compute/firewall:Firewall"


# --- what only the cloud knows: placeholders -----------------------------------------------


def _ssm_parameter(args: MockCallArgs) -> dict[str, Any]:
    name = args.args.get("name")
    return {"id": name, "name": name, "type": "String", "arn": ASSIGNED_AT_UP,
            "value": f"{RESOLVED_AT_UP} AMI id from SSM parameter {name}", "insecureValue": RESOLVED_AT_UP}


def _gcp_image(args: MockCallArgs) -> dict[str, Any]:
    family, project = args.args.get("family"), args.args.get("project")
    text = f"{RESOLVED_AT_UP} newest image of family {family} in project {project}"
    return {"id": text, "selfLink": text, "name": text, "family": family, "project": project}


PLACEHOLDER_CALLS: dict[str, CallHandler] = {
    "aws:ssm/getParameter:getParameter": _ssm_parameter,
    "gcp:compute/getImage:getImage": _gcp_image,
}


def placeholder_outputs(args: MockResourceArgs) -> dict[str, Any]:
    """Outputs the cloud assigns (names, ARNs, addresses), as labelled placeholders."""
    outs: dict[str, Any] = {"arn": f"{ASSIGNED_AT_UP} {args.name}"}
    if "name" not in args.inputs:
        outs["name"] = f"{args.name}"  # Pulumi's auto-name starts with the resource name
    if args.typ == "aws:ec2/keyPair:KeyPair":
        outs["keyName"] = args.inputs.get("keyName") or args.name
    elif args.typ == "aws:ec2/instance:Instance":
        outs.update(publicIp=f"{ASSIGNED_AT_UP} public IPv4", privateIp=ASSIGNED_AT_UP)
    elif args.typ == "gcp:compute/instance:Instance":
        nics = [dict(n) for n in args.inputs.get("networkInterfaces", [])]
        for nic in nics:
            nic["accessConfigs"] = [{**dict(ac), "natIp": f"{ASSIGNED_AT_UP} external IPv4"}
                                    for ac in nic.get("accessConfigs", [])]
        outs["networkInterfaces"] = nics
    return outs


# --- the plan ----------------------------------------------------------------------------------


def plan(
    config: StackConfig,
    calls: dict[str, CallHandler] | None = None,
    output_defaults: OutputDefaults | None = None,
) -> dict[str, Any]:
    """``{"resources": [...], "exposure": [...], "cost": {...}}`` for ``config``."""
    import gpuprov.infra
    from gpuprov.cost.estimate import estimate_for

    if config.cloud in ("local", "existing"):
        resources: list[dict[str, Any]] = []
    else:
        mocks = EngineMocks(calls={**PLACEHOLDER_CALLS, **(calls or {})},
                            output_defaults=output_defaults or placeholder_outputs)
        run_program(lambda: gpuprov.infra.build(config), mocks, stack=config.stack)
        resources = [{"type": r.type, "name": r.name, "inputs": r.inputs} for r in mocks.resources]
    cost: dict[str, Any] = asdict(estimate_for(config))
    if config.spot:
        cost["note"] = "spot capacity: billed at the market price, usually far below this on-demand ceiling"
    return {"resources": resources, "exposure": exposure(config, resources), "cost": cost}


# --- key settings, for the human-readable plan ----------------------------------------------------

_KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "pulumi:providers:aws": ("region",),
    "aws:ec2/instance:Instance": ("instanceType", "ami", "metadataOptions.httpTokens", "rootBlockDevice.volumeType",
                                  "rootBlockDevice.volumeSize", "rootBlockDevice.encrypted",
                                  "instanceInitiatedShutdownBehavior", "instanceMarketOptions.marketType"),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
    "aws:budgets/budget:Budget": ("limitAmount", "limitUnit", "timeUnit"),
    "gcp:compute/instance:Instance": ("machineType", "zone", "guestAccelerators", "bootDisk.initializeParams.image",
                                      "bootDisk.initializeParams.size", "scheduling.onHostMaintenance",
                                      "scheduling.provisioningModel"),
    GCP_FIREWALL: ("allows", "sourceRanges", "targetTags"),
}


def _dig(inputs: dict[str, Any], path: str) -> Any:
    value: Any = inputs
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def key_settings(resource: dict[str, Any]) -> dict[str, Any]:
    """The few inputs of a resource a reader checks first (instance type, image, encryption, ranges...)."""
    inputs = resource["inputs"]
    if resource["type"] == AWS_SG:
        return {"ingress": [f"{r['protocol']} {r['fromPort']}-{r['toPort']} from "
                            f"{', '.join((r.get('cidrBlocks') or []) + (r.get('ipv6CidrBlocks') or []))}"
                            for r in inputs.get("ingress") or []] or "none"}
    found = {path: _dig(inputs, path) for path in _KEY_SETTINGS.get(resource["type"], ())}
    return {k: v for k, v in found.items() if v is not None}


# --- exposure ------------------------------------------------------------------------------------


def _opened(resources: list[dict[str, Any]]) -> tuple[bool, dict[int | str, set[str]]]:
    """(whether a firewall resource exists, port -> source ranges) from the declared firewall resources."""
    opened: dict[int | str, set[str]] = {}
    found = False
    for r in resources:
        inputs = r["inputs"]
        if r["type"] == AWS_SG:
            found = True
            for rule in inputs.get("ingress") or []:
                sources = set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])
                if str(rule.get("protocol")) in ("-1", "all"):
                    opened.setdefault("all", set()).update(sources)
                    continue
                for port in range(int(rule["fromPort"]), int(rule["toPort"]) + 1):
                    opened.setdefault(port, set()).update(sources)
        elif r["type"] == DYNAMIC and _is_lambda_ruleset(inputs):
            found = True
            for rule in inputs["rules"]:
                low, high = rule["port_range"]
                for port in range(int(low), int(high) + 1):
                    opened.setdefault(port, set()).add(str(rule["source_network"]))
        elif r["type"] == GCP_FIREWALL and inputs.get("direction", "INGRESS") == "INGRESS":
            found = True
            sources = set(inputs.get("sourceRanges") or [])
            for allow in inputs.get("allows") or []:
                ports = allow.get("ports") or []
                if allow.get("protocol") == "all" or not ports:
                    opened.setdefault("all", set()).update(sources)
                for spec in ports:
                    low, _, high = str(spec).partition("-")
                    for port in range(int(low), int(high or low) + 1):
                        opened.setdefault(port, set()).update(sources)
    return found, opened


def _is_lambda_ruleset(inputs: dict[str, Any]) -> bool:
    """The Lambda program's firewall ruleset (a dynamic resource): rules of ``port_range`` + ``source_network``."""
    rules = inputs.get("rules")
    return isinstance(rules, list) and all(isinstance(x, dict) and {"port_range", "source_network"} <= set(x)
                                           for x in rules)


def _ssh_without_rule(cloud: str) -> str:
    if cloud == "aws":
        return ("SSM Session Manager port forwarding to 22 (no inbound rule; IAM-authenticated): "
                "aws ssm start-session --document-name AWS-StartPortForwardingSession")
    if cloud == "gcp":
        return "IAP TCP forwarding only (gcloud compute ssh --tunnel-through-iap)"
    return "see the cloud's firewall"


def _services(config: StackConfig) -> dict[int, str]:
    """Port -> service, for the apps the stack deploys."""
    return {port: name for name, port in registry().ports(config.apps).items()}


def exposure(config: StackConfig, resources: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Who can reach which port from where: ``[{port, service, from, via}]``."""
    found, opened = _opened(resources or [])
    if not found:
        return _exposure_from_config(config)
    services = _services(config)
    rows: list[dict[str, Any]] = []
    every = [22, *services, *(p for p in opened if isinstance(p, int) and p != 22 and p not in services)]
    if "all" in opened:
        rows.append({"port": "all", "service": "every port", "from": sorted(opened["all"]), "via": "direct"})
    for port in every:
        sources = sorted(opened.get(port, set()))
        service = "ssh" if port == 22 else services.get(port, "custom")
        if sources == [GCP_IAP_RANGE]:
            via = "IAP TCP forwarding only (Google's IAP range; IAM-authenticated)"
        elif sources:
            via = "direct"
            if any(ipaddress.ip_network(s).prefixlen == 0 for s in sources):
                via = "direct, from the whole internet (allow_public)"
        else:
            via = _ssh_without_rule(config.cloud) if port == 22 else "SSH tunnel only (gpuprov tunnel)"
        rows.append({"port": port, "service": service, "from": sources, "via": via})
    return rows


def _exposure_from_config(config: StackConfig) -> list[dict[str, Any]]:
    """Targets without a firewall resource (local, existing, Lambda with no ruleset): as the config opens ports."""
    cidrs = list(config.allowed_cidrs)
    if config.cloud == "local":
        ssh_via = "direct, from this machine only (the sandbox's own network namespace)"
    elif config.cloud == "existing":
        ssh_via = "direct (the machine's own firewall decides; gpuprov opens nothing)"
    elif config.cloud == "lambda" and not cidrs:
        # no ruleset: Lambda's default firewall admits SSH (and ICMP) from anywhere; login is key-only
        cidrs, ssh_via = ["0.0.0.0/0"], "direct, from anywhere (Lambda's default firewall; SSH key login only)"
    else:
        ssh_via = "direct" if cidrs else "see the cloud's firewall"
    rows: list[dict[str, Any]] = [{"port": 22, "service": "ssh", "from": cidrs, "via": ssh_via}]
    service_from = list(config.allowed_cidrs)
    services = _services(config)
    for port in config.open_ports:
        rows.append({"port": port, "service": services.get(port, "custom"), "from": service_from,
                     "via": "direct" if service_from else "SSH tunnel only (gpuprov tunnel)"})
    for port, service in services.items():
        if port not in config.open_ports:
            rows.append({"port": port, "service": service, "from": [], "via": "SSH tunnel only (gpuprov tunnel)"})
    return rows
