"""When source ranges count as "the internet": the one rule the config, ``plan`` and the policy pack apply.

Judged by addresses, not by spelling: ``0.0.0.0/1`` plus ``128.0.0.0/1`` is all of IPv4 as much as
``0.0.0.0/0`` is. Ranges are too wide to open without ``allow_public`` when, merged, they reach
more than a /8's worth of IPv4 addresses (2**24), or more than a /32's worth of IPv6 (2**96, one
regional registry's usual allocation). So any IPv4 prefix shorter than /8 or IPv6 prefix shorter
than /32 is too wide, and so is any union of narrower ones that covers more.

Standard library only: the policy pack (``policy/rules.py``) imports it inside Pulumi's policy engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LIMIT = {4: 2**24, 6: 2**96}  # the most addresses of each family a list may reach without allow_public
RULE = "more than a /8's worth of IPv4 or a /32's worth of IPv6 addresses"


def networks(sources: Iterable[object]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The sources that are networks (host bits ignored); anything else (a security group id) is left out."""
    out = []
    for source in sources:
        try:
            out.append(ipaddress.ip_network(str(source), strict=False))
        except ValueError:
            continue
    return out


def reach(sources: Iterable[object]) -> dict[int, int]:
    """How many addresses of each IP version the sources reach together (overlaps counted once)."""
    nets = networks(sources)
    v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
    return {4: sum(n.num_addresses for n in v4), 6: sum(n.num_addresses for n in v6)}


def too_wide(sources: Iterable[object]) -> str | None:
    """Why ``sources`` count as the internet (for a message), or None when they are narrow enough."""
    counts = reach(sources)
    for version, limit in LIMIT.items():
        if counts[version] > limit:
            share = counts[version] / 2 ** (32 if version == 4 else 128)
            return f"they reach {share:.2%} of IPv{version}, more than a /{8 if version == 4 else 32}'s worth"
    return None


def is_whole_internet(sources: Iterable[object]) -> bool:
    """Whether the sources reach every address of IPv4 or of IPv6 (how ``plan`` words the row)."""
    counts = reach(sources)
    return counts[4] == 2**32 or counts[6] == 2**128
