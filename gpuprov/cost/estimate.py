"""Cost estimates per hour, day and month for a stack's configured offer."""

from __future__ import annotations

from dataclasses import dataclass

from gpuprov.cost import catalog
from gpuprov.infra.config import StackConfig

HOURS_PER_MONTH = 730  # the convention cloud price pages use


@dataclass(frozen=True)
class Estimate:
    hourly_usd: float
    daily_usd: float
    monthly_usd: float
    source: str


def estimate(usd_hour: float, source: str) -> Estimate:
    return Estimate(
        hourly_usd=round(usd_hour, 4),
        daily_usd=round(usd_hour * 24, 2),
        monthly_usd=round(usd_hour * HOURS_PER_MONTH, 2),
        source=source,
    )


def estimate_for(config: StackConfig) -> Estimate:
    """The catalog estimate for ``config`` (local and existing hosts cost gpuprov nothing)."""
    if config.cloud in ("local", "existing"):
        return estimate(0.0, f"{config.cloud} host: no cloud bill")
    itype = config.resolved_instance_type
    assert itype is not None
    offer = catalog.find_offer(config.cloud, itype)
    if offer is None:
        return estimate(0.0, f"{config.cloud} {itype}: not in the catalog; price unknown until launch")
    return estimate(offer.usd_hour, f"catalog: {offer.source}, {offer.as_of}")
