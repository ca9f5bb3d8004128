"""Spend so far per stack, from the launch time in its record, and where it stands against its budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gpuprov.infra.host import utcnow
from gpuprov.infra.records import StackRecord

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


def spend_so_far(record: StackRecord, now: datetime | None = None, budget_usd: float | None = None) -> Spend:
    """What the stack's host has cost since launch, at the hourly price recorded when it came up.

    An estimate that assumes the host ran the whole time: a host stopped by the idle
    agent (AWS, GCP) bills no compute while stopped, so the figure is an upper bound there.
    """
    host = record.host
    launched = host.launched_at or record.created_at
    hours = max(0.0, ((now or utcnow()) - launched).total_seconds() / 3600)
    return Spend(stack=record.stack, cloud=record.cloud, instance_type=host.instance_type, usd_hour=host.usd_hour,
                 launched_at=launched, hours=round(hours, 3), usd=round(hours * host.usd_hour, 2),
                 budget_usd=budget_usd)
