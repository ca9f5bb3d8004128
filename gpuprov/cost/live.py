"""Live prices where the clouds publish them, the dated catalog where they cannot be reached.

- Lambda: ``GET /api/v1/instance-types`` through :class:`gpuprov.infra.lambda_cloud.client.LambdaCloud`
  (needs ``LAMBDA_API_KEY``; ``LAMBDA_API_URL`` points it at the stand-in).
- AWS: the Pricing API (``pricing:GetProducts``, endpoint in us-east-1) through boto3.
- GCP: the Cloud Billing Catalog REST API (``/v1/services/6F81-5844-456A/skus``, Compute
  Engine) through requests, with an API key sent as a header, never in the URL.

A cloud is asked only when its credentials are in the environment: asking without
them would only fail, and boto3 would first probe the instance metadata address.
Every price says where it came from and when (``source``, ``as_of``, ``live``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from gpuprov.cost import catalog

GCP_COMPUTE_SERVICE = "6F81-5844-456A"  # Compute Engine in the Cloud Billing Catalog
GCP_BILLING_URL = "https://cloudbilling.googleapis.com"
GCP_KEY_ENV, GCP_URL_ENV = "GPUPROV_GCP_BILLING_API_KEY", "GPUPROV_GCP_BILLING_URL"
GCP_GPU_SKUS = {"nvidia-tesla-t4": "Nvidia Tesla T4 GPU", "nvidia-l4": "Nvidia L4 GPU"}


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


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def from_catalog(offer: catalog.Offer, note: str | None = None) -> PricedOffer:
    return PricedOffer(cloud=offer.cloud, type=offer.type, gpu=offer.gpu, gpus=offer.gpus, usd_hour=offer.usd_hour,
                       source=f"catalog: {offer.source}", as_of=offer.as_of, live=False, note=note)


def _fallback(cloud: str, note: str) -> list[PricedOffer]:
    return [from_catalog(o, note) for o in catalog.offers(cloud)]


# --- Lambda -------------------------------------------------------------------------------


def lambda_offers(client: Any = None) -> list[PricedOffer]:
    """Every Lambda instance type at its live price; the catalog when the API cannot be asked."""
    from gpuprov.infra.errors import GpuprovError

    if client is None:
        if not os.environ.get("LAMBDA_API_KEY"):
            return _fallback("lambda", "LAMBDA_API_KEY not set")
        from gpuprov.infra.lambda_cloud.client import LambdaCloud

        client = LambdaCloud(retry_for_s=10.0, max_attempts=2)  # a price list is not worth minutes of retries
    try:
        types = client.instance_types()
    except GpuprovError as err:
        return _fallback("lambda", f"Lambda API: {err}")
    return [PricedOffer(cloud="lambda", type=t.name, gpu=t.gpu_model, gpus=t.gpus, usd_hour=t.usd_hour,
                        source=f"Lambda API {client.base_url}/api/v1/instance-types", as_of=_today(), live=True)
            for t in types]


# --- AWS ----------------------------------------------------------------------------------


def _aws_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    pairs = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux", "tenancy": "Shared",
             "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in pairs.items()]


def parse_aws_price_list(price_list: list[str]) -> float | None:
    """The on-demand USD per hour in a ``GetProducts`` PriceList (JSON strings); None when absent."""
    for item in price_list:
        product = json.loads(item)
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = dim.get("pricePerUnit", {}).get("USD")
                if dim.get("unit") == "Hrs" and usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def aws_price(instance_type: str, region: str, client: Any = None) -> float | None:
    """The on-demand Linux price of ``instance_type`` in ``region`` from the AWS Pricing API."""
    if client is None:
        import boto3

        client = boto3.client("pricing", region_name="us-east-1")  # the Pricing API lives in us-east-1
    answer = client.get_products(ServiceCode="AmazonEC2", Filters=_aws_filters(instance_type, region), MaxResults=10)
    return parse_aws_price_list(answer.get("PriceList", []))


def _aws_credentials_in_env() -> bool:
    return bool(os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
                or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"))


def aws_offers(region: str | None = None, client: Any = None) -> list[PricedOffer]:
    """The catalog's AWS types at their live Pricing API price; the catalog price where that fails."""
    from botocore.exceptions import BotoCoreError, ClientError

    region = region or catalog.defaults("aws").region or "us-east-1"
    if client is None and not _aws_credentials_in_env():
        return _fallback("aws", "no AWS credentials in the environment")
    out = []
    for offer in catalog.offers("aws"):
        try:
            price = aws_price(offer.type, region, client)
        except (BotoCoreError, ClientError) as err:
            out.append(from_catalog(offer, f"AWS Pricing API: {err}"))
            continue
        if price is None:
            out.append(from_catalog(offer, f"AWS Pricing API lists no on-demand Linux price in {region}"))
            continue
        out.append(replace(from_catalog(offer), usd_hour=price, live=True, as_of=_today(), region=region,
                           source=f"AWS Pricing API, {region}"))
    return out


# --- GCP ----------------------------------------------------------------------------------


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

    url = f"{(base_url or GCP_BILLING_URL).rstrip('/')}/v1/services/{GCP_COMPUTE_SERVICE}/skus"
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


def gcp_offers(region: str | None = None, api_key: str | None = None, base_url: str | None = None) -> list[PricedOffer]:
    """The catalog's GCP types priced from the Cloud Billing Catalog; the catalog where that fails."""
    import requests

    region = region or catalog.defaults("gcp").region or "us-central1"
    api_key = api_key or os.environ.get(GCP_KEY_ENV)
    if not api_key:
        return _fallback("gcp", f"{GCP_KEY_ENV} not set")
    base = base_url or os.environ.get(GCP_URL_ENV) or GCP_BILLING_URL
    try:
        skus = gcp_skus(api_key, base)
    except (requests.RequestException, ValueError) as err:
        return _fallback("gcp", f"Cloud Billing Catalog: {type(err).__name__}: {err}")
    out = []
    for offer in catalog.offers("gcp"):
        price = price_from_skus(skus, offer, region)
        if price is None:
            out.append(from_catalog(offer, f"Cloud Billing Catalog lacks a SKU for {offer.type} in {region}"))
        else:
            out.append(replace(from_catalog(offer), usd_hour=price, live=True, as_of=_today(), region=region,
                               source=f"GCP Cloud Billing Catalog, {region}"))
    return out


def all_offers(offline: bool = False, aws_region: str | None = None, gcp_region: str | None = None) -> list[PricedOffer]:
    """Every offer gpuprov knows, at live prices where reachable, cheapest first."""
    if offline:
        found = [from_catalog(o, "offline") for o in catalog.offers()]
    else:
        found = lambda_offers() + aws_offers(aws_region) + gcp_offers(gcp_region)
    return sorted(found, key=lambda o: (o.usd_hour, o.cloud, o.type))
