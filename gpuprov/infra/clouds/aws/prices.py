"""AWS prices from the Pricing API (``pricing:GetProducts``, served from us-east-1) through boto3."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from gpuprov.cost import catalog
from gpuprov.cost.live import PricedOffer, fallback, from_catalog, today


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


def aws_offers(region: str | None = None, client: Any = None, credentials: bool = True) -> list[PricedOffer]:
    """The catalog's AWS types at their live Pricing API price; the catalog price where that fails.

    ``credentials``: whether this machine has AWS credentials (without them, and without a
    ``client``, the catalog is used and says why).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    region = region or catalog.defaults("aws").region or "us-east-1"
    if client is None and not credentials:
        return fallback("aws", "no AWS credentials in the environment")
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
        out.append(replace(from_catalog(offer), usd_hour=price, live=True, as_of=today(), region=region,
                           source=f"AWS Pricing API, {region}"))
    return out
