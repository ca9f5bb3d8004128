"""The Lambda part of the Pulumi program: SSH key, firewall ruleset, instance.

Host key: the instance is launched with cloud-init user data that installs the stack's own host key
pair (:mod:`gpuprov.infra.host_keys`), so its public key is known, and checked, before the first connect.

Firewall: a ruleset per candidate region, always: it lets in SSH (22) from
``ssh_cidrs``, else ``allowed_cidrs``, else the operator's own egress address (a /32
detected at ``up``, :mod:`gpuprov.infra.egress`), and each of ``open_ports`` from
``allowed_cidrs`` only, so Lambda's default (SSH from anywhere) never applies to the
stack's instance. It is patched in place when the egress address changes, and deleted on destroy.
"""

from __future__ import annotations

from typing import Any

import pulumi

from gpuprov.cost import catalog
from gpuprov.infra.cache import cache_name
from gpuprov.infra.clouds.lambda_cloud.driver import resource_name
from gpuprov.infra.clouds.lambda_cloud.launch import install_cancel_handlers
from gpuprov.infra.clouds.lambda_cloud.provider import LambdaFirewallRuleset, LambdaInstance, LambdaSshKey
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host_keys import stack_host_keypair
from gpuprov.infra.keys import public_key
from gpuprov.infra.tags import TAG_OWNER, stack_tags


def resource_prefix(config: StackConfig) -> str:
    """``gpuprov-<stack>``: the name of the stack's SSH key and rulesets; instances add ``-<random>``.

    The driver's inventory (reaper, destroy verification) recognises untagged Lambda resources
    (keys, rulesets) by exactly this name.
    """
    return resource_name(config.stack)


def firewall_rules(config: StackConfig) -> list[dict[str, Any]]:
    """Inbound rules: SSH from :attr:`StackConfig.ssh_sources`, each of ``open_ports`` from ``allowed_cidrs``
    (IPv4 and at most 20 rules: the config refuses anything else, see the driver's ``check_config``)."""
    ssh = [{"protocol": "tcp", "port_range": [22, 22], "source_network": cidr,
            "description": f"gpuprov {config.stack}: SSH"} for cidr in config.ssh_sources]
    return ssh + [{"protocol": "tcp", "port_range": [port, port], "source_network": cidr,
                   "description": f"gpuprov {config.stack}: port {port}"}
                  for cidr in config.allowed_cidrs for port in config.open_ports]


def min_gpu_memory_gb(config: StackConfig) -> int | None:
    """When no type is pinned, any 1-GPU type with at least the default type's GPU memory will do."""
    if config.instance_type is not None:
        return None
    default = catalog.find_offer("lambda", catalog.defaults("lambda").instance_type)
    return default.gpu_mem_gb if default else None


def build_lambda_host(config: StackConfig) -> pulumi.Output[dict[str, Any]]:
    """Create the stack's Lambda resources and return the host (a GpuHost dict) once it is active."""
    install_cancel_handlers()  # Ctrl-C/SIGTERM reach a launch running in the engine's worker thread
    prefix = resource_prefix(config)
    key = LambdaSshKey("ssh-key", name=prefix, public_key=public_key(config))
    # Always a ruleset of the stack's own, so Lambda's default (SSH from anywhere) never applies; its instance
    # may land only where one exists (never us-south-1, where Lambda applies no rules).
    ruleset = LambdaFirewallRuleset("firewall", name=prefix, rules=firewall_rules(config),
                                    regions=[config.region] if config.region else [],
                                    instance_type=config.instance_type,
                                    min_gpu_memory_gb=min_gpu_memory_gb(config))
    # The host key the instance gets through user_data: its public half is the pin before the first connect.
    host_key_file, host_key = stack_host_keypair(config.stack)
    instance = LambdaInstance(
        "instance", name=prefix, ssh_key_name=key.name, tags=stack_tags(config),
        host_key=host_key, host_key_file=str(host_key_file),
        instance_type=config.instance_type, region=config.region, min_gpu_memory_gb=min_gpu_memory_gb(config),
        firewall_ruleset_ids=ruleset.ids,
        open_ports=list(config.open_ports), allowed_cidrs=list(config.allowed_cidrs),
        ssh_sources=list(config.ssh_sources), allow_public=config.allow_public,  # 22: checked after launch too
        cache_name=cache_name(config.stack, stack_tags(config)[TAG_OWNER]) if config.cache else None,
        opts=pulumi.ResourceOptions(depends_on=[key, ruleset]),
    )
    return instance.host
