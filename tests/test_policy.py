"""The CrossGuard policies: the programs' own inputs (captured under mocks) pass, every bad example is refused.

Policies are called through their real ``validate`` with real ``ResourceValidationArgs``;
no ``PolicyPack`` is built (that starts the analyzer server and blocks).
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

from gpuprov.infra import tags
from gpuprov.infra.clouds.aws import program as aws_program
from gpuprov.infra.clouds.gcp import program as gcp_program
from gpuprov.infra.config import build_config
from gpuprov.infra.plan import plan
from gpuprov.policy import rules

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1bGxhYnkgdGVzdCBrZXkgZm9yIGdwdXByb3Y test@gpuprov"
EXPIRY = {tags.TAG_EXPIRES_AT: "1800000000"}


def violations(resource_type: str, props: dict[str, Any]) -> dict[str, list[str]]:
    """Each policy's violations for one resource, through the policy objects the pack is built from."""
    found: dict[str, list[str]] = {}
    opts = PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 additional_secret_outputs=[], custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
                                 parent=None)
    for policy in rules.POLICIES:
        args = ResourceValidationArgs(resource_type, props, f"urn:pulumi:t::gpuprov::{resource_type}::x", "x",
                                      opts, None)
        messages: list[str] = []

        def report(message: str, _urn: str | None = None, sink: list[str] = messages) -> None:
            sink.append(message)

        policy.validate(args, report)
        if messages:
            found[policy.name] = messages
    return found


def test_the_pack_knows_the_names_the_programs_use():
    assert rules.TAG_EXPIRES_AT == tags.TAG_EXPIRES_AT
    assert rules.ALLOW_PUBLIC_TAG == aws_program.ALLOW_PUBLIC_TAG
    assert rules.ALLOW_PUBLIC_MARKER == gcp_program.ALLOW_PUBLIC_MARKER
    assert {p.name for p in rules.POLICIES} == {"no-public-service-ingress", "encrypted-root-volume",
                                               "imdsv2-required", "gpu-instance-expires"}


@pytest.mark.parametrize("values", [
    {"cloud": "aws"},
    {"cloud": "aws", "allowed_cidrs": ["198.51.100.0/24", "2001:db8::/48"], "open_ports": [8000, 3000, 8002],
     "spot": True, "budget_usd": 30},
    {"cloud": "aws", "allowed_cidrs": ["0.0.0.0/0", "::/0"], "allow_public": True, "open_ports": [8002]},
    {"cloud": "gcp"},
    {"cloud": "gcp", "allowed_cidrs": ["198.51.100.0/24"], "open_ports": [8002], "instance_type": "g2-standard-4"},
    {"cloud": "gcp", "allowed_cidrs": ["0.0.0.0/0"], "allow_public": True, "open_ports": [3000, 8002]},
])
def test_what_the_programs_declare_passes_every_policy(values):
    resources = plan(build_config({"stack": "pol", "ssh_public_key": KEY, **values}))["resources"]
    assert any(r["type"] in (rules.AWS_INSTANCE, rules.GCP_INSTANCE) for r in resources)
    for r in resources:
        assert violations(r["type"], r["inputs"]) == {}, r["name"]


def test_the_same_public_rule_without_allow_public_is_refused():
    """The exemption is the program's marker, not the rule's shape: strip it and the rule fails."""
    cfg = build_config({"cloud": "aws", "stack": "pol", "ssh_public_key": KEY, "allowed_cidrs": ["0.0.0.0/0"],
                        "allow_public": True, "open_ports": [8002]})
    (group,) = [r for r in plan(cfg)["resources"] if r["type"] == rules.AWS_SG]
    props = {**group["inputs"], "tags": {k: v for k, v in group["inputs"]["tags"].items()
                                        if k != aws_program.ALLOW_PUBLIC_TAG}}
    assert "0.0.0.0/0 to port 22, 8002" in violations(rules.AWS_SG, props)["no-public-service-ingress"][0]


def _sg(rule: dict[str, Any]) -> dict[str, Any]:
    return {"ingress": [rule], "tags": {}}


