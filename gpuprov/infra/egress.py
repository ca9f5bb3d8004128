"""This machine's public IPv4 address as the clouds see it: where SSH to a stack's host is open from by default.

With no ``allowed_cidrs`` and no ``ssh_cidrs``, a cloud host's port 22 is open to one address
only, the operator's egress address, asked of an echo service over HTTPS
(``GPUPROV_EGRESS_URL``, default https://checkip.amazonaws.com, which answers the caller's IPv4 as
one line). ``up`` and ``plan`` detect it, ``deploy`` and ``status`` compare it with the address
the stack's rule was made for, and ``up`` (or ``deploy``) moves the rule when it changed. The
Pulumi program detects it too when run from a checkout (``pulumi up``) without one.

An answer that cannot be where a cloud sees this machine from (a private, shared-NAT, loopback,
link-local, multicast or reserved address) is refused: opening SSH to it would lock the operator
out. Behind a NAT whose address changes, list the ranges in ``ssh_cidrs`` instead.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.settings import Settings

# Addresses no cloud sees a caller from (RFC 6890's special-purpose IPv4 blocks that are not global).
_NOT_EGRESS = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"))
TIMEOUT_S = 10.0
_HOW_ELSE = ("list the ranges SSH may come from in ssh_cidrs (or allowed_cidrs), such as "
             "ssh_cidrs: [\"203.0.113.7/32\"], or point GPUPROV_EGRESS_URL at a service that answers your address")


class EgressUnknown(GpuprovError):
    """This machine's public address could not be told, so no SSH rule can be made for it; nothing was changed."""

    exit_code = 1


def parse(answer: str, url: str) -> str:
    """The ``/32`` of an echo service's answer, or :class:`EgressUnknown` when it is not one public IPv4."""
    text = answer.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise EgressUnknown(f"{url} did not answer an IP address ({text[:40]!r}); {_HOW_ELSE}") from None
    if not isinstance(address, ipaddress.IPv4Address):
        raise EgressUnknown(f"{url} answered the IPv6 address {address}; gpuprov opens SSH to an IPv4 egress "
                            f"address: {_HOW_ELSE}")
    if any(address in net for net in _NOT_EGRESS):
        raise EgressUnknown(f"{url} answered {address}, which is not a public address (a cloud never sees you "
                            f"from it, so SSH opened to it would lock you out); {_HOW_ELSE}")
    return f"{address}/32"


def detect(settings: Settings | None = None, timeout_s: float = TIMEOUT_S) -> str:
    """This machine's egress address as ``a.b.c.d/32``, asked of ``settings.egress_url``."""
    url = (settings or Settings.from_env()).egress_url
    request = urllib.request.Request(url, headers={"User-Agent": "gpuprov"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310  (http(s) only: Settings)
            answer = response.read(256).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise EgressUnknown(f"could not tell this machine's public address from {url} ({reason}); "
                            f"{_HOW_ELSE}") from None
    return parse(answer, url)


def needs_egress(config: StackConfig) -> bool:
    """Whether the stack's SSH rule is made for the operator's egress address (no ranges given)."""
    from gpuprov.infra.clouds import driver_class

    return driver_class(config.cloud).ssh_from_egress and not config.ssh_cidrs and not config.allowed_cidrs


def resolve(config: StackConfig, settings: Settings | None = None) -> StackConfig:
    """``config`` with ``egress_cidr`` detected now when its SSH rule needs it (else ``config`` as it is)."""
    if not needs_egress(config):
        return config
    return config.model_copy(update={"egress_cidr": detect(settings)})


def changed(recorded: list[str], config: StackConfig, settings: Settings | None = None) -> str | None:
    """This machine's egress address now, when the stack's SSH rule was made for another one; else None."""
    if not needs_egress(config) or len(recorded) != 1:
        return None
    now = detect(settings)
    return now if now != recorded[0] else None
