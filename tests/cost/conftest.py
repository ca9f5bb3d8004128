"""Stand-ins for the price APIs: Lambda's (the shared stand-in) and GCP's Billing Catalog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpuprov.testing.billing_api import BillingCatalogStandIn


@pytest.fixture
def billing() -> Iterator[BillingCatalogStandIn]:
    api = BillingCatalogStandIn().start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(autouse=True)
def no_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Price lookups here reach only the stand-ins: no real key of the developer's leaks into a test."""
    for var in ("LAMBDA_API_KEY", "LAMBDA_API_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "GPUPROV_GCP_BILLING_API_KEY", "GPUPROV_GCP_BILLING_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
