"""What Lambda's firewall really lets in to an instance, read after launch.

An instance gets the rules of the rulesets it was launched with and the account's global
ruleset (``GET /firewall-rulesets/global``, which gpuprov does not own and never edits). A port
the config opens must be reachable from the allow-list only: if any effective rule admits it
from a range outside ``allowed_cidrs``, the launch stops. SSH (22) likewise, against the SSH allow-list
(``ssh_cidrs``, else ``allowed_cidrs``, else the operator's detected egress address), unless ``allow_public``:
a global rule that opens 22 to the world stops the launch too. Lambda's API document (1.8.3, on
every firewall route) says "Firewall rules do not apply to the us-south-1 region": when ports
are opened, failover never lands there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gpuprov.infra.clouds.lambda_cloud.client import FirewallRule, Instance, LambdaCloud
from gpuprov.infra.clouds.lambda_cloud.errors import LambdaError

NO_FIREWALL_REGIONS = frozenset({"us-south-1"})


class ExposedBeyondAllowList(LambdaError):
    """A port the config opens (or SSH) is reachable from more than its allow-list: refused before launch
    when the account's global rules say so, else the launched instance is terminated."""

    exit_code = 4


def wider_than(rules: Iterable[FirewallRule], ports: Iterable[int], allowed: Iterable[str]) -> dict[int, list[str]]:
    """Port -> the sources of ``rules`` that admit it from outside ``allowed`` (empty: none)."""
    allowed_nets = [ipaddress.ip_network(a) for a in allowed]
    rules = list(rules)
    out: dict[int, list[str]] = {}
    for port in ports:
        for rule in rules:
            if rule.protocol not in ("tcp", "all"):
                continue
            if rule.port_range is not None and not rule.port_range[0] <= port <= rule.port_range[1]:
                continue
            source = ipaddress.ip_network(rule.source_network, strict=False)
            if not any(source.version == a.version and source.subnet_of(a) for a in allowed_nets):  # type: ignore[arg-type]
                out.setdefault(port, []).append(str(source))
    return out


def effective_rules(api: LambdaCloud, instance: Instance) -> list[FirewallRule]:
    """The rules that apply to ``instance``: its rulesets' and the account's global ones."""
    rules = list(api.global_firewall_rules())
    for ruleset_id in instance.firewall_ruleset_ids:
        rules += api.get_firewall_ruleset(ruleset_id).rules
    return rules


def check_rules(rules: list[FirewallRule], subject: str, ports: list[int], allowed: list[str],
                ssh_sources: list[str] | None = None, allow_public: bool = False) -> None:
    """Raise :class:`ExposedBeyondAllowList` when ``rules`` admit a port in ``ports`` from outside ``allowed``,
    or (``ssh_sources`` given, no ``allow_public``) SSH from outside ``ssh_sources``; ``subject``: whom they
    apply to, for the message."""
    if ssh_sources is not None and not allow_public:
        beyond_ssh = wider_than(rules, [22], ssh_sources).get(22)
        if beyond_ssh:
            raise ExposedBeyondAllowList(
                f"{subject} would take SSH (port 22) from {', '.join(sorted(set(beyond_ssh)))}, beyond "
                f"the SSH allow-list ({', '.join(ssh_sources) or 'none'}), through the account's global firewall "
                "rules or another ruleset; remove that rule in the Lambda dashboard (Firewall), or set "
                "allow_public: true if SSH from there is meant")
    beyond = wider_than(rules, ports, allowed) if ports else {}
    if beyond:
        where = "; ".join(f"port {p} from {', '.join(sorted(set(s)))}" for p, s in sorted(beyond.items()))
        raise ExposedBeyondAllowList(
            f"{subject} would be reachable beyond allowed_cidrs ({where}), through the account's global "
            "firewall rules or another ruleset; remove those rules in the Lambda dashboard (Firewall), or do not "
            "list the port in open_ports and use gpuprov tunnel")


def check_global_rules(api: LambdaCloud, ports: list[int], allowed: list[str],
                       ssh_sources: list[str] | None = None, allow_public: bool = False) -> None:
    """Before anything launches (and bills): the account's global rules apply to every instance, so a rule
    there that admits more than the allow-lists stops the launch at once."""
    check_rules(list(api.global_firewall_rules()), "every instance of this account (nothing was launched)",
                ports, allowed, ssh_sources, allow_public)


def check_exposure(api: LambdaCloud, instance: Instance, ports: list[int], allowed: list[str],
                   ssh_sources: list[str] | None = None, allow_public: bool = False) -> None:
    """After launch: what really applies to ``instance`` (its rulesets and the global ones), as :func:`check_rules`."""
    if ports and instance.region in NO_FIREWALL_REGIONS:
        raise ExposedBeyondAllowList(
            f"instance {instance.id} landed in {instance.region}, where Lambda applies no firewall rules, "
            f"so port {', '.join(map(str, ports))} would be open to everyone")
    check_rules(effective_rules(api, instance), f"instance {instance.id}", ports, allowed, ssh_sources, allow_public)