BAD = [
    ("aws sg 8002 from anywhere", rules.AWS_SG,
     _sg({"protocol": "tcp", "fromPort": 8002, "toPort": 8002, "cidrBlocks": ["0.0.0.0/0"]}),
     "no-public-service-ingress", "0.0.0.0/0 to port 8002"),
    ("aws sg range covering 8000 from ::/0", rules.AWS_SG,
     _sg({"protocol": "tcp", "fromPort": 7000, "toPort": 9000, "ipv6CidrBlocks": ["::/0"]}),
     "no-public-service-ingress", "port 8000, 8002, 8080"),
    ("aws sg every protocol from anywhere", rules.AWS_SG,
     _sg({"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}),
     "no-public-service-ingress", "all ports"),
    ("aws sg rule resource to 3000", rules.AWS_SG_RULE,
     {"type": "ingress", "protocol": "tcp", "fromPort": 3000, "toPort": 3000, "cidrBlocks": ["0.0.0.0/0"]},
     "no-public-service-ingress", "port 3000"),
    ("aws vpc ingress rule to 8080", rules.AWS_SG_INGRESS,
     {"ipProtocol": "tcp", "fromPort": 8080, "toPort": 8080, "cidrIpv6": "::/0"},
     "no-public-service-ingress", "port 8080"),
    ("gcp firewall 3000 from anywhere", rules.GCP_FIREWALL,
     {"direction": "INGRESS", "sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["3000"]}]},
     "no-public-service-ingress", "port 3000"),
    ("gcp firewall port range from anywhere", rules.GCP_FIREWALL,
     {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["8000-8100"]}]},
     "no-public-service-ingress", "port 8000, 8002, 8080"),
    ("gcp firewall all protocols from anywhere", rules.GCP_FIREWALL,
     {"sourceRanges": ["::/0"], "allows": [{"protocol": "all"}]}, "no-public-service-ingress", "all ports"),
    ("aws sg ssh from anywhere", rules.AWS_SG,
     _sg({"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}),
     "no-public-service-ingress", "0.0.0.0/0 to port 22"),
    ("aws sg 8002 from two halves of IPv4", rules.AWS_SG,
     _sg({"protocol": "tcp", "fromPort": 8002, "toPort": 8002, "cidrBlocks": ["0.0.0.0/1", "128.0.0.0/1"]}),
     "no-public-service-ingress", "0.0.0.0/1, 128.0.0.0/1 to port 8002 (they reach 100.00% of IPv4"),
    ("aws sg 8002 split over two rules", rules.AWS_SG,
     {"ingress": [{"protocol": "tcp", "fromPort": 8002, "toPort": 8002, "cidrBlocks": ["0.0.0.0/2"]},
                  {"protocol": "tcp", "fromPort": 8000, "toPort": 8100, "cidrBlocks": ["64.0.0.0/2"]}], "tags": {}},
     "no-public-service-ingress", "0.0.0.0/2, 64.0.0.0/2 to port 8002 (they reach 50.00% of IPv4"),
    ("aws vpc ingress rule to 8002 from 2000::/3", rules.AWS_SG_INGRESS,
     {"ipProtocol": "tcp", "fromPort": 8002, "toPort": 8002, "cidrIpv6": "2000::/3"},
     "no-public-service-ingress", "2000::/3 to port 8002"),
    ("gcp firewall 8002 from two halves", rules.GCP_FIREWALL,
     {"sourceRanges": ["0.0.0.0/1", "128.0.0.0/1"], "allows": [{"protocol": "tcp", "ports": ["8002"]}]},
     "no-public-service-ingress", "to port 8002"),
    ("gcp firewall all ports from a /7", rules.GCP_FIREWALL,
     {"sourceRanges": ["10.0.0.0/7"], "allows": [{"protocol": "all"}]}, "no-public-service-ingress", "all ports"),
    ("imds reachable from containers", rules.AWS_INSTANCE,
     {"instanceType": "t3.micro", "rootBlockDevice": {"encrypted": True},
      "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2}}, "imdsv2-required", "must be 1"),
    ("unencrypted root", rules.AWS_INSTANCE,
     {"instanceType": "g5.xlarge", "rootBlockDevice": {"encrypted": False}, "metadataOptions": {"httpTokens": "required"},
      "tags": EXPIRY}, "encrypted-root-volume", "root volume is not encrypted"),
    ("root encryption left to the account default", rules.AWS_INSTANCE,
     {"instanceType": "t3.micro", "metadataOptions": {"httpTokens": "required"}},
     "encrypted-root-volume", "root volume is not encrypted"),
    ("unencrypted extra ebs device", rules.AWS_INSTANCE,
     {"instanceType": "t3.micro", "rootBlockDevice": {"encrypted": True}, "metadataOptions": {"httpTokens": "required"},
      "ebsBlockDevices": [{"deviceName": "/dev/sdf", "encrypted": False}]}, "encrypted-root-volume", "/dev/sdf"),
    ("unencrypted ebs volume", rules.AWS_VOLUME, {"size": 100, "type": "gp3"}, "encrypted-root-volume", "EBS volume"),
    ("imdsv1 optional", rules.AWS_INSTANCE,
     {"instanceType": "t3.micro", "rootBlockDevice": {"encrypted": True}, "metadataOptions": {"httpTokens": "optional"}},
     "imdsv2-required", "'optional'"),
    ("imds left at the default", rules.AWS_INSTANCE,
     {"instanceType": "t3.micro", "rootBlockDevice": {"encrypted": True}}, "imdsv2-required", "None"),
    ("aws gpu without expiry", rules.AWS_INSTANCE,
     {"instanceType": "g5.xlarge", "rootBlockDevice": {"encrypted": True}, "metadataOptions": {"httpTokens": "required"},
      "tags": {tags.TAG_STACK: "x"}}, "gpu-instance-expires", "gpuprov-expires-at tag"),
    ("aws p-family gpu with a non-numeric expiry", rules.AWS_INSTANCE,
     {"instanceType": "p4d.24xlarge", "rootBlockDevice": {"encrypted": True},
      "metadataOptions": {"httpTokens": "required"}, "tags": {tags.TAG_EXPIRES_AT: "tomorrow"}},
     "gpu-instance-expires", "gpuprov-expires-at"),
    ("gcp n1 with a T4 and no expiry", rules.GCP_INSTANCE,
     {"machineType": "n1-standard-4", "guestAccelerators": [{"type": "nvidia-tesla-t4", "count": 1}], "labels": {}},
     "gpu-instance-expires", "gpuprov-expires-at label"),
    ("gcp g2 (built-in L4) with no expiry", rules.GCP_INSTANCE,
     {"machineType": "zones/us-central1-a/machineTypes/g2-standard-4"}, "gpu-instance-expires", "label"),
]


@pytest.mark.parametrize(("case", "resource_type", "props", "policy", "says"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_example_is_refused_by_its_policy(case, resource_type, props, policy, says):
    found = violations(resource_type, props)
    assert policy in found, case
    assert any(says in message for message in found[policy]), found[policy]


@pytest.mark.parametrize(("resource_type", "props"), [
    (rules.AWS_SG, _sg({"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]})),  # one /8
    (rules.AWS_SG, _sg({"protocol": "tcp", "fromPort": 22, "toPort": 22, "ipv6CidrBlocks": ["2001:db8::/32"]})),
    (rules.AWS_SG, _sg({"protocol": "tcp", "fromPort": 8002, "toPort": 8002, "cidrBlocks": ["203.0.113.7/32"]})),
    (rules.AWS_SG_RULE, {"type": "egress", "protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}),
    (rules.GCP_FIREWALL, {"direction": "EGRESS", "destinationRanges": ["0.0.0.0/0"], "allows": [{"protocol": "all"}]}),
    (rules.GCP_FIREWALL, {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["8002"]}],
                          "description": f"{rules.ALLOW_PUBLIC_MARKER} on purpose"}),
    (rules.AWS_INSTANCE, {"instanceType": "t3.micro", "rootBlockDevice": {"encrypted": True},
                          "metadataOptions": {"httpTokens": "required"}}),  # no GPU: no expiry needed
    (rules.GCP_INSTANCE, {"machineType": "e2-small", "labels": {}}),
])
def test_what_is_fine_stays_fine(resource_type, props):
    assert violations(resource_type, props) == {}


def test_the_entry_point_builds_one_pack_of_every_policy(monkeypatch):
    """Run gpuprov/policy/__main__.py as the engine would, with PolicyPack replaced by a recorder (the real one blocks)."""
    import runpy
    import sys
    from pathlib import Path

    import pulumi_policy

    built: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: built.append(kwargs))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the entry point adds its own folder
    monkeypatch.delitem(sys.modules, "rules", raising=False)
    try:
        runpy.run_path(str(Path(rules.__file__).with_name("__main__.py")), run_name="__main__")
    finally:
        sys.modules.pop("rules", None)  # the entry point's own import of rules.py, not gpuprov.policy.rules
    assert len(built) == 1 and built[0]["name"] == "gpuprov"
    assert [p.name for p in built[0]["policies"]] == [p.name for p in rules.POLICIES]
