"""Cost estimates per hour, day and month for a stack's configured offer."""

from __future__ import annotations

from dataclasses import dataclass

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
