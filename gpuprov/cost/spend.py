"""Spend so far of a host, from its launch time and hourly price, and where it stands against a budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

BUDGET_WARN_SHARE = 0.8  # the idle agent warns at the same share


@dataclass(frozen=True)
class Spend:
    stack: str
    cloud: str
    instance_type: str | None
    usd_hour: float
    launched_at: datetime | None
    hours: float
    usd: float
    budget_usd: float | None = None

    @property
    def budget_state(self) -> str:
        """``none`` (no cap), ``ok``, ``warn`` (at 80% or more) or ``over``."""
        return budget_state(self.usd, self.budget_usd)


def budget_state(spent: float, budget_usd: float | None) -> str:
    if budget_usd is None:
        return "none"
    if spent >= budget_usd:
        return "over"
    return "warn" if spent >= BUDGET_WARN_SHARE * budget_usd else "ok"


def spend_so_far(stack: str, cloud: str, instance_type: str | None, usd_hour: float, launched_at: datetime,
                 now: datetime | None = None, budget_usd: float | None = None) -> Spend:
    """What a host has cost since ``launched_at``, at ``usd_hour``.

    An estimate that assumes the host ran the whole time: a host stopped by the idle
    agent (AWS, GCP) bills no compute while stopped, so the figure is an upper bound there.
    """
    hours = max(0.0, ((now or datetime.now(timezone.utc)) - launched_at).total_seconds() / 3600)
    return Spend(stack=stack, cloud=cloud, instance_type=instance_type, usd_hour=usd_hour, launched_at=launched_at,
                 hours=round(hours, 3), usd=round(hours * usd_hour, 2), budget_usd=budget_usd)
