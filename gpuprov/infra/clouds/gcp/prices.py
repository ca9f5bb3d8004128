"""GCP prices from the Cloud Billing Catalog REST API (``/v1/services/6F81-5844-456A/skus``, Compute Engine),
through requests, with an API key sent as a header, never in the URL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gpuprov.cost import catalog
from gpuprov.cost.live import PricedOffer, fallback, from_catalog, today
from gpuprov.infra.settings import GCP_BILLING_DEFAULT_URL

GCP_COMPUTE_SERVICE = "6F81-5844-456A"  # Compute Engine in the Cloud Billing Catalog
GCP_KEY_ENV = "GPUPROV_GCP_BILLING_API_KEY"
GCP_GPU_SKUS = {"nvidia-tesla-t4": "Nvidia Tesla T4 GPU", "nvidia-l4": "Nvidia L4 GPU"}


def _unit_price(sku: dict[str, Any]) -> float:
    """USD per usage unit of a SKU: the last tier of its current pricing (units + nanos)."""
    rate = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"][-1]["unitPrice"]
    return int(rate.get("units") or 0) + int(rate.get("nanos") or 0) / 1e9


def gcp_sku_parts(offer: catalog.Offer) -> dict[str, float]:
    """SKU description (before " running in") -> quantity, that together price ``offer`` per hour."""
    family = offer.type.split("-")[0].upper()
    core = f"{family} Predefined Instance Core" if family == "N1" else f"{family} Instance Core"
    ram = f"{family} Predefined Instance Ram" if family == "N1" else f"{family} Instance Ram"
    parts = {core: float(offer.vcpus), ram: float(offer.ram_gb)}
    if offer.accelerator:
        parts[GCP_GPU_SKUS[offer.accelerator]] = float(offer.gpus)
    return parts


def price_from_skus(skus: list[dict[str, Any]], offer: catalog.Offer, region: str) -> float | None:
    """The on-demand hourly price of ``offer`` in ``region`` from Billing Catalog SKUs; None if one part is missing."""
    found: dict[str, float] = {}
    for sku in skus:
        cat = sku.get("category", {})
        if cat.get("usageType") != "OnDemand" or region not in sku.get("serviceRegions", []):
            continue
        name = sku.get("description", "").split(" running in ")[0]
        found.setdefault(name, _unit_price(sku))
    parts = gcp_sku_parts(offer)
    if not all(p in found for p in parts):
        return None
    return round(sum(found[p] * qty for p, qty in parts.items()), 6)


def gcp_skus(api_key: str, base_url: str | None = None, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every Compute Engine SKU of the Cloud Billing Catalog (all pages)."""
    import requests

    url = f"{(base_url or GCP_BILLING_DEFAULT_URL).rstrip('/')}/v1/services/{GCP_COMPUTE_SERVICE}/skus"
    skus: list[dict[str, Any]] = []
    token = ""
    with requests.Session() as s:
        s.headers["X-Goog-Api-Key"] = api_key  # a header, so the key never shows in a logged URL
        while True:
            params = {"pageSize": "5000", "currencyCode": "USD"} | ({"pageToken": token} if token else {})
            resp = s.get(url, params=params, timeout=timeout)
            resp.raise_for_status()
            body = resp.json()
            skus += body.get("skus", [])
            token = body.get("nextPageToken") or ""
            if not token:
                return skus


def gcp_offers(region: str | None = None, api_key: str | None = None,
               base_url: str = GCP_BILLING_DEFAULT_URL) -> list[PricedOffer]:
    """The catalog's GCP types priced from the Cloud Billing Catalog; the catalog where that fails.

    ``api_key``: the Billing Catalog key (``GPUPROV_GCP_BILLING_API_KEY``); without one, the catalog.
    """
    import requests

    region = region or catalog.defaults("gcp").region or "us-central1"
    if not api_key:
        return fallback("gcp", f"{GCP_KEY_ENV} not set")
    try:
        skus = gcp_skus(api_key, base_url)
    except (requests.RequestException, ValueError) as err:
        return fallback("gcp", f"Cloud Billing Catalog: {type(err).__name__}: {err}")
    out = []
    for offer in catalog.offers("gcp"):
        price = price_from_skus(skus, offer, region)
        if price is None:
            out.append(from_catalog(offer, f"Cloud Billing Catalog lacks a SKU for {offer.type} in {region}"))
        else:
            out.append(replace(from_catalog(offer), usd_hour=price, live=True, as_of=today(), region=region,
                               source=f"GCP Cloud Billing Catalog, {region}"))
    return out
