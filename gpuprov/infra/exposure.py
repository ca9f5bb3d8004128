"""Who can reach which port of a host: the rows ``plan`` shows, built from what a program declares.

Drivers read their own firewall resources into an :class:`Opened` map (port -> source
ranges); :func:`rows` turns that into one row per port that matters (SSH, each app's
service ports, anything else opened), saying how each closed port is reached instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuprov.apps import registry
from gpuprov.infra.clouds.base import ExposureRow
from gpuprov.infra.config import StackConfig
from gpuprov.infra.egress import needs_egress
from gpuprov.infra.wide_ranges import RULE as WIDE_RULE
from gpuprov.infra.wide_ranges import is_whole_internet, too_wide

TUNNEL_ONLY = "SSH tunnel only (gpuprov tunnel)"
PUBLIC_VIA = "direct, from the whole internet (allow_public)"
EGRESS_VIA = "your egress address, detected"  # SSH open to this machine's public address only
EGRESS_AT_UP = "your egress address, detected at up time (not detectable now)"
WIDE_VIA = f"direct, from a large share of the internet ({WIDE_RULE}: allow_public)"


def service_names(config: StackConfig) -> dict[int, str]:
    """Port -> service name, for the services of the apps the stack deploys."""
    return {port: name for name, port in registry().ports(config.apps).items()}


@dataclass
class Opened:
    """What a program's firewall resources let in: port (or ``"all"``) -> source ranges."""

    found: bool = False  # whether the program declared any firewall resource at all
    ports: dict[int | str, set[str]] = field(default_factory=dict)

    def add(self, low: int, high: int, sources: set[str] | list[str]) -> None:
        for port in range(int(low), int(high) + 1):
            self.ports.setdefault(port, set()).update(sources)

    def add_all(self, sources: set[str] | list[str]) -> None:
        self.ports.setdefault("all", set()).update(sources)


def _direct(sources: list[str]) -> str:
    """How a port open to ``sources`` is reached; judged by the addresses (:mod:`wide_ranges`), not the spelling."""
    if is_whole_internet(sources):
        return PUBLIC_VIA
    if too_wide(sources):
        return WIDE_VIA
    return "direct"


def rows(config: StackConfig, opened: Opened, ssh_without_rule: str,
         labelled: dict[tuple[str, ...], str] | None = None) -> list[ExposureRow]:
    """One row per port: SSH, every service port, anything else opened. ``labelled``: source sets that
    mean a managed path (e.g. Google's IAP range) and how to say it."""
    services = service_names(config)
    if config.ssh_is_egress and config.egress_cidr:  # the operator's own /32, detected (gpuprov.infra.egress)
        labelled = {(config.egress_cidr,): EGRESS_VIA, **(labelled or {})}
    out: list[ExposureRow] = []
    if "all" in opened.ports:
        out.append(ExposureRow("all", "every port", tuple(sorted(opened.ports["all"])), "direct"))
    others = [p for p in opened.ports if isinstance(p, int) and p != 22 and p not in services]
    for port in [22, *services, *others]:
        sources = sorted(opened.ports.get(port, set()))
        service = "ssh" if port == 22 else services.get(port, "custom")
        if labelled and tuple(sources) in labelled:
            via = labelled[tuple(sources)]
        elif sources:
            via = _direct(sources)
        elif port == 22 and needs_egress(config):
            via = EGRESS_AT_UP  # a plan that could not ask this machine's address: `up` will, or stop
        else:
            via = ssh_without_rule if port == 22 else TUNNEL_ONLY
        out.append(ExposureRow(port, service, tuple(sources), via))
    return out


def rows_from_config(config: StackConfig, ssh_sources: list[str], ssh_via: str) -> list[ExposureRow]:
    """Targets without firewall resources of gpuprov's: SSH as the target admits it, service ports as the
    config opens them (to ``allowed_cidrs``), every other service port through the tunnel."""
    services = service_names(config)
    out = [ExposureRow(22, "ssh", tuple(ssh_sources), ssh_via)]
    service_from = tuple(config.allowed_cidrs)
    for port in config.open_ports:
        out.append(ExposureRow(port, services.get(port, "custom"), service_from,
                               _direct(list(service_from)) if service_from else TUNNEL_ONLY))
    for port, service in services.items():
        if port not in config.open_ports:
            out.append(ExposureRow(port, service, (), TUNNEL_ONLY))
    return out
