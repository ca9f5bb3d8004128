"""Prices where the clouds publish them, and the dated catalog where they cannot be reached.

Each cloud's driver asks its own price API (Lambda's ``instance-types``, the AWS Pricing
API, the GCP Cloud Billing Catalog); this module holds what they share: the priced offer,
and the catalog fallback that says why it was used. A cloud is asked only when its
credentials are in the environment: asking without them would only fail (and boto3
would first probe the instance metadata address). Every price says where it came from
and when (``source``, ``as_of``, ``live``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from gpuprov.cost import catalog


@dataclass(frozen=True)
class PricedOffer:
    """An instance type with the price gpuprov will quote, and where that price came from."""

    cloud: str
    type: str
    gpu: str
    gpus: int
    usd_hour: float
    source: str
    as_of: str
    live: bool
    region: str | None = None
    note: str | None = None  # why the catalog was used instead of a live price


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def from_catalog(offer: catalog.Offer, note: str | None = None) -> PricedOffer:
    return PricedOffer(cloud=offer.cloud, type=offer.type, gpu=offer.gpu, gpus=offer.gpus, usd_hour=offer.usd_hour,
                       source=f"catalog: {offer.source}", as_of=offer.as_of, live=False, note=note)


def fallback(cloud: str, note: str) -> list[PricedOffer]:
    """Every catalog offer of ``cloud``, saying why no live price was used."""
    return [from_catalog(o, note) for o in catalog.offers(cloud)]


def offline() -> list[PricedOffer]:
    """Every catalog offer, cheapest first, asking nobody."""
    return [from_catalog(o, "offline") for o in catalog.offers()]
