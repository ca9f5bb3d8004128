"""Live prices from each cloud's price API (stand-ins with the real answer shapes), and the dated catalog
when an API cannot be reached, saying so."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from gpuprov.cost import catalog
from gpuprov.infra.clouds.aws import prices as aws_prices
from gpuprov.infra.clouds.aws.driver import AwsDriver
from gpuprov.infra.clouds.gcp import prices as gcp_prices
from gpuprov.infra.clouds.lambda_cloud.driver import LambdaDriver
from gpuprov.infra.prices import all_offers
from gpuprov.infra.settings import Settings
from gpuprov.testing.billing_api import BillingCatalogStandIn


def aws_product(instance_type: str, usd: str, region: str = "us-east-1") -> str:
    """One PriceList entry exactly as ``pricing:GetProducts`` returns it (a JSON string)."""
    sku = "JRTCKXETXF2QCF4Q"
    return json.dumps({
        "product": {
            "productFamily": "Compute Instance",
            "attributes": {"instanceType": instance_type, "regionCode": region, "location": "US East (N. Virginia)",
                           "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                           "capacitystatus": "Used", "servicecode": "AmazonEC2", "usagetype": f"BoxUsage:{instance_type}"},
            "sku": sku,
        },
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF", "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z",
            "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [], "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                "pricePerUnit": {"USD": usd}}},
            "termAttributes": {}}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z",
    })


@pytest.fixture
def pricing(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("pricing", region_name="us-east-1")


def test_aws_prices_come_from_the_pricing_api(pricing: Any) -> None:
    live_prices = {"g4dn.xlarge": "0.5400000000", "g6.xlarge": "0.8048000000", "g5.xlarge": "1.1000000000",
                   "g5.2xlarge": "1.2120000000"}
    with Stubber(pricing) as stub:
        for offer in catalog.offers("aws"):
            stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [aws_product(
                offer.type, live_prices[offer.type])]}, {"ServiceCode": "AmazonEC2", "MaxResults": 10,
                                                         "Filters": aws_prices._aws_filters(offer.type, "us-east-1")})
        offers = aws_prices.aws_offers("us-east-1", client=pricing)
        stub.assert_no_pending_responses()
    g5 = next(o for o in offers if o.type == "g5.xlarge")
    assert (g5.usd_hour, g5.live, g5.source) == (1.1, True, "AWS Pricing API, us-east-1")
    assert g5.usd_hour != catalog.find_offer("aws", "g5.xlarge").usd_hour  # type: ignore[union-attr]


def test_aws_falls_back_to_the_catalog_and_says_why(pricing: Any) -> None:
    with Stubber(pricing) as stub:
        for _ in catalog.offers("aws"):
            stub.add_client_error("get_products", "AccessDeniedException", "not authorized to perform pricing:GetProducts")
        offers = aws_prices.aws_offers("us-east-1", client=pricing)
    assert all(not o.live and o.source.startswith("catalog:") for o in offers)
    assert "pricing:GetProducts" in (offers[0].note or "")
    assert offers[0].as_of == catalog.offers("aws")[0].as_of  # the catalog's own date, not today


def test_no_aws_credentials_means_catalog_without_asking() -> None:
    offers = AwsDriver(Settings()).live_offers()
    assert {o.live for o in offers} == {False} and offers[0].note == "no AWS credentials in the environment"


def test_gcp_prices_come_from_the_billing_catalog(billing: BillingCatalogStandIn) -> None:
    offers = gcp_prices.gcp_offers("us-central1", api_key=billing.api_key, base_url=billing.url)
    n1 = next(o for o in offers if o.type == "n1-standard-4")
    # 4 vCPU x 0.031611 + 15 GiB x 0.004237 + 1 T4 x 0.35, on-demand (the spot SKUs are not mixed in)
    assert n1.live and n1.usd_hour == pytest.approx(4 * 0.031611 + 15 * 0.004237 + 0.35, abs=1e-6)
    g2 = next(o for o in offers if o.type == "g2-standard-4")
    assert g2.usd_hour == pytest.approx(4 * 0.024988 + 16 * 0.002927 + 0.56004, abs=1e-6)
    assert len(billing.seen) == 3  # 8 SKUs, 3 a page: every page was read
    assert all(billing.api_key not in json.dumps(r["query"]) for r in billing.seen)  # header, not URL


def test_gcp_region_without_skus_falls_back_per_offer(billing: BillingCatalogStandIn) -> None:
    offers = gcp_prices.gcp_offers("europe-west4", api_key=billing.api_key, base_url=billing.url)
    assert all(not o.live for o in offers) and "europe-west4" in (offers[0].note or "")


def test_gcp_unreachable_or_refused_falls_back(billing: BillingCatalogStandIn) -> None:
    refused = gcp_prices.gcp_offers(api_key="wrong", base_url=billing.url)
    assert not refused[0].live and "403" in (refused[0].note or "")
    billing.stop()
    gone = gcp_prices.gcp_offers(api_key=billing.api_key, base_url="http://127.0.0.1:9")
    assert not gone[0].live and "ConnectionError" in (gone[0].note or "")


def test_lambda_prices_come_from_the_lambda_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuprov.testing.lambda_api import LambdaStandIn

    with LambdaStandIn(api_key="price-key") as api:
        api.set_type("gpu_1x_a10", "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 86, 30, 200, 1400, 1, ["us-east-1"])
        monkeypatch.setenv("LAMBDA_API_URL", api.url)
        monkeypatch.setenv("LAMBDA_API_KEY", "price-key")
        offers = LambdaDriver(Settings.from_env()).live_offers()
    a10 = next(o for o in offers if o.type == "gpu_1x_a10")
    assert (a10.usd_hour, a10.live, a10.gpu) == (0.86, True, "A10")  # the API's price, not the catalog's 0.75
    assert {o.type for o in offers} >= {"gpu_1x_a6000", "gpu_1x_h100_pcie"}


def test_lambda_unreachable_falls_back_to_the_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LAMBDA_API_KEY", "k")
    monkeypatch.setenv("GPUPROV_LAMBDA_RATE_SCALE", "0.01")
    offers = LambdaDriver(Settings.from_env()).live_offers()
    assert offers and all(not o.live for o in offers) and "Lambda API" in (offers[0].note or "")
    assert offers[0].as_of == "2025-10"  # says how old the fallback price is


def test_all_offers_cheapest_first_offline() -> None:
    offers = all_offers(Settings(), offline=True)
    assert [o.usd_hour for o in offers] == sorted(o.usd_hour for o in offers)
    assert {o.cloud for o in offers} == {"lambda", "aws", "gcp"}
