"""What a stack's cache costs while it waits for the next ``up``: price per GB-month by cloud, dated and sourced."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class StoragePrice:
    cloud: str
    kind: str
    usd_gb_month: float
    billed_on: str  # "used": by what it holds (Lambda); "size": by its provisioned size
    as_of: str
    source: str

    def monthly(self, gb: float | None) -> float | None:
        return None if gb is None else round(gb * self.usd_gb_month, 2)

    def describe(self, gb: float | None) -> str:
        """One line: the monthly price of ``gb`` and where the price came from."""
        rate = f"${self.usd_gb_month:.2f}/GB-month ({self.source}, {self.as_of})"
        if gb is None:
            return f"{rate}, billed on what it holds"
        what = "holding" if self.billed_on == "used" else "of"
        return f"about ${self.monthly(gb):.2f}/month {what} {gb:.1f} GB at {rate}"


@lru_cache(maxsize=1)
def _raw() -> dict[str, dict[str, object]]:
    text = resources.files("gpuprov.cost").joinpath("storage.yaml").read_text()
    return yaml.safe_load(text)


def storage_price(cloud: str) -> StoragePrice | None:
    """The catalogued cache storage price on ``cloud``; None where gpuprov keeps no cache."""
    raw = _raw().get(cloud)
    if raw is None:
        return None
    return StoragePrice(cloud=cloud, kind=str(raw["kind"]), usd_gb_month=float(str(raw["usd_gb_month"])),
                        billed_on=str(raw["billed_on"]), as_of=str(raw["as_of"]), source=str(raw["source"]))
